package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboardhq/switchboard/internal/wireformat"
)

// connectionDetails is the connected frame's limits.
type connectionDetails struct {
	ConnectionStateTTL int64 `json:"connectionStateTtl"`
	MaxMessageSize     int   `json:"maxMessageSize"`
	MaxFrameSize       int64 `json:"maxFrameSize"`
	HeartbeatInterval  int64 `json:"heartbeatInterval"`
}

type connectedFrame struct {
	ConnectionID      string            `json:"connectionId"`
	ConnectionKey     string            `json:"connectionKey"`
	ClientID          string            `json:"clientId"`
	Resumed           bool              `json:"resumed"`
	ConnectionDetails connectionDetails `json:"connectionDetails"`
	Error             *Error            `json:"error"`
}

// serverFrame is every frame the server sends; fields by action.
type serverFrame struct {
	Action        string           `json:"action"`
	Channel       string           `json:"channel"`
	ChannelSerial string           `json:"channelSerial"`
	Resumed       bool             `json:"resumed"`
	Continuity    *continuityInfo  `json:"continuity"`
	Reason        string           `json:"reason"`
	Messages      []wireMessage    `json:"messages"`
	Presence      []PresenceMember `json:"presence"`
	Cursor        string           `json:"cursor"`
	MsgSerial     int64            `json:"msgSerial"`
	Count         int              `json:"count"`
	Results       []wireResult     `json:"results"`
	Expires       int64            `json:"expires"`
	RetryIn       int64            `json:"retryIn"`
	Error         *Error           `json:"error"`
}

type continuityInfo struct {
	Reason        string `json:"reason"`
	ChannelSerial string `json:"channelSerial"`
}

type wireResult struct {
	ID        string `json:"id"`
	Serial    string `json:"serial"`
	Timestamp int64  `json:"timestamp"`
	Duplicate bool   `json:"duplicate"`
}

// link is one WebSocket connection to the server.
type link struct {
	c         *Client
	ws        *websocket.Conn
	msgpack   bool
	heartbeat time.Duration
	done      chan struct{} // closed when the link is closed
	closeOnce sync.Once
}

// dial connects to the current host and waits for the connected frame.
func (c *Client) dial(ctx context.Context) (*link, *connectedFrame, error) {
	token, err := c.currentToken(ctx)
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	host := c.hostLocked()
	resume := c.connKey
	c.mu.Unlock()

	u := *host
	if u.Scheme == "https" {
		u.Scheme = "wss"
	} else {
		u.Scheme = "ws"
	}
	u.Path += "/v1/realtime"
	q := url.Values{}
	if c.opts.ClientID != "" {
		q.Set("clientId", c.opts.ClientID)
	}
	if resume != "" {
		q.Set("resume", resume)
	}
	msgpack := c.opts.Format == "msgpack"
	if msgpack {
		q.Set("format", "msgpack")
	}
	u.RawQuery = q.Encode()
	header := http.Header{}
	switch {
	case token != "":
		header.Set("Authorization", "Bearer "+token)
	case c.opts.Key != "":
		header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(c.opts.Key)))
	}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(dctx, u.String(), &websocket.DialOptions{HTTPHeader: header, HTTPClient: noTimeout(c.opts.HTTPClient)})
	if err != nil {
		if resp != nil && resp.StatusCode >= 400 {
			return nil, nil, fmt.Errorf("connecting to %s: HTTP %d: %w", host.Host, resp.StatusCode, err)
		}
		return nil, nil, fmt.Errorf("connecting to %s: %w", host.Host, err)
	}
	ws.SetReadLimit(64 << 20)
	l := &link{c: c, ws: ws, msgpack: msgpack, done: make(chan struct{})}
	b, err := l.read(dctx)
	if err != nil {
		_ = ws.CloseNow()
		return nil, nil, fmt.Errorf("connecting to %s: %w", host.Host, err)
	}
	var f struct {
		Action string `json:"action"`
		Error  *Error `json:"error"`
		connectedFrame
	}
	if err := json.Unmarshal(b, &f); err != nil {
		_ = ws.CloseNow()
		return nil, nil, fmt.Errorf("connecting to %s: bad first frame: %w", host.Host, err)
	}
	switch f.Action {
	case "connected":
	case "error", "disconnect":
		_ = ws.CloseNow()
		if f.Error != nil {
			return nil, nil, f.Error
		}
		return nil, nil, fmt.Errorf("connecting to %s: refused", host.Host)
	default:
		_ = ws.CloseNow()
		return nil, nil, fmt.Errorf("connecting to %s: unexpected first frame %q", host.Host, f.Action)
	}
	hello := f.connectedFrame
	hello.Error = f.Error
	hb := time.Duration(hello.ConnectionDetails.HeartbeatInterval) * time.Millisecond
	if hb <= 0 {
		hb = 15 * time.Second
	}
	l.heartbeat = hb
	return l, &hello, nil
}

