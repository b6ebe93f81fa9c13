package core

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"

	"github.com/switchboardhq/switchboard/core/position"
)

// Message is one message on a channel. Accepted messages are immutable and
// shared by every subscriber: never modify a Message you received.
type Message struct {
	// ID identifies the message. A client-supplied ID makes the publish
	// idempotent within the dedup window; otherwise the engine assigns one.
	ID           string
	Name         string // event name
	Data         []byte
	Encoding     string // encoding of Data as the publisher declared it (e.g. "json", "utf-8")
	ContentType  string
	ClientID     string
	ConnectionID string
	// Timestamp is when the message was accepted, in Unix milliseconds.
	Timestamp int64
	Extras    map[string]string

	// Channel and Serial are assigned by the engine on acceptance.
	Channel string
	Serial  position.Serial
	// Position is the encoded channel position after this message: the
	// "serial" clients see and hand back to resume.
	Position string

	// idFromClient records that ID was supplied by the publisher (and so
	// takes part in deduplication).
	idFromClient bool
	// encoded caches the JSON form of an accepted message, which every
	// subscriber of the channel shares.
	encoded atomic.Pointer[[]byte]
}

// Size is the size counted against message size limits: payload, name, id
// and headers.
func (m *Message) Size() int {
	n := len(m.Data) + len(m.Name) + len(m.ID) + len(m.ContentType) + len(m.Encoding)
	for k, v := range m.Extras {
		n += len(k) + len(v)
	}
	return n
}

// Record layout version for the store codec, and its flag bits.
const (
	recordVersion    = 1
	flagIDFromClient = 1 << 0
)

var errCorrupt = errors.New("corrupt message record")

// encodeRecord appends the store encoding of m to buf. The channel is not
// stored (it is part of the key).
func encodeRecord(buf []byte, m *Message) []byte {
	var flags byte
	if m.idFromClient {
		flags |= flagIDFromClient
	}
	buf = append(buf, recordVersion, flags)
	buf = appendString(buf, m.ID)
	buf = appendString(buf, m.Name)
	buf = appendBytes(buf, m.Data)
	buf = appendString(buf, m.Encoding)
	buf = appendString(buf, m.ContentType)
	buf = appendString(buf, m.ClientID)
	buf = appendString(buf, m.ConnectionID)
	buf = binary.AppendVarint(buf, m.Timestamp)
	buf = appendString(buf, m.Serial.Region)
	buf = binary.AppendUvarint(buf, m.Serial.Epoch)
	buf = binary.AppendUvarint(buf, m.Serial.Seq)
	buf = binary.AppendUvarint(buf, uint64(len(m.Extras)))
	if len(m.Extras) > 0 {
		keys := make([]string, 0, len(m.Extras))
		for k := range m.Extras {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			buf = appendString(buf, k)
			buf = appendString(buf, m.Extras[k])
		}
	}
	return buf
}

// decodeRecord decodes a store record of channel. It never panics on
// corrupt input.
func decodeRecord(channel string, b []byte) (*Message, error) {
	if len(b) == 0 || b[0] != recordVersion {
		return nil, fmt.Errorf("%w: unknown version", errCorrupt)
	}
	if len(b) < 2 || b[1]&^flagIDFromClient != 0 {
		return nil, fmt.Errorf("%w: bad flags", errCorrupt)
	}
	d := decoder{b: b[2:]}
	m := &Message{Channel: channel, idFromClient: b[1]&flagIDFromClient != 0}
	m.ID = d.string()
	m.Name = d.string()
	m.Data = d.bytes()
	m.Encoding = d.string()
	m.ContentType = d.string()
	m.ClientID = d.string()
	m.ConnectionID = d.string()
	m.Timestamp = d.varint()
	m.Serial.Region = d.string()
	m.Serial.Epoch = d.uvarint()
	m.Serial.Seq = d.uvarint()
	n := d.uvarint()
	if n > uint64(len(d.b)) { // each pair takes at least 2 bytes
		return nil, fmt.Errorf("%w: extras count", errCorrupt)
	}
	if n > 0 && d.err == nil {
		m.Extras = make(map[string]string, n)
		for i := uint64(0); i < n && d.err == nil; i++ {
			k := d.string()
			m.Extras[k] = d.string()
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: trailing bytes", errCorrupt)
	}
	m.Position = position.Of(m.Serial).String()
	return m, nil
}

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

func appendBytes(buf []byte, b []byte) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(b)))
	return append(buf, b...)
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: truncated varint", errCorrupt)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: truncated varint", errCorrupt)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%w: length %d beyond record", errCorrupt, n)
		return nil
	}
	out := make([]byte, n)
	copy(out, d.b[:n])
	d.b = d.b[n:]
	return out
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%w: length %d beyond record", errCorrupt, n)
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
