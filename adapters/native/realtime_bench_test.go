package native

// Realtime benchmarks: fan-out of one channel to 1000 WebSocket connections
// over loopback TCP (delivered events/s and publish-to-client latency), the
// memory an idle connection costs the server, and the rate at which the
// server accepts connections. All run a real HTTP server
// (httptest.NewServer) in front of a memory-mode engine in dev (open)
// mode. Fan-out and connect rate use the coder/websocket client; the
// memory benchmark uses a minimal hand-written client (see
// rtBenchRawAttach). None asserts on timings; they report custom metrics.
//
//	go test -run '^$' -bench Realtime -benchtime=1x ./adapters/native/
//	go test -run '^$' -bench RealtimeFanout -benchtime=2000x ./adapters/native/
//
// Setting SWITCHBOARD_REALTIME_BENCH_HEAPPROFILE=file makes
// BenchmarkRealtimeIdleConnMemory write a heap profile to file while its
// connections are open (add -memprofilerate=1 for exact, unsampled sizes),
// to be read with go tool pprof -sample_index=inuse_space. A profile taken
// by -memprofile would not do: it is written after the benchmark closed its
// connections.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/internal/benchkit"
)

const (
	// rtBenchFanoutConns is the number of connections attached to the
	// fan-out channel.
	rtBenchFanoutConns = 1000
	// rtBenchFanoutWindow is how many messages may be published and not
	// yet parsed by every connection. See BenchmarkRealtimeFanout1000.
	rtBenchFanoutWindow = 16
	// rtBenchIdleConns is the number of connections the memory benchmark
	// opens.
	rtBenchIdleConns = 2000
	// rtBenchConnectConns is the number of connections one op of the
	// connect-rate benchmark opens, from rtBenchConnectParallelism
	// goroutines.
	rtBenchConnectConns       = 2000
	rtBenchConnectParallelism = 8
	// rtBenchDialParallelism bounds the connections being opened at once
	// during setup.
	rtBenchDialParallelism = 32
	// rtBenchTimeout bounds every wait, so that a lost frame fails the
	// benchmark instead of hanging it.
	rtBenchTimeout = time.Minute
	// rtBenchHeapProfileEnv names a file to write a heap profile to while
	// the idle connections are open.
	rtBenchHeapProfileEnv = "SWITCHBOARD_REALTIME_BENCH_HEAPPROFILE"
)

// rtBenchServer is the realtime handler over a memory-mode engine in dev
// (open) mode, served on a loopback port.
type rtBenchServer struct {
	engine *core.Engine
	rt     *Realtime
	srv    *httptest.Server
}

func newRTBenchServer(b *testing.B) *rtBenchServer {
	b.Helper()
	authn, err := auth.New(auth.Options{Dev: true})
	if err != nil {
		b.Fatal(err)
	}
	e, err := core.New(core.Options{Durability: core.DurabilityMemory, Auth: authn})
	if err != nil {
		b.Fatal(err)
	}
	rt, err := NewRealtime(e, RealtimeOptions{})
	if err != nil {
		_ = e.Close(context.Background())
		b.Fatal(err)
	}
	return &rtBenchServer{engine: e, rt: rt, srv: httptest.NewServer(rt)}
}

// addr is the server's host:port.
func (s *rtBenchServer) addr() string { return s.srv.Listener.Addr().String() }

// url is the WebSocket URL of the realtime endpoint.
func (s *rtBenchServer) url() string { return "ws://" + s.addr() + "/v1/realtime" }

// close ends every connection and waits for it, then stops the server and
// the engine.
func (s *rtBenchServer) close(b *testing.B) {
	b.Helper()
	// Connections are hijacked: the handler owns them. End them and wait.
	s.rt.Drain()
	ctx, cancel := context.WithTimeout(context.Background(), rtBenchTimeout)
	defer cancel()
	if err := s.rt.Wait(ctx); err != nil {
		b.Errorf("waiting for connections: %v", err)
	}
	s.srv.CloseClientConnections()
	s.srv.Close()
	if err := s.engine.Close(context.Background()); err != nil {
		b.Errorf("closing engine: %v", err)
	}
}

// rtBenchAction returns the action of a server frame (setup only: it
// decodes the whole frame).
func rtBenchAction(frame []byte) string {
	var f struct {
		Action string `json:"action"`
	}
	_ = json.Unmarshal(frame, &f)
	return f.Action
}

