package sse

import (
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"hash/fnv"
	"slices"

	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/position"
)

// The event id of a stream is a token holding the stream's position on
// every one of its channels, so that one Last-Event-ID resumes them all.
//
// Wire form (unpadded base64url; clients treat it as opaque):
//
//	byte     version (1)
//	4 bytes  FNV-1a hash of the stream's channel names, sorted, NUL-separated
//	uvarint  number of regions, then each: uvarint length, bytes
//	per channel, in sorted name order:
//	  uvarint  number of serials (0: the stream had not started the channel)
//	  per serial: uvarint region index, zigzag-varint epoch delta, uvarint seq
//	4 bytes  CRC-32 (Castagnoli) of everything before
//
// Channel names are not repeated in the token: the request names them, and
// the hash ties the token to that set. Region names appear once. An epoch
// is coded as the difference from the previous serial's epoch, so channels
// created about the same time cost a byte or two. A one-region stream costs
// 11 bytes plus the region's name, plus 3 to 8 bytes per channel (the first
// epoch 6 more): two channels take 39 characters, 100 channels about 700.
const (
	tokenVersion = 1
	// MaxTokenLength bounds the accepted event id, in characters.
	MaxTokenLength  = 16 << 10
	maxTokenRegions = 64
)

var (
	tokenEncoding = base64.RawURLEncoding
	crcTable      = crc32.MakeTable(crc32.Castagnoli)
)

// channelSetHash identifies a set of channel names, given sorted.
func channelSetHash(sorted []string) uint32 {
	h := fnv.New32a()
	for _, n := range sorted {
		_, _ = h.Write([]byte(n))
		_, _ = h.Write([]byte{0})
	}
	return h.Sum32()
}

// tokenCodec encodes and decodes the tokens of one stream, whose channel
// names are fixed.
type tokenCodec struct {
	names []string // sorted
	hash  uint32
	// order maps the position of a name in names to its index in the
	// stream's own order.
	order []int
	buf   []byte
}

// newTokenCodec returns the codec for a stream of channels (no duplicates).
func newTokenCodec(channels []string) *tokenCodec {
	order := make([]int, len(channels))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		switch {
		case channels[a] < channels[b]:
			return -1
		case channels[a] > channels[b]:
			return 1
		}
		return 0
	})
	names := make([]string, len(channels))
	for i, j := range order {
		names[i] = channels[j]
	}
	return &tokenCodec{names: names, hash: channelSetHash(names), order: order}
}

// encode returns the token for positions, indexed in the stream's order
// (the zero Position for a channel the stream has not started).
func (c *tokenCodec) encode(positions []position.Position) string {
	b := c.buf[:0]
	b = append(b, tokenVersion)
	b = binary.BigEndian.AppendUint32(b, c.hash)
	// Regions, in order of first appearance.
	var regions []string
	for _, i := range c.order {
		for _, s := range positions[i].Entries() {
			if !slices.Contains(regions, s.Region) {
				regions = append(regions, s.Region)
			}
		}
	}
	b = binary.AppendUvarint(b, uint64(len(regions)))
	for _, r := range regions {
		b = binary.AppendUvarint(b, uint64(len(r)))
		b = append(b, r...)
	}
	var prevEpoch uint64
	for _, i := range c.order {
		entries := positions[i].Entries()
		b = binary.AppendUvarint(b, uint64(len(entries)))
		for _, s := range entries {
			b = binary.AppendUvarint(b, uint64(slices.Index(regions, s.Region)))
			b = binary.AppendVarint(b, int64(s.Epoch-prevEpoch))
			prevEpoch = s.Epoch
			b = binary.AppendUvarint(b, s.Seq)
		}
	}
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
	c.buf = b
	return tokenEncoding.EncodeToString(b)
}

func badToken(format string, args ...any) error {
	return apierr.New(apierr.InvalidPosition, "invalid Last-Event-ID: "+format, args...)
}

// decode parses a token into positions in the stream's order. A token of a
// different channel set, or a corrupt, truncated or malformed one is an
// InvalidPosition error.
func (c *tokenCodec) decode(token string) ([]position.Position, error) {
	if len(token) > MaxTokenLength {
		return nil, badToken("%d characters is more than the limit of %d", len(token), MaxTokenLength)
	}
	raw, err := tokenEncoding.DecodeString(token)
	if err != nil {
		return nil, badToken("not an event id issued by this server (not base64url)")
	}
	if len(raw) < 1+4+4 {
		return nil, badToken("too short")
	}
	if raw[0] != tokenVersion {
		return nil, badToken("unknown version %d", raw[0])
	}
	body, sum := raw[:len(raw)-4], binary.BigEndian.Uint32(raw[len(raw)-4:])
	if crc32.Checksum(body, crcTable) != sum {
		return nil, badToken("checksum mismatch (corrupt or altered)")
	}
	if binary.BigEndian.Uint32(body[1:5]) != c.hash {
		return nil, badToken("it belongs to a stream of other channels; reconnect with the same channels or without it")
	}
	r := tokenReader{b: body[5:]}
	nRegions := r.uvarint()
	if nRegions > maxTokenRegions {
		return nil, badToken("too many regions")
	}
	regions := make([]string, 0, nRegions)
	for range nRegions {
		n := r.uvarint()
		if n == 0 || n > uint64(r.remaining()) {
			return nil, badToken("malformed region")
		}
		reg := string(r.bytes(int(n)))
		if slices.Contains(regions, reg) {
			return nil, badToken("repeated region")
		}
		regions = append(regions, reg)
	}
	out := make([]position.Position, len(c.names))
	used := make([]bool, len(regions))
	var prevEpoch uint64
	for _, i := range c.order {
		n := r.uvarint()
		if n > uint64(len(regions)) {
			return nil, badToken("malformed channel entry")
		}
		serials := make([]position.Serial, 0, n)
		for range n {
			ri := r.uvarint()
			delta := r.varint()
			seq := r.uvarint()
			if r.err || ri >= uint64(len(regions)) {
				return nil, badToken("malformed serial")
			}
			epoch := prevEpoch + uint64(delta)
			prevEpoch = epoch
			if len(serials) > 0 && serials[len(serials)-1].Region >= regions[ri] {
				return nil, badToken("serials out of order")
			}
			used[ri] = true
			serials = append(serials, position.Serial{Region: regions[ri], Epoch: epoch, Seq: seq})
		}
		out[i] = position.Of(serials...)
	}
	if r.err || r.remaining() != 0 {
		return nil, badToken("malformed or trailing data")
	}
	if slices.Contains(used, false) {
		return nil, badToken("unused region")
	}
	return out, nil
}

// tokenReader reads varints, remembering the first failure.
type tokenReader struct {
	b   []byte
	err bool
}

func (r *tokenReader) remaining() int { return len(r.b) }

func (r *tokenReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = true
		r.b = nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

// varint reads a zigzag-coded signed varint (binary.AppendVarint's form).
func (r *tokenReader) varint() int64 {
	u := r.uvarint()
	return int64(u>>1) ^ -int64(u&1)
}

func (r *tokenReader) bytes(n int) []byte {
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}
