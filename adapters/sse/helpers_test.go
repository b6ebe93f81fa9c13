package sse

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	r3sse "github.com/r3labs/sse/v2"
	backoff "gopkg.in/cenkalti/backoff.v1"

	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/core/store"
)

const testKey = "app:s3cret"

func testKeys() []auth.Key {
	return []auth.Key{
		{Name: "app", Secret: "s3cret", Capability: auth.Capability{
			"*": {auth.OpPublish, auth.OpSubscribe, auth.OpPresence, auth.OpHistory},
		}},
		{Name: "narrow", Secret: "n4rrow", Capability: auth.Capability{
			"open:*": {auth.OpSubscribe},
		}},
	}
}

// fixture is a real engine and the SSE endpoint on a real HTTP server.
type fixture struct {
	e     *core.Engine
	authn *auth.Authenticator
	h     *Handler
	srv   *httptest.Server
	reg   *prometheus.Registry
}

type fixtureOptions struct {
	sse    Options
	engine core.Options
	// dir, when set, opens a durable store there.
	dir string
}

func newFixture(t *testing.T, fo fixtureOptions) *fixture {
	t.Helper()
	authn, err := auth.New(auth.Options{Keys: testKeys()})
	if err != nil {
		t.Fatal(err)
	}
	eo := fo.engine
	eo.Auth = authn
	if fo.dir != "" {
		st, err := store.Open(store.Options{Dir: fo.dir})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		eo.Store = st
		eo.Durability = core.DurabilityFsync
	} else {
		eo.Durability = core.DurabilityMemory
	}
	e, err := core.New(eo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	reg := prometheus.NewRegistry()
	so := fo.sse
	so.Registerer = reg
	h, err := New(e, so)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { // streams end before the server and engine close
		h.Drain()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Wait(ctx); err != nil {
			t.Error(err)
		}
	})
	return &fixture{e: e, authn: authn, h: h, srv: srv, reg: reg}
}

// url is the stream URL for a query (credentials of the app key added).
func (f *fixture) url(query string) string {
	return f.srv.URL + "/v1/sse?key=" + testKey + "&" + query
}

// publish publishes data on channel as a trusted caller and returns the
// messages as accepted.
func (f *fixture) publish(t testing.TB, channel string, data ...string) []core.PublishResult {
	t.Helper()
	msgs := make([]*core.Message, len(data))
	for i, d := range data {
		msgs[i] = &core.Message{Data: []byte(d)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := f.e.Publish(ctx, nil, "", "", channel, msgs)
	if err != nil {
		t.Fatalf("publish on %s: %v", channel, err)
	}
	return res
}

// event is one parsed server-sent event.
type event struct {
	Event string
	ID    string
	Data  string
	Retry string
}

// messageData decodes a message event's JSON.
func (ev event) message(t testing.TB) core.MessageJSON {
	t.Helper()
	var m core.MessageJSON
	if err := json.Unmarshal([]byte(ev.Data), &m); err != nil {
		t.Fatalf("message event data %q: %v", ev.Data, err)
	}
	return m
}

// text is a message's data as a string (JSON string data unquoted).
func text(t testing.TB, m core.MessageJSON) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(m.Data, &s); err != nil {
		t.Fatalf("message data %s is not a string: %v", m.Data, err)
	}
	return s
}

// rawStream reads a stream with a minimal parser of its own, so tests can
// look at exactly what the server wrote (comments, retry fields).
type rawStream struct {
	resp     *http.Response
	events   chan event
	comments chan string
	done     chan struct{}
}

func openRaw(t *testing.T, url string, header http.Header) *rawStream {
	t.Helper()
	return openRawPaused(t, url, header, nil)
}

// openRawPaused is openRaw whose reading starts only when start is closed
// (nil: at once), so that the client can play a consumer that stalls.
func openRawPaused(t *testing.T, url string, header http.Header, start <-chan struct{}) *rawStream {
	t.Helper()
	resp := get(t, url, header)
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	s := &rawStream{resp: resp, events: make(chan event, 1<<16), comments: make(chan string, 1<<10), done: make(chan struct{})}
	go func() {
		if start != nil {
			<-start
		}
		s.read()
	}()
	t.Cleanup(func() {
		resp.Body.Close()
		<-s.done
	})
	return s
}

func get(t *testing.T, url string, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func (s *rawStream) read() {
	defer close(s.done)
	defer close(s.events)
	r := bufio.NewReaderSize(s.resp.Body, 1<<20)
	var ev event
	var data []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if data != nil || ev.Retry != "" {
				ev.Data = strings.Join(data, "\n")
				s.events <- ev
			}
			ev, data = event{}, nil
		case strings.HasPrefix(line, ":"):
			select {
			case s.comments <- line:
			default:
			}
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				ev.Event = value
			case "id":
				ev.ID = value
			case "data":
				data = append(data, value)
			case "retry":
				ev.Retry = value
			}
		}
	}
}

