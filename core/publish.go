package core

import (
	"context"
	"math/rand/v2"
	"strconv"

	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/core/channel"
)

// PublishResult is the outcome of one published message.
type PublishResult struct {
	ID string `json:"id"`
	// Serial is the channel position after the message (its channel serial).
	Serial    string `json:"serial"`
	Timestamp int64  `json:"timestamp"`
	// Duplicate is true when the id was already accepted within the dedup
	// window; Serial is then the original message's.
	Duplicate bool `json:"duplicate,omitempty"`
}

// Publish publishes msgs to a channel as the connection and waits until
// they are accepted under the configured durability. The engine takes
// ownership of msgs.
func (c *Conn) Publish(ctx context.Context, channelName string, msgs []*Message) ([]PublishResult, error) {
	return c.e.Publish(ctx, c.Identity(), c.id, c.clientID, channelName, msgs)
}

// PublishAsync is Publish without waiting: the messages are sequenced
// before it returns (so calls from one goroutine keep their order) and done
// is called once they are accepted or failed. done must not block. An error
// returned directly means done will not be called.
func (c *Conn) PublishAsync(ctx context.Context, channelName string, msgs []*Message, done func([]PublishResult, error)) error {
	return c.e.PublishAsync(ctx, c.Identity(), c.id, c.clientID, channelName, msgs, done)
}

// Publish publishes msgs for identity (nil means a trusted internal
// caller) with the given connection and client ids (either may be empty)
// and waits for acceptance.
func (e *Engine) Publish(ctx context.Context, id *auth.Identity, connectionID, clientID, channelName string, msgs []*Message) ([]PublishResult, error) {
	type outcome struct {
		res []PublishResult
		err error
	}
	ch := make(chan outcome, 1)
	if err := e.PublishAsync(ctx, id, connectionID, clientID, channelName, msgs, func(res []PublishResult, err error) {
		ch <- outcome{res, err}
	}); err != nil {
		return nil, err
	}
	select {
	case o := <-ch:
		return o.res, o.err
	case <-ctx.Done():
		return nil, apierr.Wrap(ctx.Err(), apierr.Timeout, "publish was not acknowledged in time; retry with the same message ids to avoid duplicates")
	}
}

// PublishAsync validates and sequences msgs, then calls done when they are
// accepted or failed. See Conn.PublishAsync.
func (e *Engine) PublishAsync(ctx context.Context, id *auth.Identity, connectionID, clientID, channelName string, msgs []*Message, done func([]PublishResult, error)) error {
	if e.closing.Load() {
		return ErrClosed
	}
	sp, err := channel.Parse(channelName)
	if err != nil {
		return err
	}
	if sp.HasRewind {
		return apierr.New(apierr.InvalidQualifier, "rewind applies to subscribing, not publishing")
	}
	name := sp.Name
	if id != nil {
		if err := id.Check(name, auth.OpPublish); err != nil {
			return err
		}
	}
	if len(msgs) == 0 {
		return apierr.New(apierr.BadRequest, "no messages to publish")
	}
	if len(msgs) > MaxBatchMessages {
		return apierr.New(apierr.BadRequest, "%d messages in one publish; the maximum is %d", len(msgs), MaxBatchMessages)
	}
	limit := e.maxMessageSize(e.rules(name))
	for i, m := range msgs {
		if m == nil {
			return apierr.New(apierr.BadRequest, "message %d is empty", i)
		}
		if sz := m.Size(); sz > limit {
			return apierr.New(apierr.MessageTooLarge, "message of %d bytes exceeds the maximum of %s on channel %q", sz, formatSize(limit), name)
		}
		if m.ClientID != "" && clientID != "" && m.ClientID != clientID {
			return apierr.New(apierr.OperationNotAllowed, "message clientId %q does not match the connection's clientId %q", m.ClientID, clientID)
		}
		if m.ClientID == "" {
			m.ClientID = clientID
		}
		m.ConnectionID = connectionID
		m.idFromClient = m.ID != ""
		if !m.idFromClient {
			m.ID = autoID()
		}
		for k := range m.Extras {
			if k == "" {
				return apierr.New(apierr.BadRequest, "message %d has an extras header with an empty name", i)
			}
		}
	}
	e.metrics.publishRequests.Inc()
	for {
		var wait <-chan struct{}
		err := e.withChannel(name, func(ch *channelState) (err error) {
			wait, err = e.sequenceLocked(ctx, ch, msgs, done)
			return err
		})
		if err != nil {
			return err
		}
		if wait == nil {
			return nil
		}
		// The commit queue was full: wait for room, then sequence again.
		select {
		case <-wait:
		case <-ctx.Done():
			return apierr.Wrap(ctx.Err(), apierr.Timeout, "publish queue is full")
		}
	}
}

