package mqtt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/auth"
)

// pendingConnect is what authentication established before the session
// exists: the identity and the engine connection.
type pendingConnect struct {
	identity *auth.Identity
	conn     *core.Conn
	kick     *kicker
}

// takeoverGrace is how long a takeover waits for the old connection to end
// by itself before ending it.
const takeoverGrace = 50 * time.Millisecond

// noop replaces inbound packets the adapter handled itself: mochi treats a
// PUBACK for packet id 0 (never in flight) as nothing to do.
var noop = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}}

// hook connects mochi to the broker. Everything it does not provide stays
// mochi's default behaviour.
type hook struct {
	mochi.HookBase
	b *Broker
}

func (h *hook) ID() string { return "switchboard" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mochi.OnConnect, mochi.OnConnectAuthenticate, mochi.OnACLCheck, mochi.OnSessionEstablish, mochi.OnSessionEstablished,
		mochi.OnDisconnect, mochi.OnPacketRead, mochi.OnPacketEncode, mochi.OnSubscribe, mochi.OnSubscribed,
		mochi.OnUnsubscribed, mochi.OnQosComplete, mochi.OnQosDropped, mochi.OnClientExpired,
		mochi.StoredClients, mochi.StoredSubscriptions,
	}, []byte{b})
}

func (h *hook) conn(cl *mochi.Client) *connection {
	h.b.mu.Lock()
	defer h.b.mu.Unlock()
	return h.b.conns[cl]
}

// OnPacketRead takes over the packets that carry messages into the server:
// PUBLISH (and PUBREL of QoS 2) are handled here against the engine and
// reach mochi as a no-op.
func (h *hook) OnPacketRead(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Publish:
		c := h.conn(cl)
		if c == nil {
			return pk, packets.ErrProtocolViolation
		}
		return c.inboundPublish(pk)
	case packets.Disconnect:
		if w, ok := cl.Net.Conn.(*wireConn); ok {
			w.disconnected()
		}
		if pk.ReasonCode != packets.CodeDisconnectWillMessage.Code {
			if c := h.conn(cl); c != nil {
				c.takeWill() // a normal DISCONNECT discards the will [MQTT-3.1.2-10]
			}
		}
		return pk, nil
	case packets.Connack, packets.Suback, packets.Unsuback, packets.Pingresp, packets.Auth:
		// Only a server sends these; this broker offers no enhanced
		// authentication, so AUTH is unexpected too.
		c := h.conn(cl)
		if c == nil {
			return pk, packets.ErrProtocolViolation
		}
		return c.protocolError(packets.Code{Code: packets.ErrProtocolViolation.Code, Reason: "unexpected packet from a client"})
	case packets.Pubrel:
		c := h.conn(cl)
		if c == nil {
			return pk, packets.ErrProtocolViolation
		}
		delete(c.inbound2, pk.PacketID)
		// The message was stored when it was published: the flow ends
		// successfully even for an id this connection does not know (a
		// retry after reconnecting).
		if err := cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: pk.PacketID}); err != nil {
			return pk, err
		}
		return noop, nil
	}
	return pk, nil
}

// OnConnect refuses MQTT 5 enhanced authentication, which the broker does
// not offer: CONNACK 0x8C [MQTT-4.12.0-1].
func (h *hook) OnConnect(cl *mochi.Client, pk packets.Packet) error {
	if w, ok := cl.Net.Conn.(*wireConn); ok {
		w.attach(cl)
	}
	if pk.Properties.AuthenticationMethod != "" {
		h.b.metrics.refused.WithLabelValues("auth").Inc()
		_ = h.b.srv.SendConnack(cl, packets.ErrBadAuthenticationMethod, false, nil)
		return packets.ErrBadAuthenticationMethod
	}
	return nil
}

