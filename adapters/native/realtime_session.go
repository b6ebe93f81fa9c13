package native

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/core/channel"
	"github.com/switchboardhq/switchboard/internal/wireformat"
)

// outboxSize bounds the control frames (acks, attach results, replies)
// waiting for the writer. A client that publishes without reading its acks
// fills it and is disconnected.
const outboxSize = 1024

// session is one realtime connection. Three goroutines serve it: the
// reader (the HTTP handler's), the writer (owns the WebSocket's write
// side), and the attacher (owns the connection's attachments).
type session struct {
	rt         *Realtime
	ws         *websocket.Conn
	conn       *core.Conn
	params     connectParams
	key        string
	ctx        context.Context
	cancel     context.CancelFunc
	limiter    *rate.Limiter
	outbox     *boundedQueue[[]byte]
	ops        *boundedQueue[attachOp]
	atts       map[string]*core.Attachment // owned by the one attacher running
	attachers  sync.WaitGroup
	expiries   chan time.Time // token expiry changes, to the writer
	orderly    atomic.Bool    // the client asked to close
	overflow   atomic.Bool    // the outbox overflowed
	writerDone chan struct{}  // closed when the writer has stopped
	ended      chan struct{}  // closed once the connection is fully gone
}

type attachOp struct {
	detach   bool
	spec     channel.Spec
	serial   string
	rewind   *channel.Rewind
	presence bool
}

func newSession(rt *Realtime, ws *websocket.Conn, conn *core.Conn, identity *auth.Identity, params connectParams) *session {
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{
		rt: rt, ws: ws, conn: conn, params: params, ctx: ctx, cancel: cancel,
		limiter:    rate.NewLimiter(rate.Limit(rt.opts.FrameRate), rt.opts.FrameBurst),
		outbox:     newBoundedQueue[[]byte](outboxSize),
		ops:        newBoundedQueue[attachOp](rt.opts.MaxPendingAttaches),
		atts:       map[string]*core.Attachment{},
		expiries:   make(chan time.Time, 1),
		writerDone: make(chan struct{}),
		ended:      make(chan struct{}),
	}
	s.expiries <- identity.ExpiresAt
	return s
}

// run serves the connection until it ends.
func (s *session) run(resumed bool, resumeErr error) {
	rt := s.rt
	rt.metrics.connections.Inc()
	defer rt.metrics.connections.Dec()
	if resumed {
		rt.metrics.resumes.Inc()
	}
	s.key = rt.newConnectionKey(s)
	hello := connectedFrame{
		Action: actionConnected, ConnectionID: s.conn.ID(), ConnectionKey: s.key, ClientID: s.conn.ClientID(),
		Resumed: resumed,
		ConnectionDetails: connectionDetails{
			ConnectionStateTTL: rt.opts.ConnectionStateTTL.Milliseconds(),
			MaxMessageSize:     rt.engine.Options().MaxMessageSize,
			MaxFrameSize:       rt.opts.MaxFrameSize,
			HeartbeatInterval:  rt.opts.Heartbeat.Milliseconds(),
		},
	}
	if resumeErr != nil {
		hello.Error = errorDetail(resumeErr)
	}
	s.send(hello)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(s.writerDone)
		s.writeLoop()
		s.cancel()
	}()
	if s.readLoop() {
		// The writer sends the last frames (an error, or closed) and
		// closes; give it the time of one write.
		select {
		case <-s.writerDone:
		case <-time.After(rt.opts.WriteTimeout):
		}
	}
	s.cancel()
	wg.Wait()
	s.attachers.Wait()
	// Ending the connection ends its attachments.
	if s.orderly.Load() {
		s.conn.Close()
		rt.closed(s.key)
	} else {
		s.conn.Drop()
		rt.dropped(s.key)
	}
	_ = s.ws.CloseNow()
	close(s.ended)
}

// kick ends the connection as if it had failed: a resuming connection
// takes its place.
func (s *session) kick() {
	s.cancel()
	_ = s.ws.CloseNow()
}

// send queues a control frame for the writer without blocking; a full
// outbox ends the connection.
func (s *session) send(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.rt.log.Error("realtime frame not encodable", "err", err)
		return
	}
	s.sendRaw(b)
}

func (s *session) sendRaw(b []byte) {
	if !s.outbox.push(b) && s.overflow.CompareAndSwap(false, true) {
		s.cancel()
	}
}

