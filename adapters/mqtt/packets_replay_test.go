package mqtt

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The tests in this file speak MQTT to the running adapter over raw TCP, byte
// for byte, to see what the broker does with packets no client library would
// send: every wire form in mochi's packet test table, packets over the size
// limit, QoS 2 floods beyond the receive maximum, wildcard topics in PUBLISH
// and bad channel qualifiers in SUBSCRIBE. Each misbehaving connection must
// end the way the MQTT specification says, and the broker's other clients
// must not notice.

const (
	// replyTimeout bounds the wait for a packet the broker must send.
	replyTimeout = 5 * time.Second
	// closeTimeout is how long a connection the broker must drop may stay
	// open.
	closeTimeout = 3 * time.Second
)

// rawPacket is one control packet received from the broker.
type rawPacket struct {
	typ   byte
	flags byte
	body  []byte
}

func (p rawPacket) String() string {
	if p.typ == packets.Disconnect || p.typ == packets.Connack {
		return fmt.Sprintf("%s(0x%02x)", packets.PacketNames[p.typ], p.code())
	}
	return packets.PacketNames[p.typ]
}

// code is the reason code of a DISCONNECT (0 when omitted) or the return
// or reason code of a CONNACK; 0xff when the packet carries none.
func (p rawPacket) code() byte {
	switch {
	case p.typ == packets.Disconnect && len(p.body) == 0:
		return 0
	case p.typ == packets.Disconnect:
		return p.body[0]
	case p.typ == packets.Connack && len(p.body) >= 2:
		return p.body[1]
	}
	return 0xff
}

// decode parses the packet with mochi's decoder for the protocol version.
func (p rawPacket) decode(t testing.TB, version byte) packets.Packet {
	t.Helper()
	pk := packets.Packet{ProtocolVersion: version, FixedHeader: packets.FixedHeader{Type: p.typ, Remaining: len(p.body)}}
	var err error
	switch p.typ {
	case packets.Connack:
		err = pk.ConnackDecode(p.body)
	case packets.Publish:
		pk.FixedHeader.Qos = p.flags >> 1 & 3
		err = pk.PublishDecode(p.body)
	case packets.Puback:
		err = pk.PubackDecode(p.body)
	case packets.Pubrec:
		err = pk.PubrecDecode(p.body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(p.body)
	case packets.Suback:
		err = pk.SubackDecode(p.body)
	default:
		t.Fatalf("no decoder for %v", p)
	}
	if err != nil {
		t.Fatalf("the broker sent a malformed %v: %v", p, err)
	}
	return pk
}

// readRawPacket reads one control packet.
func readRawPacket(r *bufio.Reader) (rawPacket, error) {
	b, err := r.ReadByte()
	if err != nil {
		return rawPacket{}, err
	}
	n, _, err := packets.DecodeLength(r)
	if err != nil {
		return rawPacket{}, fmt.Errorf("remaining length: %w", err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return rawPacket{}, err
	}
	return rawPacket{typ: b >> 4, flags: b & 0x0f, body: body}, nil
}

// writeLength appends an MQTT variable byte integer.
func writeLength(b *bytes.Buffer, n int) {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b.WriteByte(d)
		if n == 0 {
			return
		}
	}
}

// closedByPeer reports whether a read error means the broker closed the
// connection (a reset counts: the broker may close with bytes unread).
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// endedError is returned when the connection ended before the awaited
// packet.
type endedError struct{ err error }

func (e *endedError) Error() string { return "connection ended: " + e.err.Error() }

var errNothingYet = errors.New("nothing received in time")

// rawClient is an MQTT client that sends whatever bytes it is given and
// records everything the broker sends back, on its own goroutine so that a
// broker that stops reading cannot block the test.
type rawClient struct {
	conn    net.Conn
	version byte
	notify  chan struct{}

	mu    sync.Mutex
	queue []rawPacket
	err   error // why reading ended; nil while the connection is open
}

// dialClient opens a raw connection; it is closed when t ends.
func dialClient(t testing.TB, addr string, version byte) *rawClient {
	t.Helper()
	c := &rawClient{conn: dialRaw(t, addr), version: version, notify: make(chan struct{}, 1)}
	go c.read()
	return c
}

func (c *rawClient) read() {
	br := bufio.NewReader(c.conn)
	for {
		pk, err := readRawPacket(br)
		c.mu.Lock()
		if err != nil {
			c.err = err
		} else {
			c.queue = append(c.queue, pk)
		}
		c.mu.Unlock()
		signal(c.notify)
		if err != nil {
			return
		}
	}
}

// next returns the next packet from the broker, an *endedError when the
// connection ended first, or errNothingYet after timeout.
func (c *rawClient) next(timeout time.Duration) (rawPacket, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		if len(c.queue) > 0 {
			pk := c.queue[0]
			c.queue = c.queue[1:]
			c.mu.Unlock()
			return pk, nil
		}
		err := c.err
		c.mu.Unlock()
		if err != nil {
			return rawPacket{}, &endedError{err}
		}
		select {
		case <-c.notify:
		case <-deadline.C:
			return rawPacket{}, errNothingYet
		}
	}
}