// OnConnectAuthenticate authenticates the username/password (a key
// name/secret, or "token"/JWT) and opens the engine connection.
func (h *hook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	b := h.b
	var creds auth.Credentials
	user, pass := string(pk.Connect.Username), string(pk.Connect.Password)
	switch {
	case user == "token":
		creds.Token = pass
	case user != "" || pass != "":
		creds.KeyName, creds.KeySecret = user, pass
	}
	id, err := b.engine.Authenticate(creds)
	if err != nil || (id.Anonymous && !b.opts.AllowAnonymous) {
		b.metrics.refused.WithLabelValues("auth").Inc()
		return false
	}
	if id.ClientID != "" && id.ClientID != "*" && id.ClientID != cl.ID {
		b.metrics.refused.WithLabelValues("client-id").Inc()
		return false
	}
	if pk.Connect.WillFlag {
		topic := pk.Connect.WillTopic
		if validateTopicName(topic) != nil || id.Check(topic, auth.OpPublish) != nil {
			b.metrics.refused.WithLabelValues("will").Inc()
			return false
		}
	}
	k := &kicker{}
	cc, err := b.engine.Connect(id, core.ConnectOptions{ClientID: cl.ID, Buffer: b.opts.Buffer, OnEvents: k.fire})
	if err != nil {
		b.metrics.refused.WithLabelValues("engine").Inc()
		return false
	}
	b.mu.Lock()
	b.pending[cl] = &pendingConnect{identity: id, conn: cc, kick: k}
	b.mu.Unlock()
	return true
}

// OnACLCheck decides subscriptions (publishes are decided in
// OnPacketRead). A wildcard filter is allowed when the capability covers
// the filter as written ("chat:*" covers "chat:room/+"); each channel it
// then matches is checked again when attached.
func (h *hook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	c := h.conn(cl)
	if c == nil || write {
		return false
	}
	f, err := parseSubscriptionFilter(topic)
	if err != nil {
		return false
	}
	switch {
	case hasPrefixFold(f.Filter, sysPrefix):
		return c.identity.Dev || c.identity.Can("*", auth.OpAdmin)
	case strings.HasPrefix(f.Filter, systemPrefix):
		return true
	}
	return c.identity.Can(f.Filter, auth.OpSubscribe)
}

// OnSessionEstablish runs after authentication and before CONNACK: it
// takes the session over from a previous connection, or starts a new one,
// and works out what the CONNACK must say about continuity.
func (h *hook) OnSessionEstablish(cl *mochi.Client, pk packets.Packet) {
	b := h.b
	b.mu.Lock()
	p := b.pending[cl]
	delete(b.pending, cl)
	s := b.sessions[cl.ID]
	b.mu.Unlock()
	if p == nil || p.conn == nil {
		return
	}
	if s != nil {
		s.mu.Lock()
		old := s.conn
		s.conn = nil
		s.mu.Unlock()
		if old != nil {
			// A client that sent DISCONNECT and reconnected at once may
			// have its DISCONNECT still unread on the old connection:
			// give that connection a moment to end by itself, so that a
			// will it discarded is not published [MQTT-3.1.2-10].
			for wait := time.Now().Add(takeoverGrace); !old.cl.Closed() && time.Now().Before(wait); {
				time.Sleep(time.Millisecond)
			}
			b.mu.Lock()
			delete(b.conns, old.cl)
			b.unindexWildcards(old)
			b.mu.Unlock()
			// A write blocked on a client that stopped reading must not
			// hold the takeover up.
			if nc := old.cl.Net.Conn; nc != nil {
				_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
			}
			old.stop()
			b.leaveGroups(s, old)
			b.metrics.takeovers.Inc()
			if will := old.takeWill(); will != nil {
				// The old connection's will is due now; a delayed one is
				// cancelled below because the session continues.
				s.scheduleWill(old.identity, will, will.Connect.WillProperties.WillDelayInterval)
			}
		}
		s.cancelWill()
		if pk.Connect.Clean {
			b.forgetSession(s)
			s = nil
		}
	}
	if s == nil {
		s = newSession(b, cl.ID)
		b.mu.Lock()
		b.sessions[cl.ID] = s
		b.mu.Unlock()
	}
	c := newConnection(s, cl, p.identity, p.conn)
	c.kicker = p.kick
	if pk.Connect.WillFlag {
		// The adapter publishes the will itself (through the engine, with
		// its delay); mochi must not.
		will := pk
		c.willPacket = &will
		cl.Properties.Will = mochi.Will{}
	}
	s.mu.Lock()
	s.version = cl.Properties.ProtocolVersion
	switch {
	case s.version >= 5:
		s.expiry = min(cl.Properties.Props.SessionExpiryInterval, b.srv.Options.Capabilities.MaximumSessionExpiryInterval)
	case pk.Connect.Clean:
		s.expiry = 0
	default:
		s.expiry = b.srv.Options.Capabilities.MaximumSessionExpiryInterval
	}
	s.conn = c
	s.dirty = true
	type check struct{ ch, from string }
	var checks []check
	for ch, cp := range s.pos {
		if cp.sent != "" && s.deliveryLocked(ch) != nil {
			checks = append(checks, check{ch, cp.sent})
		}
	}
	s.mu.Unlock()
	var gaps []string
	for _, k := range checks {
		if cont, err := b.engine.CheckResume(k.ch, k.from); err == nil && cont != nil {
			gaps = append(gaps, k.ch+" "+string(cont.Reason))
		}
	}
	if len(gaps) > 0 {
		c.connackNotice = strings.Join(gaps, ", ")
	}
	b.mu.Lock()
	b.conns[cl] = c
	b.indexWildcards(c)
	b.mu.Unlock()
	b.metrics.connections.Inc()
	b.metrics.sessions.Set(float64(b.sessionCount()))
}

