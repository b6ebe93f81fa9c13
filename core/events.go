package core

import (
	"context"
	"sync"
)

// EventKind says what an Event carries.
type EventKind uint8

// Event kinds.
const (
	EventMessage    EventKind = iota + 1 // Message is set
	EventPresence                        // Presence is set
	EventContinuity                      // Continuity is set
)

// Event is something delivered to a connection for one of its attachments.
type Event struct {
	Kind       EventKind
	Attachment *Attachment
	Message    *Message
	Presence   *PresenceMessage
	Continuity *Continuity
}

// ContinuityReason says why a subscriber lost continuity.
type ContinuityReason string

// Continuity reasons.
const (
	// ReasonSlowConsumer: the connection did not keep up and its buffer
	// filled; the attachment stopped receiving. Resume from Position.
	ReasonSlowConsumer ContinuityReason = "slow-consumer"
	// ReasonExpired: messages after the requested position are no longer
	// retained.
	ReasonExpired ContinuityReason = "expired"
	// ReasonEpochChanged: the channel's log restarted without its history
	// since the position was issued, so continuity cannot be proven.
	ReasonEpochChanged ContinuityReason = "epoch-changed"
	// ReasonUnknownPosition: the position has no serial for this region or
	// is ahead of the channel's log.
	ReasonUnknownPosition ContinuityReason = "unknown-position"
)

// Continuity tells a subscriber that it did not, or will not, receive every
// message after its position.
type Continuity struct {
	Channel string
	Reason  ContinuityReason
	// Position is where the subscriber's complete view ends: resuming from
	// it recovers everything still retained after it.
	Position string
}

// eventQueue is a connection's bounded delivery queue. Fan-out never blocks
// on it: when it is full, the attachment being delivered to loses
// continuity and stops receiving (slow-consumer policy) while the
// connection still gets everything queued before, then a continuity event.
type eventQueue struct {
	mu     sync.Mutex
	buf    []Event
	head   int
	n      int
	limit  int
	lost   []*Attachment
	closed bool
	notify chan struct{} // signalled when events are available
	// onEvents, if set, is called (outside the lock) whenever notify is.
	onEvents func()
	space    chan struct{} // signalled when events were taken
	done     chan struct{} // closed by close, wakes every waiter
}

func (q *eventQueue) init(limit int) {
	q.limit = limit
	q.notify = make(chan struct{}, 1)
	q.space = make(chan struct{}, 1)
	q.done = make(chan struct{})
}

// wake tells the consumer that events may be available.
func (q *eventQueue) wake() {
	signal(q.notify)
	if q.onEvents != nil {
		q.onEvents()
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// appendLocked adds an event, growing the buffer as needed.
func (q *eventQueue) appendLocked(ev Event) {
	if q.n == len(q.buf) {
		size := max(2*len(q.buf), 16)
		buf := make([]Event, size)
		for i := 0; i < q.n; i++ {
			buf[i] = q.buf[(q.head+i)%len(q.buf)]
		}
		q.buf, q.head = buf, 0
	}
	q.buf[(q.head+q.n)%len(q.buf)] = ev
	q.n++
}

// pushMessages queues msgs for a, or marks a lost when they do not fit.
// It reports how many were queued and false when a lost continuity.
func (q *eventQueue) pushMessages(a *Attachment, msgs []*Message) (int, bool) {
	q.mu.Lock()
	if q.closed || a.lost {
		q.mu.Unlock()
		return 0, !a.lost
	}
	if q.n+len(msgs) > q.limit {
		q.loseLocked(a)
		q.mu.Unlock()
		q.wake()
		return 0, false
	}
	for _, m := range msgs {
		q.appendLocked(Event{Kind: EventMessage, Attachment: a, Message: m})
	}
	a.last = msgs[len(msgs)-1].Position
	q.mu.Unlock()
	q.wake()
	return len(msgs), true
}

// pushPresence queues a presence event for a under the same policy.
func (q *eventQueue) pushPresence(a *Attachment, p *PresenceMessage) bool {
	q.mu.Lock()
	if q.closed || a.lost {
		q.mu.Unlock()
		return !a.lost
	}
	if q.n >= q.limit {
		q.loseLocked(a)
		q.mu.Unlock()
		q.wake()
		return false
	}
	q.appendLocked(Event{Kind: EventPresence, Attachment: a, Presence: p})
	q.mu.Unlock()
	q.wake()
	return true
}

func (q *eventQueue) loseLocked(a *Attachment) {
	a.lost = true
	q.lost = append(q.lost, a)
}

// tryPushReplay queues replayed messages if they all fit, and reports
// whether they did.
func (q *eventQueue) tryPushReplay(a *Attachment, msgs []*Message) bool {
	if len(msgs) == 0 {
		return true
	}
	q.mu.Lock()
	if q.n+len(msgs) > q.limit {
		q.mu.Unlock()
		return false
	}
	for _, m := range msgs {
		q.appendLocked(Event{Kind: EventMessage, Attachment: a, Message: m})
	}
	a.last = msgs[len(msgs)-1].Position
	q.mu.Unlock()
	q.wake()
	return true
}

// pushWait queues one event, waiting while the queue is full.
func (q *eventQueue) pushWait(ctx context.Context, ev Event) error {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return ErrClosed
		}
		if q.n < q.limit {
			q.appendLocked(ev)
			if ev.Kind == EventMessage {
				ev.Attachment.last = ev.Message.Position
			}
			q.mu.Unlock()
			q.wake()
			return nil
		}
		q.mu.Unlock()
		select {
		case <-q.space:
		case <-q.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// take moves up to max queued events into dst. When the queue is empty it
// emits the continuity events of attachments that were dropped as slow.
func (q *eventQueue) take(dst []Event, max int) []Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.n > 0 && max > 0 {
		dst = append(dst, q.buf[q.head])
		q.buf[q.head] = Event{}
		q.head = (q.head + 1) % len(q.buf)
		q.n--
		max--
	}
	if q.n == 0 {
		if len(q.buf) > 64 {
			// Give memory back after a burst: an idle connection
			// should not keep a burst-sized ring (40 bytes an event).
			q.buf, q.head = nil, 0
		}
		for _, a := range q.lost {
			dst = append(dst, Event{Kind: EventContinuity, Attachment: a, Continuity: &Continuity{
				Channel: a.Channel, Reason: ReasonSlowConsumer, Position: a.last,
			}})
		}
		q.lost = nil
	}
	signal(q.space)
	return dst
}

// waitRoom waits until at most half the queue is used, so that an
// attachment registered for live delivery right after a replay is not
// dropped by its first live message while the reader catches up.
func (q *eventQueue) waitRoom(ctx context.Context) error {
	for {
		q.mu.Lock()
		n, closed := q.n, q.closed
		q.mu.Unlock()
		if closed {
			return ErrClosed
		}
		if n <= q.limit/2 {
			return nil
		}
		select {
		case <-q.space:
		case <-q.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (q *eventQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

func (q *eventQueue) close() {
	q.mu.Lock()
	if !q.closed {
		close(q.done)
	}
	q.closed = true
	q.buf, q.n, q.lost = nil, 0, nil
	q.mu.Unlock()
	q.wake()
	signal(q.space)
}
