package sse

// SSE benchmarks: fan-out of one channel to 1000 streams over loopback TCP
// (delivered events/s and publish-to-client latency), and the memory an
// idle stream costs the server. Both run a real HTTP server
// (httptest.NewServer) in front of a memory-mode engine, and read the
// streams with a minimal client: a raw net.Conn, http.ReadResponse for the
// headers and the chunked body, and a bufio line reader. Neither asserts on
// timings; they report custom metrics.
//
//	go test -run '^$' -bench 'Fanout|IdleStream' -benchtime=1x ./adapters/sse/
//	go test -run '^$' -bench Fanout -benchtime=2000x ./adapters/sse/
//
// Setting SWITCHBOARD_SSE_BENCH_HEAPPROFILE=file makes
// BenchmarkIdleStreamMemory write a heap profile while its streams are
// open, to file.shared and file.distinct (add -memprofilerate=1 for exact,
// unsampled sizes), to be read with go tool pprof -sample_index=inuse_space.
// A profile taken by -memprofile would not do: it is written after the
// benchmark closed its streams.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/internal/benchkit"
)

const (
	// benchFanoutStreams is the number of SSE streams on the fan-out
	// channel.
	benchFanoutStreams = 1000
	// benchFanoutWindow is how many messages may be published and not yet
	// parsed by every stream. See BenchmarkFanout1000Streams. On 2 cores a
	// window of 1 (publish, wait until all 1000 streams parsed it) reaches
	// about 50,000 events/s, since every event costs each stream a wake-up,
	// a write and a read; 16 lets streams batch and reaches about 450,000
	// with about the same p50; 64 adds little throughput and triples it.
	benchFanoutWindow = 16
	// benchIdleStreams is the number of streams the memory benchmark opens.
	benchIdleStreams = 2000
	// benchDialParallelism bounds the streams being opened at once.
	benchDialParallelism = 32
	// benchTimeout bounds every wait, so that a lost event fails the
	// benchmark instead of hanging it.
	benchTimeout = time.Minute
	// benchHeapProfileEnv names a file to write a heap profile to while
	// the idle streams are open.
	benchHeapProfileEnv = "SWITCHBOARD_SSE_BENCH_HEAPPROFILE"
)

// benchServer is an SSE handler over a memory-mode engine in dev (open)
// mode, served on a loopback port.
type benchServer struct {
	engine  *core.Engine
	handler *Handler
	srv     *httptest.Server
}

func newBenchServer(b *testing.B) *benchServer {
	b.Helper()
	authn, err := auth.New(auth.Options{Dev: true})
	if err != nil {
		b.Fatal(err)
	}
	e, err := core.New(core.Options{Durability: core.DurabilityMemory, Auth: authn})
	if err != nil {
		b.Fatal(err)
	}
	h, err := New(e, Options{})
	if err != nil {
		_ = e.Close(context.Background())
		b.Fatal(err)
	}
	return &benchServer{engine: e, handler: h, srv: httptest.NewServer(h)}
}

// close ends every stream and waits for it, then stops the server and the
// engine.
func (s *benchServer) close(b *testing.B) {
	b.Helper()
	// Streams own their connections: end them and wait for them.
	s.handler.Drain()
	ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
	defer cancel()
	if err := s.handler.Wait(ctx); err != nil {
		b.Errorf("waiting for streams: %v", err)
	}
	s.srv.CloseClientConnections()
	s.srv.Close()
	if err := s.engine.Close(context.Background()); err != nil {
		b.Errorf("closing engine: %v", err)
	}
}

// benchReader reads the events of a stream body.
type benchReader struct {
	br    *bufio.Reader
	event []byte
	data  []byte
}

// next returns the next event's type and data (one data line; the
// benchmarks' events have no line breaks in their data). The slices are
// valid until the next call.
func (r *benchReader) next() (event, data []byte, err error) {
	r.event, r.data = r.event[:0], r.data[:0]
	for {
		line, err := r.br.ReadSlice('\n')
		if err != nil {
			return nil, nil, err
		}
		line = line[:len(line)-1]
		switch {
		case len(line) == 0:
			if len(r.event) > 0 || len(r.data) > 0 {
				return r.event, r.data, nil
			}
		case bytes.HasPrefix(line, []byte("event: ")):
			r.event = append(r.event, line[len("event: "):]...)
		case bytes.HasPrefix(line, []byte("data: ")):
			r.data = append(r.data, line[len("data: "):]...)
		}
		// retry, id and comment lines are not needed here.
	}
}

