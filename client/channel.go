package client

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sync"
)

// ChannelState is the state of a channel's attachment.
type ChannelState int

// Channel states.
const (
	ChannelInitialized ChannelState = iota
	ChannelAttaching
	ChannelAttached
	ChannelDetaching
	ChannelDetached
	ChannelFailed
)

var channelStateNames = [...]string{"initialized", "attaching", "attached", "detaching", "detached", "failed"}

func (s ChannelState) String() string {
	if int(s) < len(channelStateNames) {
		return channelStateNames[s]
	}
	return fmt.Sprintf("channel-state(%d)", int(s))
}

// Option configures an attach or a subscription.
type Option func(*attachOptions)

type attachOptions struct {
	rewind   string
	from     string
	presence bool
	names    []string // subscriptions only
}

// hasAttach reports whether o asks anything of the attach itself.
func (o attachOptions) hasAttach() bool { return o.rewind != "" || o.from != "" || o.presence }

// WithRewind delivers recent messages first: a count ("10") or a duration
// ("30s"). It applies to the first attach; reattaching after a reconnect
// resumes from the last message received instead.
func WithRewind(r string) Option { return func(o *attachOptions) { o.rewind = r } }

// WithResumeFrom resumes after a channel serial (a message's Serial).
func WithResumeFrom(serial string) Option { return func(o *attachOptions) { o.from = serial } }

// WithPresence also delivers the channel's presence events.
func WithPresence() Option { return func(o *attachOptions) { o.presence = true } }

// WithNames makes a subscription receive only messages with one of these
// event names.
func WithNames(names ...string) Option { return func(o *attachOptions) { o.names = names } }

func collect(opts []Option) attachOptions {
	var o attachOptions
	for _, f := range opts {
		f(&o)
	}
	return o
}

// Channel is a channel of a Client: attach, subscribe, publish, presence.
// It is safe for concurrent use.
type Channel struct {
	c    *Client
	name string

	mu       sync.Mutex
	want     bool // the app wants it attached
	opts     attachOptions
	state    ChannelState
	serial   string // last message received (or where live delivery started)
	received bool   // a message arrived since the last attach request
	err      error
	waiters  []chan error // attach or detach callers
	subs     map[int]*subscriber
	nextSub  int
	presence *Presence

	// Messages waiting for subscribers, bounded by SubscriberBuffer.
	queue     []*Message
	queued    chan struct{} // signalled when queue grows
	drained   chan struct{} // signalled when queue shrinks
	stop      chan struct{}
	dispatchW sync.WaitGroup
	running   bool
}

type subscriber struct {
	names []string
	fn    func(*Message)
}

// Channel returns the channel of that name (the same value every time).
func (c *Client) Channel(name string) *Channel {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.channelLocked(name)
}

func (c *Client) channelLocked(name string) *Channel {
	if ch := c.channels[name]; ch != nil {
		return ch
	}
	ch := &Channel{c: c, name: name, subs: map[int]*subscriber{},
		queued: make(chan struct{}, 1), drained: make(chan struct{}, 1), stop: make(chan struct{})}
	ch.presence = &Presence{ch: ch, subs: map[int]func(PresenceMember){}}
	c.channels[name] = ch
	return ch
}

func (c *Client) channelIfExists(name string) *Channel {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.channels[name]
}

// Name returns the channel's name.
func (ch *Channel) Name() string { return ch.name }

// State returns the channel's state.
func (ch *Channel) State() ChannelState {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.state
}

// Serial returns the channel serial of the last message received (where
// a resume continues).
func (ch *Channel) Serial() string {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.serial
}

func (ch *Channel) wantsAttached() bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.want
}

// Attach attaches the channel and waits until it is live (messages from a
// rewind or resume are delivered to subscribers before it returns). While
// the connection is down it waits for it. After a reconnect the SDK
// attaches again by itself, resuming after the last message received.
func (ch *Channel) Attach(ctx context.Context, opts ...Option) error {
	switch ch.c.State() {
	case StateFailed:
		return ch.c.failure()
	case StateClosing, StateClosed:
		return ErrClosed
	}
	o := collect(opts)
	ch.mu.Lock()
	if o.from != "" {
		ch.serial = o.from
	}
	if !ch.want || o.hasAttach() {
		ch.opts = o
	}
	if ch.want && ch.state == ChannelAttached && !o.hasAttach() {
		ch.mu.Unlock()
		return nil
	}
	ch.want = true
	w := make(chan error, 1)
	ch.waiters = append(ch.waiters, w)
	ch.mu.Unlock()
	if l := ch.c.currentLink(); l != nil {
		ch.sendAttach(l)
	}
	select {
	case err := <-w:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-ch.c.ctx.Done():
		return ErrClosed
	}
}

