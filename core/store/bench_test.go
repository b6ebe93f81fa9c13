package store

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// benchCommit commits batches of 256 records of 150 bytes spread over 1000
// channels, as the engine's committer does, and reports records/s.
func benchCommit(b *testing.B, sync bool) {
	const (
		channels  = 1000
		perBatch  = 256
		valueSize = 150
	)
	s, err := Open(Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	names := make([]string, channels)
	for i := range names {
		names[i] = fmt.Sprintf("tenant-%03d:room-%d", i%37, i)
	}
	next := make([]uint64, channels)
	value := make([]byte, valueSize)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	batch := s.NewBatch()
	defer batch.Close()
	c := 0
	b.SetBytes(perBatch * valueSize)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		batch.Reset()
		for range perBatch {
			c = (c + 7) % channels // interleave channels like real traffic
			next[c]++
			batch.Append(Record{Channel: names[c], Seq: next[c], Timestamp: 1_700_000_000_000 + int64(i), Value: value})
		}
		if err := s.Commit(batch, sync); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*perBatch)/b.Elapsed().Seconds(), "records/s")
}

func BenchmarkCommitNoSync(b *testing.B) { benchCommit(b, false) }

func BenchmarkCommitSync(b *testing.B) { benchCommit(b, true) }

// BenchmarkScan reads 100-record windows (a typical resume) at random
// positions of 100 channels of 2000 records each, after a flush so reads go
// through sstables and the block cache.
func BenchmarkScan(b *testing.B) {
	const (
		channels   = 100
		perChannel = 2000
		window     = 100
	)
	s, err := Open(Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	value := make([]byte, 150)
	batch := s.NewBatch()
	for c := range channels {
		batch.Reset()
		for seq := uint64(1); seq <= perChannel; seq++ {
			batch.Append(Record{Channel: fmt.Sprintf("ch-%d", c), Seq: seq, Timestamp: int64(seq), Value: value})
		}
		if err := s.Commit(batch, false); err != nil {
			b.Fatal(err)
		}
	}
	batch.Close()
	if err := s.db.Flush(); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	var n int
	var sum int
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		ch := fmt.Sprintf("ch-%d", rng.IntN(channels))
		from := 1 + uint64(rng.IntN(perChannel-window))
		err := s.Scan(ch, from, math.MaxUint64, false, func(r Record) bool {
			n++
			sum += len(r.Value)
			return r.Seq < from+window-1
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
	if sum == 0 {
		b.Fatal("no data")
	}
}
