package core

import (
	"context"
	"sort"

	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/core/channel"
)

// PresenceAction is what happened to a presence member.
type PresenceAction string

// Presence actions. Members returns members with ActionPresent.
const (
	ActionEnter   PresenceAction = "enter"
	ActionUpdate  PresenceAction = "update"
	ActionLeave   PresenceAction = "leave"
	ActionPresent PresenceAction = "present"
)

// PresenceMessage is a presence event or a member of a presence set.
type PresenceMessage struct {
	Action       PresenceAction `json:"action"`
	Channel      string         `json:"channel,omitempty"`
	ClientID     string         `json:"clientId"`
	ConnectionID string         `json:"connectionId"`
	Data         string         `json:"data,omitempty"`
	Encoding     string         `json:"encoding,omitempty"`
	Timestamp    int64          `json:"timestamp"`
}

type memberKey struct{ clientID, connectionID string }

// presenceSet is the members of one channel, keyed by (clientId,
// connectionId). Guarded by the channel lock.
type presenceSet struct {
	members map[memberKey]*PresenceMessage
}

func (p *presenceSet) len() int { return len(p.members) }

// MaxPresenceData bounds the data a member may attach.
const MaxPresenceData = 4096

// EnterPresence enters (or updates) the connection's member on a channel.
func (c *Conn) EnterPresence(ctx context.Context, channelName, data, encoding string) error {
	return c.presenceChange(ctx, channelName, ActionEnter, data, encoding)
}

// UpdatePresence updates the connection's member data, entering if needed.
func (c *Conn) UpdatePresence(ctx context.Context, channelName, data, encoding string) error {
	return c.presenceChange(ctx, channelName, ActionUpdate, data, encoding)
}

// LeavePresence removes the connection's member from a channel.
func (c *Conn) LeavePresence(ctx context.Context, channelName string) error {
	return c.presenceChange(ctx, channelName, ActionLeave, "", "")
}

func (c *Conn) presenceChange(_ context.Context, channelName string, action PresenceAction, data, encoding string) error {
	if err := channel.ValidateName(channelName); err != nil {
		return err
	}
	if err := c.Identity().Check(channelName, auth.OpPresence); err != nil {
		return err
	}
	if c.clientID == "" {
		return apierr.New(apierr.BadRequest, "presence requires a clientId")
	}
	if len(data) > MaxPresenceData {
		return apierr.New(apierr.MessageTooLarge, "presence data of %d bytes exceeds the maximum of %d", len(data), MaxPresenceData)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if action == ActionLeave {
		delete(c.presence, channelName)
	} else {
		c.presence[channelName] = struct{}{}
	}
	c.mu.Unlock()
	return c.e.withChannel(channelName, func(ch *channelState) error {
		ch.presenceLocked(action, c.clientID, c.id, data, encoding)
		return nil
	})
}

// leaveMember removes a member left behind by a connection that ended.
func (e *Engine) leaveMember(channelName, clientID, connectionID string) {
	ch := e.lookup(channelName)
	if ch == nil {
		return
	}
	ch.mu.Lock()
	if !ch.closed {
		ch.presenceLocked(ActionLeave, clientID, connectionID, "", "")
	}
	ch.mu.Unlock()
}

func (ch *channelState) presenceLocked(action PresenceAction, clientID, connectionID, data, encoding string) {
	now := ch.e.now().UnixMilli()
	key := memberKey{clientID, connectionID}
	if ch.presence == nil {
		ch.presence = &presenceSet{members: map[memberKey]*PresenceMessage{}}
	}
	old, present := ch.presence.members[key]
	ev := &PresenceMessage{Action: action, Channel: ch.name, ClientID: clientID, ConnectionID: connectionID, Data: data, Encoding: encoding, Timestamp: now}
	switch action {
	case ActionLeave:
		if !present {
			return
		}
		ev.Data, ev.Encoding = old.Data, old.Encoding
		delete(ch.presence.members, key)
		ch.e.metrics.presenceMembers.Dec()
	case ActionEnter, ActionUpdate:
		if present {
			ev.Action = ActionUpdate
		} else {
			ev.Action = ActionEnter
			ch.e.metrics.presenceMembers.Inc()
		}
		member := *ev
		member.Action = ActionPresent
		ch.presence.members[key] = &member
	}
	if len(ch.presence.members) == 0 {
		ch.presence = nil
	}
	ch.lastActive = now
	var lost []*Attachment
	for _, a := range ch.subs {
		if a.presence && !a.conn.q.pushPresence(a, ev) {
			lost = append(lost, a)
		}
	}
	for _, a := range lost {
		ch.removeSubLocked(a)
		ch.e.metrics.slowConsumerDrops.Inc()
	}
}

// PresenceMembers returns the current members of a channel, sorted by
// client id then connection id.
func (e *Engine) PresenceMembers(_ context.Context, id *auth.Identity, channelName string) ([]PresenceMessage, error) {
	if err := channel.ValidateName(channelName); err != nil {
		return nil, err
	}
	if id != nil {
		if err := id.Check(channelName, auth.OpPresence); err != nil {
			if err2 := id.Check(channelName, auth.OpSubscribe); err2 != nil {
				return nil, err
			}
		}
	}
	ch := e.lookup(channelName)
	if ch == nil {
		return []PresenceMessage{}, nil
	}
	ch.mu.Lock()
	out := make([]PresenceMessage, 0)
	if !ch.closed && ch.presence != nil {
		for _, m := range ch.presence.members {
			out = append(out, *m)
		}
	}
	ch.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].ClientID != out[j].ClientID {
			return out[i].ClientID < out[j].ClientID
		}
		return out[i].ConnectionID < out[j].ConnectionID
	})
	return out, nil
}