// Detach stops the channel's messages and waits for the server to confirm.
func (ch *Channel) Detach(ctx context.Context) error {
	ch.mu.Lock()
	ch.want = false
	ch.state = ChannelDetaching
	w := make(chan error, 1)
	ch.waiters = append(ch.waiters, w)
	ch.mu.Unlock()
	l := ch.c.currentLink()
	if l == nil {
		ch.settle(ChannelDetached, nil)
		return nil
	}
	if err := l.send(map[string]any{"action": "detach", "channel": ch.name}); err != nil {
		ch.settle(ChannelDetached, nil)
		return nil
	}
	select {
	case err := <-w:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sendAttach asks the server to attach, from the last serial if any.
func (ch *Channel) sendAttach(l *link) {
	ch.mu.Lock()
	if !ch.want {
		ch.mu.Unlock()
		return
	}
	f := map[string]any{"action": "attach", "channel": ch.name}
	if ch.serial != "" {
		f["channelSerial"] = ch.serial
	} else if ch.opts.rewind != "" {
		f["rewind"] = ch.opts.rewind
	}
	if ch.opts.presence || len(ch.presence.subs) > 0 {
		f["presence"] = true
	}
	ch.state = ChannelAttaching
	ch.received = false
	ch.mu.Unlock()
	_ = l.send(f) // on failure the reconnect attaches again
}

// reattach runs on every new connection.
func (ch *Channel) reattach(l *link, resumed bool) {
	ch.sendAttach(l)
	ch.presence.reenter(l, resumed)
}

// settle ends the current attach or detach: waiters learn the outcome.
func (ch *Channel) settle(state ChannelState, err error) {
	ch.mu.Lock()
	ch.state, ch.err = state, err
	ws := ch.waiters
	ch.waiters = nil
	ch.mu.Unlock()
	for _, w := range ws {
		w <- err
	}
}

// control handles attached, detached, continuity and channel errors.
func (ch *Channel) control(l *link, f *serverFrame) {
	switch f.Action {
	case "attached":
		ch.mu.Lock()
		// Messages that arrived since the attach request are newer than
		// the attach point; otherwise live delivery starts here.
		if !ch.received && f.ChannelSerial != "" {
			ch.serial = f.ChannelSerial
		}
		if f.Continuity != nil {
			ch.c.log.Warn("channel resumed incompletely", "channel", ch.name, "reason", f.Continuity.Reason)
		}
		ch.mu.Unlock()
		// Replayed messages must reach subscribers before Attach returns.
		ch.waitDispatched()
		ch.settle(ChannelAttached, nil)
	case "detached":
		ch.settle(ChannelDetached, nil)
	case "continuity":
		// The connection fell behind and the server stopped the channel:
		// attach again from the last message received.
		ch.c.log.Warn("channel lost continuity", "channel", ch.name, "reason", f.Reason)
		ch.sendAttach(l)
	case "error":
		ch.mu.Lock()
		attaching := ch.state == ChannelAttaching
		if attaching {
			ch.want = false
		}
		ch.mu.Unlock()
		if attaching {
			ch.settle(ChannelFailed, f.Error)
		} else {
			ch.c.log.Warn("channel error", "channel", ch.name, "err", f.Error)
		}
	}
}

// Subscribe attaches the channel (if not yet, with the attach options
// given) and calls fn for each of its messages, in order, on a goroutine of
// the channel (fn should return quickly: while it runs, later messages
// wait). WithNames passes only messages with those event names. It returns
// a function that removes the subscription.
func (ch *Channel) Subscribe(ctx context.Context, fn func(*Message), opts ...Option) (unsubscribe func(), err error) {
	o := collect(opts)
	ch.mu.Lock()
	id := ch.nextSub
	ch.nextSub++
	ch.subs[id] = &subscriber{names: o.names, fn: fn}
	ch.startDispatcherLocked()
	ch.mu.Unlock()
	unsubscribe = func() {
		ch.mu.Lock()
		delete(ch.subs, id)
		ch.mu.Unlock()
	}
	if err := ch.Attach(ctx, opts...); err != nil {
		unsubscribe()
		return nil, err
	}
	return unsubscribe, nil
}

// Messages attaches the channel (with the options given) and returns an
// iterator over its messages. The iteration ends with ctx's error when ctx
// ends, or ErrClosed when the client closes.
func (ch *Channel) Messages(ctx context.Context, opts ...Option) iter.Seq2[*Message, error] {
	return func(yield func(*Message, error) bool) {
		q := make(chan *Message, 64)
		unsubscribe, err := ch.Subscribe(ctx, func(m *Message) {
			select {
			case q <- m:
			case <-ctx.Done():
			case <-ch.stop:
			}
		}, opts...)
		if err != nil {
			yield(nil, err)
			return
		}
		defer unsubscribe()
		for {
			select {
			case m := <-q:
				if !yield(m, nil) {
					return
				}
			case <-ctx.Done():
				yield(nil, ctx.Err())
				return
			case <-ch.stop:
				yield(nil, ErrClosed)
				return
			}
		}
	}
}

// deliver queues messages for the subscribers; it waits while the queue is
// full, which stops reading from the server (backpressure).
func (ch *Channel) deliver(wire []wireMessage) error {
	msgs := make([]*Message, 0, len(wire))
	for _, w := range wire {
		m, err := fromWire(w)
		if err != nil {
			return err
		}
		if m.Channel == "" {
			m.Channel = ch.name
		}
		msgs = append(msgs, m)
	}
	for {
		ch.mu.Lock()
		if len(ch.queue)+len(msgs) <= ch.c.opts.SubscriberBuffer || len(ch.queue) == 0 {
			ch.queue = append(ch.queue, msgs...)
			if n := len(msgs); n > 0 {
				ch.serial = msgs[n-1].Serial
				ch.received = true
			}
			ch.startDispatcherLocked()
			ch.mu.Unlock()
			select {
			case ch.queued <- struct{}{}:
			default:
			}
			return nil
		}
		ch.mu.Unlock()
		select {
		case <-ch.drained:
		case <-ch.c.ctx.Done():
			return ErrClosed
		}
	}
}

func (ch *Channel) startDispatcherLocked() {
	if ch.running {
		return
	}
	select {
	case <-ch.stop:
		return
	default:
	}
	ch.running = true
	ch.dispatchW.Add(1)
	go func() {
		defer ch.dispatchW.Done()
		ch.dispatch()
	}()
}

// dispatch passes queued messages to the subscribers, in order.
func (ch *Channel) dispatch() {
	for {
		ch.mu.Lock()
		if len(ch.queue) == 0 {
			ch.mu.Unlock()
			select {
			case ch.drained <- struct{}{}:
			default:
			}
			select {
			case <-ch.queued:
				continue
			case <-ch.stop:
				return
			}
		}
		m := ch.queue[0]
		ch.queue[0] = nil
		ch.queue = ch.queue[1:]
		if len(ch.queue) == 0 {
			ch.queue = nil
		}
		subs := make([]*subscriber, 0, len(ch.subs))
		ids := make([]int, 0, len(ch.subs))
		for id := range ch.subs {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			subs = append(subs, ch.subs[id])
		}
		ch.mu.Unlock()
		for _, s := range subs {
			if len(s.names) == 0 || slices.Contains(s.names, m.Name) {
				s.fn(m)
			}
		}
		select {
		case ch.drained <- struct{}{}:
		default:
		}
	}
}

// waitDispatched waits until the messages queued so far reached the
// subscribers.
func (ch *Channel) waitDispatched() {
	for {
		ch.mu.Lock()
		empty := len(ch.queue) == 0
		ch.mu.Unlock()
		if empty {
			return
		}
		select {
		case <-ch.drained:
		case <-ch.c.ctx.Done():
			return
		}
	}
}

// shutdown stops the dispatcher (the client is closed).
func (ch *Channel) shutdown() {
	ch.mu.Lock()
	select {
	case <-ch.stop:
	default:
		close(ch.stop)
	}
	ws := ch.waiters
	ch.waiters = nil
	ch.mu.Unlock()
	for _, w := range ws {
		w <- ErrClosed
	}
	ch.dispatchW.Wait()
}

// Publish publishes one message and waits for the server's ack. data may
// be a string or []byte (sent as text, or base64 when not UTF-8), or any
// other value, sent as JSON (Encoding "json").
func (ch *Channel) Publish(ctx context.Context, name string, data any) (PublishResult, error) {
	m := &Message{Name: name}
	switch d := data.(type) {
	case nil:
	case string:
		m.Data = []byte(d)
	case []byte:
		m.Data = d
	default:
		b, err := jsonMarshal(d)
		if err != nil {
			return PublishResult{}, err
		}
		m.Data, m.Encoding = b, "json"
	}
	res, err := ch.PublishMessages(ctx, m)
	if err != nil {
		return PublishResult{}, err
	}
	return res[0], nil
}

// PublishMessages publishes messages as one batch and waits for the ack.
// Messages without an ID get one, so that retries across reconnects are
// accepted once.
func (ch *Channel) PublishMessages(ctx context.Context, msgs ...*Message) ([]PublishResult, error) {
	if len(msgs) == 0 {
		return nil, errors.New("client: nothing to publish")
	}
	wire := make([]wireMessage, len(msgs))
	ch.c.mu.Lock()
	for _, m := range msgs {
		if m.ID == "" {
			m.ID = ch.c.nextIDLocked()
		}
	}
	ch.c.mu.Unlock()
	for i, m := range msgs {
		w, err := m.toWire()
		if err != nil {
			return nil, err
		}
		wire[i] = w
	}
	return ch.c.submit(ctx, map[string]any{"action": "message", "channel": ch.name, "messages": wire})
}
