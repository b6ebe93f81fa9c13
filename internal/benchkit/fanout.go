package benchkit

import (
	"bytes"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Fanout tracks the deliveries of a fan-out benchmark: messages published
// one at a time to a channel with a fixed number of readers, each of which
// must parse every message, in order. The readers' goroutines report every
// message they parse with Deliver, or their failure with Fail; the
// publishing goroutine waits with Wait until enough messages reached every
// reader to publish the next.
type Fanout struct {
	readers   int32
	reader    string         // what a reader is, in errors
	timeout   time.Duration  // bound on each Wait
	timer     *time.Timer    // Wait's, made by its first call
	counts    []atomic.Int32 // counts[i]: readers that parsed message i
	delivered atomic.Int64   // messages parsed by every reader
	progress  chan struct{}  // signalled when delivered grows
	failed    chan struct{}  // closed by the first Fail
	failOnce  sync.Once
	errs      ErrOnce
}

// NewFanout returns a Fanout for the given numbers of readers and
// messages. reader names a reader ("stream", "connection") in the error
// Wait fails with when delivery stalls for longer than timeout.
func NewFanout(readers, messages int, reader string, timeout time.Duration) *Fanout {
	return &Fanout{
		readers:  int32(readers),
		reader:   reader,
		timeout:  timeout,
		counts:   make([]atomic.Int32, messages),
		progress: make(chan struct{}, 1),
		failed:   make(chan struct{}),
	}
}

// Deliver records that a reader parsed message i. Each reader must parse
// the messages in order, so that the last reader to parse message i
// completes it after every earlier message.
func (f *Fanout) Deliver(i int) {
	if f.counts[i].Add(1) != f.readers {
		return
	}
	// Keep the maximum: the goroutines completing i and i+1 may get here
	// out of order.
	for {
		cur := f.delivered.Load()
		if cur > int64(i) || f.delivered.CompareAndSwap(cur, int64(i)+1) {
			break
		}
	}
	select {
	case f.progress <- struct{}{}:
	default:
	}
}

// Fail records a reader's failure. Wait, when it has to wait, fails with
// the first one recorded.
func (f *Fanout) Fail(err error) {
	f.errs.Set(err)
	f.failOnce.Do(func() { close(f.failed) })
}

// Err returns the first failure recorded, or nil.
func (f *Fanout) Err() error { return f.errs.Err() }

// Wait waits until every reader parsed the first want messages. It fails
// tb with the first reader's failure, or when they do not get there within
// the timeout, counted from the end of the previous Wait (the first call
// starts the clock). Only the goroutine running the benchmark may call it.
func (f *Fanout) Wait(tb testing.TB, want int) {
	tb.Helper()
	if f.timer == nil {
		f.timer = time.NewTimer(f.timeout)
		tb.Cleanup(func() { f.timer.Stop() })
	}
	for int(f.delivered.Load()) < want {
		select {
		case <-f.progress:
		case <-f.failed:
			tb.Fatal(f.errs.Err())
		case <-f.timer.C:
			tb.Fatalf("no progress: %d of %d messages delivered to every %s",
				f.delivered.Load(), len(f.counts), f.reader)
		}
	}
	f.timer.Reset(f.timeout) // no stale expiry to drain since Go 1.23
}

// Publish runs the publishing side of a fan-out benchmark: messages
// numbered 0..messages-1, each with data "bench <seq> <sent>" (sent is the
// time since base, in nanoseconds, for the readers' latency), at most
// window of them not yet delivered to every reader. It resets the timer
// before the first publish and stops it once every reader has every
// message.
func (f *Fanout) Publish(b *testing.B, messages, window int, base time.Time, publish func(data []byte) error) {
	b.Helper()
	data := make([]byte, 0, 64)
	b.ResetTimer()
	for i := range messages {
		f.Wait(b, i-window+1)
		sent := time.Since(base)
		data = strconv.AppendInt(append(data[:0], "bench "...), int64(i), 10)
		data = strconv.AppendInt(append(data, ' '), int64(sent), 10)
		if err := publish(bytes.Clone(data)); err != nil {
			b.Fatal(err)
		}
	}
	f.Wait(b, messages)
	b.StopTimer()
	if err := f.Err(); err != nil {
		b.Fatal(err)
	}
}