// write sends bytes as they are. Errors are returned, not fatal: the
// broker may rightly have closed the connection already.
func (c *rawClient) write(b []byte) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(replyTimeout))
	_, err := c.conn.Write(b)
	return err
}

// endStream half-closes the connection: the broker reads end of stream
// after what was written.
func (c *rawClient) endStream() {
	_ = c.conn.(*net.TCPConn).CloseWrite()
}

// encode renders a packet with mochi's encoder for the client's version.
func (c *rawClient) encode(t testing.TB, pk packets.Packet) []byte {
	t.Helper()
	pk.ProtocolVersion = c.version
	pk.Mods.AllowResponseInfo = true
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Pubrel:
		pk.FixedHeader.Qos = 1
		err = pk.PubrelEncode(&buf)
	case packets.Subscribe:
		pk.FixedHeader.Qos = 1
		err = pk.SubscribeEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	default:
		t.Fatalf("no encoder for packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		t.Fatalf("encoding %s: %v", packets.PacketNames[pk.FixedHeader.Type], err)
	}
	return buf.Bytes()
}

// connect sends a CONNECT with the test key and a clean start and returns
// the CONNACK, which must accept the connection.
func (c *rawClient) connect(t testing.TB, clientID string) packets.Packet {
	t.Helper()
	name := "MQTT"
	if c.version == 3 {
		name = "MQIsdp"
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{
			ProtocolName: []byte(name), Clean: true, Keepalive: 60, ClientIdentifier: clientID,
			UsernameFlag: true, Username: []byte("app"), PasswordFlag: true, Password: []byte("s3cret"),
		},
	}
	if err := c.write(c.encode(t, pk)); err != nil {
		t.Fatalf("sending CONNECT: %v", err)
	}
	ack, err := c.next(replyTimeout)
	if err != nil {
		t.Fatalf("waiting for CONNACK: %v", err)
	}
	if ack.typ != packets.Connack || ack.code() != 0 {
		t.Fatalf("connect %s: got %v, want an accepting CONNACK", clientID, ack)
	}
	return ack.decode(t, c.version)
}

// ping sends a PINGREQ and collects what the broker sends until n
// PINGRESPs arrived. It fails when the connection ends first.
func (c *rawClient) ping(t testing.TB, n int) ([]rawPacket, error) {
	t.Helper()
	if err := c.write(c.encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})); err != nil {
		return nil, fmt.Errorf("sending PINGREQ: %w", err)
	}
	var got []rawPacket
	for n > 0 {
		pk, err := c.next(replyTimeout)
		if err != nil {
			return got, err
		}
		if pk.typ == packets.Pingresp {
			n--
			continue
		}
		got = append(got, pk)
	}
	return got, nil
}

// mustPing fails t unless the connection still serves the client.
func (c *rawClient) mustPing(t testing.TB) {
	t.Helper()
	if got, err := c.ping(t, 1); err != nil {
		t.Fatalf("a bystander connection stopped answering PINGREQ: %v (received %v)", err, got)
	}
}

// untilClosed collects what the broker sends until it closes the
// connection; it reports errNothingYet when the connection is still open
// after timeout.
func (c *rawClient) untilClosed(timeout time.Duration) ([]rawPacket, error) {
	deadline := time.Now().Add(timeout)
	var got []rawPacket
	for {
		pk, err := c.next(time.Until(deadline))
		var ended *endedError
		switch {
		case errors.As(err, &ended) && closedByPeer(ended.err):
			return got, nil
		case err != nil:
			return got, err
		}
		got = append(got, pk)
	}
}

