package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboardhq/switchboard/core/auth"
)

func TestPublishSubscribeRoundTrip(t *testing.T) {
	s := newTestServer(t)
	ctx := testCtx(t)
	sub := newClient(t, Options{URL: s.URL(), Key: testKey, ClientID: "sub"})
	pub := newClient(t, Options{URL: s.URL(), Key: testKey})
	if err := sub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if sub.State() != StateConnected || sub.ConnectionID() == "" {
		t.Fatalf("state %v id %q", sub.State(), sub.ConnectionID())
	}
	got := make(chan *Message, 10)
	if _, err := sub.Channel("room").Subscribe(ctx, func(m *Message) { got <- m }); err != nil {
		t.Fatal(err)
	}
	res, err := pub.Channel("room").Publish(ctx, "greeting", "hello")
	if err != nil || res.Serial == "" || res.ID == "" {
		t.Fatalf("publish: %+v %v", res, err)
	}
	if _, err := pub.Channel("room").Publish(ctx, "data", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Channel("room").Publish(ctx, "bin", []byte{0xff, 0, 1}); err != nil {
		t.Fatal(err)
	}
	m := <-got
	if m.Name != "greeting" || m.String() != "hello" || m.Serial != res.Serial || m.ID != res.ID || m.Channel != "room" {
		t.Errorf("first message %+v, want hello with %+v", m, res)
	}
	m = <-got
	var v map[string]int
	if err := m.DecodeJSON(&v); err != nil || v["n"] != 1 || m.Encoding != "json" {
		t.Errorf("json message %+v: %v", m, err)
	}
	if m = <-got; string(m.Data) != "\xff\x00\x01" {
		t.Errorf("binary message %q", m.Data)
	}
	if sub.Channel("room").Serial() != m.Serial {
		t.Errorf("channel serial %q, want the last message's %q", sub.Channel("room").Serial(), m.Serial)
	}
}

func TestRewindIteratorAndNames(t *testing.T) {
	s := newTestServer(t)
	ctx := testCtx(t)
	pub := newClient(t, Options{URL: s.URL(), Key: testKey})
	var last PublishResult
	for i := range 5 {
		res, err := pub.Channel("log").Publish(ctx, []string{"a", "b"}[i%2], fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		last = res
	}
	sub := newClient(t, Options{URL: s.URL(), Key: testKey})
	ch := sub.Channel("log")
	if err := ch.Attach(ctx, WithRewind("4")); err != nil {
		t.Fatal(err)
	}
	// The rewound messages may still be on their way after the attach:
	// wait for the last of them, or the iterator would see them as new.
	waitUntil(t, func() bool { return ch.Serial() == last.Serial })
	// The iterator subscribes when iteration starts and only sees live
	// messages named a: publish b and a until it has one.
	first := make(chan *Message, 1)
	go func() {
		for m, err := range ch.Messages(ctx, WithNames("a")) {
			if err != nil {
				t.Error(err)
				close(first)
				return
			}
			first <- m
			return
		}
	}()
	for {
		_, _ = pub.Channel("log").Publish(ctx, "b", "skip")
		_, _ = pub.Channel("log").Publish(ctx, "a", "live")
		select {
		case m, ok := <-first:
			if !ok {
				return
			}
			if m.String() != "live" || m.Name != "a" {
				t.Fatalf("iterator got %+v, want a live message named a", m)
			}
			return
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("the iterator got nothing")
		}
	}
}

func TestBadCredentialsFail(t *testing.T) {
	s := newTestServer(t)
	c := newClient(t, Options{URL: s.URL(), Key: "app:wrong"})
	err := c.Connect(testCtx(t))
	if CodeOf(err) != codeInvalidCredentials || c.State() != StateFailed {
		t.Fatalf("connect: %v, state %v; want code %d and failed", err, c.State(), codeInvalidCredentials)
	}
	if _, err := c.Channel("x").Publish(testCtx(t), "", "x"); CodeOf(err) != codeInvalidCredentials {
		t.Errorf("publish on a failed client: %v", err)
	}
}

// Subscribers and publishers behind a proxy that cuts every connection at
// random moments: every acknowledged message reaches every subscriber
// exactly once, in order, and every publish is acknowledged once.
func TestRandomCutsLoseNothing(t *testing.T) {
	s := newTestServer(t)
	proxy := newCutProxy(t, s.Addr())
	ctx := testCtx(t)
	opts := func(id string) Options {
		return Options{URL: proxy.url(), Key: testKey, ClientID: id, MinRetryDelay: 5 * time.Millisecond, MaxRetryDelay: 50 * time.Millisecond}
	}
	const subscribers, publishers = 3, 3
	wantCuts := 100
	if n, err := strconv.Atoi(os.Getenv("SWITCHBOARD_TEST_CUTS")); err == nil && n > 0 {
		wantCuts = n
	}
	type received struct {
		mu   sync.Mutex
		msgs []string
	}
	recv := make([]*received, subscribers)
	for i := range recv {
		recv[i] = &received{}
		c := newClient(t, opts(fmt.Sprintf("sub%d", i)))
		r := recv[i]
		if _, err := c.Channel("firehose").Subscribe(ctx, func(m *Message) {
			r.mu.Lock()
			r.msgs = append(r.msgs, m.String())
			r.mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Cut at random moments (1-30 ms apart) until wantCuts cuts happened;
	// publishers publish all along, each message waiting for its ack.
	var cuts atomic.Int64
	stop := make(chan struct{})
	var cutter sync.WaitGroup
	cutter.Add(1)
	go func() {
		defer cutter.Done()
		defer close(stop)
		for cuts.Load() < int64(wantCuts) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(1+rand.IntN(30)) * time.Millisecond):
				proxy.cut()
				cuts.Add(1)
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	sent := make([]int, publishers)
	for p := range publishers {
		c := newClient(t, opts(fmt.Sprintf("pub%d", p)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					sent[p] = i
					return
				default:
				}
				if _, err := c.Channel("firehose").Publish(ctx, "", fmt.Sprintf("p%d-%06d", p, i)); err != nil {
					errs <- fmt.Errorf("publisher %d message %d: %w", p, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	cutter.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := 0
	for _, n := range sent {
		total += n
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, r := range recv {
		for {
			r.mu.Lock()
			n := len(r.msgs)
			r.mu.Unlock()
			if n >= total || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	time.Sleep(100 * time.Millisecond) // any duplicate would arrive now
	for i, r := range recv {
		r.mu.Lock()
		checkPerPublisherOrder(t, fmt.Sprintf("subscriber %d", i), r.msgs, sent)
		r.mu.Unlock()
	}
	// Each message is in the channel's log exactly once.
	hist, err := newClient(t, Options{URL: s.URL(), Key: testKey}).History(ctx, "firehose", HistoryOptions{Limit: 1000, Forwards: true})
	_ = publishers
	if err != nil {
		t.Fatal(err)
	}
	var logged []string
	for page := hist; ; {
		for _, m := range page.Messages {
			logged = append(logged, m.String())
		}
		if !page.HasNext() {
			break
		}
		if page, err = page.Next(ctx); err != nil {
			t.Fatal(err)
		}
	}
	checkPerPublisherOrder(t, "history", logged, sent)
	t.Logf("%d cuts, %d messages acknowledged", cuts.Load(), total)
	if cuts.Load() < int64(wantCuts) {
		t.Errorf("only %d cuts", cuts.Load())
	}
}

// checkPerPublisherOrder checks that got holds every publisher's messages
// (sent[p] of publisher p) exactly once and in each publisher's order.
func checkPerPublisherOrder(t *testing.T, who string, got []string, sent []int) {
	t.Helper()
	next := make([]int, len(sent))
	for _, d := range got {
		var p, i int
		if _, err := fmt.Sscanf(d, "p%d-%d", &p, &i); err != nil || p >= len(sent) {
			t.Errorf("%s: unexpected message %q", who, d)
			return
		}
		if i != next[p] {
			t.Errorf("%s: publisher %d message %d arrived when %d was due (lost, duplicated or reordered)", who, p, i, next[p])
			return
		}
		next[p]++
	}
	for p, n := range sent {
		if next[p] != n {
			t.Errorf("%s: %d of publisher %d's %d acknowledged messages", who, next[p], p, n)
		}
	}
}

func TestPresenceEnterGetAndEvents(t *testing.T) {
	s := newTestServer(t)
	ctx := testCtx(t)
	watcher := newClient(t, Options{URL: s.URL(), Key: testKey})
	events := make(chan PresenceMember, 10)
	if _, err := watcher.Channel("lobby").Presence().Subscribe(ctx, func(m PresenceMember) { events <- m }); err != nil {
		t.Fatal(err)
	}
	alice := newClient(t, Options{URL: s.URL(), Key: testKey, ClientID: "alice"})
	if err := alice.Channel("lobby").Presence().Enter(ctx, "hi"); err != nil {
		t.Fatal(err)
	}
	if ev := <-events; ev.Action != "enter" || ev.ClientID != "alice" || ev.Data != "hi" {
		t.Errorf("event %+v", ev)
	}
	members, err := watcher.Channel("lobby").Presence().Get(ctx)
	if err != nil || len(members) != 1 || members[0].ClientID != "alice" {
		t.Fatalf("members %+v %v", members, err)
	}
	rest, err := watcher.PresenceMembers(ctx, "lobby")
	if err != nil || len(rest) != 1 {
		t.Fatalf("REST members %+v %v", rest, err)
	}
	_ = alice.Close()
	if ev := <-events; ev.Action != "leave" || ev.ClientID != "alice" {
		t.Errorf("after close: %+v", ev)
	}
}

func TestAuthCallbackRenewsTokens(t *testing.T) {
	s := newTestServer(t)
	ctx := testCtx(t)
	id, err := s.Auth.Authenticate(auth.Credentials{Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	c := newClient(t, Options{URL: s.URL(), ClientID: "tok", AuthCallback: func(context.Context) (string, error) {
		calls.Add(1)
		tok, _, err := s.Auth.IssueToken(id, auth.TokenRequest{TTL: 2 * time.Second, ClientID: "tok"})
		return tok, err
	}})
	got := make(chan string, 10)
	if _, err := c.Channel("t").Subscribe(ctx, func(m *Message) { got <- m.String() }); err != nil {
		t.Fatal(err)
	}
	connID := c.ConnectionID()
	time.Sleep(3 * time.Second) // past the first token's expiry
	if _, err := c.Channel("t").Publish(ctx, "", "still here"); err != nil {
		t.Fatal(err)
	}
	if m := <-got; m != "still here" {
		t.Errorf("got %q", m)
	}
	// 2 s tokens over about 3 s: a first token and one or two renewals,
	// not a renewal storm.
	if n := calls.Load(); n < 2 || n > 4 {
		t.Errorf("auth callback called %d times, want 2 to 4", n)
	}
	if c.ConnectionID() != connID {
		t.Errorf("the connection was replaced (%s -> %s) instead of renewed in band", connID, c.ConnectionID())
	}
}

func TestFallbackHost(t *testing.T) {
	s := newTestServer(t)
	ctx := testCtx(t)
	// The primary refuses connections: nothing listens there.
	c := newClient(t, Options{URL: "http://127.0.0.1:1", FallbackURLs: []string{s.URL()}, Key: testKey,
		MinRetryDelay: 10 * time.Millisecond})
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Channel("f").Publish(ctx, "", "via fallback"); err != nil {
		t.Fatal(err)
	}
}

func TestRecoveryKeyResumesInANewClient(t *testing.T) {
	s := newTestServer(t)
	ctx := testCtx(t)
	proxy := newCutProxy(t, s.Addr())
	first := newClient(t, Options{URL: proxy.url(), Key: testKey, ClientID: "app-1"})
	if _, err := first.Channel("jobs").Subscribe(ctx, func(*Message) {}); err != nil {
		t.Fatal(err)
	}
	pub := newClient(t, Options{URL: s.URL(), Key: testKey})
	if _, err := pub.Channel("jobs").Publish(ctx, "", "seen"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return first.Channel("jobs").Serial() != "" })
	for first.Channel("jobs").Serial() == "" {
		time.Sleep(time.Millisecond)
	}
	// Wait for "seen" to be received.
	time.Sleep(100 * time.Millisecond)
	key := first.RecoveryKey()
	connID := first.ConnectionID()
	// The old process is gone for good: no reconnect through the proxy
	// (closing the listener first, or the old client could resume its own
	// connection before the new one does).
	proxy.ln.Close()
	proxy.cut()
	for _, d := range []string{"missed-1", "missed-2"} {
		if _, err := pub.Channel("jobs").Publish(ctx, "", d); err != nil {
			t.Fatal(err)
		}
	}
	second := newClient(t, Options{URL: s.URL(), Key: testKey, ClientID: "app-1", Recover: key})
	got := make(chan string, 10)
	if _, err := second.Channel("jobs").Subscribe(ctx, func(m *Message) { got <- m.String() }); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"missed-1", "missed-2"} {
		select {
		case m := <-got:
			if m != want {
				t.Fatalf("recovered %q, want %q", m, want)
			}
		case <-ctx.Done():
			t.Fatal("nothing recovered")
		}
	}
	if second.ConnectionID() != connID {
		t.Errorf("connection id %q, want the recovered %q", second.ConnectionID(), connID)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCloseFailsQueuedPublishes(t *testing.T) {
	// Nothing listens: the client keeps retrying and queues the publish.
	c := newClient(t, Options{URL: "http://127.0.0.1:1", Key: testKey, MinRetryDelay: 10 * time.Millisecond})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Channel("q").Publish(context.Background(), "", "queued")
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	_ = c.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("queued publish after Close: %v, want ErrClosed", err)
	}
	if c.State() != StateClosed {
		t.Errorf("state %v", c.State())
	}
}

func TestMessagePackFormat(t *testing.T) {
	s := newTestServer(t)
	ctx := testCtx(t)
	sub := newClient(t, Options{URL: s.URL(), Key: testKey, Format: "msgpack"})
	pub := newClient(t, Options{URL: s.URL(), Key: testKey, Format: "msgpack"})
	got := make(chan *Message, 4)
	if _, err := sub.Channel("mp").Subscribe(ctx, func(m *Message) { got <- m }); err != nil {
		t.Fatal(err)
	}
	for _, d := range []any{"text", []byte{0, 0xff, 7}, map[string]int{"n": 3}} {
		if _, err := pub.Channel("mp").Publish(ctx, "x", d); err != nil {
			t.Fatal(err)
		}
	}
	if m := <-got; m.String() != "text" {
		t.Errorf("text: %+v", m)
	}
	if m := <-got; string(m.Data) != "\x00\xff\x07" || m.Encoding != "" {
		t.Errorf("binary: %+v", m)
	}
	var v map[string]int
	if m := <-got; m.Encoding != "json" || m.DecodeJSON(&v) != nil || v["n"] != 3 {
		t.Errorf("json: %+v", m)
	}
	if _, err := New(Options{URL: s.URL(), Format: "xml"}); err == nil {
		t.Error("Format xml accepted")
	}
}
