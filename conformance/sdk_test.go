package conformance

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboardhq/switchboard/client"
)

// The tests in this file drive the Go SDK (client/) against real
// switchboard processes: network cuts, a killed primary, a recovery key
// handed to a new client, and token renewal on a live connection.

const sdkKey = "app:s3cret-value"

// verifyNoLeaks fails the test if goroutines started by it are still
// running once its other cleanups (clients, proxies, servers) are done. Call
// it first in a test so that its cleanup runs last.
func verifyNoLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		if tr, ok := http.DefaultTransport.(*http.Transport); ok {
			tr.CloseIdleConnections()
		}
		goleak.VerifyNone(t, ignore)
	})
}

// newSDKClient creates an SDK client that is closed when the test ends.
func newSDKClient(t *testing.T, opts client.Options) *client.Client {
	t.Helper()
	c, err := client.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// sdkCtx is a context for a test's operations, cancelled when it ends.
func sdkCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// stateLog records a client's connection state changes.
type stateLog struct {
	mu      sync.Mutex
	changes []client.StateChange
}

func watchStates(c *client.Client) *stateLog {
	l := &stateLog{}
	c.OnStateChange(func(ch client.StateChange) {
		l.mu.Lock()
		l.changes = append(l.changes, ch)
		l.mu.Unlock()
	})
	return l
}

func (l *stateLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.changes)
}

// since returns the states entered from change i on.
func (l *stateLog) since(i int) []client.ConnectionState {
	l.mu.Lock()
	defer l.mu.Unlock()
	var s []client.ConnectionState
	for _, ch := range l.changes[min(i, len(l.changes)):] {
		s = append(s, ch.Current)
	}
	return s
}

// describe renders the changes from change i on, with their reasons.
func (l *stateLog) describe(i int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var parts []string
	for _, ch := range l.changes[min(i, len(l.changes)):] {
		p := ch.Current.String()
		if ch.Reason != nil {
			p += fmt.Sprintf(" (%v)", ch.Reason)
		}
		parts = append(parts, p)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// collected is what a subscriber received, in order.
type collected struct {
	mu   sync.Mutex
	msgs []string
}

func (c *collected) add(m *client.Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, m.String())
	c.mu.Unlock()
}

func (c *collected) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

func (c *collected) snapshot() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.msgs)
}

// checkPublisherOrder checks that got holds the acknowledged messages of
// every publisher (sent[p] of publisher p, data "p<p>-<seq>") exactly once
// and in each publisher's order.
func checkPublisherOrder(t *testing.T, who string, got []string, sent []int) {
	t.Helper()
	next := make([]int, len(sent))
	for k, d := range got {
		var p, i int
		if _, err := fmt.Sscanf(d, "p%d-%d", &p, &i); err != nil || p < 0 || p >= len(sent) {
			t.Errorf("%s: unexpected message %q at position %d", who, d, k)
			return
		}
		if i != next[p] {
			what := "lost or reordered"
			if i < next[p] {
				what = "duplicated or reordered"
			}
			t.Errorf("%s: at position %d, publisher %d's message %d arrived when %d was due (%s)", who, k, p, i, next[p], what)
			return
		}
		next[p]++
	}
	for p, n := range sent {
		if next[p] != n {
			t.Errorf("%s: has %d of publisher %d's %d acknowledged messages", who, next[p], p, n)
		}
	}
}

// readHistory reads a channel's whole history, oldest first, page by page.
func readHistory(ctx context.Context, t *testing.T, c *client.Client, channel string) ([]string, int) {
	t.Helper()
	page, err := c.History(ctx, channel, client.HistoryOptions{Limit: 1000, Forwards: true})
	if err != nil {
		t.Fatalf("history of %s: %v", channel, err)
	}
	var all []string
	pages := 1
	for {
		if len(page.Messages) > 1000 {
			t.Errorf("history page %d has %d messages, more than the limit of 1000", pages, len(page.Messages))
		}
		for _, m := range page.Messages {
			all = append(all, m.String())
		}
		if !page.HasNext() {
			return all, pages
		}
		if page, err = page.Next(ctx); err != nil {
			t.Fatalf("history of %s, page %d: %v", channel, pages+1, err)
		}
		pages++
	}
}