// OnPacketEncode adds the continuity notice to an MQTT 5 CONNACK, and keeps
// the user properties of PUBLISH packets for clients that asked for no
// problem information: that request only concerns packets other than
// PUBLISH, CONNACK and DISCONNECT [MQTT-3.1.2-29], mochi applies it to all.
func (h *hook) OnPacketEncode(cl *mochi.Client, pk packets.Packet) packets.Packet {
	switch pk.FixedHeader.Type {
	case packets.Publish:
		pk.Mods.DisallowProblemInfo = false
		return pk
	case packets.Disconnect:
		if w, ok := cl.Net.Conn.(*wireConn); ok {
			w.disconnected()
		}
		return pk
	case packets.Connack:
	default:
		return pk
	}
	if pk.ReasonCode != 0 {
		if w, ok := cl.Net.Conn.(*wireConn); ok {
			w.disconnected() // a refused CONNECT ends with its CONNACK
		}
		if cl.Properties.ProtocolVersion < 5 && pk.ReasonCode > 5 {
			// MQTT 3.1.1 defines return codes 1 to 5; for anything else
			// (a malformed CONNECT) the connection closes without a
			// CONNACK [MQTT-3.1.2-3]. A packet over its size limit is not
			// written.
			pk.Mods.MaxSize = 1
		}
		return pk
	}
	if cl.Properties.ProtocolVersion < 5 {
		return pk
	}
	pk.Properties.MaximumPacketSize = uint32(h.b.opts.MaxPacketSize) // [MQTT-3.2.2-15]
	if c := h.conn(cl); c != nil && c.connackNotice != "" {
		pk.Mods.DisallowProblemInfo = false // allowed on CONNACK [MQTT-3.1.2-29]
		pk.Properties.User = append(pk.Properties.User, packets.UserProperty{Key: "switchboard-continuity", Val: c.connackNotice})
	}
	return pk
}

// OnSessionEstablished runs after CONNACK (and the resend of the session's
// unacknowledged messages): it starts delivery and resumes every
// subscribed channel from where the session was.
func (h *hook) OnSessionEstablished(cl *mochi.Client, _ packets.Packet) {
	b := h.b
	c := h.conn(cl)
	if c == nil {
		return
	}
	kick := c.kick
	c.kicker.fn.Store(&kick)
	c.kick()
	s := c.s
	now := time.Now()
	type job struct {
		ch   string
		opts core.AttachOptions
	}
	var jobs []job
	var wildcards, exact []string
	var shared []*subscription
	s.mu.Lock()
	rewind := s.rewindSinceLocked(now)
	for ch, cp := range s.pos {
		if s.deliveryLocked(ch) == nil {
			delete(s.pos, ch)
			continue
		}
		if cp.sent != "" {
			jobs = append(jobs, job{ch, core.AttachOptions{From: cp.sent}})
		}
	}
	for _, sub := range s.subs {
		switch {
		case !attachable(sub.filter.Filter):
		case sub.filter.Wildcard():
			wildcards = append(wildcards, sub.filter.Filter)
		default:
			if _, ok := s.pos[sub.filter.Filter]; !ok {
				exact = append(exact, sub.filter.Filter)
			}
		}
	}
	for _, sub := range s.shared {
		shared = append(shared, sub)
	}
	s.mu.Unlock()
	for _, ch := range exact {
		jobs = append(jobs, job{ch, core.AttachOptions{Rewind: rewind}})
	}
	for _, f := range wildcards {
		for _, ch := range b.matchingChannels(f, rewind != nil) {
			s.mu.Lock()
			_, known := s.pos[ch]
			s.mu.Unlock()
			if !known {
				jobs = append(jobs, job{ch, core.AttachOptions{Rewind: rewind}})
			}
		}
	}
	for _, j := range jobs {
		c.attach(j.ch, j.opts)
	}
	for _, sub := range shared {
		b.joinGroup(c, sub)
	}
	if exp := c.identity.ExpiresAt; !exp.IsZero() {
		c.expiry = time.AfterFunc(time.Until(exp), func() {
			_ = b.srv.DisconnectClient(cl, packets.ErrMaxConnectTime)
		})
	}
}

