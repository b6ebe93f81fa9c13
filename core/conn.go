package core

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/core/channel"
	"github.com/switchboardhq/switchboard/core/position"
	"github.com/switchboardhq/switchboard/core/store"
)

// Authenticate verifies a client's credentials, whatever protocol carried
// them.
func (e *Engine) Authenticate(c auth.Credentials) (*auth.Identity, error) {
	if e.opts.Auth == nil {
		return nil, apierr.New(apierr.Internal, "no authenticator configured")
	}
	return e.opts.Auth.Authenticate(c)
}

// ConnectOptions configure a connection.
type ConnectOptions struct {
	// ConnectionID reclaims the id of a connection that dropped less than
	// the connection-state TTL ago, and its presence members if it dropped
	// less than the presence grace period ago. The identity must have the
	// same key and client id. Empty, or an id that cannot be reclaimed,
	// assigns a new id.
	ConnectionID string
	// ClientID is used when the identity does not fix one.
	ClientID string
	// Buffer bounds the connection's delivery queue (events); 0 uses the
	// engine default.
	Buffer int
	// OnEvents, if set, is called whenever events may have become
	// available (as Ready is signalled), so that an adapter can start a
	// consumer on demand instead of keeping one waiting per connection. It
	// must not block or call back into the Conn.
	OnEvents func()
}

// Conn is one client connection as the engine sees it: who it is, what it
// is attached to, its presence, and its bounded delivery queue. Adapters
// create one per protocol connection, read events with Next, and call Close
// (orderly) or Drop (abrupt) when it ends.
type Conn struct {
	e        *Engine
	id       string
	identity atomic.Pointer[auth.Identity] // replaced by Reauthorize
	clientID string
	q        eventQueue

	mu          sync.Mutex
	attachments map[*Attachment]struct{}
	presence    map[string]struct{} // channels this connection entered
	closed      bool
}

// connRecord is what the engine remembers of a connection id. A dropped
// connection's record stays for the connection-state TTL so that a new
// connection can take the id back; its presence members stay only for the
// presence grace period.
type connRecord struct {
	keyName    string
	clientID   string
	presence   map[string]struct{} // members kept for a dropped connection
	graceTimer *time.Timer         // removes those members
	expiry     *time.Timer         // forgets the dropped connection
	live       bool
}