// read reads one frame as JSON (converting MessagePack frames).
func (l *link) read(ctx context.Context) ([]byte, error) {
	typ, b, err := l.ws.Read(ctx)
	if err != nil {
		return nil, err
	}
	if !l.msgpack {
		return b, nil
	}
	if typ != websocket.MessageBinary {
		return b, nil // a handshake error before the format applied
	}
	return wireformat.MsgpackToJSON(b)
}

// noTimeout returns hc without an overall timeout, which would cut the
// WebSocket after it.
func noTimeout(hc *http.Client) *http.Client {
	if hc.Timeout == 0 {
		return hc
	}
	cp := *hc
	cp.Timeout = 0
	return &cp
}

// send writes one frame.
func (l *link) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	typ := websocket.MessageText
	if l.msgpack {
		if b, err = wireformat.JSONToMsgpack(b); err != nil {
			return err
		}
		typ = websocket.MessageBinary
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return l.ws.Write(ctx, typ, b)
}

// close ends the link, with an orderly close frame when wait > 0.
func (l *link) close(wait time.Duration) {
	l.closeOnce.Do(func() {
		if wait > 0 {
			_ = l.send(map[string]string{"action": "close"})
			select {
			case <-l.done:
			case <-time.After(wait):
			}
		}
		_ = l.ws.CloseNow()
	})
}

// readLoop reads frames until the connection ends; it returns why. A
// connection silent for two heartbeat intervals counts as dead.
func (l *link) readLoop() error {
	defer close(l.done)
	for {
		ctx, cancel := context.WithTimeout(l.c.ctx, 2*l.heartbeat+2*time.Second)
		b, err := l.read(ctx)
		cancel()
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return errors.New("connection silent for two heartbeat intervals")
			}
			return err
		}
		var f serverFrame
		if err := json.Unmarshal(b, &f); err != nil {
			return fmt.Errorf("bad frame from the server: %w", err)
		}
		if err := l.c.handle(l, &f); err != nil {
			return err
		}
	}
}

// handle dispatches one server frame; an error ends the connection.
func (c *Client) handle(l *link, f *serverFrame) error {
	switch f.Action {
	case "heartbeat":
	case "message":
		if ch := c.channelIfExists(f.Channel); ch != nil {
			return ch.deliver(f.Messages)
		}
	case "attached", "detached", "continuity":
		if ch := c.channelIfExists(f.Channel); ch != nil {
			ch.control(l, f)
		}
	case "presence":
		if ch := c.channelIfExists(f.Channel); ch != nil {
			ch.presenceEvents(f.Presence)
		}
	case "sync":
		if ch := c.channelIfExists(f.Channel); ch != nil {
			ch.syncPage(f)
		}
	case "ack", "nack":
		c.acked(f)
	case "authorized":
		c.mu.Lock()
		if f.Expires > 0 {
			c.tokenExpires = time.UnixMilli(f.Expires)
		}
		c.mu.Unlock()
	case "error":
		if f.Channel != "" {
			if ch := c.channelIfExists(f.Channel); ch != nil {
				ch.control(l, f)
			}
			return nil
		}
		if f.Error != nil {
			return f.Error
		}
		return errors.New("server error")
	case "disconnect":
		if f.Error != nil {
			return f.Error
		}
		return &Error{Code: codeUnavailable, Message: "server asked to reconnect elsewhere"}
	case "closed":
		return ErrClosed
	default:
		c.log.Debug("unknown frame", "action", f.Action)
	}
	return nil
}

// token handling

