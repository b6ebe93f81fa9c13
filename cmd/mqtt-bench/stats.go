package main

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// epoch is the origin of the timestamps carried in payloads. Readers and
// writers live in this process, so one monotonic clock serves both ends.
var epoch = time.Now()

// now is the time since epoch in nanoseconds (monotonic).
func now() int64 { return int64(time.Since(epoch)) }

// window is the measurement interval on the epoch clock: a message counts
// when it was sent (its payload timestamp) inside [start, end).
type window struct {
	start, end atomic.Int64
}

func newWindow() *window {
	w := &window{}
	w.start.Store(1<<63 - 1)
	w.end.Store(1<<63 - 1)
	return w
}

func (w *window) contains(t int64) bool {
	return t >= w.start.Load() && t < w.end.Load()
}

// latencies collects latencies in microseconds into HDR histograms, one per
// shard so that a thousand reader goroutines do not serialize on one lock.
type latencies struct {
	shards [32]struct {
		mu sync.Mutex
		h  *hdrhistogram.Histogram
		_  [48]byte // one 64-byte cache line per shard
	}
}

// Latencies from 1 µs to 100 s with three significant digits.
const (
	minLatencyUs = 1
	maxLatencyUs = 100_000_000
)

func newLatencies() *latencies {
	l := &latencies{}
	for i := range l.shards {
		l.shards[i].h = hdrhistogram.New(minLatencyUs, maxLatencyUs, 3)
	}
	return l
}

// record adds one latency in nanoseconds; shard is any small number that
// spreads the callers (a reader's index).
func (l *latencies) record(shard int, ns int64) {
	us := max(ns/1000, minLatencyUs)
	s := &l.shards[shard%len(l.shards)]
	s.mu.Lock()
	_ = s.h.RecordValue(min(us, maxLatencyUs))
	s.mu.Unlock()
}

// merged returns the union of every shard.
func (l *latencies) merged() *hdrhistogram.Histogram {
	out := hdrhistogram.New(minLatencyUs, maxLatencyUs, 3)
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		out.Merge(s.h)
		s.mu.Unlock()
	}
	return out
}

// gate bounds how much a sender may have outstanding: units are taken
// before a send and given back when the message is acknowledged (a PUBACK)
// or delivered (received by a subscriber). It has a single waiter, the
// sender goroutine that owns it; any goroutine may release.
//
// A unit that never comes back (a message the broker dropped) would block
// the sender for good, so a sender that waited stallTimeout without any
// unit coming back forgives everything outstanding and counts a stall.
type gate struct {
	limit  int64
	out    atomic.Int64
	wake   chan struct{}
	timer  *time.Timer
	stalls int
}

const stallTimeout = time.Second

func newGate(limit int) *gate {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &gate{limit: int64(limit), wake: make(chan struct{}, 1), timer: t}
}

// take waits until n more units fit, then takes them. It returns false if
// stop was closed meanwhile.
func (g *gate) take(n int64, stop <-chan struct{}) bool {
	for g.out.Load()+n > g.limit {
		g.timer.Reset(stallTimeout)
		select {
		case <-g.wake:
			g.timer.Stop()
		case <-g.timer.C:
			g.stalls++
			g.out.Store(0)
		case <-stop:
			g.timer.Stop()
			return false
		}
	}
	g.out.Add(n)
	return true
}

// release gives n units back and wakes the sender if it waits.
func (g *gate) release(n int64) {
	g.out.Add(-n)
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// pacer spaces sends at a fixed rate (open loop). Each send carries the time
// it was scheduled for, not the time it happened, so a sender held up by a
// slow broker (or by its own timer) is charged to the latency rather than
// silently sending later: no coordinated omission.
type pacer struct {
	interval float64 // ns between sends
	start    int64   // epoch ns of the first send
	n        int64   // sends scheduled so far
	timer    *time.Timer
}

func newPacer(rate float64, start int64) *pacer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &pacer{interval: float64(time.Second) / rate, start: start, timer: t}
}

// wait sleeps until the next send is due and returns its scheduled time.
// When the sender is behind it returns at once, so that the sends that fell
// due meanwhile go out back to back.
func (p *pacer) wait(stop <-chan struct{}) (int64, bool) {
	t := p.start + int64(float64(p.n)*p.interval)
	p.n++
	if d := t - now(); d > 0 {
		p.timer.Reset(time.Duration(d))
		select {
		case <-p.timer.C:
		case <-stop:
			p.timer.Stop()
			return 0, false
		}
	}
	return t, true
}
