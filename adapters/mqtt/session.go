package mqtt

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/core/channel"
	"github.com/switchboardhq/switchboard/core/position"
)

// subscription is one topic filter of a session with its MQTT options.
type subscription struct {
	filter         subscriptionFilter
	qos            byte
	noLocal        bool
	rap            bool // retain as published
	retainHandling byte
	identifier     int
}

func (s *subscription) record() subscriptionRecord {
	return subscriptionRecord{Filter: s.filter.Key(), QoS: s.qos, NoLocal: s.noLocal, RetainAsPub: s.rap, RetainHandling: s.retainHandling, Identifier: s.identifier}
}

// delivery is how messages of one channel go to a session: the union of
// its matching subscriptions (one copy, the highest QoS, every
// subscription identifier [MQTT-3.3.4-3]).
type delivery struct {
	qos     byte
	ids     []int
	noLocal bool // every matching subscription asked for no-local
	rap     bool // some matching subscription asked for retain-as-published
}

// pendingAck is a QoS 1 or 2 delivery whose flow has not completed yet.
type pendingAck struct {
	packetID uint16
	seq      uint64
	pos      string
	done     bool
}

// channelPos is where a session is in one channel's log.
type channelPos struct {
	// sent is the position after the latest message handed to the
	// connection, sentSerial its serial.
	sent       string
	sentSerial position.Serial
	// acked is the position up to which every message was written (QoS 0)
	// or acknowledged (QoS 1 and 2): a session restored after a restart
	// resumes from it.
	acked   string
	pending []pendingAck
}

// session is the server side of an MQTT session: it outlives connections
// when the client asked for a persistent session.
type session struct {
	b  *Broker
	id string

	mu             sync.Mutex
	version        byte
	expiry         uint32                   // seconds; 0 ends the session with its connection
	subs           map[string]*subscription // by filter, not shared
	shared         map[string]*subscription // by $share/<group>/<filter>
	pos            map[string]*channelPos   // by channel
	outstanding    map[uint16]string        // QoS>0 delivery packet id → channel ("" when untracked)
	deliveries     map[string]*delivery     // cache by channel; nil entry: no match
	conn           *connection
	disconnectedAt time.Time
	dirty          bool
	// inboundIDs maps the packet id of the client's QoS 1/2 publishes to
	// the message id they were stored under, so that a retry (DUP) after
	// a lost acknowledgement is recognised as the same message.
	inboundIDs map[uint16]string
	willTimer  *time.Timer
}

func newSession(b *Broker, id string) *session {
	return &session{
		b: b, id: id,
		subs:        map[string]*subscription{},
		shared:      map[string]*subscription{},
		pos:         map[string]*channelPos{},
		outstanding: map[uint16]string{},
		deliveries:  map[string]*delivery{},
		inboundIDs:  map[uint16]string{},
	}
}

// restoreSession builds a session from its stored record: every channel
// resumes from its acknowledged position.
func restoreSession(b *Broker, id string, rec sessionRecord) *session {
	s := newSession(b, id)
	s.version, s.expiry = rec.Version, rec.Expiry
	for _, r := range rec.Subs {
		f, err := parseSubscriptionFilter(r.Filter)
		if err != nil {
			continue
		}
		sub := &subscription{filter: f, qos: r.QoS, noLocal: r.NoLocal, rap: r.RetainAsPub, retainHandling: r.RetainHandling, identifier: r.Identifier}
		if f.Group != "" {
			s.shared[f.Key()] = sub
		} else {
			s.subs[f.Key()] = sub
		}
	}
	for ch, p := range rec.Positions {
		cp := &channelPos{sent: p, acked: p}
		if pos, err := position.Parse(p); err == nil {
			cp.sentSerial, _ = pos.Get(b.engine.Region())
		}
		s.pos[ch] = cp
	}
	switch {
	case rec.DisconnectedAt > 0:
		s.disconnectedAt = time.UnixMilli(rec.DisconnectedAt)
	case rec.SavedAt > 0:
		// The server stopped while the client was connected: what it may
		// have missed starts at the last write.
		s.disconnectedAt = time.UnixMilli(rec.SavedAt)
	}
	return s
}