// next returns the next event, failing the test after a timeout or at the
// end of the stream.
func (s *rawStream) next(t testing.TB) event {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatal("stream ended")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return event{}
}

// nextOf skips events until one of the given type.
func (s *rawStream) nextOf(t testing.TB, typ string) event {
	t.Helper()
	for {
		if ev := s.next(t); ev.Event == typ {
			return ev
		}
	}
}

// ended waits for the stream to end.
func (s *rawStream) ended(t testing.TB) []event {
	t.Helper()
	var rest []event
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				return rest
			}
			rest = append(rest, ev)
		case <-timeout:
			t.Fatal("stream did not end within 10s")
		}
	}
}

// follower is an independent SSE client (r3labs/sse) that, like a browser
// EventSource, reconnects whenever its stream ends or breaks, sending the
// last event id it saw.
type follower struct {
	client *r3sse.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	events []event
	opens  int
	conns  []net.Conn // the client's connections, for cutting them
}

func follow(t *testing.T, url string) *follower {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := r3sse.NewClient(url, r3sse.ClientMaxBufferSize(1<<20))
	fl := &follower{client: c, cancel: cancel, done: make(chan struct{})}
	var dialer net.Dialer
	c.Connection = &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dialer.DialContext(ctx, network, addr)
			if err == nil {
				fl.mu.Lock()
				fl.conns = append(fl.conns, conn)
				fl.mu.Unlock()
			}
			return conn, err
		},
	}}
	c.ReconnectStrategy = backoff.WithContext(backoff.NewConstantBackOff(20*time.Millisecond), ctx)
	go func() {
		defer close(fl.done)
		for ctx.Err() == nil {
			_ = c.SubscribeRawWithContext(ctx, func(msg *r3sse.Event) {
				fl.mu.Lock()
				defer fl.mu.Unlock()
				ev := event{Event: string(msg.Event), ID: string(msg.ID), Data: string(msg.Data)}
				if ev.Event == eventAttached {
					fl.opens++
				}
				fl.events = append(fl.events, ev)
			})
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(fl.stop)
	return fl
}

func (fl *follower) stop() {
	fl.cancel()
	<-fl.done
}

// cut closes the client's connections, as a network failure would.
func (fl *follower) cut() {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	for _, c := range fl.conns {
		c.Close()
	}
	fl.conns = nil
}

// snapshot returns the events received so far.
func (fl *follower) snapshot() []event {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return append([]event(nil), fl.events...)
}

func (fl *follower) attachedCount() int {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.opens
}

// messagesByChannel returns the data of message events, per channel.
func messagesByChannel(t testing.TB, evs []event) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, ev := range evs {
		if ev.Event != eventMessage {
			continue
		}
		m := ev.message(t)
		out[m.Channel] = append(out[m.Channel], text(t, m))
	}
	return out
}

// waitFor polls cond until it holds or fails the test after 15s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// seqData returns n distinct payloads for a channel: "<prefix>-0001", ...
func seqData(prefix string, from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%04d", prefix, from+i)
	}
	return out
}

// checkExactlyOnce fails unless got is exactly want, reporting the first
// difference.
func checkExactlyOnce(t testing.TB, channel string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: got %d messages, want %d", channel, len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Errorf("%s: message %d is %q, want %q (lost, duplicated or reordered)", channel, i, got[i], want[i])
			return
		}
	}
}
