// Package benchkit holds the helpers the adapters' load benchmarks share:
// raising the file descriptor limit for thousands of loopback connections,
// running setup work from a few goroutines, tracking a fan-out's deliveries
// and reporting their latencies, and reading the memory a set of idle
// connections holds.
//
// It imports testing and is meant for _test.go files only; nothing the
// server builds depends on it.
package benchkit

import (
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ErrOnce keeps the first error reported from any goroutine. The zero
// value is ready to use.
type ErrOnce struct {
	mu  sync.Mutex
	err error
}

// Set records err unless an error was recorded before.
func (o *ErrOnce) Set(err error) {
	o.mu.Lock()
	if o.err == nil {
		o.err = err
	}
	o.mu.Unlock()
}

// Err returns the first error recorded, or nil.
func (o *ErrOnce) Err() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// Parallel runs fn(i) for i in [0, n) from workers goroutines and returns
// the first error; after one, no new call starts. It returns once every
// call has.
func Parallel(n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var errs ErrOnce
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n && errs.Err() == nil; i = int(next.Add(1) - 1) {
				if err := fn(i); err != nil {
					errs.Set(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return errs.Err()
}

// ParseUint parses b as an unsigned decimal number of 1 to 19 digits (too
// few to overflow), with no sign or other characters. It does not
// allocate, for the benchmarks' client loops.
func ParseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

// Percentile returns the nearest-rank q-quantile of sorted, which must be
// in ascending order; it returns 0 for an empty slice.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*q+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Micros returns d in microseconds.
func Micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// ReportDeliveries reports the deliveries of a fan-out, one latency each in
// lat, which it sorts in place:
//
//   - events/s: deliveries over b.Elapsed();
//   - p50-µs, p99-µs, max-µs: the latencies' median, 99th percentile
//     (nearest rank) and maximum.
func ReportDeliveries(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	var maxLat time.Duration
	if len(lat) > 0 {
		maxLat = lat[len(lat)-1]
	}
	b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(Micros(Percentile(lat, 0.50)), "p50-µs")
	b.ReportMetric(Micros(Percentile(lat, 0.99)), "p99-µs")
	b.ReportMetric(Micros(maxLat), "max-µs")
}

// SettledMemStats waits for the goroutine count to stop changing (for up
// to a second: goroutines that only helped set a connection up exit just
// after it), collects garbage twice and reads the memory statistics. It
// returns them and the goroutine count.
func SettledMemStats() (runtime.MemStats, int) {
	g := runtime.NumGoroutine()
	for range 100 {
		time.Sleep(10 * time.Millisecond)
		now := runtime.NumGoroutine()
		if now == g {
			break
		}
		g = now
	}
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms, runtime.NumGoroutine()
}

// WriteHeapProfile writes the heap profile to path, failing tb on error.
// The profile is as of the last garbage collection: called right after
// SettledMemStats, it shows what was live when the statistics were read.
func WriteHeapProfile(tb testing.TB, path string) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		_ = f.Close()
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
}