// recordLocked is the session as stored.
func (s *session) recordLocked() *sessionRecord {
	rec := &sessionRecord{Version: s.version, Expiry: s.expiry, Positions: make(map[string]string, len(s.pos))}
	for _, sub := range s.subs {
		rec.Subs = append(rec.Subs, sub.record())
	}
	for _, sub := range s.shared {
		rec.Subs = append(rec.Subs, sub.record())
	}
	for ch, cp := range s.pos {
		if cp.acked != "" {
			rec.Positions[ch] = cp.acked
		}
	}
	switch {
	case s.conn != nil:
		// Connected: should the server stop without a chance to record
		// the disconnection, the session resumes from this write.
		rec.SavedAt = time.Now().UnixMilli()
	case !s.disconnectedAt.IsZero():
		rec.DisconnectedAt = s.disconnectedAt.UnixMilli()
	}
	return rec
}

// deliveryLocked returns how a message of the channel reaches this
// session, or nil when no subscription matches.
func (s *session) deliveryLocked(channelName string) *delivery {
	if d, ok := s.deliveries[channelName]; ok {
		return d
	}
	var d *delivery
	for _, sub := range s.subs {
		if !matchTopic(sub.filter.Filter, channelName) {
			continue
		}
		if d == nil {
			d = &delivery{noLocal: true}
		}
		d.qos = max(d.qos, sub.qos)
		d.noLocal = d.noLocal && sub.noLocal
		d.rap = d.rap || sub.rap
		if sub.identifier > 0 {
			d.ids = append(d.ids, sub.identifier)
		}
	}
	if len(s.deliveries) > 4096 {
		clear(s.deliveries)
	}
	s.deliveries[channelName] = d
	return d
}

// completeLocked ends the QoS flow of an outbound packet id and moves the
// channel's acknowledged position over every completed delivery.
func (s *session) completeLocked(packetID uint16) bool {
	ch, ok := s.outstanding[packetID]
	if !ok {
		return false
	}
	delete(s.outstanding, packetID)
	cp := s.pos[ch]
	if cp == nil {
		return true
	}
	for i := range cp.pending {
		if cp.pending[i].packetID == packetID && !cp.pending[i].done {
			cp.pending[i].done = true
			break
		}
	}
	n := 0
	for n < len(cp.pending) && cp.pending[n].done {
		cp.acked = cp.pending[n].pos
		n++
	}
	if n > 0 {
		cp.pending = append(cp.pending[:0], cp.pending[n:]...)
		s.dirty = true
	}
	return true
}

// deliveryKind says where a delivered message comes from.
type deliveryKind uint8

const (
	// deliverChannel is a message of an attached channel: it moves the
	// session's position.
	deliverChannel deliveryKind = iota
	// deliverRetained is a retained message sent on subscribe (RETAIN 1).
	deliverRetained
	// deliverNotice is a notice on a $switchboard/ topic.
	deliverNotice
	// deliverShared is a message a shared subscription handed over.
	deliverShared
)

// control is something the pump delivers outside the channel logs: a
// retained message on subscribe or a continuity notice.
type control struct {
	msg  *core.Message
	d    *delivery
	kind deliveryKind
}

// kicker forwards the engine's "events queued" callback to the connection,
// which exists only after the engine connection was opened.
type kicker struct{ fn atomic.Pointer[func()] }

func (k *kicker) fire() {
	if f := k.fn.Load(); f != nil {
		(*f)()
	}
}