// benchOpenStream opens a stream on channels and reads until its attached
// event. It returns the connection and a reader positioned after it.
func benchOpenStream(addr, channels string) (net.Conn, *benchReader, error) {
	conn, err := net.DialTimeout("tcp", addr, benchTimeout)
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (net.Conn, *benchReader, error) {
		_ = conn.Close()
		return nil, nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(benchTimeout))
	req := "GET /v1/sse?channels=" + channels + " HTTP/1.1\r\nHost: " + addr + "\r\nAccept: text/event-stream\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		return fail(err)
	}
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode != http.StatusOK {
		return fail(fmt.Errorf("stream on %s: status %s", channels, resp.Status))
	}
	// resp.Body undoes the chunked transfer encoding, reading from br.
	r := &benchReader{br: bufio.NewReaderSize(resp.Body, 4096)}
	for {
		ev, data, err := r.next()
		if err != nil {
			return fail(fmt.Errorf("stream on %s: before attached: %w", channels, err))
		}
		switch string(ev) {
		case eventAttached:
			_ = conn.SetDeadline(time.Time{})
			return conn, r, nil
		case eventError, eventContinuity:
			return fail(fmt.Errorf("stream on %s: %s event before attached: %s", channels, ev, data))
		}
	}
}

// benchOpenStreams opens n streams from a few goroutines, stream i on the
// channels named by channels(i), calling keep(i, conn, reader) for each.
// On error the streams already kept are the caller's to close.
func benchOpenStreams(n int, addr string, channels func(i int) string, keep func(i int, c net.Conn, r *benchReader)) error {
	return benchkit.Parallel(n, benchDialParallelism, func(i int) error {
		c, r, err := benchOpenStream(addr, channels(i))
		if err != nil {
			return err
		}
		keep(i, c, r)
		return nil
	})
}

// BenchmarkFanout1000Streams publishes b.N messages to one channel read by
// 1000 SSE streams, each over its own loopback TCP connection and parsed by
// its own client goroutine, and reports:
//
//   - events/s: message events parsed by all clients (b.N × 1000) over the
//     time from the first publish to the last event parsed;
//   - p50-µs, p99-µs, max-µs: over every delivery, from the start of the
//     publish call (the time travels in the message data, in nanoseconds
//     since the benchmark's start) to the client having parsed the event.
//
// The publisher goes as fast as delivery allows within a window: message i
// is published once every stream has parsed message i-16 (i minus
// benchFanoutWindow), one publish at a time, each waiting for its ack.
// Publishing as fast as acks allow would measure
// nothing useful: in memory mode the ack comes once the message is queued
// to the connections, long before a thousand streams have written it, so
// the queues would fill and the streams end as slow consumers. The window
// keeps every stream's queue far below its bound (1024 events), lets each
// stream write several events per flush as a busy server would, and keeps
// the latency that of a saturated server with a short queue rather than
// of an arbitrarily long one. Every stream must receive every message, in
// order, as a message event; anything else fails the benchmark.
//
// The clients run in the same process as the server and share its CPUs
// (their reads and parsing take about a fifth of the CPU time), so the
// server alone would deliver somewhat more.
//
// Setup (1000 streams opened, each attached) is not timed. One op is one
// message fanned out to 1000 streams; run it with -benchtime=2000x or more
// for stable numbers (-benchtime=1x measures a single fan-out).
//
// window=1 publishes the next message only once every stream has the last
// one: the latency of one fan-out on an otherwise idle server.
func BenchmarkFanout1000Streams(b *testing.B) {
	b.Run("window=1", func(b *testing.B) { benchFanout(b, 1) })
	b.Run("window=16", func(b *testing.B) { benchFanout(b, benchFanoutWindow) })
}

