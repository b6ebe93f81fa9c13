package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Keyspace tags: the first byte of every key.
const (
	tagRecord byte = 'r'
	tagMeta   byte = 'm'
	tagExt    byte = 'x'
)

// Encoding versions of stored values.
const (
	recordVersion1 byte = 1
	metaVersion1   byte = 1
)

const (
	// MaxChannelLen is the longest channel name the store accepts, in bytes.
	MaxChannelLen = 256

	seqLen          = 8
	recordHeaderLen = 1 + 8     // version + timestamp
	metaValueLen    = 1 + 8 + 8 // version + epoch + trimmed-through
)

// ErrCorrupt is wrapped by every error caused by stored bytes that cannot be
// decoded.
var ErrCorrupt = errors.New("corrupt data")

// ErrInvalidChannel is wrapped by errors caused by a channel name that is
// empty, longer than MaxChannelLen or contains a 0x00 byte.
var ErrInvalidChannel = errors.New("invalid channel name")

// checkChannel validates a channel name against the key layout's needs.
func checkChannel(channel string) error {
	if len(channel) == 0 || len(channel) > MaxChannelLen || strings.IndexByte(channel, 0) >= 0 {
		return fmt.Errorf("%w: %q", ErrInvalidChannel, truncateName(channel))
	}
	return nil
}

// truncateName shortens a possibly huge name for error messages.
func truncateName(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// recordKeyLen is the length of a record key for a channel name of n bytes.
func recordKeyLen(n int) int { return 1 + n + 1 + seqLen }

// putRecordKey writes the record key of (channel, seq) into dst, which must
// have length recordKeyLen(len(channel)).
func putRecordKey(dst []byte, channel string, seq uint64) {
	dst[0] = tagRecord
	n := 1 + copy(dst[1:], channel)
	dst[n] = 0
	binary.BigEndian.PutUint64(dst[n+1:], seq)
}

// appendRecordKey appends the record key of (channel, seq) to dst.
func appendRecordKey(dst []byte, channel string, seq uint64) []byte {
	dst = append(dst, tagRecord)
	dst = append(dst, channel...)
	dst = append(dst, 0)
	return binary.BigEndian.AppendUint64(dst, seq)
}

// recordPrefix returns 'r' | channel | 0x00, the prefix of all the channel's
// record keys.
func recordPrefix(channel string) []byte {
	b := make([]byte, 0, 2+len(channel))
	b = append(b, tagRecord)
	b = append(b, channel...)
	return append(b, 0)
}

// recordBounds returns the key range [lower, upper) holding the channel's
// records with from <= seq <= to. to == math.MaxUint64 is allowed.
func recordBounds(channel string, from, to uint64) (lower, upper []byte) {
	lower = appendRecordKey(nil, channel, from)
	if to == ^uint64(0) {
		upper = recordPrefixEnd(channel)
	} else {
		upper = appendRecordKey(nil, channel, to+1)
	}
	return lower, upper
}

// recordPrefixEnd returns 'r' | channel | 0x01, the smallest key after every
// record key of the channel.
func recordPrefixEnd(channel string) []byte {
	b := recordPrefix(channel)
	b[len(b)-1] = 1
	return b
}

// decodeRecordKey extracts the seq from a record key, checking that it belongs
// to the channel whose record prefix is prefix.
func decodeRecordKey(key, prefix []byte) (uint64, error) {
	if len(key) != len(prefix)+seqLen || string(key[:len(prefix)]) != string(prefix) {
		return 0, fmt.Errorf("%w: record key %q does not match prefix %q", ErrCorrupt, key, prefix)
	}
	return binary.BigEndian.Uint64(key[len(prefix):]), nil
}

// putRecordValue writes the encoded record value into dst, which must have
// length recordHeaderLen+len(value).
func putRecordValue(dst []byte, ts int64, value []byte) {
	dst[0] = recordVersion1
	binary.BigEndian.PutUint64(dst[1:], uint64(ts))
	copy(dst[recordHeaderLen:], value)
}

// encodeRecordValue returns the stored form of a record's timestamp and value.
func encodeRecordValue(ts int64, value []byte) []byte {
	b := make([]byte, recordHeaderLen+len(value))
	putRecordValue(b, ts, value)
	return b
}

// decodeRecordValue splits a stored record value into its timestamp and the
// message bytes. The returned slice aliases b.
func decodeRecordValue(b []byte) (ts int64, value []byte, err error) {
	if len(b) < recordHeaderLen {
		return 0, nil, fmt.Errorf("%w: record value of %d bytes is shorter than its %d-byte header", ErrCorrupt, len(b), recordHeaderLen)
	}
	if b[0] != recordVersion1 {
		return 0, nil, fmt.Errorf("%w: unknown record encoding version %d", ErrCorrupt, b[0])
	}
	return int64(binary.BigEndian.Uint64(b[1:recordHeaderLen])), b[recordHeaderLen:], nil
}

// metaKey returns 'm' | channel.
func metaKey(channel string) []byte {
	b := make([]byte, 0, 1+len(channel))
	b = append(b, tagMeta)
	return append(b, channel...)
}

// appendMetaValue appends the stored form of m to dst.
func appendMetaValue(dst []byte, m Meta) []byte {
	dst = append(dst, metaVersion1)
	dst = binary.BigEndian.AppendUint64(dst, m.Epoch)
	return binary.BigEndian.AppendUint64(dst, m.TrimmedThrough)
}

// decodeMetaValue parses a stored meta value.
func decodeMetaValue(b []byte) (Meta, error) {
	if len(b) == 0 {
		return Meta{}, fmt.Errorf("%w: empty meta value", ErrCorrupt)
	}
	if b[0] != metaVersion1 {
		return Meta{}, fmt.Errorf("%w: unknown meta encoding version %d", ErrCorrupt, b[0])
	}
	if len(b) != metaValueLen {
		return Meta{}, fmt.Errorf("%w: meta value has %d bytes, want %d", ErrCorrupt, len(b), metaValueLen)
	}
	return Meta{
		Epoch:          binary.BigEndian.Uint64(b[1:9]),
		TrimmedThrough: binary.BigEndian.Uint64(b[9:17]),
	}, nil
}

// extKey returns 'x' | key.
func extKey(key []byte) []byte {
	b := make([]byte, 0, 1+len(key))
	b = append(b, tagExt)
	return append(b, key...)
}

// prefixEnd returns the smallest key greater than every key that starts with
// prefix, or nil if there is none (prefix is empty or all 0xff).
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
