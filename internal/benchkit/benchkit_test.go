package benchkit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseUint(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0", 0, true},
		{"42", 42, true},
		{"9999999999999999999", 9999999999999999999, true},
		{"", 0, false},
		{"10000000000000000000", 0, false}, // 20 digits
		{"-1", 0, false},
		{"+1", 0, false},
		{"1 ", 0, false},
		{"1a", 0, false},
	} {
		got, ok := ParseUint([]byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseUint(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestPercentile(t *testing.T) {
	if got := Percentile(nil, 0.5); got != 0 {
		t.Errorf("Percentile(nil) = %v, want 0", got)
	}
	sorted := make([]time.Duration, 100)
	for i := range sorted {
		sorted[i] = time.Duration(i + 1)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{
		{0, 1}, {0.01, 1}, {0.5, 50}, {0.99, 99}, {0.995, 100}, {1, 100},
	} {
		if got := Percentile(sorted, tc.q); got != tc.want {
			t.Errorf("Percentile(1..100, %v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := Percentile([]time.Duration{7}, 0.99); got != 7 {
		t.Errorf("Percentile([7], 0.99) = %v, want 7", got)
	}
}

func TestMicros(t *testing.T) {
	if got := Micros(1500 * time.Nanosecond); got != 1.5 {
		t.Errorf("Micros(1.5µs) = %v, want 1.5", got)
	}
}

func TestErrOnceKeepsFirst(t *testing.T) {
	var o ErrOnce
	if err := o.Err(); err != nil {
		t.Fatalf("zero ErrOnce: %v", err)
	}
	first := errors.New("first")
	o.Set(first)
	o.Set(errors.New("second"))
	o.Set(nil)
	if err := o.Err(); err != first {
		t.Fatalf("Err() = %v, want %v", err, first)
	}
}

func TestParallelRunsEveryIndexOnce(t *testing.T) {
	const n = 1000
	var seen [n]atomic.Int32
	if err := Parallel(n, 8, func(i int) error {
		seen[i].Add(1)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for i := range seen {
		if c := seen[i].Load(); c != 1 {
			t.Fatalf("index %d ran %d times", i, c)
		}
	}
}

func TestParallelStopsAfterError(t *testing.T) {
	const n = 1000
	var calls atomic.Int32
	err := Parallel(n, 4, func(i int) error {
		calls.Add(1)
		if i == 10 {
			return fmt.Errorf("open %d failed", i)
		}
		return nil
	})
	if err == nil || err.Error() != "open 10 failed" {
		t.Fatalf("Parallel = %v, want the error of index 10", err)
	}
	if c := calls.Load(); c == n {
		t.Errorf("all %d calls ran after an error", c)
	}
}

func TestFanoutWaitsForEveryReader(t *testing.T) {
	const readers, messages = 8, 50
	f := NewFanout(readers, messages, "reader", time.Minute)
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() {
			for i := range messages {
				f.Deliver(i)
			}
		})
	}
	f.Wait(t, messages)
	wg.Wait()
	if err := f.Err(); err != nil {
		t.Fatal(err)
	}
	if got := f.delivered.Load(); got != messages {
		t.Fatalf("delivered = %d, want %d", got, messages)
	}
}

func TestFanoutDeliveredIsMonotonic(t *testing.T) {
	f := NewFanout(1, 3, "reader", time.Minute)
	// Completions reported out of order must not move delivered back.
	f.Deliver(2)
	f.Deliver(1)
	if got := f.delivered.Load(); got != 3 {
		t.Fatalf("delivered = %d, want 3", got)
	}
}

func TestFanoutWaitFails(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail bool
		want string
	}{
		{"reader error", true, "reader 3: broken"},
		{"stalled", false, "no progress: 1 of 2 messages delivered to every stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFanout(1, 2, "stream", 20*time.Millisecond)
			f.Deliver(0)
			if tc.fail {
				f.Fail(errors.New("reader 3: broken"))
				f.Fail(errors.New("reader 4: broken"))
			}
			rec := &fatalRecorder{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				f.Wait(rec, 2)
			}()
			<-done
			rec.runCleanups()
			if rec.fatal != tc.want {
				t.Fatalf("Wait failed with %q, want %q", rec.fatal, tc.want)
			}
		})
	}
}

// fatalRecorder records a Fatal or Fatalf call and ends the goroutine, as
// testing.T does, without failing the test.
type fatalRecorder struct {
	testing.TB
	fatal    string
	cleanups []func()
}

func (r *fatalRecorder) Helper()           {}
func (r *fatalRecorder) Cleanup(fn func()) { r.cleanups = append(r.cleanups, fn) }

func (r *fatalRecorder) Fatal(args ...any) {
	r.fatal = fmt.Sprint(args...)
	runtime.Goexit()
}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *fatalRecorder) runCleanups() {
	for _, fn := range r.cleanups {
		fn()
	}
}

func TestReportDeliveriesMetrics(t *testing.T) {
	res := testing.Benchmark(func(b *testing.B) {
		ReportDeliveries(b, []time.Duration{3 * time.Microsecond, time.Microsecond, 2 * time.Microsecond})
	})
	want := map[string]float64{"p50-µs": 2, "p99-µs": 3, "max-µs": 3}
	for unit, v := range want {
		if got, ok := res.Extra[unit]; !ok || got != v {
			t.Errorf("%s = %v (reported %v), want %v", unit, got, ok, v)
		}
	}
	if v, ok := res.Extra["events/s"]; !ok || v <= 0 {
		t.Errorf("events/s = %v (reported %v), want > 0", v, ok)
	}
}

func TestSettledMemStatsAndHeapProfile(t *testing.T) {
	ms, g := SettledMemStats()
	if ms.HeapInuse == 0 || ms.NumGC == 0 || g < 1 {
		t.Fatalf("SettledMemStats: HeapInuse %d, NumGC %d, goroutines %d", ms.HeapInuse, ms.NumGC, g)
	}
	path := filepath.Join(t.TempDir(), "heap.pprof")
	WriteHeapProfile(t, path)
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		t.Fatalf("heap profile: %v, %v", fi, err)
	}
}

func TestRaiseFileLimitAlreadyHigh(t *testing.T) {
	// Every process may open a few descriptors: nothing to raise.
	RaiseFileLimit(t, 3)
}
