// Package mqtt is the MQTT 3.1.1 and 5.0 adapter: a broker whose topics are
// Switchboard channels.
//
// The protocol engine is mochi-mqtt (packets, CONNECT, keepalive, SUBSCRIBE
// bookkeeping, outbound QoS 1/2 flows, session takeover); this package
// plugs into it through one hook and owns everything about messages:
// inbound PUBLISH goes to the channel engine and is acknowledged only once
// accepted durably; what subscribers receive comes from engine attachments,
// so MQTT clients see the channel's order, rewind and resume like every
// other protocol; retained messages and persistent sessions are kept in
// the store next to the channel logs.
package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/store"
)

// Options configure a Broker. Zero values take the documented defaults.
type Options struct {
	// Store keeps persistent sessions and retained messages; nil keeps them
	// in memory only (memory durability).
	Store *store.Store
	// AllowAnonymous lets clients connect without credentials; what they
	// may do is then decided per channel by the anonymous rules.
	AllowAnonymous bool
	// MaxSessionExpiry caps the session expiry a client asks for, and is
	// the expiry of MQTT 3.1.1 persistent sessions; default 24h.
	MaxSessionExpiry time.Duration
	// MaxInflight bounds the QoS 1 and 2 messages in flight to one client
	// (the client's receive maximum may lower it); default 1024.
	MaxInflight int
	// ReceiveMaximum is the number of unacknowledged QoS 2 publishes a
	// client may have open towards the server (announced in CONNACK);
	// default 1024.
	ReceiveMaximum int
	// MaxPacketSize is the largest packet accepted; default 1 MiB.
	MaxPacketSize int
	// Buffer bounds each connection's delivery queue (events); 0 uses the
	// engine default.
	Buffer int
	// CheckpointInterval is how often session positions are written to the
	// store; default 1s.
	CheckpointInterval time.Duration
	Logger             *slog.Logger
	// Registerer receives the adapter's metrics; nil disables them.
	Registerer prometheus.Registerer
}