// OnDisconnect ends the connection's delivery, publishes the will when
// the connection did not end with a normal DISCONNECT, and stores or drops
// the session.
func (h *hook) OnDisconnect(cl *mochi.Client, err error, expire bool) {
	b := h.b
	b.mu.Lock()
	c := b.conns[cl]
	delete(b.conns, cl)
	if c != nil {
		b.unindexWildcards(c)
	}
	if p := b.pending[cl]; p != nil {
		delete(b.pending, cl)
		if p.conn != nil {
			p.conn.Close()
		}
	}
	b.mu.Unlock()
	if c == nil {
		return
	}
	b.metrics.connections.Dec()
	c.stop()
	s := c.s
	b.leaveGroups(s, c)
	s.mu.Lock()
	current := s.conn == c
	if current {
		s.conn = nil
		s.disconnectedAt = time.Now()
		s.dirty = true
	}
	expiry := s.expiry
	s.mu.Unlock()
	if will := c.takeWill(); err != nil && will != nil {
		s.scheduleWill(c.identity, will, min(will.Connect.WillProperties.WillDelayInterval, expiry))
	}
	if !current {
		return
	}
	if expire || expiry == 0 {
		b.forgetSession(s)
		return
	}
	b.saveSession(s)
}

// OnClientExpired drops a session whose expiry passed.
func (h *hook) OnClientExpired(cl *mochi.Client) {
	h.b.mu.Lock()
	s := h.b.sessions[cl.ID]
	h.b.mu.Unlock()
	if s != nil {
		s.mu.Lock()
		live := s.conn != nil
		s.mu.Unlock()
		if !live {
			h.b.forgetSession(s)
		}
	}
}

// OnQosComplete and OnQosDropped end an outbound QoS 1 or 2 flow (inbound
// flows never reach mochi).
func (h *hook) OnQosComplete(cl *mochi.Client, pk packets.Packet) { h.complete(cl, pk.PacketID) }
func (h *hook) OnQosDropped(cl *mochi.Client, pk packets.Packet)  { h.complete(cl, pk.PacketID) }

func (h *hook) complete(cl *mochi.Client, id uint16) {
	h.b.mu.Lock()
	s := h.b.sessions[cl.ID]
	h.b.mu.Unlock()
	if s == nil {
		return
	}
	s.mu.Lock()
	ok := s.completeLocked(id)
	c := s.conn
	s.mu.Unlock()
	if ok && c != nil {
		signal(c.quota)
	}
}

// OnSubscribe strips channel qualifiers and validates filters: a filter
// mochi must refuse is replaced by one it finds invalid (0x8F, or 0x80 for
// MQTT 3.1.1), the only per-filter refusal a hook can cause.
func (h *hook) OnSubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	c := h.conn(cl)
	if c == nil {
		return pk
	}
	filters := make(packets.Subscriptions, len(pk.Filters))
	copy(filters, pk.Filters)
	c.pendingSubs = map[string]subscriptionFilter{}
	for i, sub := range filters {
		f, err := parseSubscriptionFilter(sub.Filter)
		if err != nil {
			h.b.metrics.refused.WithLabelValues("filter").Inc()
			filters[i].Filter = "#/"
			continue
		}
		filters[i].Filter = f.Key()
		c.pendingSubs[f.Key()] = f
	}
	pk.Filters = filters
	return pk
}

