package core

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/store"
)

// commitReq is one channel's contiguous run of sequenced messages waiting
// to be written.
type commitReq struct {
	ch       *channelState
	gen      uint64
	msgs     []*Message
	complete func(err error)
}

const (
	commitQueueLen  = 4096 // requests
	maxBatchRecords = 2048
	maxBatchBytes   = 32 << 20 // message payload bytes per store batch
)

// committer is the single writer to the store. It takes every queued
// request it can (group commit), writes them in one batch, syncs once in
// fsync mode, acknowledges, and hands them to the fan-out workers. Per
// channel, requests are queued under the channel lock, so they are written
// and delivered in serial order.
type committer struct {
	e     *Engine
	st    *store.Store
	fsync bool
	q     chan *commitReq

	mu     sync.RWMutex // guards closed against concurrent enqueues
	closed bool
	space  chan struct{} // closed and replaced whenever requests are taken

	fanout []chan *commitReq
	quit   chan struct{}
	done   chan struct{}
	wg     sync.WaitGroup
	seed   maphash.Seed
	// dirty is set by the committer after a write that was not synced;
	// the syncer (batch mode) clears it and syncs, so that commits never
	// wait behind a sync.
	dirty atomic.Bool
}

func newCommitter(e *Engine, workers int) *committer {
	c := &committer{
		e:     e,
		st:    e.opts.Store,
		fsync: e.opts.Durability == DurabilityFsync,
		q:     make(chan *commitReq, commitQueueLen),
		space: make(chan struct{}),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
		seed:  maphash.MakeSeed(),
	}
	c.fanout = make([]chan *commitReq, max(workers, 1))
	for i := range c.fanout {
		c.fanout[i] = make(chan *commitReq, commitQueueLen)
	}
	return c
}

func (c *committer) start() {
	for _, q := range c.fanout {
		c.wg.Add(1)
		go c.deliverLoop(q)
	}
	if !c.fsync {
		c.wg.Add(1)
		go c.syncLoop()
	}
	go c.loop()
}

// syncLoop makes batch-mode writes durable at least every FlushInterval.
// Pebble lets commits proceed while a log sync is in progress.
func (c *committer) syncLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.e.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-c.quit:
			return // Engine.Close syncs once everything is committed
		}
		if c.dirty.Swap(false) {
			if err := c.st.Sync(); err != nil {
				c.e.log.Error("store sync failed", "err", err)
				c.dirty.Store(true)
			}
		}
	}
}

// tryEnqueue queues r without blocking. When the queue is full it returns
// a channel that is closed once there is room; after close it returns
// ErrClosed. In both cases r was not queued.
func (c *committer) tryEnqueue(r *commitReq) (<-chan struct{}, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return nil, ErrClosed
	}
	select {
	case c.q <- r:
		return nil, nil
	default:
		return c.space, nil
	}
}

func (c *committer) signalSpace() {
	c.mu.Lock()
	close(c.space)
	c.space = make(chan struct{})
	c.mu.Unlock()
}

// close stops accepting requests, commits everything queued and waits for
// fan-out to finish.
func (c *committer) close(ctx context.Context) error {
	c.mu.Lock()
	c.closed = true
	close(c.space) // wake publishers waiting for room; they now see closed
	c.space = make(chan struct{})
	c.mu.Unlock()
	close(c.quit)
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *committer) loop() {
	defer close(c.done)
	batch := make([]*commitReq, 0, 256)
	b := c.st.NewBatch()
	defer b.Close()
	var buf []byte
	for {
		var first *commitReq
		select {
		case first = <-c.q:
		case <-c.quit:
			// Drain what was queued before close.
			for {
				select {
				case r := <-c.q:
					batch = append(batch[:0], r)
					buf = c.process(b, batch, buf)
					continue
				default:
				}
				break
			}
			for _, q := range c.fanout {
				close(q)
			}
			c.wg.Wait()
			return
		}
		batch = append(batch[:0], first)
		n, size := len(first.msgs), reqSize(first)
	collect:
		for n < maxBatchRecords && size < maxBatchBytes {
			select {
			case r := <-c.q:
				batch = append(batch, r)
				n += len(r.msgs)
				size += reqSize(r)
			default:
				break collect
			}
		}
		c.signalSpace()
		buf = c.process(b, batch, buf)
		if !c.fsync {
			c.dirty.Store(true)
		}
	}
}

func reqSize(r *commitReq) int {
	n := 0
	for _, m := range r.msgs {
		n += m.Size()
	}
	return n
}

// process writes one batch and acknowledges or fails its requests.
func (c *committer) process(b *store.Batch, batch []*commitReq, buf []byte) []byte {
	b.Reset()
	valid := batch[:0:0]
	for _, r := range batch {
		if r.gen != r.ch.gen.Load() {
			// An earlier write of this channel failed and its serials were
			// reused; this request must not be written.
			c.fail(r, errRetry)
			continue
		}
		for _, m := range r.msgs {
			buf = encodeRecord(buf[:0], m)
			b.Append(store.Record{Channel: m.Channel, Seq: m.Serial.Seq, Timestamp: m.Timestamp, Value: buf})
		}
		valid = append(valid, r)
	}
	if len(valid) == 0 {
		return buf
	}
	start := time.Now()
	err := c.st.Commit(b, c.fsync)
	c.e.metrics.storeCommit.Observe(time.Since(start).Seconds())
	c.e.metrics.batchSize.Observe(float64(b.Count()))
	if err != nil {
		c.e.log.Error("store write failed; publishes refused", "err", err, "messages", b.Count())
		c.e.metrics.storeErrors.Inc()
		c.rollback(valid)
		werr := apierr.Wrap(err, apierr.StorageFailure, "the message could not be stored; nothing was accepted")
		for _, r := range valid {
			c.fail(r, werr)
		}
		return buf
	}
	for _, r := range valid {
		c.fanout[maphash.String(c.seed, r.ch.name)%uint64(len(c.fanout))] <- r
		r.complete(nil)
	}
	return buf
}

// rollback makes the failed serials reusable: each channel's next serial
// goes back to its first failed one and its generation changes, so that
// requests sequenced after them (already queued) are refused too.
func (c *committer) rollback(failed []*commitReq) {
	firstFailed := map[*channelState]*commitReq{}
	for _, r := range failed {
		if _, ok := firstFailed[r.ch]; !ok {
			firstFailed[r.ch] = r
		}
	}
	for ch, r := range firstFailed {
		ch.mu.Lock()
		if ch.gen.Load() == r.gen {
			first := r.msgs[0].Serial.Seq
			ch.gen.Add(1)
			ch.next = first
			// Attachments whose seam was placed after serials that are now
			// reused (rewind counts from the last sequenced message) must
			// receive the messages that will take those serials.
			for _, a := range ch.subs {
				if a.after >= first {
					a.after = first - 1
				}
			}
		}
		ch.mu.Unlock()
	}
}

func (c *committer) fail(r *commitReq, err error) {
	r.ch.mu.Lock()
	r.ch.pending -= len(r.msgs)
	r.ch.mu.Unlock()
	r.complete(err)
}

func (c *committer) deliverLoop(q chan *commitReq) {
	defer c.wg.Done()
	for r := range q {
		r.ch.mu.Lock()
		r.ch.deliverLocked(r.msgs)
		r.ch.mu.Unlock()
	}
}
