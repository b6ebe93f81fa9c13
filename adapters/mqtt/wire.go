package mqtt

import (
	"errors"
	"net"
	"os"
	"sync"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// wireConn is the network connection mochi reads and writes. It measures
// every inbound packet exactly (fixed header, length bytes and body against
// the maximum packet size), and when a connection ends for a reason the
// client did not cause by closing, it tells an MQTT 5 client why with a
// DISCONNECT: mochi closes silently when a packet cannot be decoded or is
// too large.
type wireConn struct {
	net.Conn
	max int

	// Inbound stream framing, touched only by the reading goroutine.
	inHeader  bool // between packets: the next byte is a fixed header
	inLength  bool
	length    int
	shift     uint
	size      int // fixed header + length bytes + body so far announced
	left      int // body bytes still to come
	pendErr   error
	lengthLen int

	mu     sync.Mutex
	cl     *mochi.Client // set once mochi parsed the CONNECT
	said   bool          // a DISCONNECT went either way
	reason byte          // the reason to give on close, 0x81 when unknown
}

func newWireConn(c net.Conn, max int) *wireConn {
	return &wireConn{Conn: c, max: max, inHeader: true}
}

// Read passes bytes through, up to the first packet over the size limit.
func (w *wireConn) Read(p []byte) (int, error) {
	if w.pendErr != nil {
		return 0, w.pendErr
	}
	n, err := w.Conn.Read(p)
	if err != nil {
		w.mu.Lock()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
			w.reason = packets.ErrKeepAliveTimeout.Code
		}
		w.mu.Unlock()
	}
	if ok := w.frame(p[:n]); ok < n {
		w.refuse(packets.ErrPacketTooLarge)
		w.pendErr = packets.ErrPacketTooLarge
		if ok == 0 {
			return 0, w.pendErr
		}
		return ok, nil
	}
	return n, err
}

// frame follows packet boundaries through b and returns how many bytes
// belong to packets within the limit.
func (w *wireConn) frame(b []byte) int {
	for i := 0; i < len(b); {
		switch {
		case w.inHeader:
			w.inHeader, w.inLength = false, true
			w.length, w.shift, w.lengthLen = 0, 0, 0
			i++
		case w.inLength:
			c := b[i]
			w.length |= int(c&0x7f) << w.shift
			w.shift += 7
			w.lengthLen++
			i++
			if c&0x80 == 0 || w.lengthLen == 4 {
				w.inLength = false
				w.size = 1 + w.lengthLen + w.length
				if w.max > 0 && w.size > w.max {
					// Everything before this packet's header is fine.
					return max(0, i-1-w.lengthLen)
				}
				w.left = w.length
				if w.left == 0 {
					w.inHeader = true
				}
			}
		default:
			k := min(w.left, len(b)-i)
			w.left -= k
			i += k
			if w.left == 0 {
				w.inHeader = true
			}
		}
	}
	return len(b)
}

// refuse tells the client why its connection is being closed.
func (w *wireConn) refuse(code packets.Code) {
	w.mu.Lock()
	w.reason = code.Code
	w.mu.Unlock()
	w.sayDisconnect()
}

// attach records the client once its CONNECT was parsed.
func (w *wireConn) attach(cl *mochi.Client) {
	w.mu.Lock()
	w.cl = cl
	w.mu.Unlock()
}

// disconnected records that a DISCONNECT was sent or received.
func (w *wireConn) disconnected() {
	w.mu.Lock()
	w.said = true
	w.mu.Unlock()
}

// Close says DISCONNECT first when nobody did.
func (w *wireConn) Close() error {
	w.sayDisconnect()
	return w.Conn.Close()
}

func (w *wireConn) sayDisconnect() {
	w.mu.Lock()
	cl, said, reason := w.cl, w.said, w.reason
	w.said = true
	w.mu.Unlock()
	if said || cl == nil || cl.Properties.ProtocolVersion < 5 {
		return
	}
	if reason == 0 {
		reason = packets.ErrMalformedPacket.Code
	}
	// The write lock keeps this packet from landing inside another one; a
	// writer stuck on a dead peer holds it, and then there is nobody to
	// tell anyway.
	if !cl.TryLock() {
		return
	}
	defer cl.Unlock()
	_ = w.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = w.Conn.Write([]byte{0xE0, 0x01, reason})
}