// expectDropped fails t unless the broker ends the connection the way the
// specification requires after a malformed packet or a protocol error:
// MQTT 3.1.1 closes the connection [MQTT-4.8.0-1] (a 3.1.1 server never
// sends DISCONNECT); MQTT 5 closes it too, after a DISCONNECT with a reason
// code of 0x80 or more (section 4.13.1; the test requires that DISCONNECT).
// With want set, the reason code must be that one.
func (c *rawClient) expectDropped(t testing.TB, what string, want byte) {
	t.Helper()
	got, err := c.untilClosed(closeTimeout)
	if err != nil {
		state := "and still answers PINGREQ"
		if _, perr := c.ping(t, 1); perr != nil {
			state = "(" + perr.Error() + ")"
		}
		t.Errorf("%s: the connection is still open after %v %s; received %v", what, closeTimeout, state, got)
		return
	}
	if c.version < 5 {
		for _, pk := range got {
			if pk.typ == packets.Disconnect {
				t.Errorf("%s: an MQTT %d client got %v; only MQTT 5 has a server DISCONNECT", what, c.version, pk)
			}
		}
		return
	}
	if len(got) == 0 || got[len(got)-1].typ != packets.Disconnect {
		t.Errorf("%s: the connection was closed without a DISCONNECT; received %v", what, got)
		return
	}
	code := got[len(got)-1].code()
	switch {
	case want != 0 && code != want:
		t.Errorf("%s: DISCONNECT reason 0x%02x, want 0x%02x", what, code, want)
	case code < 0x80:
		t.Errorf("%s: DISCONNECT reason 0x%02x, want an error (0x80 or more)", what, code)
	}
}

// health is a pair of well-behaved clients beside every misbehaving one:
// a message published by one must keep reaching the other.
type health struct {
	sub, pub paho3.Client
	r        *received
	n        int
}

func newHealth(t *testing.T, f *fixture) *health {
	h := &health{r: newReceived()}
	h.sub = f.v3(t, "health-sub", true)
	wait(t, h.sub.Subscribe("health/check", 1, h.r.handler))
	h.pub = f.v3(t, "health-pub", true)
	return h
}

// check fails t unless both healthy clients are connected and a new
// message goes from one to the other.
func (h *health) check(t testing.TB) {
	t.Helper()
	if !h.sub.IsConnectionOpen() || !h.pub.IsConnectionOpen() {
		t.Fatal("a healthy client lost its connection")
	}
	h.n++
	want := fmt.Sprintf("alive-%d", h.n)
	wait(t, h.pub.Publish("health/check", 1, false, want))
	if got := h.r.wait(t, h.n); got[len(got)-1] != want {
		t.Fatalf("healthy subscriber got %q last, want %q", got[len(got)-1], want)
	}
}

// outcome is what the broker must do with the connection a replayed case
// was sent on.
type outcome int

const (
	// stays: a valid packet. The connection survives (a PINGREQ sent after
	// it gets its PINGRESP) and a request gets its acknowledgement.
	stays outcome = iota
	// dropped: a malformed packet or a protocol error (see expectDropped).
	dropped
	// refused: a bad CONNECT. The connection is closed [MQTT-3.1.4-1],
	// after at most a CONNACK with a failure code the client's version
	// defines.
	refused
	// answered: a well-formed CONNECT. It gets a CONNACK: success and a
	// usable connection, or a refusal for its credentials.
	answered
	// ended: a DISCONNECT from the client. The broker closes the
	// connection and sends nothing more.
	ended
	// cutShort: the bytes stop inside a packet and the client then ends its
	// stream. The broker cannot act on the packet; it must close the
	// connection rather than wait.
	cutShort
)

func (o outcome) String() string {
	return [...]string{"stays open", "dropped", "refused", "answered", "ended", "cut short"}[o]
}

// replayOverride sets the outcome of a case whose bytes, sent by a client
// to a server, mean something else than its annotation in mochi's table,
// which was written for mochi's codec tests.
type replayOverride struct {
	want outcome
	why  string
}

type overrideKey struct {
	tcase    byte
	reframed bool
}

var replayOverrides = map[overrideKey]replayOverride{
	{packets.TConnectMqtt5, false}:                             {refused, "it asks for the Authentication Method SHA-1, which the broker does not support: it must close the connection, after CONNACK 0x8C or 0x87 at most [MQTT-4.12.0-1]"},
	{packets.TPublishMqtt5, false}:                             {dropped, "a client PUBLISH must not carry a Subscription Identifier [MQTT-3.3.4-6]"},
	{packets.TPublishSubscriberIdentifier, false}:              {dropped, "a client PUBLISH must not carry a Subscription Identifier [MQTT-3.3.4-6]"},
	{packets.TPublishBasicTopicAliasOnly, false}:               {dropped, "topic alias 1 was never set on this connection, so the PUBLISH has no topic"},
	{packets.TPublishDup, false}:                               {dropped, "DUP is set on a QoS 0 PUBLISH [MQTT-3.3.1-2]"},
	{packets.TPublishDropOversize, false}:                      {stays, "the failure is mochi refusing to send it to a client with a small maximum packet size; the bytes are a valid QoS 0 PUBLISH"},
	{packets.TPublishSpecQos0NoPacketID, false}:                {dropped, "the remaining length stops two bytes early; those bytes (\"lo\") read as a PUBREL with reserved flags set, a malformed packet"},
	{packets.TPubrecMalReasonCode, true}:                       {stays, "cut to its real length it is a valid PUBREC whose reason code is omitted (success)"},
	{packets.TDisconnectMqtt5, false}:                          {dropped, "it sets a session expiry while the CONNECT set none: a protocol error (section 3.14.2.2.2)"},
	{packets.TDisconnectMqtt5DisconnectWithWillMessage, false}: {dropped, "it sets a session expiry while the CONNECT set none: a protocol error (section 3.14.2.2.2)"},
	{packets.TDisconnectMalProperties, true}:                   {refused, "a DISCONNECT whose property length overruns the packet: mochi's decoder reads it as a plain DISCONNECT, so the connection ends as the client asked, without a 0x81 reply"},
}