// OnSubscribed adds the granted subscriptions to the session, sends
// retained messages and attaches the channels they match.
func (h *hook) OnSubscribed(cl *mochi.Client, pk packets.Packet, codes []byte) {
	b := h.b
	c := h.conn(cl)
	if c == nil {
		return
	}
	s := c.s
	for i, req := range pk.Filters {
		if i >= len(codes) || codes[i] >= 0x80 {
			continue
		}
		f, ok := c.pendingSubs[req.Filter]
		if !ok {
			continue
		}
		sub := &subscription{filter: f, qos: codes[i], noLocal: req.NoLocal, rap: req.RetainAsPublished, retainHandling: req.RetainHandling, identifier: req.Identifier}
		s.mu.Lock()
		var existed bool
		if f.Group != "" {
			_, existed = s.shared[f.Key()]
			s.shared[f.Key()] = sub
		} else {
			_, existed = s.subs[f.Key()]
			s.subs[f.Key()] = sub
		}
		clear(s.deliveries)
		s.dirty = true
		s.mu.Unlock()
		b.metrics.subscribes.Inc()
		if f.Group != "" {
			if !existed {
				b.joinGroup(c, sub)
			}
			continue
		}
		if !attachable(f.Filter) {
			continue
		}
		if !f.HasRewind && (sub.retainHandling == 0 || sub.retainHandling == 1 && !existed) {
			d := &delivery{qos: sub.qos, rap: true}
			if sub.identifier > 0 {
				d.ids = []int{sub.identifier}
			}
			for _, m := range b.retained.matching(f.Filter) {
				if c.identity.Can(m.Channel, auth.OpSubscribe) {
					c.enqueue(control{msg: m, d: d, kind: deliverRetained})
				}
			}
		}
		var opts core.AttachOptions
		if f.HasRewind {
			r := f.Rewind
			opts.Rewind = &r
		}
		if f.Wildcard() {
			b.mu.Lock()
			b.indexWildcards(c)
			b.mu.Unlock()
			for _, ch := range b.matchingChannels(f.Filter, false) {
				if c.identity.Can(ch, auth.OpSubscribe) {
					c.attach(ch, opts)
				}
			}
		} else {
			c.attach(f.Filter, opts)
		}
	}
	c.pendingSubs = nil
	b.saveSession(s)
}

// OnUnsubscribed removes subscriptions and detaches the channels no
// remaining subscription matches.
func (h *hook) OnUnsubscribed(cl *mochi.Client, pk packets.Packet) {
	b := h.b
	c := h.conn(cl)
	if c == nil {
		return // the session is ending: nothing to keep
	}
	s := c.s
	var left []*subscription
	s.mu.Lock()
	for _, req := range pk.Filters {
		f, err := parseSubscriptionFilter(req.Filter)
		if err != nil {
			continue
		}
		if sub, ok := s.shared[f.Key()]; ok {
			delete(s.shared, f.Key())
			left = append(left, sub)
		}
		delete(s.subs, f.Key())
	}
	clear(s.deliveries)
	detached := c.detachUnmatchedLocked()
	s.dirty = true
	s.mu.Unlock()
	for _, a := range detached {
		a.Detach()
	}
	for _, sub := range left {
		b.leaveGroup(c, sub)
	}
	b.saveSession(s)
}

// StoredClients and StoredSubscriptions give mochi the persistent sessions
// found in the store, so that a client resuming after a restart gets
// "session present" and keeps its subscriptions.
func (h *hook) StoredClients() ([]storage.Client, error) {
	var out []storage.Client
	for id, rec := range h.b.restored {
		out = append(out, storage.Client{
			ID: id, ProtocolVersion: rec.Version, Listener: "restored",
			Properties: storage.ClientProperties{SessionExpiryInterval: rec.Expiry, SessionExpiryIntervalFlag: true},
		})
	}
	return out, nil
}

func (h *hook) StoredSubscriptions() ([]storage.Subscription, error) {
	var out []storage.Subscription
	for id, rec := range h.b.restored {
		for _, sub := range rec.Subs {
			out = append(out, storage.Subscription{
				Client: id, Filter: sub.Filter, Qos: sub.QoS, NoLocal: sub.NoLocal,
				RetainAsPublished: sub.RetainAsPub, RetainHandling: sub.RetainHandling, Identifier: sub.Identifier,
			})
		}
	}
	h.b.restored = nil
	return out, nil
}

