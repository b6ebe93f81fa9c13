// Package client is the Go SDK of Switchboard's native realtime protocol
// (docs/protocol.md). A Client keeps one WebSocket connection to the
// server and makes network failures invisible: it reconnects with backoff
// and jitter, tries fallback hosts, resumes its connection and every
// attached channel from the last message it received (each message exactly
// once, in order), and republishes unacknowledged messages under the same
// ids so that nothing is published twice.
//
//	c, err := client.New(client.Options{URL: "http://localhost:8080", Key: "app:secret"})
//	...
//	defer c.Close()
//	ch := c.Channel("chat:room-1")
//	unsubscribe, err := ch.Subscribe(ctx, func(m *client.Message) { fmt.Println(m.String()) })
//	_, err = ch.Publish(ctx, "greeting", "hello")
package client

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// ConnectionState is the state of a Client's connection.
type ConnectionState int

// Connection states.
const (
	StateInitialized  ConnectionState = iota // created, not connecting yet
	StateConnecting                          // dialling or waiting for connected
	StateConnected                           // live
	StateDisconnected                        // lost; retrying (within the connection-state TTL)
	StateSuspended                           // down longer than the TTL; retrying less often
	StateClosing                             // Close was called
	StateClosed                              // closed by Close
	StateFailed                              // refused for good (credentials)
)

var stateNames = [...]string{"initialized", "connecting", "connected", "disconnected", "suspended", "closing", "closed", "failed"}