// replayVariant is one way of sending a table case.
type replayVariant struct {
	name string
	wire []byte
	// truncated: the bytes end inside the packet they start.
	truncated bool
	reframed  bool
}

// replayVariants gives the bytes of a case as they are ("as-sent") and,
// when the remaining length in its fixed header disagrees with the bytes
// that follow (the table's decoding tests ignore the fixed header), the
// same body with a correct remaining length ("reframed"), so that the body
// reaches the broker's decoder as the case intends.
func replayVariants(raw []byte) []replayVariant {
	declared, n, err := packets.DecodeLength(bytes.NewReader(raw[1:]))
	if err != nil {
		return []replayVariant{{name: "as-sent", wire: raw}}
	}
	body := raw[1+n:]
	vs := []replayVariant{{name: "as-sent", wire: raw, truncated: declared > len(body)}}
	if declared != len(body) && len(body) > 0 {
		var b bytes.Buffer
		b.WriteByte(raw[0])
		writeLength(&b, len(body))
		b.Write(body)
		vs = append(vs, replayVariant{name: "reframed", wire: b.Bytes(), reframed: true})
	}
	return vs
}

// failing reports whether mochi's table marks the case as an error.
func failing(tc packets.TPacketCase) bool {
	if tc.FailFirst != nil {
		return true
	}
	if code, ok := tc.Expect.(packets.Code); ok {
		return code.Code != packets.CodeSuccess.Code
	}
	return tc.Expect != nil
}

// classify decides what the broker must do with a replayed case; first is
// set when the bytes are the first packet of the connection.
func classify(tc packets.TPacketCase, v replayVariant, first bool) (outcome, string) {
	if v.truncated {
		return cutShort, "the bytes end inside the packet"
	}
	if o, ok := replayOverrides[overrideKey{tc.Case, v.reframed}]; ok {
		return o.want, o.why
	}
	bad := failing(tc)
	switch typ := v.wire[0] >> 4; {
	case first && bad:
		return refused, "an invalid CONNECT"
	case first:
		return answered, "a valid CONNECT"
	case typ == packets.Connect:
		return dropped, "a second CONNECT is a protocol violation [MQTT-3.1.0-2]"
	case typ == packets.Connack || typ == packets.Suback || typ == packets.Unsuback || typ == packets.Pingresp:
		return dropped, "only a server sends " + packets.PacketNames[typ] + ": from a client it is a protocol violation"
	case typ == packets.Auth:
		return dropped, "AUTH is reserved in MQTT 3.1.1, and in MQTT 5 a client whose CONNECT had no Authentication Method must not send it (section 4.12)"
	case typ == packets.Reserved:
		return dropped, "packet type 0 is reserved"
	case bad:
		return dropped, "mochi's table marks it malformed or invalid"
	case typ == packets.Disconnect:
		return ended, "a DISCONNECT"
	}
	return stays, "a valid packet"
}

// caseVersion is the protocol version a case is encoded for: the version of
// its CONNECT when it is one, its packet's otherwise, 3.1.1 by default.
func caseVersion(tc packets.TPacketCase, connect bool) byte {
	if connect {
		// Protocol name (length-prefixed), then the protocol level.
		if _, n, err := packets.DecodeLength(bytes.NewReader(tc.RawBytes[1:])); err == nil {
			b := tc.RawBytes[1+n:]
			if len(b) >= 2 {
				if i := 2 + (int(b[0])<<8 | int(b[1])); i < len(b) && b[i] >= 3 && b[i] <= 5 {
					return b[i]
				}
			}
		}
	}
	if tc.Packet != nil && tc.Packet.ProtocolVersion >= 5 {
		return 5
	}
	return 4
}