// inboundPublish handles a PUBLISH from the client: the message is
// appended to the channel and acknowledged (PUBACK, PUBREC) only once the
// engine accepted it durably. Errors get the MQTT 5 reason code on the
// acknowledgement, or close an MQTT 3.1.1 connection, which has no
// negative acknowledgement.
func (c *connection) inboundPublish(pk packets.Packet) (packets.Packet, error) {
	b := c.s.b
	cl := c.cl
	if code := pk.PublishValidate(b.srv.Options.Capabilities.TopicAliasMaximum); code != packets.CodeSuccess {
		return c.protocolError(code)
	}
	if strings.ContainsAny(pk.Properties.ResponseTopic, "+#") {
		// A response topic is a topic name [MQTT-3.3.2-14].
		return c.protocolError(packets.Code{Code: packets.ErrProtocolViolation.Code, Reason: "response topic contains a wildcard"})
	}
	if pk.Properties.TopicAliasFlag && pk.Properties.TopicAlias > 0 {
		pk.TopicName = cl.State.TopicAliases.Inbound.Set(pk.Properties.TopicAlias, pk.TopicName)
		if pk.TopicName == "" {
			return c.protocolError(packets.ErrTopicAliasInvalid)
		}
	}
	qos := pk.FixedHeader.Qos
	if qos == 2 {
		if _, open := c.inbound2[pk.PacketID]; open {
			// A retry of a publish already stored: acknowledge it again.
			return noop, c.writeAck(pk.PacketID, qos, packets.CodeSuccess)
		}
		if len(c.inbound2) >= b.opts.ReceiveMaximum {
			return c.protocolError(packets.ErrReceiveMaximum)
		}
	}
	if err := validateTopicName(pk.TopicName); err != nil {
		return c.refusePublish(pk, packets.Code{Code: packets.ErrTopicNameInvalid.Code, Reason: err.Error()})
	}
	if err := c.identity.Check(pk.TopicName, auth.OpPublish); err != nil {
		b.metrics.refused.WithLabelValues("publish").Inc()
		return c.refusePublish(pk, packets.ErrNotAuthorized)
	}
	m, err := messageFromPublish(&pk)
	if err != nil {
		return c.refusePublish(pk, packets.ErrPayloadFormatInvalid)
	}
	if qos > 0 {
		c.s.mu.Lock()
		if pk.FixedHeader.Dup {
			m.ID = c.s.inboundIDs[pk.PacketID]
		}
		if m.ID == "" {
			c.msgSeq++
			m.ID = c.conn.ID() + ":" + strconv.FormatUint(c.msgSeq, 10)
			c.s.inboundIDs[pk.PacketID] = m.ID
		}
		c.s.mu.Unlock()
	}
	if qos == 2 {
		c.inbound2[pk.PacketID] = struct{}{}
	}
	if pk.FixedHeader.Retain {
		// Rare: published synchronously so that the retained message is
		// updated in the order of the channel.
		res, err := c.conn.Publish(c.ctx, pk.TopicName, []*core.Message{m})
		c.published(pk, m, res, err)
		return noop, nil
	}
	var ack *inboundAck
	if qos > 0 {
		if ack = c.queueAck(pk); ack == nil {
			return c.protocolError(packets.ErrReceiveMaximum)
		}
	}
	// Sequenced now, acknowledged when durable: a connection pipelines its
	// publishes, and acknowledgements go out in order from the drain.
	err = c.conn.PublishAsync(c.ctx, pk.TopicName, []*core.Message{m}, func(res []core.PublishResult, err error) {
		if err != nil {
			b.metrics.refused.WithLabelValues("engine").Inc()
		} else {
			b.metrics.published.WithLabelValues(strconv.Itoa(int(qos))).Inc()
		}
		if ack != nil {
			c.completeAck(ack, err)
		}
	})
	if err != nil {
		b.metrics.refused.WithLabelValues("engine").Inc()
		if ack != nil {
			c.completeAck(ack, err)
			return noop, nil
		}
		return c.refusePublish(pk, reasonFor(err))
	}
	return noop, nil
}

// published finishes a synchronous publish: the retained message, then the
// acknowledgement in its turn.
func (c *connection) published(pk packets.Packet, m *core.Message, res []core.PublishResult, err error) {
	b := c.s.b
	if err != nil {
		b.metrics.refused.WithLabelValues("engine").Inc()
	} else {
		b.metrics.published.WithLabelValues(strconv.Itoa(int(pk.FixedHeader.Qos))).Inc()
		if !res[0].Duplicate {
			var kept *core.Message
			if len(pk.Payload) > 0 {
				kept = m // accepted: the engine filled in channel, serial and time
			}
			if err := b.retained.set(pk.TopicName, kept); err != nil {
				b.log.Warn("mqtt: storing a retained message", "channel", pk.TopicName, "err", err)
			}
		}
	}
	if pk.FixedHeader.Qos > 0 {
		if ack := c.queueAck(pk); ack != nil {
			c.completeAck(ack, err)
		}
	}
}