func (o *Options) setDefaults() {
	if o.MaxSessionExpiry <= 0 {
		o.MaxSessionExpiry = 24 * time.Hour
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = 1024
	}
	o.MaxInflight = min(o.MaxInflight, math.MaxUint16)
	if o.ReceiveMaximum <= 0 {
		o.ReceiveMaximum = 1024
	}
	o.ReceiveMaximum = min(o.ReceiveMaximum, math.MaxUint16)
	if o.MaxPacketSize <= 0 {
		o.MaxPacketSize = 1 << 20
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Broker is the MQTT adapter.
type Broker struct {
	engine   *core.Engine
	opts     Options
	log      *slog.Logger
	srv      *mochi.Server
	persist  persistence
	retained *retainedStore
	metrics  *metrics
	ws       *handoffListener

	mu       sync.Mutex
	sessions map[string]*session
	conns    map[*mochi.Client]*connection
	pending  map[*mochi.Client]*pendingConnect
	groups   map[string]*sharedGroup
	// wild holds the connections with a wildcard subscription: the ones a
	// newly opened channel may concern.
	wild     map[*connection]struct{}
	restored map[string]sessionRecord // for mochi's session restore at start
	closed   bool

	events    chan core.ChannelEvent
	ctx       context.Context
	cancel    context.CancelFunc
	bg        sync.WaitGroup
	closeOnce sync.Once
}

// New builds a broker on engine. Add listeners with Listen and serve
// WebSocket clients through the broker's http.Handler, then call Start.
func New(engine *core.Engine, opts Options) (*Broker, error) {
	opts.setDefaults()
	b := &Broker{
		engine:   engine,
		opts:     opts,
		log:      opts.Logger,
		persist:  persistence{st: opts.Store},
		sessions: map[string]*session{},
		conns:    map[*mochi.Client]*connection{},
		pending:  map[*mochi.Client]*pendingConnect{},
		groups:   map[string]*sharedGroup{},
		wild:     map[*connection]struct{}{},
		events:   make(chan core.ChannelEvent, 1<<16),
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	var err error
	if b.metrics, err = newMetrics(opts.Registerer); err != nil {
		return nil, fmt.Errorf("mqtt metrics: %w", err)
	}
	if b.retained, err = newRetainedStore(b.persist); err != nil {
		return nil, err
	}
	if b.restored, err = b.persist.loadSessions(); err != nil {
		return nil, err
	}
	for id, rec := range b.restored {
		b.sessions[id] = restoreSession(b, id, rec)
	}

	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumSessionExpiryInterval = uint32(min(opts.MaxSessionExpiry/time.Second, math.MaxUint32))
	// wireConn enforces the exact limit; mochi's check (which does not count
	// the fixed header) stays as a backstop.
	caps.MaximumPacketSize = uint32(opts.MaxPacketSize)
	caps.ReceiveMaximum = uint16(opts.ReceiveMaximum)
	caps.MaximumInflight = uint16(opts.MaxInflight)
	// Outbound publishes are written by this adapter, not queued by mochi:
	// its per-client queue only carries $SYS updates.
	caps.MaximumClientWritesPending = 16
	b.srv = mochi.New(&mochi.Options{
		Capabilities:            caps,
		Logger:                  opts.Logger.With("engine", "mochi"),
		ClientNetReadBufferSize: 2048,
		SysTopicResendInterval:  10,
	})
	if err := b.srv.AddHook(&hook{b: b}, nil); err != nil {
		return nil, fmt.Errorf("mqtt: adding the adapter hook: %w", err)
	}
	b.ws = newHandoffListener("ws", "/v1/mqtt", b.disconnectListener)
	if err := b.srv.AddListener(b.ws); err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	if err := b.metrics.retained(b.retained.len); err != nil {
		return nil, fmt.Errorf("mqtt metrics: %w", err)
	}
	return b, nil
}

// OnChannelEvent receives the engine's channel lifecycle events: a channel
// that opens is attached for every connection whose wildcard subscription
// matches it. It never blocks.
func (b *Broker) OnChannelEvent(ev core.ChannelEvent) {
	if ev.Kind != core.ChannelOpened {
		return
	}
	select {
	case b.events <- ev:
	default:
		b.metrics.eventsDropped.Inc()
		b.log.Warn("mqtt: channel event queue full; a wildcard subscriber may miss the first messages of a channel", "channel", ev.Channel)
	}
}

// Listen adds a TCP listener (TLS when tlsConfig is set) and returns its
// address.
func (b *Broker) Listen(id, addr string, tlsConfig *tls.Config) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("mqtt listener %s: %w", id, err)
	}
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	if err := b.srv.AddListener(&netListener{id: id, ln: ln, disconnect: b.disconnectListener, maxPacket: b.opts.MaxPacketSize}); err != nil {
		ln.Close()
		return nil, fmt.Errorf("mqtt listener %s: %w", id, err)
	}
	return ln.Addr(), nil
}

// Start serves the listeners.
func (b *Broker) Start() error {
	if err := b.srv.Serve(); err != nil {
		return fmt.Errorf("mqtt: %w", err)
	}
	b.bg.Add(2)
	go b.channelEvents()
	go b.checkpoints()
	return nil
}

// ServeHTTP serves MQTT over WebSocket (subprotocol "mqtt", binary frames).
func (b *Broker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:       []string{"mqtt", "mqttv3.1"},
		InsecureSkipVerify: true, // MQTT clients authenticate in CONNECT; browsers send no cookies here
	})
	if err != nil {
		return
	}
	ws.SetReadLimit(int64(b.opts.MaxPacketSize) + 16)
	nc := newWireConn(websocket.NetConn(b.ctx, ws, websocket.MessageBinary), b.opts.MaxPacketSize)
	if err := b.srv.EstablishConnection(b.ws.id, nc); err != nil {
		b.log.Debug("mqtt websocket connection ended", "err", err)
	}
	_ = nc.Close()
}