// expectedReply is the acknowledgement a valid request must get.
func expectedReply(wire []byte) byte {
	switch typ, qos := wire[0]>>4, wire[0]>>1&3; {
	case typ == packets.Publish && qos == 1:
		return packets.Puback
	case typ == packets.Publish && qos == 2:
		return packets.Pubrec
	case typ == packets.Pubrel:
		return packets.Pubcomp // [MQTT-4.3.3-11], for unknown ids too
	case typ == packets.Subscribe:
		return packets.Suback
	case typ == packets.Unsubscribe:
		return packets.Unsuback
	case typ == packets.Pingreq:
		return packets.Pingresp
	}
	return 0
}

// validConnackFailure reports whether code is a refusal a CONNACK of the
// version may carry: 1 to 5 in MQTT 3.1 and 3.1.1 (6 to 255 are reserved),
// 0x80 or more in MQTT 5.
func validConnackFailure(version, code byte) bool {
	if version >= 5 {
		return code >= 0x80
	}
	return code >= 1 && code <= 5
}

// credentialsRefusal reports whether a CONNACK code refuses the client's
// credentials or its authorisation.
func credentialsRefusal(version, code byte) bool {
	if version >= 5 {
		return code == packets.ErrBadUsernameOrPassword.Code || code == packets.ErrNotAuthorized.Code
	}
	// 0x04 is "bad user name or password", 0x05 "not authorized".
	return code == packets.ErrMalformedUsernameOrPassword.Code || code == packets.Err3NotAuthorized.Code
}

// TestReplayMochiPacketTable sends every wire form of mochi's packet test
// table to the broker over TCP, after a valid CONNECT of the case's
// protocol version unless the case is a CONNECT itself, checks what the
// broker does with that connection, and after every case that two healthy
// clients still exchange messages.
//
// The broker runs with anonymous access so that the table's credential-less
// CONNECTs can be accepted; its other CONNECTs carry credentials the broker
// does not know and may be refused for them.
func TestReplayMochiPacketTable(t *testing.T) {
	f := newFixture(t, fixtureOptions{broker: Options{AllowAnonymous: true}})
	h := newHealth(t, f)
	types := make([]byte, 0, len(packets.TPacketData))
	for typ := range packets.TPacketData {
		types = append(types, typ)
	}
	slices.Sort(types)
	seq := 0
	for _, typ := range types {
		t.Run(packets.PacketNames[typ], func(t *testing.T) {
			for _, tc := range packets.TPacketData[typ] {
				t.Run(tc.Desc, func(t *testing.T) {
					if len(tc.RawBytes) == 0 {
						t.Skipf("case %d (%s) checks mochi's validation of a packet struct and has no wire form", tc.Case, tc.Group)
					}
					for _, v := range replayVariants(tc.RawBytes) {
						t.Run(v.name, func(t *testing.T) {
							seq++
							replayCase(t, f, fmt.Sprintf("replay-%d", seq), typ, tc, v)
							h.check(t)
						})
					}
				})
			}
		})
	}
}