// Connect registers a connection for identity.
func (e *Engine) Connect(identity *auth.Identity, opts ConnectOptions) (*Conn, error) {
	if e.closing.Load() {
		return nil, ErrClosed
	}
	if identity == nil {
		return nil, apierr.New(apierr.Unauthorized, "credentials required")
	}
	clientID := opts.ClientID
	if identity.ClientID != "" && identity.ClientID != "*" {
		if clientID != "" && clientID != identity.ClientID {
			return nil, apierr.New(apierr.OperationNotAllowed, "clientId %q does not match the token's clientId", clientID)
		}
		clientID = identity.ClientID
	}
	c := &Conn{e: e, clientID: clientID, attachments: map[*Attachment]struct{}{}, presence: map[string]struct{}{}}
	c.identity.Store(identity)
	buf := opts.Buffer
	if buf <= 0 {
		buf = e.opts.SubscriberBuffer
	}
	c.q.init(buf)
	c.q.onEvents = opts.OnEvents
	e.connMu.Lock()
	defer e.connMu.Unlock()
	if opts.ConnectionID != "" {
		rec, ok := e.conns[opts.ConnectionID]
		if ok && !rec.live && rec.keyName == identity.KeyName && rec.clientID == clientID {
			for _, t := range []*time.Timer{rec.graceTimer, rec.expiry} {
				if t != nil {
					t.Stop()
				}
			}
			rec.graceTimer, rec.expiry = nil, nil
			rec.live = true
			c.id = opts.ConnectionID
			for ch := range rec.presence {
				c.presence[ch] = struct{}{}
			}
			rec.presence = nil
			e.metrics.connections.Inc()
			return c, nil
		}
	}
	c.id = newID()
	e.conns[c.id] = &connRecord{keyName: identity.KeyName, clientID: clientID, live: true}
	e.metrics.connections.Inc()
	return c, nil
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// ID is the connection id.
func (c *Conn) ID() string { return c.id }

// ClientID is the connection's client id ("" when anonymous).
func (c *Conn) ClientID() string { return c.clientID }

// Identity is who the connection authenticated as.
func (c *Conn) Identity() *auth.Identity { return c.identity.Load() }

// Reauthorize replaces the connection's identity with a renewed one (a new
// token, say) from the same key and, if the connection has a client id,
// for the same client. Later operations are checked against it; existing
// attachments stay.
func (c *Conn) Reauthorize(identity *auth.Identity) error {
	if identity == nil {
		return apierr.New(apierr.Unauthorized, "credentials required")
	}
	old := c.identity.Load()
	if identity.KeyName != old.KeyName {
		return apierr.New(apierr.OperationNotAllowed, "new credentials must belong to the same key")
	}
	if identity.ClientID != "" && identity.ClientID != "*" && identity.ClientID != c.clientID {
		return apierr.New(apierr.OperationNotAllowed, "new credentials are for clientId %q, not %q", identity.ClientID, c.clientID)
	}
	c.identity.Store(identity)
	return nil
}

// Ready is signalled when events may be available; call Take after it.
func (c *Conn) Ready() <-chan struct{} { return c.q.notify }

// Take appends up to max queued events to dst without waiting.
func (c *Conn) Take(dst []Event, max int) []Event { return c.q.take(dst, max) }

// Next waits for events and returns up to max of them. It returns ctx's
// error when ctx ends and ErrClosed after Close.
func (c *Conn) Next(ctx context.Context, max int) ([]Event, error) {
	for {
		if evs := c.q.take(nil, max); len(evs) > 0 {
			return evs, nil
		}
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		select {
		case <-c.q.notify:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Attachment is a connection's subscription to one channel.
type Attachment struct {
	Channel string
	// Resumed is true when the attach resumed from a position and every
	// message after it was (or will be) delivered.
	Resumed bool
	// Continuity is set when a resume could not be complete; the attachment
	// continues live.
	Continuity *Continuity
	// Position is the channel position at which live delivery started.
	Position string

	conn     *Conn
	ch       *channelState
	index    int // in ch.subs; guarded by ch.mu
	presence bool
	// guarded by conn.q.mu:
	lost bool
	last string // position of the last message queued
	// after is the last seq the attachment already has: live messages up
	// to it are skipped (a resume may name a message that was acknowledged
	// but not yet fanned out). Guarded by ch.mu.
	after uint64
}

// Conn returns the connection the attachment belongs to.
func (a *Attachment) Conn() *Conn { return a.conn }

// AttachOptions say where an attachment starts.
type AttachOptions struct {
	// Rewind delivers recent messages first; it overrides a rewind given in
	// the channel qualifier.
	Rewind *channel.Rewind
	// From resumes after this position (a channel serial). It takes
	// precedence over any rewind.
	From string
	// Presence also delivers presence events of the channel.
	Presence bool
}

// Attach subscribes the connection to a channel named by spec (a channel
// name, optionally with a qualifier such as "[?rewind=10]"). Replayed
// messages (rewind or resume) are queued before any live message, with no
// gap or duplicate at the seam. Attach waits while the connection's queue
// is full during a long replay, so the caller must keep reading events.
func (c *Conn) Attach(ctx context.Context, spec string, opts AttachOptions) (*Attachment, error) {
	sp, err := channel.Parse(spec)
	if err != nil {
		return nil, err
	}
	if err := c.Identity().Check(sp.Name, auth.OpSubscribe); err != nil {
		return nil, err
	}
	rewind := sp.Rewind
	if opts.Rewind != nil {
		rewind = *opts.Rewind
	}
	var from position.Position
	resume := opts.From != ""
	if resume {
		if from, err = position.Parse(opts.From); err != nil {
			return nil, err
		}
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	a := &Attachment{Channel: sp.Name, conn: c, index: -1, presence: opts.Presence}
	if err := c.e.attach(ctx, a, rewind, from, resume); err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.e.detach(a)
		return nil, ErrClosed
	}
	c.attachments[a] = struct{}{}
	c.mu.Unlock()
	return a, nil
}

// Detach ends an attachment. Events already queued for it may still be
// returned by Next; adapters drop events of detached attachments.
func (a *Attachment) Detach() {
	a.conn.mu.Lock()
	delete(a.conn.attachments, a)
	a.conn.mu.Unlock()
	a.conn.e.detach(a)
}

// Detached reports whether the attachment was detached or lost as a slow
// consumer. It is also true while Attach is still queuing the attachment's
// catch-up, so it cannot tell whether an event from Next is stale.
func (a *Attachment) Detached() bool {
	a.conn.q.mu.Lock()
	defer a.conn.q.mu.Unlock()
	return a.lost || a.ch == nil
}

func (e *Engine) detach(a *Attachment) {
	a.conn.q.mu.Lock()
	ch := a.ch
	a.conn.q.mu.Unlock()
	if ch == nil {
		return
	}
	ch.mu.Lock()
	ch.removeSubLocked(a)
	ch.lastActive = e.now().UnixMilli()
	ch.mu.Unlock()
	a.conn.q.mu.Lock()
	a.ch = nil
	a.conn.q.mu.Unlock()
}

// storeBounds returns the lowest seq still retained in the store for a
// channel (or the next seq when nothing is).
func (e *Engine) storeAvailableFrom(name string) (uint64, error) {
	meta, first, last, _, err := e.opts.Store.Channel(name)
	if err != nil {
		return 0, apierr.Wrap(err, apierr.StorageFailure, "reading channel %q", name)
	}
	if first > 0 {
		return first, nil
	}
	return max(last, meta.TrimmedThrough) + 1, nil
}

// attach works out where the attachment starts, replays what comes before
// live delivery and registers it for fan-out.
func (e *Engine) attach(ctx context.Context, a *Attachment, rewind channel.Rewind, from position.Position, resume bool) error {
	now := e.now()
	var availFrom uint64
	var err error
	if e.opts.Store != nil {
		if availFrom, err = e.storeAvailableFrom(a.Channel); err != nil {
			return err
		}
	}
	var rewindFrom uint64
	if !resume && rewind.Duration > 0 && e.opts.Store != nil {
		s, ok, err := e.opts.Store.SeqAtTime(a.Channel, now.Add(-rewind.Duration).UnixMilli())
		if err != nil {
			return apierr.Wrap(err, apierr.StorageFailure, "reading channel %q", a.Channel)
		}
		if !ok {
			s = ^uint64(0)
		}
		rewindFrom = s
	}

	var start uint64 // first seq to deliver
	var epoch uint64
	err = e.withChannel(a.Channel, func(ch *channelState) error {
		ch.lastActive = now.UnixMilli()
		epoch = ch.epoch
		live := ch.delivered + 1
		low := availFrom
		if e.opts.Store == nil {
			low = ch.firstInMemoryLocked()
		}
		switch {
		case resume:
			start, a.Continuity = ch.resumeStartLocked(from, low)
			a.Resumed = a.Continuity == nil
		case rewind.Count > 0:
			// Count back from the last sequenced message: in durable modes
			// fan-out may still lag behind acknowledged publishes.
			last := ch.next - 1
			start = max(low, last+1-min(uint64(rewind.Count), last))
		case rewind.Duration > 0:
			if e.opts.Store == nil {
				rewindFrom = ch.log.seqAtTime(now.Add(-rewind.Duration).UnixMilli())
			}
			// Cap at the next serial, not at fan-out, which may lag acks.
			start = max(low, min(rewindFrom, ch.next))
		default:
			start = live
		}
		return nil
	})
	if err != nil {
		return err
	}
	return e.catchUp(ctx, a, start, epoch)
}

// resumeStartLocked returns the first seq a resume from position from
// delivers, or the live seq and the reason the resume is incomplete. low is
// the lowest seq still available.
func (ch *channelState) resumeStartLocked(from position.Position, low uint64) (uint64, *Continuity) {
	live := ch.delivered + 1
	s, ok := from.Get(ch.e.opts.Region)
	var reason ContinuityReason
	switch {
	case ok && s.Epoch != ch.epoch:
		reason = ReasonEpochChanged
	case !ok || s.Seq >= ch.next:
		reason = ReasonUnknownPosition
	case s.Seq+1 < low:
		reason = ReasonExpired
	default:
		return s.Seq + 1, nil
	}
	return live, &Continuity{Channel: ch.name, Reason: reason, Position: ch.positionOf(ch.delivered)}
}

// CheckResume reports whether attaching to a channel from position from
// would resume completely, without attaching: nil when every message after
// it is still available, otherwise the Continuity the attach would carry.
// Protocols whose handshake must announce continuity before subscriptions
// are restored (MQTT's CONNACK) use it.
func (e *Engine) CheckResume(channelName, from string) (*Continuity, error) {
	pos, err := position.Parse(from)
	if err != nil {
		return nil, err
	}
	var low uint64
	if e.opts.Store != nil {
		if low, err = e.storeAvailableFrom(channelName); err != nil {
			return nil, err
		}
	}
	var cont *Continuity
	err = e.withChannel(channelName, func(ch *channelState) error {
		l := low
		if e.opts.Store == nil {
			l = ch.firstInMemoryLocked()
		}
		_, cont = ch.resumeStartLocked(pos, l)
		return nil
	})
	return cont, err
}

// catchUp delivers every message from seq start on and registers the
// attachment for live delivery exactly at the seam. Old messages come from
// the store, recent ones from the in-memory log under the channel lock.
func (e *Engine) catchUp(ctx context.Context, a *Attachment, start, epoch uint64) error {
	q := &a.conn.q
	cursor := start - 1 // last seq delivered to a
	for {
		if err := q.waitRoom(ctx); err != nil {
			return err
		}
		ch, err := e.channel(a.Channel)
		if err != nil {
			return err
		}
		ch.mu.Lock()
		if ch.closed {
			ch.mu.Unlock()
			continue
		}
		if ch.epoch != epoch {
			// The channel was reopened with a new log meanwhile.
			a.Continuity = &Continuity{Channel: a.Channel, Reason: ReasonEpochChanged}
			a.Resumed = false
			cursor = ch.delivered
		}
		if cursor >= ch.delivered {
			e.registerLocked(ch, a, cursor)
			ch.mu.Unlock()
			return nil
		}
		inMemory := ch.log.len() > 0 && cursor+1 >= ch.log.first()
		if !inMemory && e.opts.Store == nil {
			// Memory mode and the messages were dropped meanwhile.
			a.Continuity = &Continuity{Channel: a.Channel, Reason: ReasonExpired, Position: ch.positionOf(cursor)}
			a.Resumed = false
			e.registerLocked(ch, a, ch.delivered)
			ch.mu.Unlock()
			return nil
		}
		if inMemory {
			msgs := ch.log.slice(cursor+1, ch.delivered)
			if len(msgs) <= q.limit/2 && q.tryPushReplay(a, msgs) {
				e.registerLocked(ch, a, ch.delivered)
				ch.mu.Unlock()
				return nil
			}
			// Too much for the queue's free room: queue it while the
			// reader drains, outside the lock, and look again.
			ch.mu.Unlock()
			for _, m := range msgs {
				if err := q.pushWait(ctx, Event{Kind: EventMessage, Attachment: a, Message: m}); err != nil {
					return err
				}
			}
			cursor = msgs[len(msgs)-1].Serial.Seq
			continue
		}
		hi := ch.delivered
		if ch.log.len() > 0 {
			hi = ch.log.first() - 1
		}
		ch.mu.Unlock()

		next, err := e.replayFromStore(ctx, a, cursor, hi)
		if err != nil {
			return err
		}
		if next == cursor {
			// A gap: retention removed what we were about to read. Say so,
			// in the stream and in the attach result, and go on from the
			// oldest message still stored.
			cont := &Continuity{Channel: a.Channel, Reason: ReasonExpired, Position: ch.positionOf(cursor)}
			a.Resumed, a.Continuity = false, cont
			if err := q.pushWait(ctx, Event{Kind: EventContinuity, Attachment: a, Continuity: cont}); err != nil {
				return err
			}
			avail, err := e.storeAvailableFrom(a.Channel)
			if err != nil {
				return err
			}
			if avail-1 <= cursor {
				avail = hi + 1 // nothing readable after the cursor: go to memory
			}
			next = avail - 1
		}
		cursor = next
	}
}

// replayFromStore queues stored messages (cursor, hi], at most a page, and
// returns the last seq queued (cursor when the next one is missing).
func (e *Engine) replayFromStore(ctx context.Context, a *Attachment, cursor, hi uint64) (uint64, error) {
	const page = 512
	var msgs []*Message
	var decodeErr error
	err := e.opts.Store.Scan(a.Channel, cursor+1, min(hi, cursor+page), false, func(r store.Record) bool {
		if r.Seq != cursor+uint64(len(msgs))+1 {
			return false
		}
		m, err := decodeRecord(a.Channel, r.Value)
		if err != nil {
			decodeErr = err
			return false
		}
		msgs = append(msgs, m)
		return true
	})
	if err == nil {
		err = decodeErr
	}
	if err != nil {
		return cursor, apierr.Wrap(err, apierr.StorageFailure, "reading history of %q", a.Channel)
	}
	for _, m := range msgs {
		if err := a.conn.q.pushWait(ctx, Event{Kind: EventMessage, Attachment: a, Message: m}); err != nil {
			return cursor, err
		}
		cursor = m.Serial.Seq
	}
	return cursor, nil
}

func (e *Engine) registerLocked(ch *channelState, a *Attachment, after uint64) {
	a.after = after
	a.Position = ch.positionOf(max(after, ch.delivered))
	a.conn.q.mu.Lock()
	a.ch = ch
	if a.last == "" {
		a.last = a.Position
	}
	a.conn.q.mu.Unlock()
	ch.addSubLocked(a)
}

// Close ends the connection in an orderly way: attachments end and its
// presence members leave at once.
func (c *Conn) Close() { c.end(false) }

// Drop ends a connection that was lost abruptly: attachments end, its
// presence members leave after the presence grace period, and its id stays
// reserved for the connection-state TTL, unless a new connection reclaims
// the id first (see ConnectOptions.ConnectionID).
func (c *Conn) Drop() { c.end(true) }

func (c *Conn) end(abrupt bool) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	atts := make([]*Attachment, 0, len(c.attachments))
	for a := range c.attachments {
		atts = append(atts, a)
	}
	c.attachments = nil
	presence := c.presence
	c.presence = nil
	c.mu.Unlock()
	for _, a := range atts {
		c.e.detach(a)
	}
	c.q.close()
	e := c.e
	e.metrics.connections.Dec()
	e.connMu.Lock()
	rec := e.conns[c.id]
	if rec == nil {
		e.connMu.Unlock()
		return
	}
	if !abrupt || e.closing.Load() {
		delete(e.conns, c.id)
		e.connMu.Unlock()
		for name := range presence {
			e.leaveMember(name, c.clientID, c.id)
		}
		return
	}
	rec.live = false
	id, clientID := c.id, c.clientID
	if len(presence) > 0 {
		rec.presence = presence
		rec.graceTimer = time.AfterFunc(e.opts.PresenceGrace, func() {
			e.connMu.Lock()
			if e.conns[id] != rec || rec.live {
				e.connMu.Unlock()
				return
			}
			members := rec.presence
			rec.presence = nil
			e.connMu.Unlock()
			for name := range members {
				e.leaveMember(name, clientID, id)
			}
		})
	}
	rec.expiry = time.AfterFunc(max(e.opts.ConnectionStateTTL, e.opts.PresenceGrace), func() {
		e.connMu.Lock()
		defer e.connMu.Unlock()
		if e.conns[id] == rec && !rec.live {
			delete(e.conns, id)
		}
	})
	e.connMu.Unlock()
}
