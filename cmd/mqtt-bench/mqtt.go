package main

// A minimal MQTT 3.1.1 client: just the packets the scenarios need
// (CONNECT/CONNACK, SUBSCRIBE/SUBACK, PUBLISH, PUBACK, DISCONNECT), encoded
// into reusable byte slices and written with one write call each.
//
// The load generator speaks raw packets instead of using a client library
// because it runs on the same two cores as the broker it measures and has to
// hold up to 10,000 connections: a connection here is a net.Conn and, only
// when something must be read continuously, one goroutine with a read
// buffer. Publishers that expect nothing back (QoS 0) have no goroutine at
// all, and idle connections hold no buffer. A library client keeps several
// goroutines, channels and buffers per connection, which would cost the
// generator more CPU and memory than the brokers' differences it measures.
// It also leaves the flow control (PUBACK windows, end-to-end windows,
// pacing) entirely to the scenarios.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Control packet types (MQTT 3.1.1, section 2.2.1).
const (
	typeConnect    = 1
	typeConnack    = 2
	typePublish    = 3
	typePuback     = 4
	typeSubscribe  = 8
	typeSuback     = 9
	typePingresp   = 13
	typeDisconnect = 14
)

// maxPacket bounds the packets the client accepts: the scenarios only
// receive small publishes and acknowledgements.
const maxPacket = 1 << 20