// inboundAck is the acknowledgement owed for a QoS 1 or 2 publish. They are
// written in the order the publishes arrived [MQTT-4.6.0-2], by the drain.
type inboundAck struct {
	id   uint16
	qos  byte
	done bool
	code packets.Code
}

// queueAck reserves the acknowledgement of a publish; nil when the client
// already has receiveMaximum publishes unacknowledged (MQTT 5: a protocol
// error). MQTT 3.1.1 clients, which know no receive maximum, wait instead.
func (c *connection) queueAck(pk packets.Packet) *inboundAck {
	limit := c.s.b.opts.ReceiveMaximum
	c.ackMu.Lock()
	defer c.ackMu.Unlock()
	for len(c.acks) >= limit {
		if c.cl.Properties.ProtocolVersion >= 5 {
			return nil
		}
		c.ackMu.Unlock()
		select {
		case <-c.ackSpace:
		case <-c.ctx.Done():
		}
		c.ackMu.Lock()
		if c.ctx.Err() != nil {
			break
		}
	}
	a := &inboundAck{id: pk.PacketID, qos: pk.FixedHeader.Qos}
	c.acks = append(c.acks, a)
	return a
}

// completeAck records the outcome of a publish and has the drain write
// what is due. It never blocks (it runs in the engine's callback).
func (c *connection) completeAck(a *inboundAck, err error) {
	c.ackMu.Lock()
	a.done = true
	a.code = packets.CodeSuccess
	if err != nil {
		a.code = reasonFor(err)
	}
	c.ackMu.Unlock()
	signal(c.ackReady)
	c.kick()
}

// flushAcks writes the acknowledgements whose turn has come. An MQTT 3.1.1
// client whose publish failed is disconnected: it has no negative
// acknowledgement. It returns false when the connection is ending.
func (c *connection) flushAcks() bool {
	c.ackWriteMu.Lock() // one writer at a time keeps them in order
	defer c.ackWriteMu.Unlock()
	for {
		c.ackMu.Lock()
		n := 0
		for n < len(c.acks) && c.acks[n].done {
			n++
		}
		due := append([]*inboundAck(nil), c.acks[:n]...)
		c.acks = append(c.acks[:0], c.acks[n:]...)
		c.ackMu.Unlock()
		if n == 0 {
			return true
		}
		signal(c.ackSpace)
		for _, a := range due {
			if a.code.Code >= 0x80 && c.cl.Properties.ProtocolVersion < 5 {
				c.cl.Stop(a.code)
				return false
			}
			if err := c.writeAck(a.id, a.qos, a.code); err != nil {
				return false
			}
		}
	}
}

// writeAck sends the PUBACK (QoS 1) or PUBREC (QoS 2) of an inbound
// publish.
func (c *connection) writeAck(id uint16, qos byte, code packets.Code) error {
	typ := packets.Puback
	if qos == 2 {
		typ = packets.Pubrec
	}
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: typ}, PacketID: id, ReasonCode: code.Code}
	if code.Code >= 0x80 {
		ack.Properties.ReasonString = code.Reason
	}
	return c.cl.WritePacket(ack)
}

// refusePublish answers a publish the server will not take: MQTT 5 gets a
// negative PUBACK/PUBREC (nothing for QoS 0); MQTT 3.1.1 has no negative
// acknowledgement, so a QoS 1/2 publish closes the connection and a QoS 0
// one is dropped.
func (c *connection) refusePublish(pk packets.Packet, code packets.Code) (packets.Packet, error) {
	if pk.FixedHeader.Qos == 0 {
		return noop, nil
	}
	if c.cl.Properties.ProtocolVersion >= 5 {
		if a := c.queueAck(pk); a != nil {
			c.ackMu.Lock()
			a.done, a.code = true, code
			c.ackMu.Unlock()
			c.kick()
			return noop, nil
		}
		return c.protocolError(packets.ErrReceiveMaximum)
	}
	return pk, code
}

