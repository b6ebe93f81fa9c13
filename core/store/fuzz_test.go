package store

import (
	"bytes"
	"errors"
	"testing"
)

func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecordValue(1700000000000, []byte(`{"name":"greeting","data":"hello"}`)))
	f.Add(encodeRecordValue(-1, nil))
	f.Add(encodeRecordValue(0, []byte{0, 0xff}))
	f.Add([]byte{})
	f.Add([]byte{recordVersion1})
	f.Add([]byte{recordVersion1, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 0, 0, 'x'})
	f.Add(appendMetaValue(nil, Meta{Epoch: 1, TrimmedThrough: 2}))
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, value, err := decodeRecordValue(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
		} else if got := encodeRecordValue(ts, value); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding %x gives %x", b, got)
		}

		// The key and meta decoders must not panic either.
		prefix := recordPrefix("c")
		if seq, err := decodeRecordKey(b, prefix); err == nil {
			if got := appendRecordKey(nil, "c", seq); !bytes.Equal(got, b) {
				t.Fatalf("record key %x decodes to seq %d, which encodes to %x", b, seq, got)
			}
		} else if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("key error does not wrap ErrCorrupt: %v", err)
		}
		if m, err := decodeMetaValue(b); err == nil {
			if got := appendMetaValue(nil, m); !bytes.Equal(got, b) {
				t.Fatalf("meta %x decodes to %+v, which encodes to %x", b, m, got)
			}
		} else if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("meta error does not wrap ErrCorrupt: %v", err)
		}
	})
}