// autoID returns a random message id for messages published without one.
func autoID() string {
	return strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(rand.Uint64(), 36)
}

// sequenceLocked deduplicates and assigns serials, then delivers (memory
// mode) or queues the messages for commit. It returns a channel to wait on
// when the commit queue is full, or an error when the engine is closing;
// in both cases nothing was sequenced and done will not be called.
func (e *Engine) sequenceLocked(ctx context.Context, ch *channelState, msgs []*Message, done func([]PublishResult, error)) (<-chan struct{}, error) {
	now := e.now()
	results := make([]PublishResult, len(msgs))
	var dups map[int]*future
	fresh := make([]*Message, 0, len(msgs))
	futures := make([]*future, 0, len(msgs))
	freshIdx := make([]int, 0, len(msgs))
	var batchIDs map[string]int
	for i, m := range msgs {
		if m.idFromClient {
			if f, ok := ch.dedup.lookup(m.ID); ok {
				if dups == nil {
					dups = map[int]*future{}
				}
				dups[i] = f
				continue
			}
			if j, ok := batchIDs[m.ID]; ok {
				if dups == nil {
					dups = map[int]*future{}
				}
				dups[i] = futures[j]
				continue
			}
			if batchIDs == nil {
				batchIDs = map[string]int{}
			}
			batchIDs[m.ID] = len(fresh)
		}
		fresh = append(fresh, m)
		freshIdx = append(freshIdx, i)
		// Only client ids can be looked up again; others need no future.
		var f *future
		if m.idFromClient {
			f = newFuture()
		}
		futures = append(futures, f)
	}
	complete := func(err error) {
		for k, m := range fresh {
			r := PublishResult{ID: m.ID, Serial: m.Position, Timestamp: m.Timestamp}
			if futures[k] != nil {
				futures[k].resolve(r, err)
			}
			results[freshIdx[k]] = r
		}
		if err != nil {
			done(nil, err)
			return
		}
		e.metrics.publishes.Add(float64(len(fresh)))
		if len(dups) == 0 {
			done(results, nil)
			return
		}
		finishDuplicates(ctx, results, dups, done)
		e.metrics.duplicates.Add(float64(len(dups)))
	}
	if len(fresh) == 0 {
		complete(nil)
		return nil, nil
	}
	ch.assignLocked(fresh, now)
	if ch.dedup == nil && batchIDs != nil {
		ch.dedup = newDedupIndex()
	}
	for k, m := range fresh {
		if m.idFromClient {
			ch.dedup.add(dedupEntry{id: m.ID, at: m.Timestamp, result: futures[k]})
		}
	}
	if e.commit == nil {
		ch.deliverLocked(fresh)
		complete(nil)
		return nil, nil
	}
	req := &commitReq{ch: ch, gen: ch.gen.Load(), msgs: fresh, complete: complete}
	wait, err := e.commit.tryEnqueue(req)
	if wait != nil || err != nil {
		// Undo: nothing after these serials was assigned (we hold the lock).
		ch.next -= uint64(len(fresh))
		ch.pending -= len(fresh)
		for _, f := range futures {
			if f != nil {
				f.resolve(PublishResult{}, errRetry)
			}
		}
	}
	return wait, err
}

var errRetry = apierr.New(apierr.Unavailable, "publish was not sequenced; retry")

// finishDuplicates fills in the results of duplicate messages once their
// originals are accepted, then calls done.
func finishDuplicates(ctx context.Context, results []PublishResult, dups map[int]*future, done func([]PublishResult, error)) {
	ready := true
	for _, f := range dups {
		select {
		case <-f.done:
		default:
			ready = false
		}
	}
	fill := func() {
		for i, f := range dups {
			if f.err != nil {
				done(nil, f.err)
				return
			}
			r := f.result
			r.Duplicate = true
			results[i] = r
		}
		done(results, nil)
	}
	if ready {
		fill()
		return
	}
	go func() {
		for _, f := range dups {
			select {
			case <-f.done:
			case <-ctx.Done():
				done(nil, apierr.Wrap(ctx.Err(), apierr.Timeout, "duplicate publish: the original was not acknowledged in time"))
				return
			}
		}
		fill()
	}()
}
