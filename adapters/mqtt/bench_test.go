package mqtt

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/switchboardhq/switchboard/internal/benchkit"
)

// rawSubscriber connects a minimal MQTT 3.1.1 client that subscribes to one
// topic and then stays idle, reading nothing more.
func rawSubscriber(tb testing.TB, addr, id, topic string) net.Conn {
	tb.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	var buf bytes.Buffer
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 600, ClientIdentifier: id,
			UsernameFlag: true, Username: []byte("app"), PasswordFlag: true, Password: []byte("s3cret")}}
	if err := connect.ConnectEncode(&buf); err != nil {
		tb.Fatal(err)
	}
	sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: topic, Qos: 1}}}
	if err := sub.SubscribeEncode(&buf); err != nil {
		tb.Fatal(err)
	}
	if _, err := nc.Write(buf.Bytes()); err != nil {
		tb.Fatal(err)
	}
	// CONNACK (4 bytes) and SUBACK (5 bytes).
	r := bufio.NewReader(nc)
	got := make([]byte, 9)
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(r, got); err != nil {
		tb.Fatalf("handshake: %v", err)
	}
	if got[0] != 0x20 || got[3] != 0 || got[4] != 0x90 {
		tb.Fatalf("handshake bytes % x", got)
	}
	return nc
}

// BenchmarkIdleConnection reports the server-side memory of one idle MQTT
// connection with one subscription (heap and stacks, after GC), clients and
// server in the same process.
func BenchmarkIdleConnection(b *testing.B) {
	f := newFixture(b, fixtureOptions{})
	const n = 2000
	measure := func() (heap, stack uint64) {
		ms, _ := benchkit.SettledMemStats()
		return ms.HeapInuse, ms.StackInuse
	}
	for b.Loop() {
		heap0, stack0 := measure()
		conns := make([]net.Conn, 0, n)
		for i := range n {
			conns = append(conns, rawSubscriber(b, f.addr, fmt.Sprintf("idle-%d", i), fmt.Sprintf("idle/%d", i)))
		}
		time.Sleep(200 * time.Millisecond)
		heap1, stack1 := measure()
		b.ReportMetric(float64(heap1+stack1-heap0-stack0)/n, "bytes/conn")
		b.ReportMetric(float64(heap1-heap0)/n, "heap-bytes/conn")
		b.ReportMetric(float64(stack1-stack0)/n, "stack-bytes/conn")
		b.ReportMetric(float64(runtime.NumGoroutine())/n, "goroutines/conn")
		for _, c := range conns {
			c.Close()
		}
	}
}
