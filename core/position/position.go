// Package position encodes channel positions.
//
// Every message accepted in a region gets an origin serial (region, epoch,
// seq). A subscriber's position on a channel is the vector of the last
// origin serial it has seen from each origin region. Positions travel to
// clients as an opaque, URL-safe string (the channel serial); clients hand
// it back to resume.
//
// Wire form (stable; clients must treat it as opaque): unpadded base64url of
//
//	version byte (1)
//	uvarint  number of entries
//	per entry, sorted by region:
//	  uvarint region length, region bytes, uvarint epoch, uvarint seq
//
// A position for one region of a few letters is about 20 characters.
package position

import (
	"encoding/base64"
	"encoding/binary"
	"slices"
	"strings"

	"github.com/switchboardhq/switchboard/core/apierr"
)

const version = 1

// Limits that keep decoding of hostile input cheap.
const (
	MaxEntries   = 64
	MaxRegionLen = 64
	// MaxEncodedLen bounds the length of an encoded position string.
	MaxEncodedLen = 4096
)

// Serial identifies one message: the region that accepted it, the epoch of
// that region's log for the channel, and its sequence number in that log.
type Serial struct {
	Region string
	Epoch  uint64
	Seq    uint64
}

// Position is the vector of the last origin serial seen from each region,
// kept sorted by region with at most one entry per region. The zero value is
// the empty position (nothing seen).
type Position struct {
	entries []Serial
}

// Of returns a position with the given serials (later entries for the same
// region replace earlier ones).
func Of(serials ...Serial) Position {
	var p Position
	for _, s := range serials {
		p = p.With(s)
	}
	return p
}

// IsZero reports whether p is the empty position.
func (p Position) IsZero() bool { return len(p.entries) == 0 }

// Entries returns the serials of p, sorted by region. The slice must not be
// modified.
func (p Position) Entries() []Serial { return p.entries }

// Get returns the serial for region.
func (p Position) Get(region string) (Serial, bool) {
	i, ok := slices.BinarySearchFunc(p.entries, region, func(s Serial, r string) int { return strings.Compare(s.Region, r) })
	if !ok {
		return Serial{}, false
	}
	return p.entries[i], true
}

// With returns a copy of p whose entry for s.Region is s.
func (p Position) With(s Serial) Position {
	i, ok := slices.BinarySearchFunc(p.entries, s.Region, func(e Serial, r string) int { return strings.Compare(e.Region, r) })
	out := make([]Serial, len(p.entries), len(p.entries)+1)
	copy(out, p.entries)
	if ok {
		out[i] = s
	} else {
		out = slices.Insert(out, i, s)
	}
	return Position{entries: out}
}

// Equal reports whether p and q hold the same serials.
func (p Position) Equal(q Position) bool { return slices.Equal(p.entries, q.entries) }

// String encodes p as its opaque URL-safe form; "" for the empty position.
func (p Position) String() string {
	if len(p.entries) == 0 {
		return ""
	}
	buf := make([]byte, 0, 8+len(p.entries)*24)
	buf = append(buf, version)
	buf = binary.AppendUvarint(buf, uint64(len(p.entries)))
	for _, e := range p.entries {
		buf = binary.AppendUvarint(buf, uint64(len(e.Region)))
		buf = append(buf, e.Region...)
		buf = binary.AppendUvarint(buf, e.Epoch)
		buf = binary.AppendUvarint(buf, e.Seq)
	}
	return base64.RawURLEncoding.EncodeToString(buf)
}

// MarshalText implements encoding.TextMarshaler.
func (p Position) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Position) UnmarshalText(b []byte) error {
	q, err := Parse(string(b))
	if err != nil {
		return err
	}
	*p = q
	return nil
}

func invalid(format string, args ...any) error {
	return apierr.New(apierr.InvalidPosition, "invalid position: "+format, args...)
}

// Parse decodes a position string. The empty string is the empty position.
// Anything malformed, non-canonical or out of limits is an InvalidPosition
// error.
func Parse(s string) (Position, error) {
	if s == "" {
		return Position{}, nil
	}
	if len(s) > MaxEncodedLen {
		return Position{}, invalid("too long")
	}
	// The decoder skips CR and LF; refuse them (and anything else outside the
	// alphabet) so that every accepted position has a single string form.
	if strings.IndexFunc(s, notURLBase64) >= 0 {
		return Position{}, invalid("not base64url")
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return Position{}, invalid("not base64url")
	}
	if len(raw) == 0 || raw[0] != version {
		return Position{}, invalid("unknown version")
	}
	r := reader{b: raw[1:]}
	n := r.uvarint()
	if r.err != nil || n == 0 || n > MaxEntries {
		return Position{}, invalid("bad entry count")
	}
	entries := make([]Serial, 0, n)
	for i := uint64(0); i < n; i++ {
		l := r.uvarint()
		if r.err != nil || l == 0 || l > MaxRegionLen || l > uint64(len(r.b)) {
			return Position{}, invalid("bad region")
		}
		region := string(r.b[:l])
		r.b = r.b[l:]
		e := Serial{Region: region, Epoch: r.uvarint(), Seq: r.uvarint()}
		if r.err != nil {
			return Position{}, invalid("truncated")
		}
		if len(entries) > 0 && entries[len(entries)-1].Region >= region {
			return Position{}, invalid("regions not in order")
		}
		entries = append(entries, e)
	}
	if len(r.b) != 0 {
		return Position{}, invalid("trailing bytes")
	}
	return Position{entries: entries}, nil
}

func notURLBase64(r rune) bool {
	return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_')
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errTruncated
		return 0
	}
	// Reject non-minimal encodings so every position has one string form.
	if n != len(binary.AppendUvarint(nil, v)) {
		r.err = errTruncated
		return 0
	}
	r.b = r.b[n:]
	return v
}

var errTruncated = invalid("truncated")