func (s ConnectionState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// StateChange is a connection state transition.
type StateChange struct {
	Previous, Current ConnectionState
	// Reason is why, when an error caused it.
	Reason error
	// RetryIn is the delay before the next attempt, when retrying.
	RetryIn time.Duration
}

// Options configure a Client. URL and one of Key, Token or AuthCallback
// are required (except against a server in development mode).
type Options struct {
	// URL is the server's base URL (http or https; ws and wss also work).
	URL string
	// FallbackURLs are tried in turn when URL (or the current host) cannot
	// be reached. After FallbackRetryAfter on a fallback, the next
	// connection attempt starts with URL again.
	FallbackURLs       []string
	FallbackRetryAfter time.Duration // default 10m

	// Key is an API key "name:secret".
	Key string
	// Token is a token to connect with. Without AuthCallback it cannot be
	// renewed.
	Token string
	// AuthCallback returns a fresh token. It is called before connecting
	// and ahead of every expiry, so that a long-lived client never runs on
	// an expired token.
	AuthCallback func(ctx context.Context) (string, error)
	// ClientID identifies this client (for presence and on its messages).
	ClientID string
	// Format is the frame format: "json" (default) or "msgpack"
	// (MessagePack, smaller, binary data without base64).
	Format string
	// Recover is a recovery key (Client.RecoveryKey) from an earlier
	// client of the same app: its connection and channels are resumed.
	Recover string

	// MinRetryDelay and MaxRetryDelay bound the reconnection backoff
	// (defaults 100ms and 15s); each delay is jittered.
	MinRetryDelay time.Duration
	MaxRetryDelay time.Duration
	// SuspendedRetryDelay is the delay between attempts once suspended
	// (default 30s).
	SuspendedRetryDelay time.Duration
	// MaxQueuedPublishes bounds the publishes waiting while disconnected
	// (default 1000).
	MaxQueuedPublishes int
	// SubscriberBuffer bounds the messages waiting for a channel's
	// subscribers (default 10000); when it is full the SDK stops reading
	// and the server's slow-consumer policy applies.
	SubscriberBuffer int

	// HTTPClient is used for the handshake and REST calls (default: a
	// client with a 30s timeout for REST).
	HTTPClient *http.Client
	// Logger receives the SDK's logs (default: discard).
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.FallbackRetryAfter <= 0 {
		o.FallbackRetryAfter = 10 * time.Minute
	}
	if o.MinRetryDelay <= 0 {
		o.MinRetryDelay = 100 * time.Millisecond
	}
	if o.MaxRetryDelay <= 0 {
		o.MaxRetryDelay = 15 * time.Second
	}
	if o.SuspendedRetryDelay <= 0 {
		o.SuspendedRetryDelay = 30 * time.Second
	}
	if o.MaxQueuedPublishes <= 0 {
		o.MaxQueuedPublishes = 1000
	}
	if o.SubscriberBuffer <= 0 {
		o.SubscriberBuffer = 10000
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Client is a connection to a Switchboard server with its channels. It is
// safe for concurrent use.
type Client struct {
	opts  Options
	hosts []*url.URL // primary first
	log   *slog.Logger

	ctx    context.Context // the client's lifetime
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu            sync.Mutex
	state         ConnectionState
	stateChanged  chan struct{} // closed and replaced on every change
	listeners     map[int]func(StateChange)
	nextListener  int
	lastErr       error
	connID        string
	connKey       string
	details       connectionDetails
	link          *link // the live connection, when connected
	channels      map[string]*Channel
	pending       []*pendingOp // awaiting ack, in msgSerial order
	nextMsgSerial int64
	token         string
	tokenExpires  time.Time
	hostIndex     int
	onFallbackAt  time.Time
	downSince     time.Time
	idPrefix      string
	idCounter     uint64
	closeDone     chan struct{}
}

// New creates a client and starts connecting in the background. Use
// Connect to wait for the connection.
func New(opts Options) (*Client, error) {
	opts.setDefaults()
	if opts.URL == "" {
		return nil, errors.New("client: Options.URL is required")
	}
	switch opts.Format {
	case "", "json", "msgpack":
	default:
		return nil, fmt.Errorf("client: Options.Format %q: use json or msgpack", opts.Format)
	}
	var hosts []*url.URL
	for _, raw := range append([]string{opts.URL}, opts.FallbackURLs...) {
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("client: bad URL %q: %w", raw, err)
		}
		switch u.Scheme {
		case "http", "ws":
			u.Scheme = "http"
		case "https", "wss":
			u.Scheme = "https"
		default:
			return nil, fmt.Errorf("client: URL %q: scheme must be http, https, ws or wss", raw)
		}
		u.Path = strings.TrimSuffix(u.Path, "/")
		hosts = append(hosts, u)
	}
	var rnd [9]byte
	_, _ = rand.Read(rnd[:])
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		opts: opts, hosts: hosts, log: opts.Logger, ctx: ctx, cancel: cancel,
		stateChanged: make(chan struct{}),
		listeners:    map[int]func(StateChange){},
		channels:     map[string]*Channel{},
		token:        opts.Token,
		idPrefix:     base64.RawURLEncoding.EncodeToString(rnd[:]),
		closeDone:    make(chan struct{}),
	}
	if opts.Recover != "" {
		if err := c.applyRecoveryKey(opts.Recover); err != nil {
			cancel()
			return nil, err
		}
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.connectLoop()
	}()
	return c, nil
}

// State returns the connection state.
func (c *Client) State() ConnectionState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// ConnectionID returns the server's id of the current (or last)
// connection.
func (c *Client) ConnectionID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connID
}

// ClientID returns the client id the connection uses.
func (c *Client) ClientID() string { return c.opts.ClientID }

// OnStateChange registers fn for connection state changes; fn must not
// block. It returns a function that unregisters it.
func (c *Client) OnStateChange(fn func(StateChange)) (unregister func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := c.nextListener
	c.nextListener++
	c.listeners[id] = fn
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.listeners, id)
	}
}

// Connect waits until the client is connected. It fails when ctx ends or
// the connection failed for good or was closed.
func (c *Client) Connect(ctx context.Context) error {
	return c.waitState(ctx, func(s ConnectionState) (bool, error) {
		switch s {
		case StateConnected:
			return true, nil
		case StateFailed:
			return true, c.failure()
		case StateClosed, StateClosing:
			return true, ErrClosed
		}
		return false, nil
	})
}

func (c *Client) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastErr != nil {
		return c.lastErr
	}
	return errors.New("client: connection failed")
}

