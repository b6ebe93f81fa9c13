package core

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/position"
	"github.com/switchboardhq/switchboard/core/store"
)

// channelState is one open channel. Its mutex guards every field below it;
// nothing blocks while holding it (no store I/O, no blocking sends).
type channelState struct {
	e        *Engine
	name     string
	rules    NamespaceRules
	initOnce sync.Once
	initErr  error

	// gen is bumped when a failed store write rolled sequence numbers back;
	// queued writes of an older generation are then refused. Written under
	// mu, read by the committer without it.
	gen atomic.Uint64
	// announced is set once the channel.opened event was emitted.
	announced atomic.Bool
	// opened is the channel's position when it was opened: every message
	// sequenced while it stays open comes after it. Set by init.
	opened string

	mu         sync.Mutex
	initDone   bool
	closed     bool
	epoch      uint64
	next       uint64 // next seq to assign
	lastTs     int64  // timestamp of the last assigned message (ms)
	delivered  uint64 // last seq fanned out to subscribers
	pending    int    // messages assigned but not yet delivered or failed
	lastActive int64  // ms
	log        ring   // most recent delivered messages
	subs       []*Attachment
	presence   *presenceSet
	dedup      *dedupIndex
}

func newChannelState(e *Engine, name string) *channelState {
	return &channelState{e: e, name: name, rules: e.rules(name)}
}

// init loads the channel's durable state. It runs once, outside any lock
// other than the once.
func (ch *channelState) init() {
	e := ch.e
	now := e.now()
	var epoch, last uint64
	if st := e.opts.Store; st != nil {
		meta, _, lastSeq, found, err := st.Channel(ch.name)
		if err != nil {
			ch.initErr = apierr.Wrap(err, apierr.StorageFailure, "cannot open channel %q", ch.name)
			return
		}
		if !found {
			meta = store.Meta{Epoch: newEpoch(now)}
			if err := st.PutMeta(ch.name, meta, e.opts.Durability == DurabilityFsync); err != nil {
				ch.initErr = apierr.Wrap(err, apierr.StorageFailure, "cannot create channel %q", ch.name)
				return
			}
		}
		epoch = meta.Epoch
		last = max(lastSeq, meta.TrimmedThrough)
		if lastSeq > 0 {
			if rec, ok, err := st.Get(ch.name, lastSeq); err == nil && ok {
				ch.lastTs = rec.Timestamp
			}
		}
		ch.dedup = ch.loadDedup(lastSeq, now)
	} else {
		epoch = newEpoch(now)
	}
	ch.mu.Lock()
	ch.epoch = epoch
	ch.next = last + 1
	ch.delivered = last
	ch.lastActive = now.UnixMilli()
	ch.log.init(e.memoryLimit(), last+1)
	ch.opened = ch.positionOf(last)
	ch.initDone = true
	ch.mu.Unlock()
	e.active.Add(1)
}

// newEpoch returns a fresh epoch: the creation time in milliseconds, which
// differs from any earlier epoch of the same channel on this machine.
func newEpoch(now time.Time) uint64 { return uint64(now.UnixMilli()) }

// loadDedup rebuilds the idempotency index from the stored tail of the log
// so that retries across a restart are still recognised.
func (ch *channelState) loadDedup(lastSeq uint64, now time.Time) *dedupIndex {
	if lastSeq == 0 {
		return nil
	}
	e := ch.e
	cutoff := now.Add(-e.opts.DedupWindow).UnixMilli()
	var ids []dedupEntry
	err := e.opts.Store.Scan(ch.name, 1, lastSeq, true, func(r store.Record) bool {
		if r.Timestamp < cutoff || len(ids) >= e.opts.DedupMaxPerChannel {
			return false
		}
		m, err := decodeRecord(ch.name, r.Value)
		if err != nil || m.ID == "" || !m.idFromClient {
			return true
		}
		ids = append(ids, dedupEntry{id: m.ID, at: r.Timestamp, result: resolvedFuture(PublishResult{ID: m.ID, Serial: m.Position, Timestamp: m.Timestamp})})
		return true
	})
	if err != nil {
		e.log.Warn("rebuilding idempotency index", "channel", ch.name, "err", err)
	}
	if len(ids) == 0 {
		return nil
	}
	d := newDedupIndex()
	for i := len(ids) - 1; i >= 0; i-- {
		d.add(ids[i])
	}
	return d
}

func (ch *channelState) infoLocked() ChannelInfo {
	info := ChannelInfo{Name: ch.name, Subscribers: len(ch.subs), LastActive: ch.lastActive}
	if ch.presence != nil {
		info.Presence = ch.presence.len()
	}
	if ch.delivered > 0 {
		info.Position = ch.positionOf(ch.delivered)
	}
	return info
}

func (ch *channelState) serial(seq uint64) position.Serial {
	return position.Serial{Region: ch.e.opts.Region, Epoch: ch.epoch, Seq: seq}
}