// Close disconnects every client (MQTT 5 clients get "server shutting
// down"), stores the sessions and stops the broker. Call it before closing
// the engine.
func (b *Broker) Close(ctx context.Context) error {
	var err error
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		b.mu.Unlock()
		done := make(chan struct{})
		go func() {
			_ = b.srv.Close()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			err = fmt.Errorf("mqtt: clients did not disconnect in time: %w", ctx.Err())
		}
		b.cancel()
		b.bg.Wait()
		b.mu.Lock()
		groups := make([]*sharedGroup, 0, len(b.groups))
		for _, g := range b.groups {
			groups = append(groups, g)
		}
		b.mu.Unlock()
		for _, g := range groups {
			g.stop()
		}
		err = errors.Join(err, b.checkpoint(true))
	})
	return err
}

// channelEvents attaches newly opened channels to the live connections
// whose wildcard subscriptions match them.
func (b *Broker) channelEvents() {
	defer b.bg.Done()
	for {
		select {
		case <-b.ctx.Done():
			return
		case ev := <-b.events:
			b.channelOpened(ev)
		}
	}
}

func (b *Broker) channelOpened(ev core.ChannelEvent) {
	b.mu.Lock()
	conns := make([]*connection, 0, len(b.wild))
	for c := range b.wild {
		conns = append(conns, c)
	}
	groups := make([]*sharedGroup, 0, len(b.groups))
	for _, g := range b.groups {
		groups = append(groups, g)
	}
	b.mu.Unlock()
	opts := core.AttachOptions{From: ev.Position}
	for _, c := range conns {
		s := c.s
		s.mu.Lock()
		want := false
		for _, sub := range s.subs {
			if sub.filter.Wildcard() && matchTopic(sub.filter.Filter, ev.Channel) {
				want = true
				break
			}
		}
		o := opts
		if cp := s.pos[ev.Channel]; cp != nil && cp.sent != "" {
			// The session knows where it is (a resume in progress opened
			// the channel): that position wins over the opening one.
			o.From = cp.sent
		}
		s.mu.Unlock()
		if want && attachable(ev.Channel) {
			c.goAttach(ev.Channel, o)
		}
	}
	for _, g := range groups {
		if g.wildcard && matchTopic(g.filter, ev.Channel) {
			g.goAttach(ev.Channel, opts)
		}
	}
}

// indexWildcards records a connection whose session has a wildcard
// subscription. Called with b.mu held.
func (b *Broker) indexWildcards(c *connection) {
	c.s.mu.Lock()
	wild := false
	for _, sub := range c.s.subs {
		if sub.filter.Wildcard() {
			wild = true
			break
		}
	}
	c.s.mu.Unlock()
	if wild {
		b.wild[c] = struct{}{}
	}
}

// unindexWildcards forgets a connection. Called with b.mu held.
func (b *Broker) unindexWildcards(c *connection) { delete(b.wild, c) }

// attachable reports whether a channel name is a real channel rather than
// a topic the broker serves itself.
func attachable(name string) bool {
	return !hasPrefixFold(name, sysPrefix) && !hasPrefixFold(name, systemPrefix)
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// matchingChannels lists the channels a wildcard filter matches among the
// active ones and, when stored is set, the ones in the store.
func (b *Broker) matchingChannels(filter string, stored bool) []string {
	prefix := literalPrefix(filter)
	seen := map[string]bool{}
	var out []string
	add := func(name string) {
		if !seen[name] && matchTopic(filter, name) && attachable(name) {
			seen[name] = true
			out = append(out, name)
		}
	}
	after := ""
	for {
		page := b.engine.ActiveChannels(prefix, after, 1000)
		for _, ci := range page {
			add(ci.Name)
		}
		if len(page) < 1000 {
			break
		}
		after = page[len(page)-1].Name
	}
	if stored && b.opts.Store != nil {
		_ = b.opts.Store.Channels(func(name string, _ store.Meta) bool {
			if len(name) >= len(prefix) && name[:len(prefix)] == prefix {
				add(name)
			}
			return true
		})
	}
	return out
}

// checkpoints writes the positions of sessions that moved, so that a
// session survives a crash with at most one interval of replayed messages.
func (b *Broker) checkpoints() {
	defer b.bg.Done()
	t := time.NewTicker(b.opts.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
			// Synced: a checkpoint is what survives a kill -9 (an unsynced
			// write can sit in the process until the next sync).
			if err := b.checkpoint(true); err != nil {
				b.log.Warn("mqtt: storing session positions", "err", err)
			}
		}
	}
}