// rtBenchAttachFrame is the attach request for channel.
func rtBenchAttachFrame(channel string) []byte {
	return fmt.Appendf(nil, `{"action":"attach","channel":%q}`, channel)
}

// rtBenchDialAttached connects with the coder/websocket client, reads the
// connected frame, attaches channel and reads until its attached frame.
func rtBenchDialAttached(url, channel string) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), rtBenchTimeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*websocket.Conn, error) {
		_ = ws.CloseNow()
		return nil, err
	}
	ws.SetReadLimit(8 << 20)
	_, frame, err := ws.Read(ctx)
	if err != nil {
		return fail(fmt.Errorf("before connected: %w", err))
	}
	if a := rtBenchAction(frame); a != actionConnected {
		return fail(fmt.Errorf("first frame %s, want connected", frame))
	}
	if err := ws.Write(ctx, websocket.MessageText, rtBenchAttachFrame(channel)); err != nil {
		return fail(fmt.Errorf("attach %s: %w", channel, err))
	}
	for {
		_, frame, err := ws.Read(ctx)
		if err != nil {
			return fail(fmt.Errorf("attach %s: before attached: %w", channel, err))
		}
		switch rtBenchAction(frame) {
		case actionAttached:
			return ws, nil
		case actionHeartbeat:
		default:
			return fail(fmt.Errorf("attach %s: %s before attached", channel, frame))
		}
	}
}

// BenchmarkRealtimeFanout1000 publishes b.N messages to one channel that
// 1000 realtime connections are attached to, each over its own loopback
// TCP connection and read by its own client goroutine, and reports:
//
//   - events/s: messages parsed by all clients (b.N × 1000) over the time
//     from the first publish to the last message parsed;
//   - p50-µs, p99-µs, max-µs: over every delivery, from the start of the
//     publish call (the time travels in the message data, in nanoseconds
//     since the benchmark's start) to the client having read the frame
//     that carries the message.
//
// A message frame may carry several consecutive messages of the channel;
// every message in it counts as one delivery, with the frame's arrival
// time. The publisher goes as fast as delivery allows within a window:
// message i is published once every connection has parsed message
// i-window, one publish at a time, each waiting for its ack. In memory mode
// the ack comes once the message is queued to the connections, long before
// a thousand of them have written it; without a window the queues would
// fill and the connections would end as slow consumers. The window keeps
// every delivery queue far below its bound (1024 events) and lets each
// connection write several messages per frame as a busy server would.
// Every connection must receive every message, in order, in message
// frames (heartbeats aside); anything else fails the benchmark.
//
// The clients run in the same process as the server and share its CPUs
// (reading and unmasking frames, and the byte scan for the messages), so
// the server alone would deliver somewhat more.
//
// Setup (1000 connections opened, each attached) is not timed. One op is
// one message fanned out to 1000 connections; run it with -benchtime=2000x
// or more for stable numbers (-benchtime=1x measures a single fan-out).
//
// window=1 publishes the next message only once every connection has the
// last one: the latency of one fan-out on an otherwise idle server.
func BenchmarkRealtimeFanout1000(b *testing.B) {
	b.Run("window=1", func(b *testing.B) { rtBenchFanout(b, 1) })
	b.Run("window=16", func(b *testing.B) { rtBenchFanout(b, rtBenchFanoutWindow) })
}

// rtBenchMessagePrefix starts every message frame (appendMessageFrame).
var rtBenchMessagePrefix = []byte(`{"action":"message",`)