func benchFanout(b *testing.B, window int) {
	const (
		n       = benchFanoutStreams
		channel = "bench:fanout"
	)
	// Every stream is two descriptors: the client's and the server's end of
	// the connection.
	benchkit.RaiseFileLimit(b, 2*n+256)
	s := newBenchServer(b)
	messages := b.N

	type client struct {
		conn net.Conn
		r    *benchReader
		lat  []time.Duration // lat[i]: latency of message i
	}
	clients := make([]client, n)
	var (
		closing atomic.Bool // teardown: read errors are expected
		readers sync.WaitGroup
	)
	b.Cleanup(func() {
		closing.Store(true)
		for _, c := range clients {
			if c.conn != nil {
				_ = c.conn.Close()
			}
		}
		readers.Wait()
		s.close(b)
	})
	err := benchOpenStreams(n, s.srv.Listener.Addr().String(), func(int) string { return channel },
		func(i int, c net.Conn, r *benchReader) {
			clients[i] = client{conn: c, r: r, lat: make([]time.Duration, messages)}
		})
	if err != nil {
		b.Fatal(err)
	}

	// fan counts the messages every stream parsed, for the publisher to
	// wait on, and keeps the readers' first failure.
	fan := benchkit.NewFanout(n, messages, "stream", benchTimeout)
	base := time.Now()
	for k := range clients {
		c := &clients[k]
		readers.Go(func() {
			for i := 0; ; {
				ev, data, err := c.r.next()
				if err != nil {
					if !closing.Load() {
						fan.Fail(fmt.Errorf("stream %d after %d of %d messages: %w", k, i, messages, err))
					}
					return
				}
				now := time.Since(base)
				if string(ev) != eventMessage {
					fan.Fail(fmt.Errorf("stream %d after %d of %d messages: unexpected %s event: %s", k, i, messages, ev, data))
					return
				}
				seq, sent, err := parseBenchData(data)
				if err != nil {
					fan.Fail(fmt.Errorf("stream %d: %w", k, err))
					return
				}
				if seq != i {
					fan.Fail(fmt.Errorf("stream %d: got message %d, want %d", k, seq, i))
					return
				}
				c.lat[i] = now - sent
				fan.Deliver(i)
				i++
			}
		})
	}

	ctx := context.Background()
	fan.Publish(b, messages, window, base, func(data []byte) error {
		_, err := s.engine.Publish(ctx, nil, "", "", channel, []*core.Message{{Data: data}})
		return err
	})

	lat := make([]time.Duration, 0, n*messages)
	for _, c := range clients {
		lat = append(lat, c.lat...)
	}
	benchkit.ReportDeliveries(b, lat)
}

// parseBenchData parses the data "bench <seq> <sent>" out of a message
// event's JSON ({"id":...,"data":"bench 12 3456789",...}).
func parseBenchData(msg []byte) (seq int, sent time.Duration, err error) {
	const key = `"data":"bench `
	i := bytes.Index(msg, []byte(key))
	if i < 0 {
		return 0, 0, fmt.Errorf("no benchmark data in %s", msg)
	}
	rest := msg[i+len(key):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return 0, 0, fmt.Errorf("unterminated data in %s", msg)
	}
	a, c, ok := bytes.Cut(rest[:end], []byte{' '})
	s, okS := benchkit.ParseUint(a)
	t, okT := benchkit.ParseUint(c)
	if !ok || !okS || !okT {
		return 0, 0, fmt.Errorf("malformed benchmark data in %s", msg)
	}
	return int(s), time.Duration(t), nil
}

