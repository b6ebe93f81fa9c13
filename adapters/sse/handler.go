// Package sse serves channels to browsers and simple HTTP clients over
// Server-Sent Events (GET /v1/sse). One stream carries several channels;
// every event id encodes the stream's position on all of them, so the
// EventSource's automatic reconnect (which sends Last-Event-ID) resumes
// every channel exactly, with no loss and no duplicate.
//
// See docs/sse.md for the events and parameters.
package sse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/core/position"
	"github.com/switchboardhq/switchboard/internal/httperr"
)

// Options configure the SSE endpoint. Zero values take the defaults.
type Options struct {
	// Heartbeat is the interval of heartbeat comments (default 15s).
	Heartbeat time.Duration
	// Retry is the reconnection delay hinted to clients with "retry:"
	// (default 2s). When the server drains, streams end with a hint
	// between Retry and three times Retry, to spread reconnections.
	Retry time.Duration
	// MaxChannels bounds the channels of one stream (default 100).
	MaxChannels int
	// MaxStreamsPerKey bounds the open streams of one API key; anonymous
	// and development-mode streams share one count (default 10000).
	MaxStreamsPerKey int
	// Buffer bounds a stream's queue of undelivered events before the
	// slow-consumer policy applies (0: the engine's subscriber buffer).
	Buffer int
	// WriteTimeout bounds how long one write to a client may block
	// before the stream is dropped (default 30s).
	WriteTimeout time.Duration
	// Logger receives the endpoint's logs (default slog.Default()).
	Logger *slog.Logger
	// Registerer receives the endpoint's metrics (nil: none).
	Registerer prometheus.Registerer
}

func (o *Options) setDefaults() {
	if o.Heartbeat <= 0 {
		o.Heartbeat = 15 * time.Second
	}
	if o.Retry <= 0 {
		o.Retry = 2 * time.Second
	}
	if o.MaxChannels <= 0 {
		o.MaxChannels = 100
	}
	if o.MaxStreamsPerKey <= 0 {
		o.MaxStreamsPerKey = 10000
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Handler serves GET /v1/sse. It is safe for concurrent use.
type Handler struct {
	engine  *core.Engine
	opts    Options
	log     *slog.Logger
	metrics *metrics

	mu       sync.Mutex
	streams  map[string]int // open streams per key name
	drained  bool           // set by Drain; no stream starts after it
	draining chan struct{}  // closed by Drain
	active   sync.WaitGroup // open streams
}

// New returns the SSE handler for engine.
func New(engine *core.Engine, opts Options) (*Handler, error) {
	opts.setDefaults()
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("sse metrics: %w", err)
	}
	return &Handler{
		engine:   engine,
		opts:     opts,
		log:      opts.Logger,
		metrics:  m,
		streams:  map[string]int{},
		draining: make(chan struct{}),
	}, nil
}

// Drain ends every open stream with a reconnection hint, and answers new
// requests with an empty stream and the same hint, so that clients
// reconnect to another node (or to this one once it is back). Call it when
// the server starts shutting down.
func (h *Handler) Drain() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.drained {
		h.drained = true
		close(h.draining)
	}
}

// ServeHTTP serves one stream.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		h.refuse(w, r, apierr.New(apierr.MethodNotAllowed, "method %s is not allowed on /v1/sse; allowed: GET", r.Method))
		return
	}
	select {
	case <-h.draining:
		h.answerDraining(w)
		return
	default:
	}
	req, err := parseRequest(r, h.opts.MaxChannels)
	if err != nil {
		h.refuse(w, r, err)
		return
	}
	creds, err := auth.CredentialsFromHTTP(r)
	if err != nil {
		h.refuse(w, r, err)
		return
	}
	identity, err := h.engine.Authenticate(creds)
	if err != nil {
		h.refuse(w, r, err)
		return
	}
	// Every channel is checked before the stream opens: a denied channel
	// refuses the whole stream rather than leaving it silently partial.
	for _, name := range req.names {
		if err := identity.Check(name, auth.OpSubscribe); err != nil {
			h.refuse(w, r, err)
			return
		}
	}
	codec := newTokenCodec(req.names)
	st := &stream{h: h, req: req, codec: codec}
	if req.lastEvent != "" {
		if st.positions, err = codec.decode(req.lastEvent); err != nil {
			h.refuse(w, r, err)
			return
		}
	} else {
		st.positions = make([]position.Position, len(req.names))
	}
	release, err := h.acquire(identity.KeyName)
	if errors.Is(err, errDraining) {
		h.answerDraining(w)
		return
	}
	if err != nil {
		h.refuse(w, r, err)
		return
	}
	conn, err := h.engine.Connect(identity, core.ConnectOptions{Buffer: h.opts.Buffer})
	if err != nil {
		release()
		h.refuse(w, r, err)
		return
	}
	st.conn = conn
	out, detached, err := openSink(w, r, h.opts.WriteTimeout)
	if err != nil {
		conn.Close()
		release()
		h.log.Debug("sse stream not opened", "err", err, "remote", r.RemoteAddr)
		return
	}
	st.sink = out
	if !detached {
		h.serve(r.Context(), st, identity.ExpiresAt, release)
		return
	}
	// The connection is the stream's own now: serve it from a goroutine of
	// its own and let net/http's goroutines and buffers go.
	go h.serve(context.Background(), st, identity.ExpiresAt, release)
}

