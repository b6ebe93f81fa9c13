package core

// Engine benchmarks: fan-out, acknowledged publish throughput, memory per
// idle channel and per subscription, and publish latency under a paced
// open-loop load. They report custom metrics (deliveries/s, publishes/s,
// B/channel, B/subscription, p50-µs, p99-µs, p999-µs) and never assert on
// timings; docs/benchmarks.md lists the targets and how to run them.
//
// One op is a fixed, substantial workload (a thousand fanned-out messages,
// 200,000 acknowledged publishes, 10,000 channels, a paced run of a few
// seconds), so the metrics mean the same with -benchtime=1x (as
// `make bench` runs them) as with the default benchtime.

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/core/store"
)

const (
	benchPayloadSize = 100
	benchChannels    = 1000
	benchSubscribers = 1000
	// benchParallelism × GOMAXPROCS publisher goroutines (256 on 2 cores).
	benchParallelism = 128
	// benchFanoutWindow bounds the messages published but not yet received
	// by every subscriber in the fan-out benchmarks.
	benchFanoutWindow = 128
	// benchFanoutMessages is the number of messages one fan-out op
	// publishes (a million deliveries to 1000 subscribers).
	benchFanoutMessages = 1000
	// benchPublishesPerOp is the number of acknowledged publishes of one
	// op of the publish throughput benchmarks.
	benchPublishesPerOp = 200_000
	// benchWaitLimit bounds every wait so that a lost delivery or ack
	// fails the benchmark instead of hanging it.
	benchWaitLimit = 2 * time.Minute
)

var (
	benchIdentity = &auth.Identity{Dev: true, ClientID: "bench"}
	benchPayload  = func() []byte {
		p := make([]byte, benchPayloadSize)
		for i := range p {
			p[i] = byte('a' + i%26)
		}
		return p
	}()
)

// benchEngine starts an engine in durability mode d, on a fresh store in a
// temporary directory for the durable modes. The engine and store are
// closed when the benchmark ends.
func benchEngine(b *testing.B, d Durability, opts Options) *Engine {
	b.Helper()
	opts.Durability = d
	var st *store.Store
	if d != DurabilityMemory {
		var err error
		if st, err = store.Open(store.Options{Dir: b.TempDir()}); err != nil {
			b.Fatal(err)
		}
		opts.Store = st
	}
	e, err := New(opts)
	if err != nil {
		if st != nil {
			_ = st.Close()
		}
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := e.Close(context.Background()); err != nil {
			b.Errorf("closing engine: %v", err)
		}
		if st != nil {
			if err := st.Close(); err != nil {
				b.Errorf("closing store: %v", err)
			}
		}
	})
	return e
}

// benchConns connects n connections with the given queue bound; they are
// closed when the benchmark ends.
func benchConns(b *testing.B, e *Engine, n, buffer int) []*Conn {
	b.Helper()
	conns := make([]*Conn, n)
	for i := range conns {
		c, err := e.Connect(benchIdentity, ConnectOptions{Buffer: buffer})
		if err != nil {
			b.Fatal(err)
		}
		conns[i] = c
	}
	b.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return conns
}