// connection is one network connection of a session: its engine
// connection, its attachments and the drain that writes channel messages
// to the client.
type connection struct {
	s        *session
	cl       *mochi.Client
	identity *auth.Identity
	conn     *core.Conn
	ctx      context.Context
	cancel   context.CancelFunc
	workers  sync.WaitGroup

	// The drain runs on demand (see kick).
	drainMu      sync.Mutex
	draining     bool
	again        bool
	drainStopped bool
	drains       sync.WaitGroup

	quota  chan struct{} // an outbound QoS flow completed
	kicker *kicker

	// Acknowledgements owed for inbound QoS 1/2 publishes, in order.
	wbuf bytes.Buffer // PUBLISH packets the drain has not written yet

	ackMu      sync.Mutex
	acks       []*inboundAck
	ackWriteMu sync.Mutex
	ackReady   chan struct{} // an acknowledgement became due
	ackSpace   chan struct{} // acknowledgements were written

	ctrlMu sync.Mutex
	ctrl   []control

	atts    map[string]*core.Attachment // under s.mu; nil value: attaching
	stopped bool                        // under s.mu: no more attach workers
	// detached are attachments ended by an unsubscribe whose queued events
	// the drain must skip; under s.mu, cleared when the queue runs empty.
	detached   map[*core.Attachment]struct{}
	receiveMax int

	// connackNotice is the continuity user property for the CONNACK.
	connackNotice string
	// willPacket is the CONNECT that carried the will, if any; under s.mu.
	willPacket *packets.Packet
	expiry     *time.Timer
	// Read-goroutine state: inbound QoS 2 packet ids waiting for PUBREL,
	// the message id counter, the filters of the SUBSCRIBE in progress.
	inbound2    map[uint16]struct{}
	msgSeq      uint64
	pendingSubs map[string]subscriptionFilter
}