// checkpoint stores every persistent session that changed.
func (b *Broker) checkpoint(sync bool) error {
	if !b.persist.enabled() {
		return nil
	}
	b.mu.Lock()
	sessions := make([]*session, 0, len(b.sessions))
	for _, s := range b.sessions {
		sessions = append(sessions, s)
	}
	b.mu.Unlock()
	recs := map[string]*sessionRecord{}
	for _, s := range sessions {
		s.mu.Lock()
		if s.dirty && s.expiry > 0 {
			recs[s.id] = s.recordLocked()
			s.dirty = false
		}
		s.mu.Unlock()
	}
	return b.persist.writeSessions(recs, sync)
}

// saveSession stores one session now (subscriptions changed, or it
// disconnected).
func (b *Broker) saveSession(s *session) {
	if !b.persist.enabled() {
		return
	}
	s.mu.Lock()
	if s.expiry == 0 {
		s.mu.Unlock()
		return
	}
	rec := s.recordLocked()
	s.dirty = false
	s.mu.Unlock()
	if err := b.persist.writeSessions(map[string]*sessionRecord{s.id: rec}, true); err != nil {
		b.log.Warn("mqtt: storing a session", "client", s.id, "err", err)
	}
}

// forgetSession removes a session from memory and the store.
func (b *Broker) forgetSession(s *session) {
	b.mu.Lock()
	if b.sessions[s.id] == s {
		delete(b.sessions, s.id)
	}
	b.mu.Unlock()
	if err := b.persist.writeSessions(map[string]*sessionRecord{s.id: nil}, false); err != nil {
		b.log.Warn("mqtt: deleting a session", "client", s.id, "err", err)
	}
	b.metrics.sessions.Set(float64(b.sessionCount()))
}

func (b *Broker) sessionCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.sessions)
}

// disconnectListener tells every client connected through a listener that
// the server is shutting down and closes its connection. (mochi's own
// version can deadlock against clients disconnecting at the same time: it
// takes its client map's read lock twice.)
func (b *Broker) disconnectListener(id string) {
	b.mu.Lock()
	var cls []*mochi.Client
	for cl := range b.conns {
		if cl.Net.Listener == id {
			cls = append(cls, cl)
		}
	}
	for cl := range b.pending {
		if cl.Net.Listener == id {
			cls = append(cls, cl)
		}
	}
	b.mu.Unlock()
	for _, cl := range cls {
		_ = b.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
	}
}

// netListener serves a listener the broker opened itself (so that the
// bound address is known before serving).
type netListener struct {
	id         string
	ln         net.Listener
	disconnect func(listener string)
	maxPacket  int
}

func (l *netListener) Init(*slog.Logger) error { return nil }
func (l *netListener) ID() string              { return l.id }
func (l *netListener) Address() string         { return l.ln.Addr().String() }
func (l *netListener) Protocol() string        { return "tcp" }

func (l *netListener) Serve(establish listeners.EstablishFn) {
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			return
		}
		go func() { _ = establish(l.id, newWireConn(conn, l.maxPacket)) }()
	}
}

func (l *netListener) Close(listeners.CloseFn) {
	_ = l.ln.Close()
	l.disconnect(l.id)
}

// handoffListener stands for connections handed over by the HTTP server
// (MQTT over WebSocket): it accepts nothing itself but lets the broker
// close those clients on shutdown like any listener's.
type handoffListener struct {
	id, path   string
	done       chan struct{}
	once       sync.Once
	disconnect func(listener string)
}

func newHandoffListener(id, path string, disconnect func(string)) *handoffListener {
	return &handoffListener{id: id, path: path, done: make(chan struct{}), disconnect: disconnect}
}

func (l *handoffListener) Init(*slog.Logger) error { return nil }
func (l *handoffListener) ID() string              { return l.id }
func (l *handoffListener) Address() string         { return l.path }
func (l *handoffListener) Protocol() string        { return "ws" }
func (l *handoffListener) Serve(listeners.EstablishFn) {
	<-l.done
}

func (l *handoffListener) Close(listeners.CloseFn) {
	l.once.Do(func() { close(l.done) })
	l.disconnect(l.id)
}