// currentToken returns the token to connect with, asking the auth
// callback for a fresh one when it is missing or close to expiry.
func (c *Client) currentToken(ctx context.Context) (string, error) {
	c.mu.Lock()
	tok, exp := c.token, c.tokenExpires
	c.mu.Unlock()
	if c.opts.AuthCallback == nil {
		return tok, nil
	}
	if tok != "" && !dueForRenewal(tok, exp) {
		return tok, nil
	}
	return c.refreshToken(ctx)
}

// renewalLead is how long before its expiry a token is renewed: a fifth of
// its lifetime, at most a minute.
func renewalLead(tok string) time.Duration {
	iat, exp := tokenTimes(tok)
	if iat.IsZero() || exp.IsZero() {
		return 30 * time.Second
	}
	return min(exp.Sub(iat)/5, time.Minute)
}

func dueForRenewal(tok string, exp time.Time) bool {
	return !exp.IsZero() && time.Until(exp) <= renewalLead(tok)
}

func (c *Client) refreshToken(ctx context.Context) (string, error) {
	tok, err := c.opts.AuthCallback(ctx)
	if err != nil {
		return "", fmt.Errorf("auth callback: %w", err)
	}
	c.mu.Lock()
	c.token = tok
	_, c.tokenExpires = tokenTimes(tok)
	c.mu.Unlock()
	return tok, nil
}

// tokenTimes reads a JWT's iat and exp claims without verifying them (the
// server verifies); zero when absent.
func tokenTimes(tok string) (iat, exp time.Time) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return
	}
	var claims struct {
		Iat int64 `json:"iat"`
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(b, &claims) != nil {
		return
	}
	if claims.Iat != 0 {
		iat = time.Unix(claims.Iat, 0)
	}
	if claims.Exp != 0 {
		exp = time.Unix(claims.Exp, 0)
	}
	return
}

// renewTokens renews the token in band ahead of its expiry, for as long as
// l is up.
func (c *Client) renewTokens(l *link) {
	if c.opts.AuthCallback == nil {
		return
	}
	for {
		c.mu.Lock()
		tok, exp := c.token, c.tokenExpires
		if exp.IsZero() {
			_, exp = tokenTimes(tok)
		}
		c.mu.Unlock()
		if exp.IsZero() {
			return
		}
		// Renew a fifth of the token's lifetime (at most a minute) before
		// it expires; a token already due waits a second, so that a
		// callback handing out expired tokens cannot spin.
		wait := time.Until(exp) - renewalLead(tok)
		if wait <= 0 {
			wait = time.Second
		}
		t := time.NewTimer(wait)
		select {
		case <-l.done:
			t.Stop()
			return
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		tok, err := c.refreshToken(c.ctx)
		if err != nil {
			c.log.Warn("token renewal failed", "err", err)
			select {
			case <-l.done:
				return
			case <-c.ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		if err := l.send(map[string]string{"action": "auth", "accessToken": tok}); err != nil {
			return
		}
	}
}

// Recovery keys

type recoveryKey struct {
	ConnectionKey string            `json:"connectionKey"`
	Serials       map[string]string `json:"serials"`
}

// RecoveryKey returns a key with which a new client of the same app (for
// example a new process) resumes this client's connection and channels:
// pass it as Options.Recover.
func (c *Client) RecoveryKey() string {
	c.mu.Lock()
	k := recoveryKey{ConnectionKey: c.connKey, Serials: map[string]string{}}
	channels := make([]*Channel, 0, len(c.channels))
	for _, ch := range c.channels {
		channels = append(channels, ch)
	}
	c.mu.Unlock()
	for _, ch := range channels {
		if s := ch.Serial(); s != "" && ch.wantsAttached() {
			k.Serials[ch.name] = s
		}
	}
	b, _ := json.Marshal(k)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (c *Client) applyRecoveryKey(s string) error {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return fmt.Errorf("client: bad recovery key: %w", err)
	}
	var k recoveryKey
	if err := json.Unmarshal(b, &k); err != nil {
		return fmt.Errorf("client: bad recovery key: %w", err)
	}
	c.connKey = k.ConnectionKey
	for name, serial := range k.Serials {
		ch := c.channelLocked(name)
		ch.serial = serial
		ch.want = true
	}
	return nil
}