// protocolError disconnects the client: MQTT 5 clients get a DISCONNECT
// with the reason code first, after the acknowledgements of the publishes
// before the offending packet.
func (c *connection) protocolError(code packets.Code) (packets.Packet, error) {
	c.s.b.metrics.refused.WithLabelValues("protocol").Inc()
	for wait := time.Now().Add(time.Second); ; time.Sleep(time.Millisecond) {
		c.flushAcks()
		c.ackMu.Lock()
		left := len(c.acks)
		c.ackMu.Unlock()
		if left == 0 || time.Now().After(wait) {
			break
		}
	}
	if c.cl.Properties.ProtocolVersion >= 5 {
		_ = c.s.b.srv.DisconnectClient(c.cl, code)
	}
	return noop, code
}

// reasonFor maps an engine error to an MQTT 5 PUBACK reason code, keeping
// the engine's message as the reason string.
func reasonFor(err error) packets.Code {
	var ae *apierr.Error
	if !errors.As(err, &ae) {
		return packets.Code{Code: packets.ErrUnspecifiedError.Code, Reason: err.Error()}
	}
	code := packets.ErrImplementationSpecificError.Code
	switch {
	case ae.Code == apierr.Unauthorized || ae.Code == apierr.OperationNotAllowed:
		code = packets.ErrNotAuthorized.Code
	case ae.Code == apierr.InvalidChannelName:
		code = packets.ErrTopicNameInvalid.Code
	case ae.Code == apierr.RateLimited:
		code = packets.ErrQuotaExceeded.Code
	case ae.Code == apierr.Unavailable:
		code = packets.ErrUnspecifiedError.Code
	}
	return packets.Code{Code: code, Reason: ae.Message}
}

// validateTopicName checks a PUBLISH topic: a channel name, without
// wildcards, outside the topics the server reserves.
func validateTopicName(topic string) error {
	if strings.ContainsAny(topic, "+#") {
		return errorf("topic name %q contains a wildcard", topic)
	}
	if strings.HasPrefix(topic, "$") {
		return errorf("topic %q is reserved for the server", topic)
	}
	return validateFilter(topic)
}

// continuityMessage is the notice published on $switchboard/continuity.
func continuityMessage(cont *core.Continuity, now time.Time) *core.Message {
	data, _ := json.Marshal(map[string]string{"channel": cont.Channel, "reason": string(cont.Reason), "position": cont.Position})
	return &core.Message{
		Channel: continuityTopic, Data: data, Encoding: "json", ContentType: "application/json",
		Timestamp: now.UnixMilli(), Name: "continuity",
	}
}

// takeWill returns the connection's will and forgets it, so that it is
// published at most once.
func (c *connection) takeWill() *packets.Packet {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	will := c.willPacket
	c.willPacket = nil
	return will
}

// scheduleWill publishes a will after delay seconds unless the session
// resumes first [MQTT-3.1.3-9].
func (s *session) scheduleWill(id *auth.Identity, will *packets.Packet, delay uint32) {
	publish := func() {
		s.b.publishWill(id, s.id, will)
	}
	if delay == 0 {
		publish()
		return
	}
	s.mu.Lock()
	if s.willTimer != nil {
		s.willTimer.Stop()
	}
	s.willTimer = time.AfterFunc(time.Duration(delay)*time.Second, publish)
	s.mu.Unlock()
}

func (s *session) cancelWill() {
	s.mu.Lock()
	if s.willTimer != nil {
		s.willTimer.Stop()
		s.willTimer = nil
	}
	s.mu.Unlock()
}

// publishWill appends a will message to its channel (and keeps it as the
// retained message when it asked to be).
func (b *Broker) publishWill(id *auth.Identity, clientID string, connect *packets.Packet) {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: connect.Connect.WillQos, Retain: connect.Connect.WillRetain},
		TopicName:   connect.Connect.WillTopic,
		Payload:     connect.Connect.WillPayload,
		Properties:  connect.Connect.WillProperties,
	}
	m, err := messageFromPublish(&pk)
	if err != nil {
		b.log.Warn("mqtt: will not published", "client", clientID, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.engine.Publish(ctx, id, "", clientID, pk.TopicName, []*core.Message{m}); err != nil {
		b.log.Warn("mqtt: will not published", "client", clientID, "channel", pk.TopicName, "err", err)
		return
	}
	b.metrics.wills.Inc()
	if pk.FixedHeader.Retain {
		var kept *core.Message
		if len(pk.Payload) > 0 {
			kept = m
		}
		if err := b.retained.set(pk.TopicName, kept); err != nil {
			b.log.Warn("mqtt: storing a retained will", "channel", pk.TopicName, "err", err)
		}
	}
}