// readLoop reads and handles client frames until the connection fails,
// the client closes, or a protocol error ends it. It reports whether the
// writer was asked to close the connection (after a last frame).
func (s *session) readLoop() (closing bool) {
	for {
		typ, b, err := s.ws.Read(s.ctx)
		if err != nil {
			if errors.Is(err, websocket.ErrMessageTooBig) {
				s.fatal(apierr.New(apierr.RequestTooLarge, "frame exceeds the limit of %d bytes", s.rt.opts.MaxFrameSize))
				return true
			}
			return false
		}
		if !s.limiter.Allow() {
			s.fatal(apierr.New(apierr.RateLimited, "more than %g frames per second", s.rt.opts.FrameRate))
			return true
		}
		if s.params.msgpack {
			if typ != websocket.MessageBinary {
				s.fatal(apierr.New(apierr.BadRequest, "text frames are not supported with the msgpack format"))
				return true
			}
			if b, err = wireformat.MsgpackToJSON(b); err != nil {
				s.fatal(apierr.Wrap(err, apierr.InvalidJSON, "%s", err.Error()))
				return true
			}
		} else if typ != websocket.MessageText {
			s.fatal(apierr.New(apierr.BadRequest, "binary frames are not supported with the json format"))
			return true
		}
		f, err := decodeClientFrame(b)
		if err != nil {
			s.fatal(err)
			return true
		}
		if err := s.handle(f); err != nil {
			if !errors.Is(err, errClosing) {
				s.fatal(err)
			}
			return true
		}
	}
}

var errClosing = errors.New("closing")

// fatal tells the client why the connection ends and ends it.
func (s *session) fatal(err error) {
	s.send(errorFrame{Action: actionError, Error: errorDetail(err)})
	s.sendRaw(closeMarker)
}

// closeMarker asks the writer to close the connection after what it has
// written so far.
var closeMarker = []byte{}

func (s *session) handle(f *clientFrame) error {
	switch f.Action {
	case actionHeartbeat:
		s.send(simpleFrame{Action: actionHeartbeat})
	case actionAttach, actionDetach:
		return s.queueAttach(f)
	case actionMessage:
		s.publish(f)
	case actionPresence:
		s.presence(f)
	case actionSync:
		s.sync(f)
	case actionAuth:
		s.reauth(f)
	case actionClose:
		s.orderly.Store(true)
		s.send(simpleFrame{Action: actionClosed})
		s.sendRaw(closeMarker)
		return errClosing
	default:
		return apierr.New(apierr.BadRequest, "unknown action %q", restTruncate(f.Action))
	}
	return nil
}

func (s *session) channelError(name string, err error) {
	s.send(errorFrame{Action: actionError, Channel: name, Error: errorDetail(err)})
}

func (s *session) queueAttach(f *clientFrame) error {
	spec, err := channel.Parse(f.Channel)
	if err != nil {
		s.channelError(f.Channel, err)
		return nil
	}
	op := attachOp{detach: f.Action == actionDetach, spec: spec, serial: f.ChannelSerial}
	if !op.detach {
		if f.Rewind != "" {
			rw, err := channel.ParseRewind(f.Rewind)
			if err != nil {
				s.channelError(spec.Name, err)
				return nil
			}
			op.rewind = &rw
		}
		if op.presence, err = f.attachPresence(); err != nil {
			s.channelError(spec.Name, err)
			return nil
		}
	}
	ok, start := s.ops.pushStart(op)
	if !ok {
		return apierr.New(apierr.RateLimited, "more than %d attach or detach requests pending", s.rt.opts.MaxPendingAttaches)
	}
	if start {
		s.attachers.Add(1)
		go func() {
			defer s.attachers.Done()
			s.attachLoop()
		}()
	}
	return nil
}

// attachLoop serves the queued attach and detach requests in order, then
// ends (an idle connection keeps no attacher). One runs at a time (see
// boundedQueue.pushStart), so it owns the attachments. Attaching may wait
// while a long replay fills the connection's queue, which the writer
// drains.
func (s *session) attachLoop() {
	for {
		op, ok := s.ops.pop()
		if !ok || s.ctx.Err() != nil {
			return
		}
		name := op.spec.Name
		if old := s.atts[name]; old != nil {
			old.Detach()
			delete(s.atts, name)
		}
		if op.detach {
			s.send(channelFrame{Action: actionDetached, Channel: name})
			continue
		}
		a, err := s.conn.Attach(s.ctx, op.spec.String(), core.AttachOptions{Rewind: op.rewind, From: op.serial, Presence: op.presence})
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			s.channelError(name, err)
			continue
		}
		s.atts[name] = a
		fr := attachedFrame{Action: actionAttached, Channel: name, ChannelSerial: a.Position, Resumed: a.Resumed}
		if c := a.Continuity; c != nil {
			fr.Continuity = &continuityInfo{Reason: string(c.Reason), ChannelSerial: c.Position}
		}
		s.send(fr)
	}
}