// replayCase sends one variant of a case and checks the outcome.
func replayCase(t *testing.T, f *fixture, clientID string, typ byte, tc packets.TPacketCase, v replayVariant) {
	first := typ == packets.Connect
	version := caseVersion(tc, first)
	want, why := classify(tc, v, first)
	what := fmt.Sprintf("case %d % x (MQTT %d): %s, so it is %s", tc.Case, v.wire, version, why, want)
	t.Log(what)

	c := dialClient(t, f.addr, version)
	if !first {
		c.connect(t, clientID)
	}
	if err := c.write(v.wire); err != nil {
		t.Fatalf("sending the case: %v", err)
	}

	switch want {
	case stays:
		reply := expectedReply(v.wire)
		n := 1
		if reply == packets.Pingresp {
			n = 2 // the case's own PINGREQ and ours
		}
		got, err := c.ping(t, n)
		if err != nil {
			t.Errorf("%s: the connection was not kept: %v; received %v", what, err, got)
			return
		}
		if reply != 0 && reply != packets.Pingresp && !slices.ContainsFunc(got, func(p rawPacket) bool { return p.typ == reply }) {
			// A PUBACK or PUBREC follows durable acceptance and may come
			// after the PINGRESP.
			pk, err := c.next(replyTimeout)
			if err != nil || pk.typ != reply {
				t.Errorf("%s: no %s in reply; received %v, then %v (%v)", what, packets.PacketNames[reply], got, pk, err)
			}
			got = append(got, pk)
		}
		checkReplyCodes(t, what, c, got)

	case dropped:
		c.expectDropped(t, what, 0)

	case refused:
		for {
			pk, err := c.next(closeTimeout)
			var ended *endedError
			switch {
			case errors.As(err, &ended) && closedByPeer(ended.err):
				return
			case err != nil:
				t.Errorf("%s: the connection is still open: %v", what, err)
				return
			case pk.typ != packets.Connack:
				t.Errorf("%s: got %v before the connection was closed", what, pk)
			case pk.code() == 0:
				t.Errorf("%s: the CONNECT was accepted", what)
				return
			case !validConnackFailure(version, pk.code()):
				t.Errorf("%s: CONNACK code 0x%02x is not a refusal an MQTT %d client understands", what, pk.code(), version)
			}
		}

	case answered:
		mustAccept := tc.Packet != nil && !tc.Packet.Connect.UsernameFlag && !tc.Packet.Connect.PasswordFlag && !tc.Packet.Connect.WillFlag
		ack, err := c.next(replyTimeout)
		switch {
		case err != nil:
			t.Errorf("%s: no CONNACK: %v", what, err)
		case ack.typ != packets.Connack:
			t.Errorf("%s: got %v, want CONNACK", what, ack)
		case ack.code() == 0:
			if got, err := c.ping(t, 1); err != nil {
				t.Errorf("%s: accepted, then the connection was not kept: %v; received %v", what, err, got)
			}
		case mustAccept:
			t.Errorf("%s: an anonymous CONNECT was refused with 0x%02x", what, ack.code())
		case !credentialsRefusal(version, ack.code()):
			t.Errorf("%s: refused with 0x%02x, which is not about credentials", what, ack.code())
		default:
			if got, err := c.untilClosed(closeTimeout); err != nil {
				t.Errorf("%s: refused, but the connection is still open; received %v", what, got)
			}
		}

	case ended:
		got, err := c.untilClosed(closeTimeout)
		if err != nil {
			t.Errorf("%s: the connection is still open after the DISCONNECT", what)
		} else if len(got) > 0 {
			t.Errorf("%s: the broker answered a DISCONNECT with %v", what, got)
		}

	case cutShort:
		// Nothing can be said about the packet before the stream ends.
		if got, err := c.untilClosed(100 * time.Millisecond); err == nil {
			t.Logf("closed before the end of the stream; received %v", got)
			return
		}
		c.endStream()
		if got, err := c.untilClosed(closeTimeout); err != nil {
			t.Errorf("%s: the connection is still open after the client ended its stream; received %v", what, got)
		}
	}
}

// checkReplyCodes fails t when the broker refused what a valid case asked
// for: every case publishes to and subscribes on topics the test key may
// use.
func checkReplyCodes(t *testing.T, what string, c *rawClient, got []rawPacket) {
	t.Helper()
	for _, p := range got {
		switch p.typ {
		case packets.Puback, packets.Pubrec:
			if pk := p.decode(t, c.version); pk.ReasonCode >= 0x80 {
				t.Errorf("%s: %v with reason 0x%02x", what, p, pk.ReasonCode)
			}
		case packets.Suback:
			if pk := p.decode(t, c.version); slices.ContainsFunc(pk.ReasonCodes, func(b byte) bool { return b >= 0x80 }) {
				t.Errorf("%s: SUBACK refused filters: % x", what, pk.ReasonCodes)
			}
		}
	}
}

// publishPacket builds a PUBLISH; qos 0 sends no packet id.
func publishPacket(topic string, qos byte, id uint16, payload []byte) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic, PacketID: id, Payload: payload,
	}
}

// sizedPublish is a v5 QoS 1 PUBLISH of exactly size bytes in total
// (fixed header included), the measure of a maximum packet size.
func sizedPublish(t testing.TB, c *rawClient, size int, id uint16) []byte {
	t.Helper()
	const topic = "size/check"
	for payload := size; payload >= 0; payload-- {
		b := c.encode(t, publishPacket(topic, 1, id, make([]byte, payload)))
		if len(b) == size {
			return b
		}
	}
	t.Fatalf("no PUBLISH of %d bytes", size)
	return nil
}