// Three subscribers and three publishers behind a proxy that cuts every
// connection a thousand times at random moments: every acknowledged message
// reaches every subscriber exactly once and in its publisher's order, and is
// in the channel's history exactly once.
func TestSDKSurvivesAThousandRandomCuts(t *testing.T) {
	verifyNoLeaks(t)
	start := time.Now()
	srv := startServer(t, t.TempDir())
	proxy := newCutProxy(t, srv.baseURL[len("http://"):])
	ctx := sdkCtx(t, 120*time.Second)
	const channel = "persisted:sdk-firehose"
	const subscribers, publishers, wantCuts = 3, 3, 1000
	opts := func(id string) client.Options {
		return client.Options{URL: "http://" + proxy.Addr(), Key: sdkKey, ClientID: id,
			MinRetryDelay: 5 * time.Millisecond, MaxRetryDelay: 50 * time.Millisecond}
	}

	recv := make([]*collected, subscribers)
	for i := range recv {
		recv[i] = &collected{}
		c := newSDKClient(t, opts(fmt.Sprintf("sub%d", i)))
		if _, err := c.Channel(channel).Subscribe(ctx, recv[i].add); err != nil {
			t.Fatalf("subscriber %d: %v", i, err)
		}
	}
	pubs := make([]*client.Client, publishers)
	for p := range pubs {
		pubs[p] = newSDKClient(t, opts(fmt.Sprintf("pub%d", p)))
		if err := pubs[p].Connect(ctx); err != nil {
			t.Fatalf("publisher %d: %v", p, err)
		}
	}

	// Cut every connection at random moments (1-30 ms apart) until
	// wantCuts cuts happened; publishers publish all along, each message
	// waiting for its ack, and stop once the cuts are done.
	var cuts atomic.Int64
	cutsDone := make(chan struct{})
	go func() {
		defer close(cutsDone)
		for cuts.Load() < wantCuts {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(1+rand.IntN(30)) * time.Millisecond):
				proxy.Cut()
				cuts.Add(1)
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	sent := make([]int, publishers)
	var duplicates atomic.Int64
	for p, c := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch := c.Channel(channel)
			for i := 0; ; i++ {
				select {
				case <-cutsDone:
					sent[p] = i
					return
				default:
				}
				res, err := ch.Publish(ctx, "", fmt.Sprintf("p%d-%06d", p, i))
				if err != nil {
					sent[p] = i
					errs <- fmt.Errorf("publisher %d, message %d: %w", p, i, err)
					return
				}
				if res.Duplicate {
					duplicates.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	<-cutsDone
	cutTime := time.Since(start)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	if n := cuts.Load(); n < wantCuts {
		t.Fatalf("only %d cuts before the deadline", n)
	}
	total := 0
	for _, n := range sent {
		total += n
	}
	t.Logf("%d cuts in %v; %d messages acknowledged (%v per publisher), %d acknowledged as duplicates of a lost ack",
		cuts.Load(), cutTime.Round(time.Millisecond), total, sent, duplicates.Load())
	if total < 100 {
		t.Errorf("only %d messages acknowledged during the cuts; the test needs traffic", total)
	}

	// Every subscriber catches up, then gets nothing more.
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range recv {
		for r.len() < total && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	time.Sleep(300 * time.Millisecond) // a duplicate would arrive now
	for i, r := range recv {
		got := r.snapshot()
		if len(got) != total {
			t.Errorf("subscriber %d received %d messages, want %d", i, len(got), total)
		}
		checkPublisherOrder(t, fmt.Sprintf("subscriber %d", i), got, sent)
	}

	// Each acknowledged message is in the channel's history exactly once.
	direct := newSDKClient(t, client.Options{URL: srv.baseURL, Key: sdkKey})
	logged, pages := readHistory(ctx, t, direct, channel)
	if len(logged) != total {
		t.Errorf("history has %d messages, want %d", len(logged), total)
	}
	checkPublisherOrder(t, "history", logged, sent)
	t.Logf("history: %d messages in %d pages; test took %v", len(logged), pages, time.Since(start).Round(time.Millisecond))
}

// A client whose primary server is killed with SIGKILL reconnects to its
// fallback by itself, and publishing and subscribing work there. The two
// servers share nothing, so only what happens on the fallback is checked.
func TestSDKFailsOverWhenThePrimaryIsKilled(t *testing.T) {
	verifyNoLeaks(t)
	primary := startServer(t, t.TempDir())
	fallback := startServer(t, t.TempDir())
	ctx := sdkCtx(t, 60*time.Second)
	const channel = "failover-room"

	c := newSDKClient(t, client.Options{URL: primary.baseURL, FallbackURLs: []string{fallback.baseURL},
		Key: sdkKey, ClientID: "failover", MinRetryDelay: 10 * time.Millisecond, MaxRetryDelay: 100 * time.Millisecond})
	states := watchStates(c)
	got := &collected{}
	if _, err := c.Channel(channel).Subscribe(ctx, got.add); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Channel(channel).Publish(ctx, "", "on-primary"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the message published on the primary", func() bool { return got.len() == 1 })
	primaryID := c.ConnectionID()

	mark := states.len()
	primary.kill()
	waitUntil(t, 20*time.Second, "the client to reconnect after the kill", func() bool {
		s := states.since(mark)
		d := slices.Index(s, client.StateDisconnected)
		return d >= 0 && slices.Contains(s[d:], client.StateConnected)
	})
	t.Logf("states after the kill: %s", states.describe(mark))
	if c.State() != client.StateConnected {
		t.Fatalf("state %v after failing over", c.State())
	}
	if id := c.ConnectionID(); id == "" || id == primaryID {
		t.Errorf("connection id %q after failing over, want a new one from the fallback (primary's was %q)", id, primaryID)
	}
	// The channel is attached again on the fallback.
	waitUntil(t, 10*time.Second, "the channel to be attached on the fallback", func() bool {
		return c.Channel(channel).State() == client.ChannelAttached
	})

	other := newSDKClient(t, client.Options{URL: fallback.baseURL, Key: sdkKey, ClientID: "on-fallback"})
	otherGot := &collected{}
	if _, err := other.Channel(channel).Subscribe(ctx, otherGot.add); err != nil {
		t.Fatal(err)
	}
	// A publish from the failed-over client lands on the fallback.
	if _, err := c.Channel(channel).Publish(ctx, "", "from-failed-over-client"); err != nil {
		t.Fatalf("publish after failing over: %v", err)
	}
	waitUntil(t, 10*time.Second, "the fallback's client to receive the failed-over client's message", func() bool {
		return otherGot.len() >= 1
	})
	// A message published on the fallback reaches the failed-over client.
	if _, err := other.Channel(channel).Publish(ctx, "", "from-fallback"); err != nil {
		t.Fatal(err)
	}
	want := []string{"on-primary", "from-failed-over-client", "from-fallback"}
	waitUntil(t, 10*time.Second, "the failed-over client to receive the fallback's message", func() bool {
		return got.len() >= len(want)
	})
	time.Sleep(200 * time.Millisecond) // a duplicate would arrive now
	if g := got.snapshot(); !slices.Equal(g, want) {
		t.Errorf("the failed-over client received %q, want %q", g, want)
	}
	if g := otherGot.snapshot(); !slices.Equal(g, want[1:]) {
		t.Errorf("the fallback's client received %q, want %q", g, want[1:])
	}
}

// A recovery key taken from a client that then disappears lets a new client
// (as a restarted process would) resume its connection and receive exactly
// the messages the old one missed.
func TestSDKRecoveryKeyInAFreshClient(t *testing.T) {
	verifyNoLeaks(t)
	srv := startServer(t, t.TempDir())
	proxy := newCutProxy(t, srv.baseURL[len("http://"):])
	ctx := sdkCtx(t, 60*time.Second)
	const channel = "persisted:sdk-recovery"
	const clientID = "recovering-app"

	first := newSDKClient(t, client.Options{URL: "http://" + proxy.Addr(), Key: sdkKey, ClientID: clientID,
		MinRetryDelay: 10 * time.Millisecond, MaxRetryDelay: 100 * time.Millisecond})
	firstGot := &collected{}
	if _, err := first.Channel(channel).Subscribe(ctx, firstGot.add); err != nil {
		t.Fatal(err)
	}
	pub := newSDKClient(t, client.Options{URL: srv.baseURL, Key: sdkKey, ClientID: "publisher"})
	if _, err := pub.Channel(channel).Publish(ctx, "", "seen"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the first client to receive a message", func() bool { return firstGot.len() == 1 })
	key := first.RecoveryKey()
	connID := first.ConnectionID()
	if key == "" || connID == "" {
		t.Fatalf("recovery key %q, connection id %q", key, connID)
	}

	// The old client is gone: nothing reaches the server through the
	// proxy any more.
	if err := proxy.ln.Close(); err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	missed := []string{"missed-1", "missed-2"}
	for _, d := range missed {
		if _, err := pub.Channel(channel).Publish(ctx, "", d); err != nil {
			t.Fatal(err)
		}
	}

	second := newSDKClient(t, client.Options{URL: srv.baseURL, Key: sdkKey, ClientID: clientID, Recover: key})
	got := &collected{}
	if _, err := second.Channel(channel).Subscribe(ctx, got.add); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the missed messages", func() bool { return got.len() >= len(missed) })
	time.Sleep(200 * time.Millisecond) // anything extra would arrive now
	if g := got.snapshot(); !slices.Equal(g, missed) {
		t.Errorf("the recovered client received %q, want exactly %q", g, missed)
	}
	if id := second.ConnectionID(); id != connID {
		t.Errorf("the recovered client's connection id is %q, want the old client's %q", id, connID)
	}
	if g := firstGot.snapshot(); !slices.Equal(g, []string{"seen"}) {
		t.Errorf("the old client received %q after it was cut off, want only \"seen\"", g)
	}
}

// A client on short-lived tokens from an auth callback stays on one
// connection across several token lifetimes, renewing the token in band,
// and receives every message published meanwhile.
func TestSDKTokenRenewalMidStream(t *testing.T) {
	verifyNoLeaks(t)
	srv := startServer(t, t.TempDir())
	ctx := sdkCtx(t, 60*time.Second)
	const channel = "renewal"
	const ttl = 3 * time.Second
	testStart := time.Now()

	issuer := newSDKClient(t, client.Options{URL: srv.baseURL, Key: sdkKey})
	var calls atomic.Int64
	var callbackErrs atomic.Int64
	c := newSDKClient(t, client.Options{URL: srv.baseURL, ClientID: "renewer",
		AuthCallback: func(ctx context.Context) (string, error) {
			calls.Add(1)
			td, err := issuer.RequestToken(ctx, client.TokenRequest{TTL: ttl, ClientID: "renewer"})
			if err != nil {
				callbackErrs.Add(1)
				return "", err
			}
			return td.Token, nil
		}})
	states := watchStates(c)
	got := &collected{}
	if _, err := c.Channel(channel).Subscribe(ctx, got.add); err != nil {
		t.Fatal(err)
	}
	connID := c.ConnectionID()
	mark := states.len()
	callsAtStart := calls.Load()

	pub := newSDKClient(t, client.Options{URL: srv.baseURL, Key: sdkKey})
	const period, lifetimes = 500 * time.Millisecond, 8 * time.Second
	var want []string
	start := time.Now()
	for i := 0; time.Since(start) < lifetimes; i++ {
		d := fmt.Sprintf("tick-%02d", i)
		if _, err := pub.Channel(channel).Publish(ctx, "", d); err != nil {
			t.Fatal(err)
		}
		want = append(want, d)
		if id := c.ConnectionID(); id != connID {
			t.Fatalf("after %v the connection id changed from %q to %q (states %s): the token was not renewed in band",
				time.Since(start).Round(time.Millisecond), connID, id, states.describe(mark))
		}
		time.Sleep(period)
	}
	waitUntil(t, 10*time.Second, "every published message", func() bool { return got.len() >= len(want) })
	time.Sleep(200 * time.Millisecond)
	n := calls.Load()
	t.Logf("%d messages over %v; auth callback called %d times (%d before subscribing, %d failed); states after subscribing: %s",
		len(want), time.Since(start).Round(time.Millisecond), n, callsAtStart, callbackErrs.Load(), states.describe(mark))

	if g := got.snapshot(); !slices.Equal(g, want) {
		t.Errorf("received %q, want %q", g, want)
	}
	if id := c.ConnectionID(); id != connID {
		t.Errorf("connection id changed from %q to %q: the token was not renewed in band", connID, id)
	}
	if states.len() > mark {
		t.Errorf("the connection changed state while renewing tokens: %s", states.describe(mark))
	}
	// About 8 s on 3 s tokens needs a few renewals. Renewing more than
	// once per sixth of a token's lifetime (every 500 ms) is not paced by
	// the lifetime at all: the callback is being called in a loop.
	if n-callsAtStart < 2 {
		t.Errorf("auth callback called %d times during %v of %v tokens, want several renewals", n-callsAtStart, lifetimes, ttl)
	}
	if maxCalls := int64(time.Since(testStart)/(ttl/6)) + 1; n > maxCalls {
		t.Errorf("auth callback called %d times in %v with %v tokens (more than %d): renewal is not paced by the token lifetime",
			n, time.Since(testStart).Round(time.Millisecond), ttl, maxCalls)
	}
	if e := callbackErrs.Load(); e > 0 {
		t.Errorf("%d token requests failed", e)
	}
}