// benchOpenChannels opens n channels (loading or creating their durable
// state) from several goroutines, so that fsync mode creates them with
// grouped syncs, and returns their names.
func benchOpenChannels(b *testing.B, e *Engine, n int) []string {
	b.Helper()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("bench:room-%04d", i)
	}
	var next atomic.Int64
	var errs errOnce
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if _, err := e.channel(names[i]); err != nil {
					errs.set(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errs.get(); err != nil {
		b.Fatal(err)
	}
	return names
}

func benchMessage() []*Message {
	return []*Message{{Name: "bench", Data: benchPayload}}
}

// errOnce keeps the first error reported from any goroutine.
type errOnce struct {
	mu  sync.Mutex
	err error
}

func (o *errOnce) set(err error) {
	o.mu.Lock()
	if o.err == nil {
		o.err = err
	}
	o.mu.Unlock()
}

func (o *errOnce) get() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// BenchmarkFanout1000 publishes 100-byte messages to one channel with 1000
// attached connections in memory mode, each connection drained by its own
// goroutine with Ready/Take, and reports deliveries/s once every delivery
// was taken by its reader. One op publishes 1000 messages (a million
// deliveries).
func BenchmarkFanout1000(b *testing.B) { benchFanout(b, DurabilityMemory) }

// BenchmarkFanout1000Batch is BenchmarkFanout1000 in batch durability:
// every message is written to the store before it is fanned out.
func BenchmarkFanout1000Batch(b *testing.B) { benchFanout(b, DurabilityBatch) }

func benchFanout(b *testing.B, d Durability) {
	const (
		subs    = benchSubscribers
		channel = "bench:fanout"
	)
	e := benchEngine(b, d, Options{})
	// Each subscriber lags the publisher by at most the window (the sum of
	// the lags is bounded by window × subs, see below). The queue only
	// allocates what is actually queued, so the bound costs nothing.
	buffer := (benchFanoutWindow + 2) * subs
	conns := benchConns(b, e, subs, buffer)
	publisher := benchConns(b, e, 1, 0)[0]
	ctx := context.Background()
	for _, c := range conns {
		if _, err := c.Attach(ctx, channel, AttachOptions{}); err != nil {
			b.Fatal(err)
		}
	}

	messages := b.N * benchFanoutMessages
	target := int64(messages) * subs
	var (
		received atomic.Int64 // message events taken by all readers
		lost     atomic.Int64 // continuity events (a subscriber fell behind)
		waiting  atomic.Bool  // the publisher waits for progress
		progress = make(chan struct{}, 1)
		allDone  = make(chan struct{})
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for _, c := range conns {
		wg.Go(func() {
			evs := make([]Event, 0, 256)
			for {
				select {
				case <-c.Ready():
				case <-stop:
					return
				}
				for {
					evs = c.Take(evs[:0], 256)
					if len(evs) == 0 {
						break
					}
					var n int64
					for i := range evs {
						switch evs[i].Kind {
						case EventMessage:
							n++
						case EventContinuity:
							lost.Add(1)
						}
					}
					if n > 0 && received.Add(n) == target {
						close(allDone)
					}
					if waiting.Load() {
						signal(progress)
					}
				}
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()

	// In batch mode a message is handed to fan-out just before its ack, so
	// the last deliveries may be taken before the last acks arrive.
	var acked sync.WaitGroup
	acked.Add(messages)
	var errs errOnce
	ack := func(_ []PublishResult, err error) {
		if err != nil {
			errs.set(err)
		}
		acked.Done()
	}
	// outstanding is the number of deliveries published but not yet taken.
	outstanding := func(published int) int64 { return int64(published)*subs - received.Load() }
	limit := int64(benchFanoutWindow) * subs

	giveUp := time.NewTimer(benchWaitLimit)
	defer giveUp.Stop()
	b.ResetTimer()
	for i := range messages {
		for outstanding(i) > limit {
			waiting.Store(true)
			if outstanding(i) <= limit {
				waiting.Store(false)
				break
			}
			select {
			case <-progress:
			case <-giveUp.C:
				b.Fatalf("no delivery progress: %d of %d received, %d continuity events", received.Load(), target, lost.Load())
			}
			waiting.Store(false)
		}
		if err := publisher.PublishAsync(ctx, channel, benchMessage(), ack); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-allDone:
	case <-giveUp.C:
		b.Fatalf("received %d of %d deliveries (%d continuity events)", received.Load(), target, lost.Load())
	}
	ackedAll := make(chan struct{})
	go func() {
		acked.Wait()
		close(ackedAll)
	}()
	select {
	case <-ackedAll:
	case <-giveUp.C:
		b.Fatal("publishes were not acknowledged in time")
	}
	b.StopTimer()
	if err := errs.get(); err != nil {
		b.Fatal(err)
	}
	if n := lost.Load(); n > 0 {
		b.Fatalf("%d subscribers lost continuity", n)
	}
	if got := received.Load(); got != target {
		b.Fatalf("received %d deliveries, want %d", got, target)
	}
	b.ReportMetric(float64(target)/b.Elapsed().Seconds(), "deliveries/s")
}

// BenchmarkPublishBatch1000Channels publishes 100-byte messages from 256
// goroutines (one connection each) to random channels among 1000 in batch
// durability, each publish waiting for its acknowledgement, and reports
// publishes/s. One op is 200,000 publishes.
func BenchmarkPublishBatch1000Channels(b *testing.B) { benchPublish(b, DurabilityBatch) }

// BenchmarkPublishFsync1000Channels is BenchmarkPublishBatch1000Channels
// with fsync durability (group commit, one fsync per batch).
func BenchmarkPublishFsync1000Channels(b *testing.B) { benchPublish(b, DurabilityFsync) }

// BenchmarkPublishMemory1000Channels is BenchmarkPublishBatch1000Channels
// in memory durability.
func BenchmarkPublishMemory1000Channels(b *testing.B) { benchPublish(b, DurabilityMemory) }

func benchPublish(b *testing.B, d Durability) {
	e := benchEngine(b, d, Options{})
	names := benchOpenChannels(b, e, benchChannels)
	conns := benchConns(b, e, benchParallelism*runtime.GOMAXPROCS(0), 0)
	total := int64(b.N) * benchPublishesPerOp
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	if err := benchPublishN(conns, names, total); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "publishes/s")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(total), "allocs/publish")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(total), "B/publish")
}

// benchPublishN publishes n messages from one goroutine per connection to
// random channels among names, each goroutine waiting for every ack before
// its next publish (a closed loop).
func benchPublishN(conns []*Conn, names []string, n int64) error {
	ctx := context.Background()
	var next atomic.Int64
	var errs errOnce
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			for next.Add(1) <= n {
				if _, err := c.Publish(ctx, names[rand.IntN(len(names))], benchMessage()); err != nil {
					errs.set(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return errs.get()
}

// memoryEngine starts a memory-mode engine that the caller closes with
// closeEngine.
func memoryEngine(b *testing.B) *Engine {
	b.Helper()
	e, err := New(Options{Durability: DurabilityMemory})
	if err != nil {
		b.Fatal(err)
	}
	return e
}

func closeEngine(b *testing.B, e *Engine) {
	b.Helper()
	if err := e.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// heapInUse returns the bytes of live heap objects after a full collection.
func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// BenchmarkIdleChannelMemory opens 10,000 channels that hold no messages,
// subscribers or presence (memory mode) and reports the live heap they add,
// per channel. One op builds and measures a fresh engine.
func BenchmarkIdleChannelMemory(b *testing.B) {
	const n = 10000
	var total int64
	for range b.N {
		e := memoryEngine(b)
		before := heapInUse()
		for i := range n {
			if _, err := e.channel(fmt.Sprintf("bench:idle-%05d", i)); err != nil {
				b.Fatal(err)
			}
		}
		total += heapInUse() - before
		if got := e.active.Load(); got != n {
			b.Fatalf("%d active channels, want %d", got, n)
		}
		closeEngine(b, e)
	}
	b.ReportMetric(float64(total)/float64(b.N*n), "B/channel")
}

// BenchmarkSubscriptionMemory attaches 100 connections to the same 100
// channels (10,000 attachments, memory mode) and reports the live heap the
// attachments add, per attachment; the channels and connections are
// created and measured first (B/conn) and not counted in B/subscription.
func BenchmarkSubscriptionMemory(b *testing.B) {
	const (
		nConns    = 100
		nChannels = 100
	)
	ctx := context.Background()
	var subTotal, connTotal int64
	for range b.N {
		e := memoryEngine(b)
		names := benchOpenChannels(b, e, nChannels)
		before := heapInUse()
		conns := make([]*Conn, nConns)
		for i := range conns {
			c, err := e.Connect(benchIdentity, ConnectOptions{})
			if err != nil {
				b.Fatal(err)
			}
			conns[i] = c
		}
		afterConns := heapInUse()
		for _, c := range conns {
			for _, name := range names {
				if _, err := c.Attach(ctx, name, AttachOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		}
		after := heapInUse()
		connTotal += afterConns - before
		subTotal += after - afterConns
		for _, name := range names {
			ch := e.lookup(name)
			ch.mu.Lock()
			n := len(ch.subs)
			ch.mu.Unlock()
			if n != nConns {
				b.Fatalf("channel %s has %d subscribers, want %d", name, n, nConns)
			}
		}
		for _, c := range conns {
			c.Close()
		}
		closeEngine(b, e)
	}
	b.ReportMetric(float64(subTotal)/float64(b.N*nConns*nChannels), "B/subscription")
	b.ReportMetric(float64(connTotal)/float64(b.N*nConns), "B/conn")
}

// BenchmarkPublishLatencyBatch measures publish→ack latency in batch
// durability over 1000 channels. It first measures the peak acknowledged
// throughput with the closed-loop load of BenchmarkPublishBatch1000Channels,
// then offers half of it with a paced open-loop schedule for a few seconds.
// Each latency runs from the publish's scheduled send time to its ack,
// so a stalled engine (which also delays the sender) is fully counted;
// only the sender's own timer oversleep is not charged to the engine.
func BenchmarkPublishLatencyBatch(b *testing.B) {
	const (
		peakDuration  = time.Second
		pacedDuration = 3 * time.Second
	)
	e := benchEngine(b, DurabilityBatch, Options{})
	names := benchOpenChannels(b, e, benchChannels)
	conns := benchConns(b, e, benchParallelism*runtime.GOMAXPROCS(0), 0)
	ctx := context.Background()

	// Peak: closed loop, every publisher waits for its ack.
	var published atomic.Int64
	var errs errOnce
	deadline := time.Now().Add(peakDuration)
	start := time.Now()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if _, err := c.Publish(ctx, names[rand.IntN(len(names))], benchMessage()); err != nil {
					errs.set(err)
					return
				}
				published.Add(1)
			}
		})
	}
	wg.Wait()
	if err := errs.get(); err != nil {
		b.Fatal(err)
	}
	peak := float64(published.Load()) / time.Since(start).Seconds()
	rate := peak / 2

	b.ResetTimer()
	for range b.N {
		lat, offered := benchPaced(b, conns[:benchSenders], names, rate, pacedDuration)
		b.StopTimer()
		b.ReportMetric(peak, "peak-pub/s")
		b.ReportMetric(offered, "offered-pub/s")
		b.ReportMetric(micros(percentile(lat, 0.50)), "p50-µs")
		b.ReportMetric(micros(percentile(lat, 0.99)), "p99-µs")
		b.ReportMetric(micros(percentile(lat, 0.999)), "p999-µs")
		b.ReportMetric(micros(lat[len(lat)-1]), "max-µs")
		b.StartTimer()
	}
}

// benchSenders is the number of goroutines (and connections) offering the
// paced load. Go timers on Linux wake with up to about a millisecond of
// delay when the machine is idle, so each sender issues what fell due
// while it slept in a burst; several senders keep those bursts small and
// spread them over both cores, as many client connections would.
const benchSenders = 16

// benchPaced publishes at rate for d, publish i being due at
// start + i/rate, spread over the connections (one sender goroutine
// each), to 1000 channels in turn. It returns the sorted publish→ack
// latencies, each measured from the publish's due time (or from when its
// sender woke up, if it overslept its timer) to the ack, and the rate
// actually offered.
func benchPaced(b *testing.B, conns []*Conn, names []string, rate float64, d time.Duration) ([]time.Duration, float64) {
	b.Helper()
	ctx := context.Background()
	total := int(rate * d.Seconds())
	interval := time.Duration(float64(time.Second) / rate)
	lat := make([]time.Duration, total)
	var errs errOnce
	var acked, senders sync.WaitGroup
	acked.Add(total)
	begin := time.Now()
	due := func(i int) time.Time { return begin.Add(time.Duration(i) * interval) }
	for s, c := range conns {
		senders.Go(func() {
			var woke time.Time // when this sender last woke from a sleep
			for i := s; i < total; {
				now := time.Now()
				for ; i < total && !due(i).After(now); i += len(conns) {
					idx, sent := i, due(i)
					if woke.After(sent) {
						sent = woke
					}
					err := c.PublishAsync(ctx, names[i%len(names)], benchMessage(), func(_ []PublishResult, err error) {
						if err != nil {
							errs.set(err)
						}
						lat[idx] = time.Since(sent)
						acked.Done()
					})
					if err != nil {
						errs.set(err)
						acked.Done()
					}
				}
				woke = time.Time{}
				if i < total {
					if wait := time.Until(due(i)); wait > 0 {
						time.Sleep(wait)
						woke = time.Now()
					}
				}
			}
		})
	}
	senders.Wait()
	offered := float64(total) / time.Since(begin).Seconds()
	waitAll(b, &acked)
	if err := errs.get(); err != nil {
		b.Fatal(err)
	}
	slices.Sort(lat)
	return lat, offered
}

// waitAll waits for wg, failing the benchmark after benchWaitLimit.
func waitAll(b *testing.B, wg *sync.WaitGroup) {
	b.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(benchWaitLimit):
		b.Fatal("publishes were not acknowledged in time")
	}
}

// percentile returns the nearest-rank q-quantile of sorted.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