// BenchmarkIdleStreamMemory opens 2000 idle streams (one channel each) and
// reports what they add to the process's memory, per stream:
//
//   - bytes/stream: HeapInuse + StackInuse after runtime.GC, opened minus
//     before;
//   - heap-B/stream and stack-B/stream: the two parts of it;
//   - goroutines/stream: the goroutines the streams keep alive.
//
// The clients are raw net.Conns that send the request, read up to the
// attached event and then only hold the connection: no goroutine and no
// buffer per client, so what is measured is nearly all the server's. The
// client side still counts its net.Conn (the net.TCPConn, netFD and
// poll descriptor, a few hundred bytes per stream). Nothing is published
// and no heartbeat falls due (every 15s) while the streams are measured.
//
// channel=shared puts every stream on one channel, so the channel's own
// state is paid once and the figure is the cost of a stream; with
// channel=distinct each stream has its own channel, which adds an idle
// channel's engine state (a few hundred bytes, see core's
// BenchmarkIdleChannelMemory) to every stream.
//
// One op opens and measures 2000 streams on a fresh server, so the metrics
// mean the same with -benchtime=1x as with more ops (which are averaged).
func BenchmarkIdleStreamMemory(b *testing.B) {
	b.Run("channel=shared", func(b *testing.B) {
		benchIdle(b, "shared", func(int) string { return "bench:idle" }, 0)
	})
	b.Run("channel=distinct", func(b *testing.B) {
		benchIdle(b, "distinct", func(i int) string { return fmt.Sprintf("bench:idle-%05d", i) }, 0)
	})
	// Streams that delivered a few messages before going idle: what a
	// stream keeps after traffic (buffers, grown stacks).
	b.Run("channel=shared,after=3msgs", func(b *testing.B) {
		benchIdle(b, "traffic", func(int) string { return "bench:idle" }, 3)
	})
}

// benchIdle measures idle streams; messages are published to them (on
// the first stream's channel) before the measurement.
func benchIdle(b *testing.B, label string, channels func(i int) string, messages int) {
	const n = benchIdleStreams
	benchkit.RaiseFileLimit(b, 2*n+256)
	var heap, stack, goroutines float64
	for iter := range b.N {
		h, st, g := benchMeasureIdle(b, n, channels, messages, iter == 0, label)
		heap += h
		stack += st
		goroutines += g
	}
	ops := float64(b.N)
	b.ReportMetric((heap+stack)/ops/n, "bytes/stream")
	b.ReportMetric(heap/ops/n, "heap-B/stream")
	b.ReportMetric(stack/ops/n, "stack-B/stream")
	b.ReportMetric(goroutines/ops/n, "goroutines/stream")
}

// benchMeasureIdle opens n streams on a fresh server and returns the
// heap, stack and goroutines they added. The server and the streams are
// gone when it returns.
func benchMeasureIdle(b *testing.B, n int, channels func(i int) string, messages int, profile bool, label string) (heap, stack, goroutines float64) {
	b.StopTimer()
	defer b.StartTimer()
	s := newBenchServer(b)
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
		s.close(b)
	}()
	// A first stream (on the first stream's channel) warms the server's
	// pools and lazily built state, so that they are not charged to the
	// streams measured; with channel=shared it also opens the channel.
	warm, _, err := benchOpenStream(s.srv.Listener.Addr().String(), channels(0))
	if err != nil {
		b.Fatal(err)
	}
	defer warm.Close()

	before, g0 := benchkit.SettledMemStats()
	b.StartTimer()
	err = benchOpenStreams(n, s.srv.Listener.Addr().String(), channels,
		// Only the connection is kept: its reader becomes garbage.
		func(i int, c net.Conn, _ *benchReader) { conns[i] = c })
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if messages > 0 {
		want := float64(messages * (n + 1))
		for i := range messages {
			if _, err := s.engine.Publish(context.Background(), nil, "", "", channels(0),
				[]*core.Message{{Data: []byte(fmt.Sprintf("traffic %d", i))}}); err != nil {
				b.Fatal(err)
			}
		}
		deadline := time.Now().Add(benchTimeout)
		for testutil.ToFloat64(s.handler.metrics.events.WithLabelValues(eventMessage)) < want {
			if time.Now().After(deadline) {
				b.Fatal("messages were not delivered to every stream")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	after, g1 := benchkit.SettledMemStats()
	if path := os.Getenv(benchHeapProfileEnv); path != "" && profile {
		// The profile is as of the collection SettledMemStats just ran,
		// with every stream open.
		benchkit.WriteHeapProfile(b, path+"."+label)
	}
	heap = float64(int64(after.HeapInuse) - int64(before.HeapInuse))
	stack = float64(int64(after.StackInuse) - int64(before.StackInuse))
	return heap, stack, float64(g1 - g0)
}