func newConnection(s *session, cl *mochi.Client, identity *auth.Identity, cc *core.Conn) *connection {
	ctx, cancel := context.WithCancel(context.Background())
	rm := int(cl.Properties.Props.ReceiveMaximum)
	if rm == 0 {
		rm = 65535 // [MQTT-3.1.2.11.3] absent means 65,535
	}
	return &connection{
		s: s, cl: cl, identity: identity, conn: cc,
		ctx: ctx, cancel: cancel,
		quota:      make(chan struct{}, 1),
		ackReady:   make(chan struct{}, 1),
		ackSpace:   make(chan struct{}, 1),
		atts:       map[string]*core.Attachment{},
		receiveMax: min(rm, s.b.opts.MaxInflight),
		inbound2:   map[uint16]struct{}{},
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// enqueue hands a control delivery to the drain.
func (c *connection) enqueue(ctl control) {
	c.ctrlMu.Lock()
	c.ctrl = append(c.ctrl, ctl)
	c.ctrlMu.Unlock()
	c.kick()
}

// stop ends delivery and the attachment workers and closes the engine
// connection. It is idempotent.
func (c *connection) stop() {
	c.s.mu.Lock()
	c.stopped = true
	c.s.mu.Unlock()
	c.drainMu.Lock()
	c.drainStopped = true
	c.drainMu.Unlock()
	c.cancel()
	c.conn.Close()
	c.drains.Wait()
	c.workers.Wait()
	if c.expiry != nil {
		c.expiry.Stop()
	}
}

// kick makes sure a drain runs: called when the engine queued events and
// when a control delivery is queued. An idle connection has no goroutine
// of its own here.
func (c *connection) kick() {
	c.drainMu.Lock()
	switch {
	case c.drainStopped:
	case c.draining:
		c.again = true
	default:
		c.draining = true
		c.drains.Add(1)
		go c.drain()
	}
	c.drainMu.Unlock()
}

// drain writes queued channel messages and control deliveries to the
// client until none are left, holding QoS 1 and 2 deliveries within the
// client's receive maximum. At most one drain runs per connection: it is the
// only writer of PUBLISH packets for the connection.
func (c *connection) drain() {
	defer c.drains.Done()
	for {
		ok := c.drainOnce()
		c.drainMu.Lock()
		if !ok {
			c.drainStopped = true // the connection is ending
		}
		if ok && c.again && !c.drainStopped {
			c.again = false
			c.drainMu.Unlock()
			continue
		}
		c.draining = false
		c.drainMu.Unlock()
		return
	}
}

// drainOnce delivers until both queues are empty. It returns false when
// the connection is ending.
func (c *connection) drainOnce() bool {
	var evs []core.Event
	for {
		if c.ctx.Err() != nil || !c.flushAcks() {
			return false
		}
		c.ctrlMu.Lock()
		ctl := c.ctrl
		c.ctrl = nil
		c.ctrlMu.Unlock()
		for _, x := range ctl {
			if !c.deliver(x.msg, x.d, x.kind, nil) {
				return false
			}
		}
		evs = c.conn.Take(evs[:0], 64)
		if len(evs) == 0 && len(ctl) == 0 {
			if c.flushWrites() != nil {
				return false
			}
			c.s.mu.Lock()
			clear(c.detached)
			c.s.mu.Unlock()
			return true
		}
		for i := range evs {
			if !c.handle(&evs[i]) {
				return false
			}
			evs[i] = core.Event{}
		}
		if c.flushWrites() != nil {
			return false
		}
	}
}

func (c *connection) handle(ev *core.Event) bool {
	switch ev.Kind {
	case core.EventMessage:
		return c.deliver(ev.Message, nil, deliverChannel, ev.Attachment)
	case core.EventContinuity:
		cont := ev.Continuity
		if cont.Reason == core.ReasonSlowConsumer {
			// The client reads slower than the channel moves: pick the
			// channel up again from the log where the client is.
			c.s.mu.Lock()
			delete(c.atts, cont.Channel)
			from := cont.Position
			if cp := c.s.pos[cont.Channel]; cp != nil && cp.sent != "" {
				from = cp.sent
			}
			c.s.mu.Unlock()
			c.s.b.metrics.slowConsumer.Inc()
			c.goAttach(cont.Channel, core.AttachOptions{From: from})
			return true
		}
		c.notifyContinuity(cont)
	}
	return true
}

// notifyContinuity tells the client, when it subscribed to
// $switchboard/continuity, that a channel's messages could not all be
// delivered.
func (c *connection) notifyContinuity(cont *core.Continuity) {
	c.s.b.metrics.continuity.WithLabelValues(string(cont.Reason)).Inc()
	c.s.mu.Lock()
	d := c.s.deliveryLocked(continuityTopic)
	c.s.mu.Unlock()
	if d == nil {
		return
	}
	c.enqueue(control{msg: continuityMessage(cont, time.Now()), d: d, kind: deliverNotice})
}

// deliver writes one message. Only channel deliveries move the session's
// position; the others come with their own delivery options. It returns
// false when the connection is ending.
//
// from is the attachment a channel message came from: its messages are
// skipped when an unsubscribe ended it (Attachment.Detached cannot tell:
// it is also true while an attachment's catch-up is still being queued).
func (c *connection) deliver(m *core.Message, d *delivery, kind deliveryKind, from *core.Attachment) bool {
	isControl := kind != deliverChannel
	s := c.s
	now := time.Now()
	s.mu.Lock()
	if _, stale := c.detached[from]; stale {
		s.mu.Unlock()
		return true
	}
	if d == nil {
		d = s.deliveryLocked(m.Channel)
	}
	var cp *channelPos
	advance := false
	if !isControl {
		cp = s.pos[m.Channel]
		if cp == nil {
			cp = &channelPos{}
			s.pos[m.Channel] = cp
		}
		// Messages from a rewind can be older than the position.
		advance = cp.sent == "" || m.Serial.Epoch != cp.sentSerial.Epoch || m.Serial.Seq > cp.sentSerial.Seq
	}
	pk, live := publishOf(m, s.version, now)
	if d == nil || !live || (d.noLocal && m.ClientID == s.id) {
		if advance {
			cp.sent, cp.sentSerial = m.Position, m.Serial
			if len(cp.pending) == 0 {
				cp.acked = m.Position
			} else {
				cp.pending = append(cp.pending, pendingAck{seq: m.Serial.Seq, pos: m.Position, done: true})
			}
			s.dirty = true
		}
		s.mu.Unlock()
		return true
	}
	qos := min(d.qos, publishedQoS(m))
	pk.FixedHeader.Qos = qos
	pk.FixedHeader.Retain = kind == deliverRetained || kind != deliverNotice && d.rap && publishedRetained(m)
	if s.version >= 5 && len(d.ids) > 0 {
		pk.Properties.SubscriptionIdentifier = d.ids
	}
	if qos > 0 {
		for len(s.outstanding) >= c.receiveMax {
			s.mu.Unlock()
			if kind != deliverShared && c.flushWrites() != nil {
				return false
			}
			select {
			case <-c.quota:
			case <-c.ackReady:
				// The client may wait for its own acknowledgements
				// before it acknowledges ours.
				if !c.flushAcks() {
					return false
				}
			case <-c.ctx.Done():
				return false
			}
			s.mu.Lock()
		}
		id, err := c.cl.NextPacketID()
		if err != nil {
			s.mu.Unlock()
			c.s.b.log.Warn("no free packet id: disconnecting the client", "client", s.id)
			_ = c.s.b.srv.DisconnectClient(c.cl, packets.ErrQuotaExceeded)
			return false
		}
		pk.PacketID = uint16(id)
		tracked := ""
		if advance {
			tracked = m.Channel
			cp.pending = append(cp.pending, pendingAck{packetID: pk.PacketID, seq: m.Serial.Seq, pos: m.Position})
		}
		s.outstanding[pk.PacketID] = tracked
		c.cl.State.Inflight.Set(pk)
		c.cl.State.Inflight.DecreaseSendQuota()
	}
	if advance {
		cp.sent, cp.sentSerial = m.Position, m.Serial
		if qos == 0 {
			if len(cp.pending) == 0 {
				cp.acked = m.Position
			} else {
				cp.pending = append(cp.pending, pendingAck{seq: m.Serial.Seq, pos: m.Position, done: true})
			}
		}
		s.dirty = true
	}
	if s.version >= 5 && c.cl.Properties.Props.TopicAliasMaximum > 0 {
		alias, exists := c.cl.State.TopicAliases.Outbound.Set(pk.TopicName)
		if alias > 0 {
			pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = alias, true
			if exists {
				pk.TopicName = ""
			}
		}
	}
	s.mu.Unlock()

	var err error
	if kind == deliverShared {
		// A shared group's goroutine, not this connection's drain: the
		// drain's buffer is not ours to use.
		err = c.cl.WritePacket(pk)
	} else {
		err = c.writePublish(pk)
	}
	switch {
	case err == nil:
		s.b.metrics.delivered.Inc()
	case errors.Is(err, packets.ErrPacketTooLarge):
		// Over the client's maximum packet size: the server must not send
		// it [MQTT-3.1.2-25]; the message counts as delivered.
		s.b.metrics.oversize.Inc()
		if qos > 0 {
			c.cl.State.Inflight.Delete(pk.PacketID)
			c.cl.State.Inflight.IncreaseSendQuota()
			s.mu.Lock()
			s.completeLocked(pk.PacketID)
			s.mu.Unlock()
		}
	default:
		// The connection is going; QoS 1 and 2 messages stay in flight
		// for the session to resend.
		return false
	}
	return true
}

// writePublish encodes a PUBLISH into the drain's write buffer, as mochi's
// WritePacket would (remaining message expiry, the client's maximum packet
// size, user properties kept [MQTT-3.1.2-29]); flushWrites sends the
// buffer in one write per batch instead of one per message.
func (c *connection) writePublish(pk packets.Packet) error {
	cl := c.cl
	if cl.Closed() {
		return mochi.ErrConnectionClosed
	}
	if pk.Expiry > 0 {
		pk.Properties.MessageExpiryInterval = uint32(max(pk.Expiry-time.Now().Unix(), 1)) // [MQTT-3.3.2-6]
	}
	pk.ProtocolVersion = cl.Properties.ProtocolVersion
	pk.Mods.MaxSize = cl.Properties.Props.MaximumPacketSize
	pk.Mods.AllowResponseInfo = true
	start := c.wbuf.Len()
	if err := pk.PublishEncode(&c.wbuf); err != nil {
		c.wbuf.Truncate(start)
		return err
	}
	if pk.Mods.MaxSize > 0 && uint32(c.wbuf.Len()-start) > pk.Mods.MaxSize {
		c.wbuf.Truncate(start)
		return packets.ErrPacketTooLarge // [MQTT-3.1.2-24] [MQTT-3.1.2-25]
	}
	if c.wbuf.Len() >= writeBatch {
		return c.flushWrites()
	}
	return nil
}

// writeBatch is the buffered size at which the drain writes without
// waiting for the end of its batch.
const writeBatch = 32 << 10

// flushWrites sends what writePublish buffered, under the client's write
// lock so that it never lands inside another packet.
func (c *connection) flushWrites() error {
	if c.wbuf.Len() == 0 {
		return nil
	}
	c.cl.Lock()
	_, err := c.wbuf.WriteTo(c.cl.Net.Conn)
	c.cl.Unlock()
	c.wbuf.Reset()
	if c.wbuf.Cap() > 4*writeBatch {
		c.wbuf = bytes.Buffer{} // give a burst's buffer back
	}
	return err
}

// goAttach attaches to a channel on a worker goroutine: the attach may wait
// for room in the delivery queue, which only the drain frees.
func (c *connection) goAttach(channelName string, opts core.AttachOptions) {
	c.s.mu.Lock()
	if _, ok := c.atts[channelName]; ok || c.stopped {
		c.s.mu.Unlock()
		return
	}
	c.atts[channelName] = nil
	c.workers.Add(1)
	c.s.mu.Unlock()
	go func() {
		defer c.workers.Done()
		c.attachReserved(channelName, opts)
	}()
}

// attach attaches to a channel unless already attached, waiting for the
// catch-up to be queued.
func (c *connection) attach(channelName string, opts core.AttachOptions) {
	c.s.mu.Lock()
	if _, ok := c.atts[channelName]; ok {
		c.s.mu.Unlock()
		return
	}
	c.atts[channelName] = nil
	c.s.mu.Unlock()
	c.attachReserved(channelName, opts)
}

func (c *connection) attachReserved(channelName string, opts core.AttachOptions) {
	a, err := c.conn.Attach(c.ctx, channelName, opts)
	s := c.s
	s.mu.Lock()
	cur, reserved := c.atts[channelName]
	if err != nil || !reserved || cur != nil {
		if reserved && cur == nil {
			delete(c.atts, channelName)
		}
		s.mu.Unlock()
		if a != nil {
			a.Detach()
		}
		if err != nil && c.ctx.Err() == nil {
			s.b.log.Debug("mqtt attach failed", "client", s.id, "channel", channelName, "err", err)
		}
		return
	}
	c.atts[channelName] = a
	if _, ok := s.pos[channelName]; !ok && a.Position != "" {
		cp := &channelPos{sent: a.Position, acked: a.Position}
		if p, err := position.Parse(a.Position); err == nil {
			cp.sentSerial, _ = p.Get(s.b.engine.Region())
		}
		s.pos[channelName] = cp
		s.dirty = true
	}
	s.mu.Unlock()
	if a.Continuity != nil {
		c.notifyContinuity(a.Continuity)
	}
}

// detachUnmatched ends the attachments no subscription matches any more
// and forgets their positions.
func (c *connection) detachUnmatchedLocked() []*core.Attachment {
	s := c.s
	var out []*core.Attachment
	for ch, a := range c.atts {
		if s.deliveryLocked(ch) != nil {
			continue
		}
		delete(c.atts, ch)
		delete(s.pos, ch)
		s.dirty = true
		if a != nil {
			if c.detached == nil {
				c.detached = map[*core.Attachment]struct{}{}
			}
			c.detached[a] = struct{}{}
			out = append(out, a)
		}
	}
	return out
}

// rewindSince is the rewind that replays what a channel without a known
// position got while the session was offline.
func (s *session) rewindSinceLocked(now time.Time) *channel.Rewind {
	if s.disconnectedAt.IsZero() {
		return nil
	}
	d := now.Sub(s.disconnectedAt) + time.Second
	return &channel.Rewind{Duration: d}
}
