package sse

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/position"
)

func TestTokenRoundTrip(t *testing.T) {
	channels := []string{"sensors:2", "chat:room", "a", "sensors:10"}
	positions := []position.Position{
		position.Of(position.Serial{Region: "eu", Epoch: 1795448457008, Seq: 42}),
		{}, // not started
		position.Of(position.Serial{Region: "eu", Epoch: 1795448000000, Seq: 0}),
		position.Of(
			position.Serial{Region: "eu", Epoch: 1795448457008, Seq: 7},
			position.Serial{Region: "us", Epoch: 1695448457008, Seq: 1 << 40},
		),
	}
	c := newTokenCodec(channels)
	tok := c.encode(positions)
	got, err := newTokenCodec(channels).decode(tok)
	if err != nil {
		t.Fatalf("decode(%q): %v", tok, err)
	}
	for i := range positions {
		if !got[i].Equal(positions[i]) {
			t.Errorf("channel %q: got %v, want %v", channels[i], got[i], positions[i])
		}
	}
	// The channel order of the request does not matter, only the set.
	reordered := []string{"a", "sensors:10", "chat:room", "sensors:2"}
	got, err = newTokenCodec(reordered).decode(tok)
	if err != nil {
		t.Fatalf("decode with reordered channels: %v", err)
	}
	if !got[0].Equal(positions[2]) || !got[3].Equal(positions[0]) || !got[2].IsZero() {
		t.Errorf("reordered decode mapped positions to the wrong channels: %v", got)
	}
}

func TestTokenIsCompact(t *testing.T) {
	const n = 100
	channels := make([]string, n)
	positions := make([]position.Position, n)
	for i := range channels {
		channels[i] = fmt.Sprintf("room:%03d", i)
		// Channels created within a few seconds of each other, with a
		// few thousand messages each.
		positions[i] = position.Of(position.Serial{Region: "eu-west", Epoch: 1795448457008 + uint64(i*37), Seq: uint64(1000 + 37*i)})
	}
	tok := newTokenCodec(channels).encode(positions)
	if len(tok) > 1024 {
		t.Errorf("token for %d channels is %d characters, want at most 1024", n, len(tok))
	}
	t.Logf("%d channels: %d characters", n, len(tok))
	one := newTokenCodec(channels[:1]).encode(positions[:1])
	if len(one) > 40 {
		t.Errorf("one-channel token is %d characters (%s), want at most 40", len(one), one)
	}
}

func TestTokenRejectsCorruptionAndOtherStreams(t *testing.T) {
	channels := []string{"a", "b"}
	positions := []position.Position{
		position.Of(position.Serial{Region: "local", Epoch: 5, Seq: 9}),
		position.Of(position.Serial{Region: "local", Epoch: 6, Seq: 3}),
	}
	c := newTokenCodec(channels)
	tok := c.encode(positions)
	raw, _ := tokenEncoding.DecodeString(tok)
	// Every single-bit flip is caught.
	for i := range raw {
		for bit := range 8 {
			bad := append([]byte(nil), raw...)
			bad[i] ^= 1 << bit
			if _, err := c.decode(tokenEncoding.EncodeToString(bad)); err == nil {
				t.Fatalf("flipping bit %d of byte %d was not detected", bit, i)
			}
		}
	}
	cases := map[string]string{
		"other channels":  newTokenCodec([]string{"a", "c"}).encode(positions),
		"fewer channels":  newTokenCodec([]string{"a"}).encode(positions[:1]),
		"not base64url":   "AQ!!",
		"padding":         tok + "==",
		"empty-ish":       "AQ",
		"truncated":       tok[:len(tok)-3],
		"too long":        strings.Repeat("A", MaxTokenLength+1),
		"a position":      positions[0].String(),
		"integer counter": "42",
	}
	for name, s := range cases {
		_, err := c.decode(s)
		if err == nil {
			t.Errorf("%s: decode(%q) succeeded", name, s)
			continue
		}
		if apierr.CodeOf(err) != apierr.InvalidPosition {
			t.Errorf("%s: error code %d, want %d (%v)", name, apierr.CodeOf(err), apierr.InvalidPosition, err)
		}
	}
}

// FuzzDecodeToken checks that decoding hostile event ids never panics and
// that whatever decodes re-encodes to a token that decodes to the same
// positions.
func FuzzDecodeToken(f *testing.F) {
	channels := []string{"a", "b", "c"}
	c := newTokenCodec(channels)
	f.Add(c.encode([]position.Position{
		position.Of(position.Serial{Region: "local", Epoch: 1795448457008, Seq: 3}),
		{},
		position.Of(position.Serial{Region: "local", Epoch: 1795448457010, Seq: 0}, position.Serial{Region: "us", Epoch: 1, Seq: 99}),
	}))
	f.Add(c.encode(make([]position.Position, 3)))
	f.Add("")
	f.Add("AQ")
	f.Add("42")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := c.decode(s)
		if err != nil {
			if apierr.CodeOf(err) != apierr.InvalidPosition {
				t.Fatalf("decode(%q): error code %d, want %d", s, apierr.CodeOf(err), apierr.InvalidPosition)
			}
			return
		}
		if len(got) != len(channels) {
			t.Fatalf("decode(%q) returned %d positions for %d channels", s, len(got), len(channels))
		}
		again, err := c.decode(c.encode(got))
		if err != nil {
			t.Fatalf("re-encoding %q does not decode: %v", s, err)
		}
		for i := range got {
			if !again[i].Equal(got[i]) {
				t.Fatalf("round trip of %q changed channel %d: %v -> %v", s, i, got[i], again[i])
			}
		}
	})
}

// FuzzDecodeTokenBody fuzzes the token structure behind a valid header and
// checksum, which random strings rarely get past.
func FuzzDecodeTokenBody(f *testing.F) {
	channels := []string{"a", "b"}
	c := newTokenCodec(channels)
	seed, _ := tokenEncoding.DecodeString(c.encode([]position.Position{
		position.Of(position.Serial{Region: "local", Epoch: 1795448457008, Seq: 3}),
		position.Of(position.Serial{Region: "eu", Epoch: 7, Seq: 1}, position.Serial{Region: "local", Epoch: 9, Seq: 2}),
	}))
	f.Add(seed[5 : len(seed)-4])
	f.Add([]byte{0, 0, 0})
	f.Add([]byte{1, 1, 'x', 1, 0, 2, 3, 0})
	f.Fuzz(func(t *testing.T, body []byte) {
		raw := []byte{tokenVersion}
		raw = binary.BigEndian.AppendUint32(raw, c.hash)
		raw = append(raw, body...)
		raw = binary.BigEndian.AppendUint32(raw, crc32.Checksum(raw, crcTable))
		got, err := c.decode(tokenEncoding.EncodeToString(raw))
		if err != nil {
			return
		}
		again, err := c.decode(c.encode(got))
		if err != nil {
			t.Fatalf("re-encoding %x does not decode: %v", body, err)
		}
		for i := range got {
			if !again[i].Equal(got[i]) {
				t.Fatalf("round trip of %x changed channel %d: %v -> %v", body, i, got[i], again[i])
			}
		}
	})
}
