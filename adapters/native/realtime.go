package native

import (
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/internal/httperr"
)

// RealtimeOptions configure the native realtime protocol at GET
// /v1/realtime. Zero values take the defaults.
type RealtimeOptions struct {
	// Heartbeat is how often the server sends a heartbeat on an otherwise
	// idle connection (default 15s).
	Heartbeat time.Duration
	// ConnectionStateTTL is how long a dropped connection can be resumed
	// with its connection key (default 2m; the engine's option of the same
	// name should match).
	ConnectionStateTTL time.Duration
	// MaxFrameSize bounds an inbound frame in bytes (default 1 MiB).
	MaxFrameSize int64
	// MaxPendingAttaches bounds attach and detach requests waiting to be
	// served on one connection (default 64).
	MaxPendingAttaches int
	// FrameRate and FrameBurst bound the frames a connection may send per
	// second (defaults 500 and 1000); a connection over the limit is told
	// and closed.
	FrameRate  float64
	FrameBurst int
	// WriteTimeout bounds one write to a client (default 10s).
	WriteTimeout time.Duration
	// OriginPatterns are the browser origins allowed to connect (host
	// patterns as in path.Match, "*" for any); same-origin is always
	// allowed.
	OriginPatterns []string
	// Logger receives the protocol's logs (default: discard).
	Logger *slog.Logger
	// Registerer receives its metrics (nil: none).
	Registerer prometheus.Registerer
}

func (o *RealtimeOptions) setDefaults() {
	if o.Heartbeat <= 0 {
		o.Heartbeat = 15 * time.Second
	}
	if o.ConnectionStateTTL <= 0 {
		o.ConnectionStateTTL = 2 * time.Minute
	}
	if o.MaxFrameSize <= 0 {
		o.MaxFrameSize = 1 << 20
	}
	if o.MaxPendingAttaches <= 0 {
		o.MaxPendingAttaches = 64
	}
	if o.FrameRate <= 0 {
		o.FrameRate = 500
	}
	if o.FrameBurst <= 0 {
		o.FrameBurst = 1000
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Realtime serves the native realtime protocol over WebSocket. It is safe
// for concurrent use.
type Realtime struct {
	engine  *core.Engine
	opts    RealtimeOptions
	log     *slog.Logger
	metrics *realtimeMetrics

	mu       sync.Mutex
	keys     map[string]*connState // by connection key
	drained  bool
	draining chan struct{}
	active   sync.WaitGroup
}

// connState is what a connection key resumes: the connection id, for the
// key and client it belongs to. A dropped connection's state expires after
// the connection-state TTL.
type connState struct {
	connectionID string
	keyName      string
	clientID     string
	live         *session    // the connection, while it is up
	expiry       *time.Timer // set once it is down
}

// NewRealtime returns the realtime protocol handler.
func NewRealtime(engine *core.Engine, opts RealtimeOptions) (*Realtime, error) {
	opts.setDefaults()
	m, err := newRealtimeMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("realtime metrics: %w", err)
	}
	return &Realtime{
		engine:   engine,
		opts:     opts,
		log:      opts.Logger,
		metrics:  m,
		keys:     map[string]*connState{},
		draining: make(chan struct{}),
	}, nil
}

// Drain tells every connection to reconnect elsewhere (a disconnect frame
// with a retry hint) and closes it; new connections are refused.
func (rt *Realtime) Drain() {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if !rt.drained {
		rt.drained = true
		close(rt.draining)
	}
}

// Wait waits until every connection has ended or ctx ends.
func (rt *Realtime) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		rt.active.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("realtime connections still open: %w", ctx.Err())
	}
}

// Query parameters of GET /v1/realtime.
const (
	rtParamClientID   = "clientId"
	rtParamResume     = "resume"
	rtParamFormat     = "format"
	rtParamHeartbeats = "heartbeats"
)

type connectParams struct {
	clientID   string
	resume     string
	heartbeats bool
	msgpack    bool // frames are MessagePack (binary) instead of JSON (text)
}

func parseConnectParams(r *http.Request) (connectParams, error) {
	p := connectParams{heartbeats: true}
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return p, apierr.Wrap(err, apierr.InvalidParameter, "malformed query string")
	}
	for name, vs := range vals {
		if len(vs) > 1 {
			return p, apierr.New(apierr.InvalidParameter, "parameter %s is given more than once", name)
		}
		v := vs[0]
		switch name {
		case auth.KeyParam, auth.AccessTokenParam:
		case rtParamClientID:
			p.clientID = v
		case rtParamResume:
			p.resume = v
		case rtParamFormat:
			switch v {
			case "json":
			case "msgpack":
				p.msgpack = true
			default:
				return p, apierr.New(apierr.InvalidParameter, "format %s is not supported; use json or msgpack", strconv.Quote(restTruncate(v)))
			}
		case rtParamHeartbeats:
			b, err := strconv.ParseBool(v)
			if err != nil {
				return p, apierr.New(apierr.InvalidParameter, "parameter heartbeats must be true or false")
			}
			p.heartbeats = b
		default:
			return p, apierr.New(apierr.InvalidParameter,
				"unknown parameter %s: the parameters are key, accessToken, clientId, resume, format and heartbeats", strconv.Quote(restTruncate(name)))
		}
	}
	return p, nil
}