func (ch *channelState) positionOf(seq uint64) string {
	return position.Of(ch.serial(seq)).String()
}

// idleLocked reports whether the channel can be closed: nobody attached or
// present, nothing in flight, nothing published or attached for the resume
// window, and (in memory mode) no retained messages left.
func (ch *channelState) idleLocked(now time.Time) bool {
	// A live dedup index keeps the channel open: in memory mode it cannot
	// be rebuilt after a reopen.
	if len(ch.subs) > 0 || ch.pending > 0 || ch.dedup != nil || (ch.presence != nil && ch.presence.len() > 0) {
		return false
	}
	if now.UnixMilli()-ch.lastActive < ch.e.opts.ResumeWindow.Milliseconds() {
		return false
	}
	if ch.e.opts.Store == nil && ch.log.len() > 0 {
		return false
	}
	return true
}

// trimMemoryLocked drops in-memory messages older than the channel's
// retention and expired idempotency ids.
func (ch *channelState) trimMemoryLocked(now time.Time) {
	d, forever := ch.e.retention(ch.rules)
	if ch.e.opts.Store != nil {
		// The in-memory log is only a cache of the store's tail.
		d, forever = ch.e.opts.ResumeWindow, false
	}
	if !forever {
		ch.log.dropOlderThan(now.Add(-d).UnixMilli())
	}
	if ch.dedup != nil {
		ch.dedup.expire(now.Add(-ch.e.opts.DedupWindow).UnixMilli(), ch.e.opts.DedupMaxPerChannel)
		if ch.dedup.len() == 0 {
			ch.dedup = nil
		}
	}
}

// firstInMemoryLocked returns the lowest seq still held in memory (the next
// seq when none is).
func (ch *channelState) firstInMemoryLocked() uint64 {
	if ch.log.len() == 0 {
		return ch.delivered + 1
	}
	return ch.log.first()
}

// deliverLocked appends accepted messages to the in-memory log and fans
// them out. Messages must be contiguous and follow ch.delivered.
func (ch *channelState) deliverLocked(msgs []*Message) {
	if len(msgs) == 0 {
		return
	}
	if first := msgs[0].Serial.Seq; first != ch.delivered+1 {
		// Never deliver out of order; this would be a sequencing bug.
		ch.e.log.Error("out-of-order delivery refused", "channel", ch.name, "want", ch.delivered+1, "got", first)
		return
	}
	for _, m := range msgs {
		ch.log.push(m)
	}
	ch.delivered = msgs[len(msgs)-1].Serial.Seq
	ch.pending -= len(msgs)
	if len(ch.subs) == 0 {
		return
	}
	var lost []*Attachment
	delivered := 0
	last := msgs[len(msgs)-1].Serial.Seq
	for _, a := range ch.subs {
		batch := msgs
		if a.after >= msgs[0].Serial.Seq {
			if a.after >= last {
				continue
			}
			batch = msgs[a.after-msgs[0].Serial.Seq+1:]
		}
		n, ok := a.conn.q.pushMessages(a, batch)
		delivered += n
		if !ok {
			lost = append(lost, a)
		}
	}
	ch.e.metrics.deliveries.Add(float64(delivered))
	for _, a := range lost {
		ch.removeSubLocked(a)
		ch.e.metrics.slowConsumerDrops.Inc()
		ch.e.log.Info("slow consumer lost continuity", "channel", ch.name, "connection", a.conn.id)
	}
}

func (ch *channelState) addSubLocked(a *Attachment) {
	a.index = len(ch.subs)
	ch.subs = append(ch.subs, a)
	ch.e.metrics.subscriptions.Inc()
}

func (ch *channelState) removeSubLocked(a *Attachment) {
	i := a.index
	if i < 0 || i >= len(ch.subs) || ch.subs[i] != a {
		return
	}
	last := len(ch.subs) - 1
	ch.subs[i] = ch.subs[last]
	ch.subs[i].index = i
	ch.subs[last] = nil
	ch.subs = ch.subs[:last]
	a.index = -1
	ch.e.metrics.subscriptions.Dec()
	if len(ch.subs) == 0 {
		ch.subs = nil
	}
}

// assignLocked gives messages their serials and timestamps.
func (ch *channelState) assignLocked(msgs []*Message, now time.Time) {
	ts := max(now.UnixMilli(), ch.lastTs)
	for _, m := range msgs {
		m.Channel = ch.name
		m.Timestamp = ts
		m.Serial = ch.serial(ch.next)
		m.Position = position.Of(m.Serial).String()
		ch.next++
	}
	ch.lastTs = ts
	ch.pending += len(msgs)
	ch.lastActive = now.UnixMilli()
}

func (ch *channelState) String() string { return fmt.Sprintf("channel %q", ch.name) }