// waitState waits until done says so for the current state.
func (c *Client) waitState(ctx context.Context, done func(ConnectionState) (bool, error)) error {
	for {
		c.mu.Lock()
		state, changed := c.state, c.stateChanged
		c.mu.Unlock()
		if ok, err := done(state); ok {
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// setStateLocked changes the state and notifies listeners (outside the
// lock, in order, from the caller's goroutine).
func (c *Client) setStateLocked(s ConnectionState, reason error, retryIn time.Duration) func() {
	if c.state == s && reason == nil {
		return func() {}
	}
	ch := StateChange{Previous: c.state, Current: s, Reason: reason, RetryIn: retryIn}
	c.state = s
	if reason != nil {
		c.lastErr = reason
	}
	close(c.stateChanged)
	c.stateChanged = make(chan struct{})
	fns := make([]func(StateChange), 0, len(c.listeners))
	for _, fn := range c.listeners {
		fns = append(fns, fn)
	}
	c.log.Debug("connection state", "from", ch.Previous.String(), "to", s.String(), "reason", reason)
	return func() {
		for _, fn := range fns {
			fn(ch)
		}
	}
}

// Close closes the connection in an orderly way (presence members leave at
// once), fails queued publishes with ErrClosed and stops every goroutine
// of the client. It is safe to call more than once.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.state == StateClosed || c.state == StateClosing {
		c.mu.Unlock()
		<-c.closeDone
		return nil
	}
	notify := c.setStateLocked(StateClosing, nil, 0)
	l := c.link
	c.mu.Unlock()
	notify()
	if l != nil {
		l.close(2 * time.Second)
	}
	c.cancel()
	c.wg.Wait()
	c.mu.Lock()
	pending := c.pending
	c.pending = nil
	channels := make([]*Channel, 0, len(c.channels))
	for _, ch := range c.channels {
		channels = append(channels, ch)
	}
	notify = c.setStateLocked(StateClosed, nil, 0)
	c.mu.Unlock()
	for _, p := range pending {
		p.finish(nil, ErrClosed)
	}
	for _, ch := range channels {
		ch.shutdown()
	}
	notify()
	close(c.closeDone)
	return nil
}

// nextID returns a message id unique to this client: retries of the
// message reuse it, so the server accepts it once.
func (c *Client) nextIDLocked() string {
	c.idCounter++
	return fmt.Sprintf("%s:%d", c.idPrefix, c.idCounter)
}

// backoff returns the delay before attempt n (0-based), jittered to
// between half and all of the exponential delay.
func (c *Client) backoff(n int) time.Duration {
	d := c.opts.MinRetryDelay << min(n, 20)
	if d <= 0 || d > c.opts.MaxRetryDelay {
		d = c.opts.MaxRetryDelay
	}
	return d/2 + time.Duration(mrand.Int64N(int64(d/2)+1))
}

// host returns the host to try now, returning to the primary after
// FallbackRetryAfter on a fallback.
func (c *Client) hostLocked() *url.URL {
	if c.hostIndex != 0 && time.Since(c.onFallbackAt) > c.opts.FallbackRetryAfter {
		c.hostIndex = 0
	}
	return c.hosts[c.hostIndex]
}

// nextHostLocked moves to the next host after a failure to reach the
// current one.
func (c *Client) nextHostLocked() {
	if len(c.hosts) < 2 {
		return
	}
	c.hostIndex = (c.hostIndex + 1) % len(c.hosts)
	if c.hostIndex != 0 {
		c.onFallbackAt = time.Now()
	}
}

// connectLoop keeps the client connected until it is closed or fails.
func (c *Client) connectLoop() {
	attempt := 0
	for c.ctx.Err() == nil {
		c.mu.Lock()
		if c.state == StateClosing {
			c.mu.Unlock()
			return
		}
		if c.state != StateSuspended {
			notify := c.setStateLocked(StateConnecting, nil, 0)
			c.mu.Unlock()
			notify()
		} else {
			c.mu.Unlock()
		}
		l, hello, err := c.dial(c.ctx)
		if err != nil {
			if c.ctx.Err() != nil {
				return
			}
			if fatal(err) {
				c.failAll(err)
				return
			}
			c.mu.Lock()
			c.nextHostLocked()
			c.mu.Unlock()
			c.waitRetry(attempt, err)
			attempt++
			continue
		}
		attempt = 0
		if !c.connected(l, hello) {
			l.close(0)
			return // closing
		}
		err = l.readLoop()
		c.disconnected(l)
		if c.ctx.Err() != nil || c.State() == StateClosing {
			return
		}
		if fatal(err) {
			c.failAll(err)
			return
		}
		var se *Error
		if errors.As(err, &se) && se.Code == codeUnavailable {
			// The server is draining: try the next host first.
			c.mu.Lock()
			c.nextHostLocked()
			c.mu.Unlock()
		}
		c.log.Debug("connection lost", "err", err)
		c.waitRetry(-1, err)
	}
}

// waitRetry moves to disconnected (or suspended after the connection-state
// TTL) and waits before the next attempt. attempt -1 retries at once after
// a connection that was up.
func (c *Client) waitRetry(attempt int, reason error) {
	c.mu.Lock()
	if c.downSince.IsZero() {
		c.downSince = time.Now()
	}
	ttl := time.Duration(c.details.ConnectionStateTTL) * time.Millisecond
	if ttl <= 0 {
		ttl = 2 * time.Minute
	}
	state := StateDisconnected
	var delay time.Duration
	switch {
	case time.Since(c.downSince) > ttl:
		state = StateSuspended
		delay = c.opts.SuspendedRetryDelay
	case attempt < 0:
		delay = 0
	default:
		delay = c.backoff(attempt)
	}
	notify := c.setStateLocked(state, reason, delay)
	var failed []*pendingOp
	if state == StateSuspended {
		failed = c.takeQueuedLocked()
	}
	c.mu.Unlock()
	notify()
	for _, p := range failed {
		p.finish(nil, ErrSuspended)
	}
	if delay == 0 {
		return
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.ctx.Done():
	}
}

// failAll moves to failed: nothing more will be tried; waiting publishes
// and attaches fail with err.
func (c *Client) failAll(err error) {
	c.mu.Lock()
	notify := c.setStateLocked(StateFailed, err, 0)
	pending := c.pending
	c.pending = nil
	channels := make([]*Channel, 0, len(c.channels))
	for _, ch := range c.channels {
		channels = append(channels, ch)
	}
	c.mu.Unlock()
	notify()
	for _, p := range pending {
		p.finish(nil, err)
	}
	for _, ch := range channels {
		ch.settle(ChannelFailed, err)
	}
}

// connected installs a new live connection: channels attach again from
// where they were, and unacknowledged operations are sent again. It
// reports false when the client is closing.
func (c *Client) connected(l *link, hello *connectedFrame) bool {
	c.mu.Lock()
	if c.state == StateClosing {
		c.mu.Unlock()
		return false
	}
	c.link = l
	c.connID = hello.ConnectionID
	c.connKey = hello.ConnectionKey
	c.details = hello.ConnectionDetails
	c.downSince = time.Time{}
	channels := make([]*Channel, 0, len(c.channels))
	for _, ch := range c.channels {
		channels = append(channels, ch)
	}
	pending := append([]*pendingOp(nil), c.pending...)
	notify := c.setStateLocked(StateConnected, nil, 0)
	c.mu.Unlock()
	notify()
	if hello.Error != nil {
		c.log.Debug("connection not resumed", "err", hello.Error)
	}
	for _, ch := range channels {
		ch.reattach(l, hello.Resumed)
	}
	for _, p := range pending {
		_ = l.send(p.frame)
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.renewTokens(l)
	}()
	return true
}

func (c *Client) disconnected(l *link) {
	c.mu.Lock()
	if c.link == l {
		c.link = nil
	}
	c.mu.Unlock()
	l.close(0)
}

// currentLink returns the live connection or nil.
func (c *Client) currentLink() *link {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.link
}