// ServeHTTP upgrades to WebSocket and runs one connection.
func (rt *Realtime) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		writeHTTPError(w, apierr.New(apierr.MethodNotAllowed, "method %s is not allowed on /v1/realtime; allowed: GET (WebSocket)", r.Method))
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		OriginPatterns:  rt.opts.OriginPatterns,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		// Accept has answered the request itself.
		rt.log.Debug("realtime upgrade failed", "err", err, "remote", r.RemoteAddr)
		return
	}
	ws.SetReadLimit(rt.opts.MaxFrameSize)
	var identity *auth.Identity
	// Errors from here on are frames: a browser cannot read a refused
	// handshake.
	ctx := context.Background()
	fail := func(err error) {
		rt.metrics.refused.Inc()
		rt.writeFrame(ctx, ws, errorFrame{Action: actionError, Error: errorDetail(err)})
		_ = ws.Close(websocket.StatusPolicyViolation, closeReason(err))
	}
	if !rt.enter() {
		rt.writeFrame(ctx, ws, disconnectFrame{Action: actionDisconnect, Error: errorDetail(errShuttingDown), RetryIn: rt.retryHint()})
		_ = ws.Close(websocket.StatusGoingAway, "server shutting down")
		return
	}
	params, err := parseConnectParams(r)
	if err == nil {
		var creds auth.Credentials
		if creds, err = auth.CredentialsFromHTTP(r); err == nil {
			identity, err = rt.engine.Authenticate(creds)
		}
	}
	if err != nil {
		fail(err)
		rt.active.Done()
		return
	}
	var resumeErr error
	wantID := ""
	if params.resume != "" {
		if st, err := rt.takeState(params.resume, identity, params.clientID); err != nil {
			resumeErr = err
		} else {
			wantID = st.connectionID
		}
	}
	conn, err := rt.engine.Connect(identity, core.ConnectOptions{ConnectionID: wantID, ClientID: params.clientID})
	if err != nil {
		fail(err)
		rt.active.Done()
		return
	}
	resumed := wantID != "" && conn.ID() == wantID
	if wantID != "" && !resumed {
		resumeErr = apierr.New(apierr.ConnectionExpired, "the connection state expired; channels resume from their own serials")
	}
	s := newSession(rt, ws, conn, identity, params)
	// The connection is the session's now: serve it from a goroutine of
	// its own and let net/http's request state go.
	go func() {
		defer rt.active.Done()
		s.run(resumed, resumeErr)
	}()
}

var errShuttingDown = apierr.New(apierr.Unavailable, "the server is shutting down; reconnect (to another node) shortly")

// enter counts a connection as active unless the handler drains.
func (rt *Realtime) enter() bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.drained {
		return false
	}
	rt.active.Add(1)
	return true
}

func (rt *Realtime) retryHint() int64 {
	return int64(time.Second/time.Millisecond) + rand.Int64N(2000)
}

// newConnectionKey issues the key that resumes s's connection.
func (rt *Realtime) newConnectionKey(s *session) string {
	var b [18]byte
	_, _ = crand.Read(b[:])
	key := s.conn.ID() + "!" + base64.RawURLEncoding.EncodeToString(b[:])
	rt.mu.Lock()
	rt.keys[key] = &connState{connectionID: s.conn.ID(), keyName: s.conn.Identity().KeyName, clientID: s.conn.ClientID(), live: s}
	rt.mu.Unlock()
	return key
}

// takeState returns the state a connection key resumes and forgets the key
// (a resumed connection gets a new one). A client often notices a dead
// connection before the server does: if the key's connection still looks
// up, it is dropped first, so that the new one can take its place.
func (rt *Realtime) takeState(key string, identity *auth.Identity, clientID string) (*connState, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	st, ok := rt.keys[key]
	if !ok {
		return nil, apierr.New(apierr.ConnectionExpired, "unknown or expired connection key; channels resume from their own serials")
	}
	if st.keyName != identity.KeyName || (clientID != "" && clientID != st.clientID) {
		return nil, apierr.New(apierr.ConnectionExpired, "the connection key belongs to other credentials")
	}
	if old := st.live; old != nil {
		rt.mu.Unlock()
		old.kick()
		select {
		case <-old.ended:
		case <-time.After(rt.opts.WriteTimeout):
		}
		rt.mu.Lock()
		if rt.keys[key] != st || st.expiry == nil {
			return nil, apierr.New(apierr.ConnectionExpired, "the connection key is in use")
		}
	}
	st.expiry.Stop()
	delete(rt.keys, key)
	return st, nil
}

// dropped keeps a connection key resumable for the connection-state TTL;
// closed forgets it at once.
func (rt *Realtime) dropped(key string) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	st, ok := rt.keys[key]
	if !ok {
		return
	}
	st.live = nil
	st.expiry = time.AfterFunc(rt.opts.ConnectionStateTTL, func() {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		if rt.keys[key] == st {
			delete(rt.keys, key)
		}
	})
}

func (rt *Realtime) closed(key string) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	delete(rt.keys, key)
}

// writeFrame writes one frame outside a session (handshake errors).
func (rt *Realtime) writeFrame(ctx context.Context, ws *websocket.Conn, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, rt.opts.WriteTimeout)
	defer cancel()
	_ = ws.Write(ctx, websocket.MessageText, b)
}

// closeReason fits an error's message into a close frame (123 bytes).
func closeReason(err error) string {
	msg := apierr.From(err).Message
	if len(msg) > 120 {
		msg = msg[:120]
	}
	return msg
}

func writeHTTPError(w http.ResponseWriter, err error) { httperr.Write(w, err) }
