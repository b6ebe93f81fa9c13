package store

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

func openTest(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir, MemTableSize: 4 << 20, CacheSize: 4 << 20})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func val(channel string, seq uint64) []byte {
	return fmt.Appendf(nil, "%s#%d", channel, seq)
}

// appendN appends records from..to of channel with timestamp ts(seq) and
// commits them.
func appendN(t testing.TB, s *Store, channel string, from, to uint64, ts func(uint64) int64, sync bool) {
	t.Helper()
	b := s.NewBatch()
	defer b.Close()
	for seq := from; seq <= to; seq++ {
		b.Append(Record{Channel: channel, Seq: seq, Timestamp: ts(seq), Value: val(channel, seq)})
	}
	if err := s.Commit(b, sync); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func tsTimes10(seq uint64) int64 { return int64(seq) * 10 }

func scanSeqs(t testing.TB, s *Store, channel string, from, to uint64, reverse bool) []uint64 {
	t.Helper()
	var got []uint64
	err := s.Scan(channel, from, to, reverse, func(r Record) bool {
		if r.Channel != channel {
			t.Errorf("record channel %q, want %q", r.Channel, channel)
		}
		if !bytes.Equal(r.Value, val(channel, r.Seq)) {
			t.Errorf("record %s/%d value %q", channel, r.Seq, r.Value)
		}
		if r.Timestamp != tsTimes10(r.Seq) {
			t.Errorf("record %s/%d timestamp %d", channel, r.Seq, r.Timestamp)
		}
		got = append(got, r.Seq)
		return true
	})
	if err != nil {
		t.Fatalf("Scan(%q, %d, %d, %v): %v", channel, from, to, reverse, err)
	}
	return got
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func reversed(in []uint64) []uint64 {
	out := slices.Clone(in)
	slices.Reverse(out)
	return out
}

func checkChannelState(t testing.TB, s *Store, channel string, wantMeta Meta, wantFirst, wantLast uint64, wantFound bool) {
	t.Helper()
	m, first, last, found, err := s.Channel(channel)
	if err != nil {
		t.Fatalf("Channel(%q): %v", channel, err)
	}
	if m != wantMeta || first != wantFirst || last != wantLast || found != wantFound {
		t.Fatalf("Channel(%q) = %+v, %d, %d, %v; want %+v, %d, %d, %v",
			channel, m, first, last, found, wantMeta, wantFirst, wantLast, wantFound)
	}
}

func TestRoundTrip(t *testing.T) {
	s := openTest(t, t.TempDir())

	checkChannelState(t, s, "chat", Meta{}, 0, 0, false)

	b := s.NewBatch()
	defer b.Close()
	for seq := uint64(1); seq <= 20; seq++ {
		b.Append(Record{Channel: "chat", Seq: seq, Timestamp: tsTimes10(seq), Value: val("chat", seq)})
	}
	b.SetMeta("chat", Meta{Epoch: 7})
	if got := b.Count(); got != 21 {
		t.Fatalf("Count = %d, want 21", got)
	}
	if err := s.Commit(b, false); err != nil {
		t.Fatal(err)
	}

	checkChannelState(t, s, "chat", Meta{Epoch: 7}, 1, 20, true)

	tests := []struct {
		from, to uint64
		want     []uint64
	}{
		{0, math.MaxUint64, seqRange(1, 20)},
		{1, 20, seqRange(1, 20)},
		{5, 9, seqRange(5, 9)},
		{7, 7, []uint64{7}},
		{15, 100, seqRange(15, 20)},
		{21, 30, nil},
		{9, 5, nil},
	}
	for _, tc := range tests {
		if got := scanSeqs(t, s, "chat", tc.from, tc.to, false); !slices.Equal(got, tc.want) {
			t.Errorf("Scan(%d, %d) = %v, want %v", tc.from, tc.to, got, tc.want)
		}
		if got := scanSeqs(t, s, "chat", tc.from, tc.to, true); !slices.Equal(got, reversed(tc.want)) {
			t.Errorf("Scan(%d, %d, reverse) = %v, want %v", tc.from, tc.to, got, reversed(tc.want))
		}
	}

	// Early stop, both directions.
	var got []uint64
	if err := s.Scan("chat", 1, 20, true, func(r Record) bool {
		got = append(got, r.Seq)
		return len(got) < 3
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []uint64{20, 19, 18}) {
		t.Errorf("reverse scan with stop = %v", got)
	}

	r, ok, err := s.Get("chat", 13)
	if err != nil || !ok {
		t.Fatalf("Get = %v, %v", ok, err)
	}
	if r.Channel != "chat" || r.Seq != 13 || r.Timestamp != 130 || !bytes.Equal(r.Value, val("chat", 13)) {
		t.Errorf("Get = %+v", r)
	}
	if _, ok, err := s.Get("chat", 21); ok || err != nil {
		t.Errorf("Get(21) = %v, %v; want not found", ok, err)
	}
	if _, ok, err := s.Get("other", 1); ok || err != nil {
		t.Errorf("Get(other) = %v, %v; want not found", ok, err)
	}

	if err := s.PutMeta("chat", Meta{Epoch: 8, TrimmedThrough: 0}, true); err != nil {
		t.Fatal(err)
	}
	checkChannelState(t, s, "chat", Meta{Epoch: 8}, 1, 20, true)

	// A reused batch.
	b.Reset()
	if b.Count() != 0 {
		t.Fatalf("Count after Reset = %d", b.Count())
	}
	b.Append(Record{Channel: "chat", Seq: 21, Timestamp: 210, Value: val("chat", 21)})
	if err := s.Commit(b, true); err != nil {
		t.Fatal(err)
	}
	checkChannelState(t, s, "chat", Meta{Epoch: 8}, 1, 21, true)
}

func TestEmptyValueAndExtremeTimestamps(t *testing.T) {
	s := openTest(t, t.TempDir())
	b := s.NewBatch()
	defer b.Close()
	b.Append(Record{Channel: "c", Seq: 1, Timestamp: math.MinInt64})
	b.Append(Record{Channel: "c", Seq: 2, Timestamp: -1, Value: []byte{}})
	b.Append(Record{Channel: "c", Seq: math.MaxUint64, Timestamp: math.MaxInt64, Value: []byte{0}})
	if err := s.Commit(b, false); err != nil {
		t.Fatal(err)
	}
	var got []Record
	if err := s.Scan("c", 0, math.MaxUint64, false, func(r Record) bool {
		r.Value = slices.Clone(r.Value)
		got = append(got, r)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Timestamp != math.MinInt64 || got[1].Timestamp != -1 || len(got[1].Value) != 0 ||
		got[2].Seq != math.MaxUint64 || got[2].Timestamp != math.MaxInt64 || !bytes.Equal(got[2].Value, []byte{0}) {
		t.Fatalf("records = %+v", got)
	}
}

func TestPrefixChannelsIsolated(t *testing.T) {
	s := openTest(t, t.TempDir())
	names := []string{"a", "a:b", "ab", "a:", "a:b:c", "b"}
	for i, name := range names {
		appendN(t, s, name, 1, uint64(3+i), tsTimes10, false)
		if err := s.PutMeta(name, Meta{Epoch: uint64(100 + i)}, false); err != nil {
			t.Fatal(err)
		}
	}
	for i, name := range names {
		last := uint64(3 + i)
		want := seqRange(1, last)
		if got := scanSeqs(t, s, name, 0, math.MaxUint64, false); !slices.Equal(got, want) {
			t.Errorf("Scan(%q) = %v, want %v", name, got, want)
		}
		if got := scanSeqs(t, s, name, 0, math.MaxUint64, true); !slices.Equal(got, reversed(want)) {
			t.Errorf("reverse Scan(%q) = %v, want %v", name, got, reversed(want))
		}
		checkChannelState(t, s, name, Meta{Epoch: uint64(100 + i)}, 1, last, true)
		if seq, ok, err := s.SeqAtTime(name, math.MaxInt64); ok || err != nil {
			t.Errorf("SeqAtTime(%q, max) = %d, %v, %v", name, seq, ok, err)
		}
		if seq, ok, err := s.SeqAtTime(name, int64(last)*10); !ok || err != nil || seq != last {
			t.Errorf("SeqAtTime(%q, last) = %d, %v, %v; want %d", name, seq, ok, err, last)
		}
	}

	// Trimming or deleting "a" leaves the others alone.
	n, err := s.TrimBefore("a", math.MaxInt64, 0)
	if err != nil || n != 3 {
		t.Fatalf("TrimBefore(a) = %d, %v; want 3", n, err)
	}
	if err := s.DeleteChannel("a:b"); err != nil {
		t.Fatal(err)
	}
	checkChannelState(t, s, "a", Meta{Epoch: 100, TrimmedThrough: 3}, 0, 0, true)
	checkChannelState(t, s, "a:b", Meta{}, 0, 0, false)
	for i, name := range names[2:] {
		checkChannelState(t, s, name, Meta{Epoch: uint64(102 + i)}, 1, uint64(5+i), true)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, "x", 1, 500, tsTimes10, false)
	appendN(t, s, "y", 1, 5, tsTimes10, false)
	if err := s.PutMeta("x", Meta{Epoch: 3}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TrimBefore("x", 105, 0); err != nil { // deletes 1..10
		t.Fatal(err)
	}
	b := s.NewBatch()
	b.Set([]byte("queue/1"), []byte("job"))
	if err := s.Commit(b, false); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, _, _, _, err := s.Channel("x"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Channel after Close: %v, want ErrClosed", err)
	}

	s = openTest(t, dir)
	checkChannelState(t, s, "x", Meta{Epoch: 3, TrimmedThrough: 10}, 11, 500, true)
	checkChannelState(t, s, "y", Meta{}, 1, 5, false)
	if got := scanSeqs(t, s, "x", 0, math.MaxUint64, false); !slices.Equal(got, seqRange(11, 500)) {
		t.Fatalf("scan after reopen: %d records", len(got))
	}
	if v, ok, err := s.ExtGet([]byte("queue/1")); err != nil || !ok || string(v) != "job" {
		t.Fatalf("ExtGet after reopen = %q, %v, %v", v, ok, err)
	}
}

func TestOpenLockedInProcess(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir)
	_, err := Open(Options{Dir: dir})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(Options{}); err == nil {
		t.Fatal("Open with empty Dir succeeded")
	}
	file := t.TempDir() + "/file"
	if err := os.WriteFile(file, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Options{Dir: file})
	if err == nil || errors.Is(err, ErrLocked) {
		t.Fatalf("Open on a file: %v", err)
	}
}

func TestSeqAtTime(t *testing.T) {
	s := openTest(t, t.TempDir())
	// seq: 5  6  7  8  9  10 11 12 13 14
	// ts:  10 10 10 20 20 30 30 30 30 50
	ts := map[uint64]int64{5: 10, 6: 10, 7: 10, 8: 20, 9: 20, 10: 30, 11: 30, 12: 30, 13: 30, 14: 50}
	appendN(t, s, "c", 5, 14, func(seq uint64) int64 { return ts[seq] }, false)

	tests := []struct {
		ts   int64
		want uint64
		ok   bool
	}{
		{math.MinInt64, 5, true},
		{0, 5, true},
		{10, 5, true},
		{11, 8, true},
		{20, 8, true},
		{21, 10, true},
		{30, 10, true},
		{31, 14, true},
		{50, 14, true},
		{51, 0, false},
		{math.MaxInt64, 0, false},
	}
	for _, tc := range tests {
		got, ok, err := s.SeqAtTime("c", tc.ts)
		if err != nil || got != tc.want || ok != tc.ok {
			t.Errorf("SeqAtTime(%d) = %d, %v, %v; want %d, %v", tc.ts, got, ok, err, tc.want, tc.ok)
		}
	}
	if _, ok, err := s.SeqAtTime("empty", 0); ok || err != nil {
		t.Errorf("SeqAtTime(empty) = %v, %v", ok, err)
	}
	// Single record.
	appendN(t, s, "one", 1, 1, tsTimes10, false)
	for _, tc := range []struct {
		ts int64
		ok bool
	}{{9, true}, {10, true}, {11, false}} {
		got, ok, err := s.SeqAtTime("one", tc.ts)
		if err != nil || ok != tc.ok || (ok && got != 1) {
			t.Errorf("SeqAtTime(one, %d) = %d, %v, %v", tc.ts, got, ok, err)
		}
	}
}

func TestSeqAtTimeRandomized(t *testing.T) {
	s := openTest(t, t.TempDir())
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 30 {
		channel := fmt.Sprintf("r%d", round)
		first := uint64(1 + rng.IntN(50))
		n := 1 + rng.IntN(300)
		stamps := make([]int64, n)
		cur := int64(rng.IntN(100))
		for i := range stamps {
			if rng.IntN(3) == 0 {
				cur += int64(rng.IntN(5))
			}
			stamps[i] = cur
		}
		appendN(t, s, channel, first, first+uint64(n)-1, func(seq uint64) int64 { return stamps[seq-first] }, false)
		for target := stamps[0] - 2; target <= stamps[n-1]+2; target++ {
			wantOK := false
			var want uint64
			for i, ts := range stamps {
				if ts >= target {
					want, wantOK = first+uint64(i), true
					break
				}
			}
			got, ok, err := s.SeqAtTime(channel, target)
			if err != nil || ok != wantOK || got != want {
				t.Fatalf("%s: SeqAtTime(%d) = %d, %v, %v; want %d, %v", channel, target, got, ok, err, want, wantOK)
			}
		}
	}
}

func TestTrimBefore(t *testing.T) {
	s := openTest(t, t.TempDir())
	appendN(t, s, "c", 1, 100, tsTimes10, false) // ts = 10..1000
	if err := s.PutMeta("c", Meta{Epoch: 4}, false); err != nil {
		t.Fatal(err)
	}

	// Nothing older than the first record.
	if n, err := s.TrimBefore("c", 10, 0); err != nil || n != 0 {
		t.Fatalf("TrimBefore(10) = %d, %v; want 0", n, err)
	}
	checkChannelState(t, s, "c", Meta{Epoch: 4}, 1, 100, true)

	// Records 1..30 are older than 305; max caps each call at 12.
	for i, want := range []int{12, 12, 6, 0} {
		n, err := s.TrimBefore("c", 305, 12)
		if err != nil || n != want {
			t.Fatalf("call %d: TrimBefore(305, 12) = %d, %v; want %d", i, n, err, want)
		}
	}
	checkChannelState(t, s, "c", Meta{Epoch: 4, TrimmedThrough: 30}, 31, 100, true)
	if _, ok, _ := s.Get("c", 30); ok {
		t.Fatal("record 30 still present")
	}
	if got := scanSeqs(t, s, "c", 0, math.MaxUint64, false); !slices.Equal(got, seqRange(31, 100)) {
		t.Fatalf("scan after trim = %v", got)
	}
	if seq, ok, err := s.SeqAtTime("c", 0); err != nil || !ok || seq != 31 {
		t.Fatalf("SeqAtTime after trim = %d, %v, %v", seq, ok, err)
	}

	// Trim exactly at a timestamp: records with ts < 500 (1..49) go.
	if n, err := s.TrimBefore("c", 500, 0); err != nil || n != 19 {
		t.Fatalf("TrimBefore(500) = %d, %v; want 19", n, err)
	}
	checkChannelState(t, s, "c", Meta{Epoch: 4, TrimmedThrough: 49}, 50, 100, true)

	// Trim everything.
	if n, err := s.TrimBefore("c", math.MaxInt64, 0); err != nil || n != 51 {
		t.Fatalf("TrimBefore(all) = %d, %v; want 51", n, err)
	}
	checkChannelState(t, s, "c", Meta{Epoch: 4, TrimmedThrough: 100}, 0, 0, true)
	if n, err := s.TrimBefore("c", math.MaxInt64, 0); err != nil || n != 0 {
		t.Fatalf("TrimBefore(empty) = %d, %v", n, err)
	}

	// The engine continues the log; TrimmedThrough only grows.
	appendN(t, s, "c", 101, 110, tsTimes10, false)
	checkChannelState(t, s, "c", Meta{Epoch: 4, TrimmedThrough: 100}, 101, 110, true)
	if n, err := s.TrimBefore("c", 1025, 0); err != nil || n != 2 {
		t.Fatalf("TrimBefore(1025) = %d, %v; want 2", n, err)
	}
	checkChannelState(t, s, "c", Meta{Epoch: 4, TrimmedThrough: 102}, 103, 110, true)

	if _, err := s.TrimBefore("c", 0, -1); err == nil {
		t.Fatal("negative max accepted")
	}
	if n, err := s.TrimBefore("nothing", math.MaxInt64, 0); err != nil || n != 0 {
		t.Fatalf("TrimBefore(unknown) = %d, %v", n, err)
	}
	checkChannelState(t, s, "nothing", Meta{}, 0, 0, false)
}

func TestTrimBeforeWithoutMeta(t *testing.T) {
	s := openTest(t, t.TempDir())
	appendN(t, s, "c", 1, 10, tsTimes10, false)
	if n, err := s.TrimBefore("c", 55, 0); err != nil || n != 5 {
		t.Fatalf("TrimBefore = %d, %v", n, err)
	}
	checkChannelState(t, s, "c", Meta{TrimmedThrough: 5}, 6, 10, true)
}

func TestDeleteChannel(t *testing.T) {
	s := openTest(t, t.TempDir())
	appendN(t, s, "c", 1, 50, tsTimes10, false)
	appendN(t, s, "d", 1, 5, tsTimes10, false)
	if err := s.PutMeta("c", Meta{Epoch: 1, TrimmedThrough: 0}, false); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteChannel("c"); err != nil {
		t.Fatal(err)
	}
	checkChannelState(t, s, "c", Meta{}, 0, 0, false)
	checkChannelState(t, s, "d", Meta{}, 1, 5, false)
	if got := scanSeqs(t, s, "c", 0, math.MaxUint64, false); len(got) != 0 {
		t.Fatalf("records after delete: %v", got)
	}
	// The channel can be recreated from seq 1.
	appendN(t, s, "c", 1, 3, tsTimes10, false)
	checkChannelState(t, s, "c", Meta{}, 1, 3, false)
}

func TestExtAndChannels(t *testing.T) {
	s := openTest(t, t.TempDir())
	appendN(t, s, "q", 1, 3, tsTimes10, false)
	b := s.NewBatch()
	defer b.Close()
	// Ext keys that look like record and meta keys must stay in the ext
	// keyspace.
	recordLike := appendRecordKey(nil, "q", 4)
	b.Set(recordLike, encodeRecordValue(40, []byte("fake")))
	b.Set(metaKey("q"), appendMetaValue(nil, Meta{Epoch: 99}))
	b.Set([]byte("jobs/1"), []byte("one"))
	b.Set([]byte("jobs/2"), []byte("two"))
	b.Set([]byte("jobs/3"), []byte("three"))
	b.Set([]byte("jobt"), []byte("other"))
	b.Set([]byte{0xff, 0xff}, []byte("high"))
	b.Set(nil, []byte("empty key"))
	b.SetMeta("m2", Meta{Epoch: 2})
	b.SetMeta("m1", Meta{Epoch: 1, TrimmedThrough: 5})
	b.SetMeta("m10", Meta{Epoch: 10})
	if err := s.Commit(b, false); err != nil {
		t.Fatal(err)
	}
	b.Reset()
	b.Delete([]byte("jobs/2"))
	if err := s.Commit(b, false); err != nil {
		t.Fatal(err)
	}

	checkChannelState(t, s, "q", Meta{}, 1, 3, false)
	if got := scanSeqs(t, s, "q", 0, math.MaxUint64, false); !slices.Equal(got, seqRange(1, 3)) {
		t.Fatalf("records of q = %v", got)
	}

	type kv struct{ k, v string }
	extScan := func(prefix string) []kv {
		var out []kv
		if err := s.ExtScan([]byte(prefix), func(k, v []byte) bool {
			out = append(out, kv{string(k), string(v)})
			return true
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if got, want := extScan("jobs/"), []kv{{"jobs/1", "one"}, {"jobs/3", "three"}}; !slices.Equal(got, want) {
		t.Errorf("ExtScan(jobs/) = %v, want %v", got, want)
	}
	if got := extScan("\xff"); len(got) != 1 || got[0].v != "high" {
		t.Errorf("ExtScan(0xff) = %v", got)
	}
	if got := extScan(""); len(got) != 7 {
		t.Errorf("ExtScan(all) = %d keys: %v", len(got), got)
	}
	if v, ok, err := s.ExtGet([]byte("jobs/3")); err != nil || !ok || string(v) != "three" {
		t.Errorf("ExtGet = %q, %v, %v", v, ok, err)
	}
	if _, ok, err := s.ExtGet([]byte("jobs/2")); ok || err != nil {
		t.Errorf("ExtGet(deleted) = %v, %v", ok, err)
	}
	if _, ok, err := s.ExtGet([]byte("q")); ok || err != nil {
		t.Errorf("ExtGet(q) = %v, %v", ok, err)
	}

	var names []string
	var metas []Meta
	if err := s.Channels(func(name string, m Meta) bool {
		names = append(names, name)
		metas = append(metas, m)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"m1", "m10", "m2"}; !slices.Equal(names, want) {
		t.Fatalf("Channels = %v, want %v", names, want)
	}
	if metas[0] != (Meta{Epoch: 1, TrimmedThrough: 5}) || metas[2] != (Meta{Epoch: 2}) {
		t.Fatalf("Channels metas = %+v", metas)
	}
	names = nil
	if err := s.Channels(func(name string, m Meta) bool {
		names = append(names, name)
		return false
	}); err != nil || !slices.Equal(names, []string{"m1"}) {
		t.Fatalf("Channels with stop = %v, %v", names, err)
	}
}

func TestBatchErrors(t *testing.T) {
	s := openTest(t, t.TempDir())
	bad := []Record{
		{Channel: "", Seq: 1},
		{Channel: "a\x00b", Seq: 1},
		{Channel: strings.Repeat("x", MaxChannelLen+1), Seq: 1},
		{Channel: "ok", Seq: 0},
	}
	for _, r := range bad {
		b := s.NewBatch()
		b.Append(Record{Channel: "good", Seq: 1})
		b.Append(r)
		if err := s.Commit(b, false); err == nil {
			t.Errorf("Commit with %+v succeeded", r)
		}
		b.Close()
	}
	checkChannelState(t, s, "good", Meta{}, 0, 0, false)
	if _, _, _, _, err := s.Channel("a\x00b"); !errors.Is(err, ErrInvalidChannel) {
		t.Errorf("Channel(bad name): %v", err)
	}
	b := s.NewBatch()
	b.SetMeta("", Meta{})
	if err := s.Commit(b, false); !errors.Is(err, ErrInvalidChannel) {
		t.Errorf("SetMeta(bad name): %v", err)
	}
	b.Reset()
	b.Append(Record{Channel: strings.Repeat("x", MaxChannelLen), Seq: 1})
	if err := s.Commit(b, false); err != nil {
		t.Errorf("max-length channel: %v", err)
	}
	if err := s.Commit(b, false); err == nil {
		t.Error("second Commit of the same batch succeeded")
	}
	b.Append(Record{Channel: "late", Seq: 1}) // recorded as an error, not a panic
	if err := s.Commit(b, false); err == nil {
		t.Error("Commit after write to committed batch succeeded")
	}
	b.Reset()
	b.Append(Record{Channel: "late", Seq: 1})
	if err := s.Commit(b, false); err != nil {
		t.Errorf("Commit after Reset: %v", err)
	}
	b.Close()
	b.Close()
	b.Append(Record{Channel: "closed", Seq: 1})
	if err := s.Commit(b, false); err == nil {
		t.Error("Commit of closed batch succeeded")
	}
	if err := s.Commit(nil, false); err == nil {
		t.Error("Commit(nil) succeeded")
	}

	empty := s.NewBatch()
	defer empty.Close()
	if err := s.Commit(empty, true); err != nil {
		t.Errorf("Commit(empty, sync): %v", err)
	}

	other := openTest(t, t.TempDir())
	ob := other.NewBatch()
	defer ob.Close()
	ob.Append(Record{Channel: "x", Seq: 1})
	if err := s.Commit(ob, false); err == nil {
		t.Error("Commit of another store's batch succeeded")
	}
}

func TestClosedStore(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	b := s.NewBatch()
	defer b.Close()
	b.Append(Record{Channel: "c", Seq: 1})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checks := map[string]error{
		"Commit":        s.Commit(b, false),
		"Sync":          s.Sync(),
		"PutMeta":       s.PutMeta("c", Meta{}, false),
		"Scan":          s.Scan("c", 0, 10, false, func(Record) bool { return true }),
		"DeleteChannel": s.DeleteChannel("c"),
		"Channels":      s.Channels(func(string, Meta) bool { return true }),
		"ExtScan":       s.ExtScan(nil, func(_, _ []byte) bool { return true }),
	}
	_, _, checks["Get"] = s.Get("c", 1)
	_, _, checks["SeqAtTime"] = s.SeqAtTime("c", 0)
	_, checks["TrimBefore"] = s.TrimBefore("c", 0, 0)
	_, _, checks["ExtGet"] = s.ExtGet(nil)
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	if s.DiskUsage() != 0 {
		t.Error("DiskUsage after Close != 0")
	}
}

func TestCloseWaitsForScan(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, "c", 1, 10, tsTimes10, false)
	inScan := make(chan struct{})
	closed := make(chan error, 1)
	var seen int
	err = s.Scan("c", 0, math.MaxUint64, false, func(r Record) bool {
		if r.Seq == 1 {
			close(inScan)
			go func() { closed <- s.Close() }()
			time.Sleep(20 * time.Millisecond)
			// A nested call while Close waits fails instead of deadlocking.
			if _, _, err := s.Get("c", 1); !errors.Is(err, ErrClosed) {
				t.Errorf("nested Get during Close: %v", err)
			}
		}
		seen++
		return true
	})
	if err != nil || seen != 10 {
		t.Fatalf("Scan = %d records, %v", seen, err)
	}
	<-inScan
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// corrupt writes raw bytes under key directly through Pebble.
func corrupt(t *testing.T, s *Store, key, value []byte) {
	t.Helper()
	if err := s.db.Set(key, value, pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptDataReturnsError(t *testing.T) {
	s := openTest(t, t.TempDir())
	appendN(t, s, "c", 1, 10, tsTimes10, false)
	corrupt(t, s, appendRecordKey(nil, "c", 5), []byte{9, 1, 2}) // unknown version
	corrupt(t, s, appendRecordKey(nil, "c", 6), []byte{1, 2, 3}) // too short
	corrupt(t, s, append(recordPrefix("c"), 1, 2, 3), []byte{1}) // bad key length
	corrupt(t, s, metaKey("bad"), []byte{1, 2})                  // short meta
	corrupt(t, s, metaKey("bad2"), []byte{})                     // empty meta
	corrupt(t, s, []byte{tagMeta}, appendMetaValue(nil, Meta{})) // empty channel name
	appendN(t, s, "d", 1, 10, tsTimes10, false)
	corrupt(t, s, appendRecordKey(nil, "d", 10), []byte{1, 0, 0}) // corrupt last record

	if _, _, err := s.Get("c", 5); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Get(5): %v", err)
	}
	if _, _, err := s.Get("c", 6); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Get(6): %v", err)
	}
	if r, ok, err := s.Get("c", 4); err != nil || !ok || r.Seq != 4 {
		t.Errorf("Get(4) = %v, %v, %v", r, ok, err)
	}
	var n int
	err := s.Scan("c", 1, 10, false, func(Record) bool { n++; return true })
	if !errors.Is(err, ErrCorrupt) || n != 4 {
		t.Errorf("Scan: %d records, %v", n, err)
	}
	if err := s.Scan("c", 0, math.MaxUint64, true, func(Record) bool { return true }); !errors.Is(err, ErrCorrupt) {
		t.Errorf("reverse Scan over bad key: %v", err)
	}
	if _, _, _, _, err := s.Channel("c"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Channel(c) with bad last key: %v", err)
	}
	if _, _, _, _, err := s.Channel("bad"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Channel(bad): %v", err)
	}
	if err := s.Channels(func(string, Meta) bool { return true }); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Channels: %v", err)
	}
	if _, _, err := s.SeqAtTime("d", 95); !errors.Is(err, ErrCorrupt) {
		t.Errorf("SeqAtTime over corrupt last: %v", err)
	}
	if _, err := s.TrimBefore("d", 50, 0); !errors.Is(err, ErrCorrupt) {
		t.Errorf("TrimBefore over corrupt last: %v", err)
	}
	if err := s.PutMeta("bad", Meta{}, false); err != nil {
		t.Fatal(err)
	}
	corrupt(t, s, metaKey("bad"), []byte{2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	if _, err := s.TrimBefore("bad", 50, 0); !errors.Is(err, ErrCorrupt) {
		t.Errorf("TrimBefore with corrupt meta: %v", err)
	}
}

func TestConcurrentCommitTrimScan(t *testing.T) {
	s := openTest(t, t.TempDir())
	const channels = 8
	const batches = 200
	const perBatch = 20
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errc := make(chan error, 16)

	// Committer: the only writer of records, like the engine.
	wg.Add(1)
	go func() {
		defer wg.Done()
		b := s.NewBatch()
		defer b.Close()
		next := make([]uint64, channels)
		for i := range batches {
			b.Reset()
			for j := range perBatch {
				c := (i + j) % channels
				next[c]++
				name := fmt.Sprintf("ch%d", c)
				b.Append(Record{Channel: name, Seq: next[c], Timestamp: int64(next[c]), Value: val(name, next[c])})
				if next[c] == 1 {
					b.SetMeta(name, Meta{Epoch: 1})
				}
			}
			if err := s.Commit(b, i%50 == 0); err != nil {
				errc <- err
				return
			}
		}
		close(stop)
	}()
	// Retention.
	var trimmed int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for cutoff := int64(0); ; cutoff += 5 {
			select {
			case <-stop:
				return
			default:
			}
			for c := range channels {
				n, err := s.TrimBefore(fmt.Sprintf("ch%d", c), cutoff, 7)
				if err != nil {
					errc <- err
					return
				}
				trimmed += n
			}
		}
	}()
	// Readers check invariants of a consistent view: records are contiguous
	// and start right after TrimmedThrough.
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for c := range channels {
					name := fmt.Sprintf("ch%d", c)
					m, first, last, found, err := s.Channel(name)
					if err != nil {
						errc <- err
						return
					}
					if found && first != 0 && first != m.TrimmedThrough+1 {
						errc <- fmt.Errorf("%s: first %d, trimmed through %d", name, first, m.TrimmedThrough)
						return
					}
					prev := uint64(0)
					err = s.Scan(name, first, last, false, func(r Record) bool {
						if prev != 0 && r.Seq != prev+1 {
							errc <- fmt.Errorf("%s: gap %d -> %d", name, prev, r.Seq)
							return false
						}
						prev = r.Seq
						return true
					})
					if err != nil {
						errc <- err
						return
					}
					if _, _, err := s.SeqAtTime(name, int64(last)); err != nil {
						errc <- err
						return
					}
				}
				_ = s.DiskUsage()
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	for c := range channels {
		name := fmt.Sprintf("ch%d", c)
		m, _, last, found, err := s.Channel(name)
		if err != nil || !found || last != batches*perBatch/channels || m.Epoch != 1 {
			t.Errorf("%s: %+v last=%d found=%v err=%v", name, m, last, found, err)
		}
	}
	if trimmed == 0 {
		t.Error("retention goroutine trimmed nothing")
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if s.DiskUsage() == 0 {
		t.Error("DiskUsage = 0")
	}
}

// lockedBuffer is a goroutine-safe bytes.Buffer for log output.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestPebbleLogger(t *testing.T) {
	var out lockedBuffer
	l := newPebbleLogger(slog.New(slog.NewTextHandler(&out, nil)))
	exited := -1
	l.exit = func(code int) { exited = code }
	l.Infof("flushed %d tables\n", 3)
	l.Errorf("background %s", "trouble")
	l.Fatalf("fatal %s", "state")
	got := out.String()
	for _, want := range []string{
		`level=INFO msg="flushed 3 tables" component=pebble`,
		`level=ERROR msg="background trouble" component=pebble`,
		`level=ERROR msg="fatal state" component=pebble fatal=true`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("log output misses %q:\n%s", want, got)
		}
	}
	if exited != 1 {
		t.Errorf("Fatalf exit code = %d, want 1", exited)
	}
}