// TestOversizePacketIsRefused sends packets larger than the broker's
// maximum packet size, which the CONNACK announces: an MQTT 5 client gets
// DISCONNECT 0x95 (packet too large; section 3.2.2.3.6), a 3.1.1 client is
// disconnected, and no one else is affected.
func TestOversizePacketIsRefused(t *testing.T) {
	const limit = 1024
	f := newFixture(t, fixtureOptions{broker: Options{MaxPacketSize: limit}})
	h := newHealth(t, f)
	bystander := dialClient(t, f.addr, 5)
	bystander.connect(t, "bystander")

	t.Run("v5", func(t *testing.T) {
		c := dialClient(t, f.addr, 5)
		ack := c.connect(t, "big-v5")
		if got := ack.Properties.MaximumPacketSize; got != limit {
			t.Errorf("CONNACK maximum packet size %d, want %d", got, limit)
		}
		_ = c.write(c.encode(t, publishPacket("big/topic", 1, 1, make([]byte, 4*limit))))
		c.expectDropped(t, "oversize PUBLISH", packets.ErrPacketTooLarge.Code)
		bystander.mustPing(t)
		h.check(t)
	})

	t.Run("v3", func(t *testing.T) {
		c := dialClient(t, f.addr, 4)
		c.connect(t, "big-v3")
		_ = c.write(c.encode(t, publishPacket("big/topic", 1, 1, make([]byte, 4*limit))))
		c.expectDropped(t, "oversize PUBLISH", 0)
		bystander.mustPing(t)
		h.check(t)
	})

	// The maximum packet size counts the whole packet, fixed header
	// included (section 3.2.2.3.6).
	t.Run("boundary", func(t *testing.T) {
		c := dialClient(t, f.addr, 5)
		c.connect(t, "big-boundary")
		_ = c.write(sizedPublish(t, c, limit, 1))
		if pk, err := c.next(replyTimeout); err != nil || pk.typ != packets.Puback {
			t.Fatalf("a PUBLISH of exactly %d bytes: got %v, %v; want PUBACK", limit, pk, err)
		}
		_ = c.write(sizedPublish(t, c, limit+1, 2))
		c.expectDropped(t, fmt.Sprintf("a PUBLISH of %d bytes", limit+1), packets.ErrPacketTooLarge.Code)
		bystander.mustPing(t)
		h.check(t)
	})
}

// TestReceiveMaximumExceeded floods the broker with QoS 2 PUBLISHes that
// are never released: beyond the receive maximum announced in CONNACK the
// client gets DISCONNECT 0x93 (receive maximum exceeded; section 3.3.4).
func TestReceiveMaximumExceeded(t *testing.T) {
	const recvMax = 4
	f := newFixture(t, fixtureOptions{broker: Options{ReceiveMaximum: recvMax}})
	h := newHealth(t, f)
	bystander := dialClient(t, f.addr, 5)
	bystander.connect(t, "bystander")

	t.Run("flood", func(t *testing.T) {
		c := dialClient(t, f.addr, 5)
		ack := c.connect(t, "flood")
		if got := ack.Properties.ReceiveMaximum; got != recvMax {
			t.Errorf("CONNACK receive maximum %d, want %d", got, recvMax)
		}
		var flood []byte
		for id := uint16(1); id <= 3*recvMax; id++ {
			flood = append(flood, c.encode(t, publishPacket("flood/topic", 2, id, []byte("x")))...)
		}
		_ = c.write(flood)
		for i := 0; i < recvMax; i++ {
			if pk, err := c.next(replyTimeout); err != nil || pk.typ != packets.Pubrec {
				t.Fatalf("publish %d of %d: got %v, %v; want PUBREC", i+1, recvMax, pk, err)
			}
		}
		c.expectDropped(t, "QoS 2 PUBLISH beyond the receive maximum", packets.ErrReceiveMaximum.Code)
		bystander.mustPing(t)
		h.check(t)
	})

	// The limit counts unreleased publishes, not publishes: PUBREL frees
	// a slot.
	t.Run("release frees a slot", func(t *testing.T) {
		c := dialClient(t, f.addr, 5)
		c.connect(t, "release")
		for id := uint16(1); id <= recvMax; id++ {
			_ = c.write(c.encode(t, publishPacket("flood/topic", 2, id, []byte("x"))))
			if pk, err := c.next(replyTimeout); err != nil || pk.typ != packets.Pubrec {
				t.Fatalf("publish %d: got %v, %v; want PUBREC", id, pk, err)
			}
		}
		_ = c.write(c.encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: 1}))
		if pk, err := c.next(replyTimeout); err != nil || pk.typ != packets.Pubcomp {
			t.Fatalf("PUBREL: got %v, %v; want PUBCOMP", pk, err)
		}
		_ = c.write(c.encode(t, publishPacket("flood/topic", 2, recvMax+1, []byte("x"))))
		if pk, err := c.next(replyTimeout); err != nil || pk.typ != packets.Pubrec {
			t.Fatalf("publish after PUBREL: got %v, %v; want PUBREC", pk, err)
		}
		c.mustPing(t)
		h.check(t)
	})
}