func (s *session) publish(f *clientFrame) {
	if f.MsgSerial == nil {
		s.channelError(f.Channel, apierr.New(apierr.InvalidParameter, "message frame needs a msgSerial"))
		return
	}
	serial := *f.MsgSerial
	nack := func(err error) {
		s.send(ackFrame{Action: actionNack, MsgSerial: serial, Count: 1, Error: errorDetail(err)})
	}
	if len(f.Messages) == 0 {
		nack(apierr.New(apierr.InvalidJSON, "message frame needs messages"))
		return
	}
	msgs, err := core.DecodeMessagesJSON(f.Messages)
	if err != nil {
		nack(err)
		return
	}
	err = s.conn.PublishAsync(s.ctx, f.Channel, msgs, func(res []core.PublishResult, err error) {
		if err != nil {
			nack(err)
			return
		}
		out := make([]publishResultJSON, len(res))
		for i, r := range res {
			out[i] = publishResultJSON{ID: r.ID, Serial: r.Serial, Timestamp: r.Timestamp, Duplicate: r.Duplicate}
		}
		s.send(ackFrame{Action: actionAck, MsgSerial: serial, Count: 1, Results: out})
	})
	if err != nil {
		nack(err)
	}
}

func (s *session) presence(f *clientFrame) {
	if f.MsgSerial == nil {
		s.channelError(f.Channel, apierr.New(apierr.InvalidParameter, "presence frame needs a msgSerial"))
		return
	}
	serial := *f.MsgSerial
	p, err := f.presenceRequest()
	if err == nil {
		switch p.Action {
		case core.ActionEnter:
			err = s.conn.EnterPresence(s.ctx, f.Channel, p.Data, p.Encoding)
		case core.ActionUpdate:
			err = s.conn.UpdatePresence(s.ctx, f.Channel, p.Data, p.Encoding)
		default:
			err = s.conn.LeavePresence(s.ctx, f.Channel)
		}
	}
	if err != nil {
		s.send(ackFrame{Action: actionNack, MsgSerial: serial, Count: 1, Error: errorDetail(err)})
		return
	}
	s.send(ackFrame{Action: actionAck, MsgSerial: serial, Count: 1})
}

// Presence sync pages.
const (
	defaultSyncLimit = 100
	maxSyncLimit     = 1000
)

func (s *session) sync(f *clientFrame) {
	limit := f.Limit
	switch {
	case limit == 0:
		limit = defaultSyncLimit
	case limit < 0 || limit > maxSyncLimit:
		s.channelError(f.Channel, apierr.New(apierr.InvalidParameter, "sync limit must be between 1 and %d", maxSyncLimit))
		return
	}
	after := ""
	if f.Cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(f.Cursor)
		if err != nil {
			s.channelError(f.Channel, apierr.New(apierr.InvalidParameter, "malformed sync cursor"))
			return
		}
		after = string(b)
	}
	members, err := s.rt.engine.PresenceMembers(s.ctx, s.conn.Identity(), f.Channel)
	if err != nil {
		s.channelError(f.Channel, err)
		return
	}
	memberKey := func(m core.PresenceMessage) string { return m.ClientID + "\x00" + m.ConnectionID }
	sort.Slice(members, func(i, j int) bool { return memberKey(members[i]) < memberKey(members[j]) })
	start := sort.Search(len(members), func(i int) bool { return memberKey(members[i]) > after })
	page := members[start:]
	fr := presenceFrame{Action: actionSync, Channel: f.Channel, Presence: page}
	if len(page) > limit {
		fr.Presence = page[:limit]
		fr.Cursor = base64.RawURLEncoding.EncodeToString([]byte(memberKey(page[limit-1])))
	}
	if fr.Presence == nil {
		fr.Presence = []core.PresenceMessage{}
	}
	s.send(fr)
}

func (s *session) reauth(f *clientFrame) {
	identity, err := s.rt.engine.Authenticate(auth.Credentials{Token: f.AccessToken})
	if err == nil {
		err = s.conn.Reauthorize(identity)
	}
	if err != nil {
		s.send(errorFrame{Action: actionError, Error: errorDetail(err)})
		return
	}
	select {
	case <-s.expiries:
	default:
	}
	s.expiries <- identity.ExpiresAt
	fr := authorizedFrame{Action: actionAuthorized}
	if !identity.ExpiresAt.IsZero() {
		fr.Expires = identity.ExpiresAt.UnixMilli()
	}
	s.send(fr)
}

