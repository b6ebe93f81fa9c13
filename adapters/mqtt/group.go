package mqtt

import (
	"context"
	"sync"

	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/auth"
)

// A shared subscription ($share/<group>/<filter>) delivers each message of
// the channels its filter matches to one member of the group, in turn.
// The group follows the channels live while it has connected members;
// what is published while it has none is not queued for it.

type groupMember struct {
	c   *connection
	sub *subscription
}

type sharedGroup struct {
	b        *Broker
	key      string
	filter   string
	wildcard bool
	conn     *core.Conn
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	workers  sync.WaitGroup

	mu      sync.Mutex
	members []groupMember
	next    int
	atts    map[string]*core.Attachment
}

// groupIdentity is the engine identity of shared groups: the members'
// own capabilities were checked when they subscribed.
var groupIdentity = &auth.Identity{Dev: true}

func (b *Broker) joinGroup(c *connection, sub *subscription) {
	key := sub.filter.Key()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	g := b.groups[key]
	created := false
	if g == nil {
		conn, err := b.engine.Connect(groupIdentity, core.ConnectOptions{ClientID: "$share/" + sub.filter.Group, Buffer: b.opts.Buffer})
		if err != nil {
			b.mu.Unlock()
			b.log.Warn("mqtt: shared subscription not started", "group", key, "err", err)
			return
		}
		g = &sharedGroup{b: b, key: key, filter: sub.filter.Filter, wildcard: sub.filter.Wildcard(), conn: conn,
			done: make(chan struct{}), atts: map[string]*core.Attachment{}}
		g.ctx, g.cancel = context.WithCancel(context.Background())
		b.groups[key] = g
		created = true
	}
	g.mu.Lock()
	g.members = append(g.members, groupMember{c: c, sub: sub})
	g.mu.Unlock()
	b.mu.Unlock()
	if !created {
		return
	}
	go g.pump()
	if !attachable(g.filter) {
		return
	}
	if g.wildcard {
		for _, ch := range b.matchingChannels(g.filter, false) {
			g.goAttach(ch, core.AttachOptions{})
		}
	} else {
		g.goAttach(g.filter, core.AttachOptions{})
	}
}

func (b *Broker) leaveGroup(c *connection, sub *subscription) {
	key := sub.filter.Key()
	b.mu.Lock()
	g := b.groups[key]
	if g == nil {
		b.mu.Unlock()
		return
	}
	g.mu.Lock()
	for i, m := range g.members {
		if m.c == c {
			g.members = append(g.members[:i], g.members[i+1:]...)
			break
		}
	}
	empty := len(g.members) == 0
	g.mu.Unlock()
	if empty {
		delete(b.groups, key)
	}
	b.mu.Unlock()
	if empty {
		g.stop()
	}
}

// leaveGroups takes a connection out of every group its session is in.
func (b *Broker) leaveGroups(s *session, c *connection) {
	s.mu.Lock()
	subs := make([]*subscription, 0, len(s.shared))
	for _, sub := range s.shared {
		subs = append(subs, sub)
	}
	s.mu.Unlock()
	for _, sub := range subs {
		b.leaveGroup(c, sub)
	}
}

func (g *sharedGroup) stop() {
	g.mu.Lock()
	g.cancel()
	g.mu.Unlock()
	g.conn.Close()
	<-g.done
	g.workers.Wait()
}

func (g *sharedGroup) goAttach(channelName string, opts core.AttachOptions) {
	g.mu.Lock()
	if _, ok := g.atts[channelName]; ok || g.ctx.Err() != nil {
		g.mu.Unlock()
		return
	}
	g.atts[channelName] = nil
	g.workers.Add(1)
	g.mu.Unlock()
	go func() {
		defer g.workers.Done()
		a, err := g.conn.Attach(g.ctx, channelName, opts)
		g.mu.Lock()
		defer g.mu.Unlock()
		if err != nil {
			delete(g.atts, channelName)
			return
		}
		g.atts[channelName] = a
	}()
}

// pump hands each message to the next member that takes it.
func (g *sharedGroup) pump() {
	defer close(g.done)
	var evs []core.Event
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-g.conn.Ready():
		}
		for {
			evs = g.conn.Take(evs[:0], 64)
			if len(evs) == 0 {
				break
			}
			for i := range evs {
				ev := &evs[i]
				switch ev.Kind {
				case core.EventMessage:
					g.dispatch(ev.Message)
				case core.EventContinuity:
					if ev.Continuity.Reason == core.ReasonSlowConsumer {
						g.mu.Lock()
						delete(g.atts, ev.Continuity.Channel)
						g.mu.Unlock()
						g.goAttach(ev.Continuity.Channel, core.AttachOptions{From: ev.Continuity.Position})
					}
				}
				evs[i] = core.Event{}
			}
		}
	}
}

func (g *sharedGroup) dispatch(m *core.Message) {
	g.mu.Lock()
	n := len(g.members)
	start := g.next
	g.next++
	members := append([]groupMember(nil), g.members...)
	g.mu.Unlock()
	for i := 0; i < n; i++ {
		mb := members[(start+i)%n]
		if !mb.c.identity.Can(m.Channel, auth.OpSubscribe) {
			continue
		}
		d := &delivery{qos: mb.sub.qos, rap: mb.sub.rap, noLocal: mb.sub.noLocal}
		if mb.sub.identifier > 0 {
			d.ids = []int{mb.sub.identifier}
		}
		if mb.c.deliver(m, d, deliverShared, nil) {
			return
		}
	}
}