func rtBenchFanout(b *testing.B, window int) {
	const (
		n       = rtBenchFanoutConns
		channel = "bench:fanout"
	)
	// Every connection is two descriptors: the client's and the server's
	// end.
	benchkit.RaiseFileLimit(b, 2*n+256)
	s := newRTBenchServer(b)
	messages := b.N

	type client struct {
		ws  *websocket.Conn
		lat []time.Duration // lat[i]: latency of message i
	}
	clients := make([]client, n)
	var (
		closing atomic.Bool // teardown: read errors are expected
		readers sync.WaitGroup
	)
	b.Cleanup(func() {
		closing.Store(true)
		for _, c := range clients {
			if c.ws != nil {
				_ = c.ws.CloseNow()
			}
		}
		readers.Wait()
		s.close(b)
	})
	url := s.url()
	err := benchkit.Parallel(n, rtBenchDialParallelism, func(i int) error {
		ws, err := rtBenchDialAttached(url, channel)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		clients[i] = client{ws: ws, lat: make([]time.Duration, messages)}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}

	// fan counts the messages every connection parsed, for the publisher to
	// wait on, and keeps the readers' first failure.
	fan := benchkit.NewFanout(n, messages, "connection", rtBenchTimeout)
	base := time.Now()
	for k := range clients {
		c := &clients[k]
		readers.Go(func() {
			var buf bytes.Buffer
			for i := 0; ; {
				_, r, err := c.ws.Reader(context.Background())
				if err == nil {
					buf.Reset()
					_, err = buf.ReadFrom(r)
				}
				if err != nil {
					if !closing.Load() {
						fan.Fail(fmt.Errorf("connection %d after %d of %d messages: %w", k, i, messages, err))
					}
					return
				}
				now := time.Since(base)
				frame := buf.Bytes()
				if !bytes.HasPrefix(frame, rtBenchMessagePrefix) {
					if rtBenchAction(frame) == actionHeartbeat {
						continue
					}
					fan.Fail(fmt.Errorf("connection %d after %d of %d messages: unexpected frame %s", k, i, messages, frame))
					return
				}
				for rest, found := frame, 0; ; found++ {
					seq, sent, next, err := rtBenchParseData(rest)
					if err != nil {
						fan.Fail(fmt.Errorf("connection %d: %w in %s", k, err, frame))
						return
					}
					if next == nil {
						if found == 0 {
							fan.Fail(fmt.Errorf("connection %d: message frame without messages: %s", k, frame))
							return
						}
						break
					}
					rest = next
					if i >= messages {
						fan.Fail(fmt.Errorf("connection %d: message %d after the last of %d", k, seq, messages))
						return
					}
					if seq != i {
						fan.Fail(fmt.Errorf("connection %d: got message %d, want %d", k, seq, i))
						return
					}
					c.lat[i] = now - sent
					fan.Deliver(i)
					i++
				}
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

// rtBenchParseData finds the next benchmark message in a message frame:
// its data "bench <seq> <sent>" (rendered as "data":"bench 12 3456789").
// It returns the rest of the frame after it, or a nil rest when there is
// no further message.
func rtBenchParseData(frame []byte) (seq int, sent time.Duration, rest []byte, err error) {
	const key = `"data":"bench `
	i := bytes.Index(frame, []byte(key))
	if i < 0 {
		return 0, 0, nil, nil
	}
	after := frame[i+len(key):]
	end := bytes.IndexByte(after, '"')
	if end < 0 {
		return 0, 0, nil, errors.New("unterminated benchmark data")
	}
	a, c, ok := bytes.Cut(after[:end], []byte{' '})
	s, okS := benchkit.ParseUint(a)
	t, okT := benchkit.ParseUint(c)
	if !ok || !okS || !okT {
		return 0, 0, nil, errors.New("malformed benchmark data")
	}
	return int(s), time.Duration(t), after[end:], nil
}

// The raw client: a hand-written WebSocket handshake and frames over a
// net.Conn, so that an idle client is only its net.Conn (no goroutine, no
// buffers). The coder/websocket client keeps no goroutine either, but
// holds read and write buffers and its own state per connection, which the
// memory benchmark would charge to the server.

// rtBenchWSKey is the sample nonce of RFC 6455 (section 1.3) and
// rtBenchWSAccept the server's answer to it. The server does not need a
// fresh nonce per connection.
const (
	rtBenchWSKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	rtBenchWSAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

// rtBenchRawAttach opens a connection with the raw client: the upgrade
// request, the 101 response, the connected frame, one masked text frame
// with the attach request, then frames until attached. It returns the
// connection, positioned after the attached frame; the server sends
// nothing after it until a message or a heartbeat.
func rtBenchRawAttach(addr, channel string) (net.Conn, error) {
	conn, err := net.DialTimeout("tcp", addr, rtBenchTimeout)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (net.Conn, error) {
		_ = conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(rtBenchTimeout))
	req := "GET /v1/realtime HTTP/1.1\r\nHost: " + addr +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
		rtBenchWSKey + "\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return fail(err)
	}
	br := bufio.NewReaderSize(conn, 1024)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fail(err)
	}
	// A 101 response has no body: the frames that follow stay in br.
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != rtBenchWSAccept {
		return fail(fmt.Errorf("upgrade: status %s, accept %q", resp.Status, resp.Header.Get("Sec-WebSocket-Accept")))
	}
	frame, err := rtBenchReadFrame(br)
	if err != nil {
		return fail(fmt.Errorf("before connected: %w", err))
	}
	if a := rtBenchAction(frame); a != actionConnected {
		return fail(fmt.Errorf("first frame %s, want connected", frame))
	}
	if err := rtBenchWriteFrame(conn, rtBenchAttachFrame(channel)); err != nil {
		return fail(fmt.Errorf("attach %s: %w", channel, err))
	}
	for {
		frame, err := rtBenchReadFrame(br)
		if err != nil {
			return fail(fmt.Errorf("attach %s: before attached: %w", channel, err))
		}
		switch rtBenchAction(frame) {
		case actionAttached:
			_ = conn.SetDeadline(time.Time{})
			return conn, nil
		case actionHeartbeat:
		default:
			return fail(fmt.Errorf("attach %s: %s before attached", channel, frame))
		}
	}
}

// rtBenchReadFrame reads one text message from the server: unmasked
// frames, continuations joined, pings ignored (the server sends none).
func rtBenchReadFrame(br *bufio.Reader) ([]byte, error) {
	var msg []byte
	for {
		var h [2]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return nil, err
		}
		fin, op := h[0]&0x80 != 0, h[0]&0x0f
		if h[1]&0x80 != 0 {
			return nil, errors.New("masked frame from the server")
		}
		size := uint64(h[1] & 0x7f)
		switch size {
		case 126:
			var ext [2]byte
			if _, err := io.ReadFull(br, ext[:]); err != nil {
				return nil, err
			}
			size = uint64(binary.BigEndian.Uint16(ext[:]))
		case 127:
			var ext [8]byte
			if _, err := io.ReadFull(br, ext[:]); err != nil {
				return nil, err
			}
			size = binary.BigEndian.Uint64(ext[:])
		}
		if size > 8<<20 {
			return nil, fmt.Errorf("frame of %d bytes", size)
		}
		payload := make([]byte, size)
		if _, err := io.ReadFull(br, payload); err != nil {
			return nil, err
		}
		switch op {
		case 0x1, 0x0: // text, continuation
			msg = append(msg, payload...)
			if fin {
				return msg, nil
			}
		case 0x8:
			return nil, fmt.Errorf("closed by the server: %q", payload)
		case 0x9, 0xa: // ping, pong
		default:
			return nil, fmt.Errorf("unexpected opcode %#x", op)
		}
	}
}

// rtBenchWriteFrame writes payload as one masked text frame (payloads
// below 64 KiB). The mask is fixed: it need not be unpredictable here.
func rtBenchWriteFrame(w io.Writer, payload []byte) error {
	mask := [4]byte{0x5a, 0x17, 0xc3, 0x2e}
	var b []byte
	switch {
	case len(payload) < 126:
		b = append(b, 0x81, 0x80|byte(len(payload)))
	case len(payload) < 1<<16:
		b = append(b, 0x81, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	default:
		return fmt.Errorf("frame of %d bytes is too large for this client", len(payload))
	}
	b = append(b, mask[:]...)
	for i, c := range payload {
		b = append(b, c^mask[i%4])
	}
	_, err := w.Write(b)
	return err
}

// BenchmarkRealtimeIdleConnMemory opens 2000 idle connections, each
// attached to one shared channel, and reports what they add to the
// process's memory, per connection:
//
//   - bytes/conn: HeapInuse + StackInuse after runtime.GC, opened minus
//     before;
//   - heap-B/conn and stack-B/conn: the two parts of it;
//   - goroutines/conn: the goroutines the connections keep alive.
//
// The clients are raw net.Conns (rtBenchRawAttach) that handshake, attach
// and then only hold the connection: no goroutine and no buffer per
// client, so what is measured is nearly all the server's. The client side
// still counts its net.Conn (the net.TCPConn, netFD and poll descriptor, a
// few hundred bytes per connection). Nothing is published and no heartbeat
// falls due (every 15s) while the connections are measured.
//
// Sharing one channel pays the channel's own state once, so the figure is
// the cost of a connection and its attachment.
//
// One op opens and measures 2000 connections on a fresh server, so the
// metrics mean the same with -benchtime=1x as with more ops (which are
// averaged).
func BenchmarkRealtimeIdleConnMemory(b *testing.B) {
	const n = rtBenchIdleConns
	benchkit.RaiseFileLimit(b, 2*n+256)
	var heap, stack, goroutines float64
	for iter := range b.N {
		h, st, g := rtBenchMeasureIdle(b, n, "bench:idle", iter == 0)
		heap += h
		stack += st
		goroutines += g
	}
	ops := float64(b.N)
	b.ReportMetric((heap+stack)/ops/n, "bytes/conn")
	b.ReportMetric(heap/ops/n, "heap-B/conn")
	b.ReportMetric(stack/ops/n, "stack-B/conn")
	b.ReportMetric(goroutines/ops/n, "goroutines/conn")
}

// rtBenchMeasureIdle opens n connections attached to channel on a fresh
// server and returns the heap, stack and goroutines they added. The server
// and the connections are gone when it returns.
func rtBenchMeasureIdle(b *testing.B, n int, channel string, profile bool) (heap, stack, goroutines float64) {
	b.StopTimer()
	defer b.StartTimer()
	s := newRTBenchServer(b)
	conns := make([]net.Conn, n)
	defer func() {
		// Clients close first: the server sees them drop and its sessions
		// end without a close handshake nobody would answer.
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
		s.close(b)
	}()
	// A first connection warms the server's pools and lazily built state,
	// so that they are not charged to the connections measured; it also
	// opens the channel.
	warm, err := rtBenchRawAttach(s.addr(), channel)
	if err != nil {
		b.Fatal(err)
	}
	defer warm.Close()

	before, g0 := benchkit.SettledMemStats()
	b.StartTimer()
	err = benchkit.Parallel(n, rtBenchDialParallelism, func(i int) error {
		c, err := rtBenchRawAttach(s.addr(), channel)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		conns[i] = c
		return nil
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	after, g1 := benchkit.SettledMemStats()
	if path := os.Getenv(rtBenchHeapProfileEnv); path != "" && profile {
		// The profile is as of the collection SettledMemStats just ran,
		// with every connection open.
		benchkit.WriteHeapProfile(b, path)
	}
	heap = float64(int64(after.HeapInuse) - int64(before.HeapInuse))
	stack = float64(int64(after.StackInuse) - int64(before.StackInuse))
	return heap, stack, float64(g1 - g0)
}

// BenchmarkRealtimeConnectRate opens 2000 connections from 8 goroutines,
// each dialing with the coder/websocket client (TCP connect, upgrade) and
// reading the connected frame before it dials the next, and reports
// conns/s: connections over the time from the first dial to the last
// connected frame. The server authenticates (dev mode: no credentials to
// check), registers the connection with the engine, issues its connection
// key and starts its session goroutines for each.
//
// Connections stay open until the op ends, as after a reconnect storm;
// closing them is not timed. The clients share the process's CPUs with
// the server, so the server alone would accept more.
//
// One op opens 2000 connections on a fresh server, so the metric means
// the same with -benchtime=1x as with more ops.
func BenchmarkRealtimeConnectRate(b *testing.B) {
	const n = rtBenchConnectConns
	benchkit.RaiseFileLimit(b, 2*n+256)
	for range b.N {
		rtBenchConnectOp(b, n)
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "conns/s")
}

// rtBenchConnectOp times opening n connections on a fresh server.
func rtBenchConnectOp(b *testing.B, n int) {
	b.StopTimer()
	s := newRTBenchServer(b)
	conns := make([]*websocket.Conn, n)
	defer func() {
		for _, ws := range conns {
			if ws != nil {
				_ = ws.CloseNow()
			}
		}
		s.close(b)
	}()
	url := s.url()
	// One connection first, untimed: the HTTP transport's and the
	// server's lazily built state.
	warm, err := rtBenchDialConnected(url)
	if err != nil {
		b.Fatal(err)
	}
	defer warm.CloseNow()

	b.StartTimer()
	err = benchkit.Parallel(n, rtBenchConnectParallelism, func(i int) error {
		ws, err := rtBenchDialConnected(url)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		conns[i] = ws
		return nil
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
}

// rtBenchDialConnected connects with the coder/websocket client and reads
// the connected frame.
func rtBenchDialConnected(url string) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), rtBenchTimeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	_, frame, err := ws.Read(ctx)
	if err != nil {
		_ = ws.CloseNow()
		return nil, fmt.Errorf("before connected: %w", err)
	}
	if a := rtBenchAction(frame); a != actionConnected {
		_ = ws.CloseNow()
		return nil, fmt.Errorf("first frame %s, want connected", frame)
	}
	return ws, nil
}