// serve runs an open stream to its end and releases what it holds.
func (h *Handler) serve(ctx context.Context, st *stream, expiresAt time.Time, release func()) {
	defer release()
	defer st.conn.Close()
	defer st.sink.close()
	h.metrics.streams.Inc()
	defer h.metrics.streams.Dec()
	reason := st.run(ctx, expiresAt)
	h.metrics.streamEnds.WithLabelValues(reason).Inc()
	h.log.Debug("sse stream ended", "connectionId", st.conn.ID(), "channels", len(st.req.names), "reason", reason)
}

// Wait waits until every stream has ended (after Drain) or ctx ends.
func (h *Handler) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		h.active.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("sse streams still open: %w", ctx.Err())
	}
}

// refuse answers a request that did not open a stream with a JSON error.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, err error) {
	status := httperr.Write(w, err)
	h.metrics.refused.WithLabelValues(fmt.Sprint(status)).Inc()
	if status >= 500 && status != http.StatusServiceUnavailable {
		h.log.Error("sse request failed", "status", status, "err", err)
		return
	}
	h.log.Debug("sse request refused", "status", status, "code", int(apierr.CodeOf(err)), "message", apierr.From(err).Message,
		"remote", r.RemoteAddr)
}

// acquire counts a stream against its key's limit and as active, unless
// the handler is draining.
func (h *Handler) acquire(key string) (release func(), err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.drained {
		return nil, errDraining
	}
	if h.streams[key] >= h.opts.MaxStreamsPerKey {
		return nil, apierr.New(apierr.RateLimited, "this key already has %d open streams, the limit", h.opts.MaxStreamsPerKey)
	}
	h.streams[key]++
	h.active.Add(1)
	return func() {
		h.mu.Lock()
		if h.streams[key]--; h.streams[key] == 0 {
			delete(h.streams, key)
		}
		h.mu.Unlock()
		h.active.Done()
	}, nil
}

// errDraining refuses a stream while the handler drains.
var errDraining = errors.New("draining")

// answerDraining answers a request that arrives while the server drains.
// An EventSource gives up for good on any status but 200, so it gets an
// empty stream with a retry hint and comes back shortly, here or to
// another node.
func (h *Handler) answerDraining(w http.ResponseWriter) {
	setStreamHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(appendRetry(nil, h.drainRetry()))
	h.metrics.streamEnds.WithLabelValues("draining").Inc()
}

// drainRetry is the reconnection hint sent when the server drains: spread
// between Retry and three times Retry so clients do not come back at once.
func (h *Handler) drainRetry() time.Duration {
	return h.opts.Retry + rand.N(2*h.opts.Retry+1)
}

// errStreamEnd ends a stream after an event that tells the client why.
var errStreamEnd = errors.New("stream ended")

// attachResult is the outcome of attaching one channel of a stream.
type attachResult struct {
	index int
	att   *core.Attachment
	err   error
}

// attachAll attaches the stream's channels in order, reporting each result.
// It runs beside the stream loop because an attach with a long replay
// waits for the loop to make room in the connection's queue.
func (s *stream) attachAll(ctx context.Context, results chan<- attachResult) {
	for i, spec := range s.req.specs {
		opts := core.AttachOptions{Presence: s.req.presence}
		if !spec.HasRewind {
			opts.Rewind = s.req.rewind
		}
		if !s.positions[i].IsZero() {
			opts.From = s.positions[i].String()
		}
		a, err := s.conn.Attach(ctx, spec.String(), opts)
		results <- attachResult{index: i, att: a, err: err}
		if err != nil {
			return
		}
	}
}

// ctxCause names why ctx ended for the stream-end metric.
func ctxCause(ctx context.Context) string {
	if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		return "timeout"
	}
	return "client-closed"
}