// appendLength appends an MQTT variable-length integer ("remaining length").
func appendLength(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

// appendString appends a UTF-8 string with its two-byte length prefix.
func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// connectPacket is a CONNECT with a clean session, no credentials and no
// will.
func connectPacket(clientID string, keepalive uint16) []byte {
	body := appendString(nil, "MQTT")
	body = append(body, 4, 0x02) // protocol level 3.1.1, clean session
	body = binary.BigEndian.AppendUint16(body, keepalive)
	body = appendString(body, clientID)
	b := appendLength([]byte{typeConnect << 4}, len(body))
	return append(b, body...)
}

// subscribePacket subscribes to one topic filter.
func subscribePacket(id uint16, filter string, qos byte) []byte {
	body := binary.BigEndian.AppendUint16(nil, id)
	body = appendString(body, filter)
	body = append(body, qos)
	b := appendLength([]byte{typeSubscribe<<4 | 0x02}, len(body))
	return append(b, body...)
}

// publishTemplate is an encoded PUBLISH whose packet id and payload header
// are patched in place before each write, so that publishing allocates
// nothing.
type publishTemplate struct {
	buf       []byte
	idAt      int // offset of the packet id, -1 for QoS 0
	payloadAt int
}

func newPublishTemplate(topic string, qos byte, payloadSize int) *publishTemplate {
	n := 2 + len(topic) + payloadSize
	if qos > 0 {
		n += 2
	}
	b := appendLength([]byte{typePublish<<4 | qos<<1}, n)
	b = appendString(b, topic)
	t := &publishTemplate{idAt: -1}
	if qos > 0 {
		t.idAt = len(b)
		b = append(b, 0, 0)
	}
	t.payloadAt = len(b)
	t.buf = append(b, make([]byte, payloadSize)...)
	return t
}

// payload is the part of the packet that carries the message.
func (t *publishTemplate) payload() []byte { return t.buf[t.payloadAt:] }

func (t *publishTemplate) setID(id uint16) {
	binary.BigEndian.PutUint16(t.buf[t.idAt:], id)
}

// The first bytes of every payload identify the message: when it was
// (meant to be) sent, in nanoseconds on the generator's monotonic clock, the
// sender goroutine and the publishing connection. The rest is padding up to
// -size.
const payloadHeader = 16

type header struct {
	sentAt int64
	sender uint32
	conn   uint32
}

func putPayloadHeader(p []byte, h header) {
	binary.LittleEndian.PutUint64(p, uint64(h.sentAt))
	binary.LittleEndian.PutUint32(p[8:], h.sender)
	binary.LittleEndian.PutUint32(p[12:], h.conn)
}

func parsePayloadHeader(p []byte) (header, bool) {
	if len(p) < payloadHeader {
		return header{}, false
	}
	return header{
		sentAt: int64(binary.LittleEndian.Uint64(p)),
		sender: binary.LittleEndian.Uint32(p[8:]),
		conn:   binary.LittleEndian.Uint32(p[12:]),
	}, true
}

// publishBody splits a received PUBLISH: its packet id (0 for QoS 0) and
// its payload.
func publishBody(flags byte, body []byte) (id uint16, payload []byte, err error) {
	if len(body) < 2 {
		return 0, nil, errors.New("short PUBLISH")
	}
	n := 2 + int(binary.BigEndian.Uint16(body))
	if (flags>>1)&3 > 0 {
		n += 2
		if len(body) < n {
			return 0, nil, errors.New("short PUBLISH")
		}
		id = binary.BigEndian.Uint16(body[n-2:])
	}
	if len(body) < n {
		return 0, nil, errors.New("short PUBLISH")
	}
	return id, body[n:], nil
}

func appendPuback(b []byte, id uint16) []byte {
	return append(b, typePuback<<4, 2, byte(id>>8), byte(id))
}

// packetReader reads whole packets; the body it returns is valid until
// the next call.
type packetReader struct {
	r   io.ByteReader
	rd  io.Reader
	buf []byte
}

func newPacketReader(r *bufio.Reader) *packetReader {
	return &packetReader{r: r, rd: r}
}

// next returns the next packet's type, flags and body.
func (p *packetReader) next() (typ, flags byte, body []byte, err error) {
	h, err := p.r.ReadByte()
	if err != nil {
		return 0, 0, nil, err
	}
	n, shift := 0, 0
	for {
		d, err := p.r.ReadByte()
		if err != nil {
			return 0, 0, nil, err
		}
		n |= int(d&0x7f) << shift
		if d&0x80 == 0 {
			break
		}
		if shift += 7; shift > 21 {
			return 0, 0, nil, errors.New("malformed remaining length")
		}
	}
	if n > maxPacket {
		return 0, 0, nil, fmt.Errorf("packet of %d bytes", n)
	}
	if cap(p.buf) < n {
		p.buf = make([]byte, n)
	}
	p.buf = p.buf[:n]
	if _, err := io.ReadFull(p.rd, p.buf); err != nil {
		return 0, 0, nil, err
	}
	return h >> 4, h & 0x0f, p.buf, nil
}

// readSmallPacket reads one packet straight from the connection, without a
// buffer kept afterwards: for the handshake of connections that read
// nothing later (CONNACK, SUBACK).
func readSmallPacket(c net.Conn) (typ byte, body []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 != 0 {
		return 0, nil, fmt.Errorf("unexpected large packet of type %d during the handshake", h[0]>>4)
	}
	body = make([]byte, h[1])
	if _, err := io.ReadFull(c, body); err != nil {
		return 0, nil, err
	}
	return h[0] >> 4, body, nil
}

// dial opens a connection and completes CONNECT/CONNACK.
func dial(addr, clientID string, keepalive uint16, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(connectPacket(clientID, keepalive)); err != nil {
		c.Close()
		return nil, err
	}
	typ, body, err := readSmallPacket(c)
	if err == nil && (typ != typeConnack || len(body) != 2) {
		err = fmt.Errorf("expected CONNACK, got packet type %d", typ)
	}
	if err == nil && body[1] != 0 {
		err = fmt.Errorf("connection refused, CONNACK return code %d", body[1])
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("connect %s: %w", clientID, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// subscribe subscribes c to filter and waits for the SUBACK. Nothing else
// may be received before it: the scenarios publish only once every
// subscription is acknowledged.
func subscribe(c net.Conn, filter string, qos byte, timeout time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(subscribePacket(1, filter, qos)); err != nil {
		return err
	}
	typ, body, err := readSmallPacket(c)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", filter, err)
	}
	if typ != typeSuback || len(body) != 3 {
		return fmt.Errorf("subscribe %s: expected SUBACK, got packet type %d", filter, typ)
	}
	if body[2] >= 0x80 {
		return fmt.Errorf("subscribe %s: refused (return code %#x)", filter, body[2])
	}
	return nil
}

// disconnect sends DISCONNECT and closes the connection.
func disconnect(c net.Conn) {
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Write([]byte{typeDisconnect << 4, 0})
	_ = c.Close()
}
