package main

import (
	"bufio"
	"bytes"
	"testing"
)

// TestPublishRoundTrip encodes publishes the way the senders do and reads
// them back the way the subscribers do.
func TestPublishRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		qos  byte
		size int
	}{{0, 16}, {1, 100}, {1, 300}, {0, 20000}} {
		tpl := newPublishTemplate("bench/42", tc.qos, tc.size)
		want := header{sentAt: 123456789, sender: 7, conn: 42}
		putPayloadHeader(tpl.payload(), want)
		if tc.qos > 0 {
			tpl.setID(0xBEEF)
		}
		pr := newPacketReader(bufio.NewReader(bytes.NewReader(tpl.buf)))
		typ, flags, body, err := pr.next()
		if err != nil || typ != typePublish || (flags>>1)&3 != tc.qos {
			t.Fatalf("qos %d size %d: type %d flags %#x err %v", tc.qos, tc.size, typ, flags, err)
		}
		id, payload, err := publishBody(flags, body)
		if err != nil || len(payload) != tc.size {
			t.Fatalf("qos %d size %d: payload of %d bytes, err %v", tc.qos, tc.size, len(payload), err)
		}
		if tc.qos > 0 && id != 0xBEEF {
			t.Errorf("packet id %#x, want 0xbeef", id)
		}
		if got, ok := parsePayloadHeader(payload); !ok || got != want {
			t.Errorf("header %+v, want %+v", got, want)
		}
	}
}

func TestAppendLength(t *testing.T) {
	for n, want := range map[int][]byte{
		0: {0}, 127: {0x7f}, 128: {0x80, 0x01}, 16383: {0xff, 0x7f},
		16384: {0x80, 0x80, 0x01}, 2097152: {0x80, 0x80, 0x80, 0x01},
	} {
		if got := appendLength(nil, n); !bytes.Equal(got, want) {
			t.Errorf("appendLength(%d) = %x, want %x", n, got, want)
		}
	}
}