// TestPublishToWildcardTopic publishes to topic names with wildcards,
// which a PUBLISH must not carry [MQTT-3.3.2-2]: the client is
// disconnected, at every QoS and version, and only that client.
func TestPublishToWildcardTopic(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	h := newHealth(t, f)
	sub := dialClient(t, f.addr, 5)
	sub.connect(t, "wild-sub")
	_ = sub.write(sub.encode(t, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "wild/#", Qos: 1}},
	}))
	if pk, err := sub.next(replyTimeout); err != nil || pk.typ != packets.Suback {
		t.Fatalf("subscribing: got %v, %v", pk, err)
	}
	n := 0
	for _, version := range []byte{4, 5} {
		for _, topic := range []string{"wild/+", "wild/#", "#", "+", "wild/+/x", "wild/a#"} {
			for _, qos := range []byte{0, 1, 2} {
				t.Run(fmt.Sprintf("v%d/%s/qos%d", version, topic, qos), func(t *testing.T) {
					n++
					c := dialClient(t, f.addr, version)
					c.connect(t, fmt.Sprintf("wild-%d", n))
					var id uint16
					if qos > 0 {
						id = 1
					}
					_ = c.write(c.encode(t, publishPacket(topic, qos, id, []byte("wild"))))
					c.expectDropped(t, "PUBLISH to "+topic, 0)
					// Nothing reached the subscriber of every wild/ topic.
					if got, err := sub.ping(t, 1); err != nil || len(got) > 0 {
						t.Errorf("subscriber of wild/#: received %v, %v; want nothing", got, err)
					}
					h.check(t)
				})
			}
		}
	}

	// Nor may a Response Topic contain wildcards [MQTT-3.3.2-14]. mochi's
	// encoder leaves such a property out, so the packet is built by hand.
	for _, qos := range []byte{0, 1} {
		t.Run(fmt.Sprintf("v5/response topic/qos%d", qos), func(t *testing.T) {
			n++
			c := dialClient(t, f.addr, 5)
			c.connect(t, fmt.Sprintf("wild-%d", n))
			var body bytes.Buffer
			body.Write([]byte{0, 10})
			body.WriteString("wild/reply")
			if qos > 0 {
				body.Write([]byte{0, 1})
			}
			body.Write([]byte{6, packets.PropResponseTopic, 0, 3})
			body.WriteString("a/+")
			body.WriteString("payload")
			var pk bytes.Buffer
			pk.WriteByte(packets.Publish<<4 | qos<<1)
			writeLength(&pk, body.Len())
			pk.Write(body.Bytes())
			_ = c.write(pk.Bytes())
			c.expectDropped(t, "PUBLISH with Response Topic a/+", 0)
			h.check(t)
		})
	}
}

// TestSubscribeBadQualifier subscribes to a filter with an invalid channel
// qualifier next to a valid filter: the bad one is refused in the SUBACK
// (0x8F topic filter invalid in MQTT 5, 0x80 failure in 3.1.1), the other
// is granted and delivers.
func TestSubscribeBadQualifier(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	h := newHealth(t, f)
	for _, tc := range []struct {
		version byte
		refusal byte
	}{
		{4, 0x80},
		{5, packets.ErrTopicFilterInvalid.Code},
	} {
		t.Run(fmt.Sprintf("v%d", tc.version), func(t *testing.T) {
			c := dialClient(t, f.addr, tc.version)
			c.connect(t, fmt.Sprintf("qualifier-v%d", tc.version))
			good := fmt.Sprintf("qualifier/v%d", tc.version)
			_ = c.write(c.encode(t, packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 7,
				Filters: packets.Subscriptions{{Filter: "[?rewind=x]a", Qos: 1}, {Filter: good, Qos: 1}},
			}))
			pk, err := c.next(replyTimeout)
			if err != nil || pk.typ != packets.Suback {
				t.Fatalf("got %v, %v; want SUBACK", pk, err)
			}
			ack := pk.decode(t, tc.version)
			if ack.PacketID != 7 {
				t.Errorf("SUBACK packet id %d, want 7", ack.PacketID)
			}
			if want := []byte{tc.refusal, 1}; !bytes.Equal(ack.ReasonCodes, want) {
				t.Errorf("SUBACK codes % x, want % x", ack.ReasonCodes, want)
			}
			wait(t, h.pub.Publish(good, 1, false, "delivered"))
			for {
				pk, err := c.next(replyTimeout)
				if err != nil {
					t.Fatalf("waiting for the message on %s: %v", good, err)
				}
				if pk.typ != packets.Publish {
					continue
				}
				if msg := pk.decode(t, tc.version); msg.TopicName != good || string(msg.Payload) != "delivered" {
					t.Errorf("got %q on %q, want \"delivered\" on %q", msg.Payload, msg.TopicName, good)
				}
				break
			}
			c.mustPing(t)
			h.check(t)
		})
	}
}