// writeLoop owns the write side: it writes delivered events, control
// frames and heartbeats, and ends the connection on drain, token expiry or
// a write failure.
func (s *session) writeLoop() {
	rt := s.rt
	heartbeat := time.NewTicker(rt.opts.Heartbeat)
	defer heartbeat.Stop()
	expiry := time.NewTimer(time.Hour)
	expiry.Stop()
	defer expiry.Stop()
	var events []core.Event
	var buf []byte
	wrote := false
	for {
		select {
		case <-s.ctx.Done():
			if s.overflow.Load() {
				s.writeNow(mustJSON(errorFrame{Action: actionError, Error: errorDetail(
					apierr.New(apierr.RateLimited, "the connection does not read its acks fast enough"))}))
				_ = s.ws.Close(websocket.StatusPolicyViolation, "too many unread replies")
			}
			return
		case <-rt.draining:
			s.drainEvents(&events, &buf)
			s.writeNow(mustJSON(disconnectFrame{Action: actionDisconnect, Error: errorDetail(errShuttingDown), RetryIn: rt.retryHint()}))
			_ = s.ws.Close(websocket.StatusGoingAway, "server shutting down")
			return
		case at := <-s.expiries:
			expiry.Stop()
			if !at.IsZero() {
				expiry.Reset(time.Until(at))
			}
		case <-expiry.C:
			s.writeNow(mustJSON(errorFrame{Action: actionError, Error: errorDetail(
				apierr.New(apierr.TokenExpired, "the token expired; renew it with an auth frame before it expires"))}))
			_ = s.ws.Close(websocket.StatusPolicyViolation, "token expired")
			return
		case <-s.conn.Ready():
			if !s.drainEvents(&events, &buf) {
				return
			}
			wrote = true
		case <-s.outbox.ready:
			for {
				b, ok := s.outbox.pop()
				if !ok {
					break
				}
				// Whatever was queued for the client before this frame
				// was made goes first: an attached frame follows its
				// replay.
				if !s.drainEvents(&events, &buf) {
					return
				}
				if len(b) == 0 { // closeMarker
					_ = s.ws.Close(websocket.StatusNormalClosure, "")
					return
				}
				if !s.writeNow(b) {
					return
				}
				wrote = true
			}
		case <-heartbeat.C:
			if !wrote && s.params.heartbeats {
				if !s.writeNow(heartbeatFrame) {
					return
				}
			}
			wrote = false
		}
	}
}

var heartbeatFrame = []byte(`{"action":"heartbeat"}`)

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// writeNow writes one frame. It is not bound to the session's context, so
// that last words (an error before closing) still go out; ending the
// session closes the socket, which stops a write in progress.
func (s *session) writeNow(b []byte) bool {
	typ := websocket.MessageText
	if s.params.msgpack {
		mp, err := wireformat.JSONToMsgpack(b)
		if err != nil {
			s.rt.log.Error("realtime frame not convertible to MessagePack", "err", err)
			return true
		}
		b, typ = mp, websocket.MessageBinary
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.rt.opts.WriteTimeout)
	defer cancel()
	if err := s.ws.Write(ctx, typ, b); err != nil {
		s.cancel()
		return false
	}
	return true
}

// drainEvents writes every queued event: consecutive messages of one
// channel share a frame.
func (s *session) drainEvents(events *[]core.Event, buf *[]byte) bool {
	for {
		*events = s.conn.Take((*events)[:0], 256)
		evs := *events
		if len(evs) == 0 {
			if cap(evs) > 16 {
				*events = nil
			}
			return true
		}
		for i := 0; i < len(evs); {
			ev := evs[i]
			var b []byte
			switch ev.Kind {
			case core.EventMessage:
				j := i + 1
				for j < len(evs) && evs[j].Kind == core.EventMessage && evs[j].Message.Channel == ev.Message.Channel {
					j++
				}
				msgs := make([]*core.Message, 0, j-i)
				for _, e := range evs[i:j] {
					msgs = append(msgs, e.Message)
				}
				b = appendMessageFrame((*buf)[:0], ev.Message.Channel, msgs)
				*buf = b
				i = j
			case core.EventPresence:
				b = mustJSON(presenceFrame{Action: actionPresence, Channel: ev.Presence.Channel, Presence: []core.PresenceMessage{*ev.Presence}})
				i++
			case core.EventContinuity:
				c := ev.Continuity
				b = mustJSON(continuityFrame{Action: actionContinuity, Channel: c.Channel, Reason: string(c.Reason), ChannelSerial: c.Position})
				i++
			default:
				i++
				continue
			}
			if !s.writeNow(b) {
				return false
			}
		}
		clear(evs)
		if cap(*buf) > 64<<10 {
			*buf = nil
		}
	}
}
