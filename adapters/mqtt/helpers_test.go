package mqtt

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/core/store"
)

func testKeys() []auth.Key {
	return []auth.Key{
		{Name: "app", Secret: "s3cret", Capability: auth.Capability{
			"*": {auth.OpPublish, auth.OpSubscribe, auth.OpPresence, auth.OpHistory},
		}},
		{Name: "narrow", Secret: "n4rrow", Capability: auth.Capability{
			"open/*": {auth.OpSubscribe, auth.OpPublish},
		}},
	}
}

// fixture is a real engine with the MQTT broker on a real TCP listener
// (and MQTT over WebSocket on an HTTP test server).
type fixture struct {
	t      testing.TB
	e      *core.Engine
	authn  *auth.Authenticator
	b      *Broker
	addr   string
	ws     *httptest.Server
	st     *store.Store
	closed atomic.Bool
}

type fixtureOptions struct {
	broker Options
	engine core.Options
	// dir, when set, opens a durable store there.
	dir string
	// addr, when set, is the TCP listen address (to restart on the same port).
	addr string
}

func newFixture(t testing.TB, fo fixtureOptions) *fixture {
	t.Helper()
	authn, err := auth.New(auth.Options{Keys: testKeys()})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, authn: authn}
	eo := fo.engine
	eo.Auth = authn
	var events atomic.Pointer[Broker]
	eo.OnChannelEvent = func(ev core.ChannelEvent) {
		if b := events.Load(); b != nil {
			b.OnChannelEvent(ev)
		}
	}
	if fo.dir != "" {
		st, err := store.Open(store.Options{Dir: fo.dir})
		if err != nil {
			t.Fatal(err)
		}
		f.st = st
		eo.Store = st
		eo.Durability = core.DurabilityFsync
	} else {
		eo.Durability = core.DurabilityMemory
	}
	if f.e, err = core.New(eo); err != nil {
		t.Fatal(err)
	}
	bo := fo.broker
	bo.Store = f.st
	bo.Registerer = prometheus.NewRegistry()
	if os.Getenv("MQTT_TEST_DEBUG") != "" {
		bo.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if f.b, err = New(f.e, bo); err != nil {
		t.Fatal(err)
	}
	events.Store(f.b)
	addr := fo.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	a, err := f.b.Listen("tcp", addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.addr = a.String()
	if err := f.b.Start(); err != nil {
		t.Fatal(err)
	}
	f.ws = httptest.NewServer(f.b)
	t.Cleanup(f.close)
	return f
}

// close shuts the broker down gracefully, then the engine and the store.
func (f *fixture) close() {
	if f.closed.Swap(true) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.b.Close(ctx); err != nil {
		if os.Getenv("MQTT_TEST_DEBUG") != "" {
			_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		}
		f.t.Errorf("broker close: %v", err)
	}
	f.ws.Close()
	if err := f.e.Close(ctx); err != nil {
		f.t.Errorf("engine close: %v", err)
	}
	if f.st != nil {
		_ = f.st.Close()
	}
}

// received collects messages of a paho v3 client.
type received struct {
	mu   sync.Mutex
	msgs []paho3.Message
	ch   chan struct{}
}

func newReceived() *received { return &received{ch: make(chan struct{}, 1)} }

func (r *received) handler(_ paho3.Client, m paho3.Message) {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

func (r *received) payloads() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.msgs))
	for i, m := range r.msgs {
		out[i] = string(m.Payload())
	}
	return out
}

// wait waits until n messages arrived.
func (r *received) wait(t testing.TB, n int) []string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		p := r.payloads()
		if len(p) >= n {
			return p
		}
		select {
		case <-r.ch:
		case <-deadline:
			t.Fatalf("got %d messages, want %d: %q", len(p), n, p)
		}
	}
}

// v3 connects a paho.mqtt.golang (MQTT 3.1.1) client.
func (f *fixture) v3(t testing.TB, clientID string, clean bool, configure ...func(*paho3.ClientOptions)) paho3.Client {
	t.Helper()
	o := paho3.NewClientOptions().AddBroker("tcp://" + f.addr).SetClientID(clientID).
		SetUsername("app").SetPassword("s3cret").SetCleanSession(clean).
		SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4).SetOrderMatters(true)
	for _, fn := range configure {
		fn(o)
	}
	c := paho3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", clientID, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func wait(t testing.TB, tok paho3.Token) {
	t.Helper()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("token: %v", tok.Error())
	}
}

// history returns the payloads of a channel's log, oldest first.
func (f *fixture) history(t testing.TB, ch string) []string {
	t.Helper()
	page, err := f.e.History(context.Background(), nil, core.HistoryQuery{Channel: ch, Direction: core.Forwards, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(page.Messages))
	for i, m := range page.Messages {
		out[i] = string(m.Data)
	}
	return out
}

// waitAcked waits until the broker saw the acknowledgement of every QoS 1/2
// message it sent to the session (so that a disconnect right after does
// not leave a message in flight).
func (f *fixture) waitAcked(t testing.TB, clientID string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.b.mu.Lock()
		s := f.b.sessions[clientID]
		f.b.mu.Unlock()
		n := 0
		if s != nil {
			s.mu.Lock()
			n = len(s.outstanding)
			s.mu.Unlock()
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d deliveries still unacknowledged", clientID, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func seq(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

func dialRaw(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
