package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Defaults for Options fields left zero. They suit a small machine (2 cores,
// a few GiB of memory).
const (
	DefaultCacheSize    = 32 << 20
	DefaultMemTableSize = 64 << 20
)

// ErrClosed is returned by every operation on a closed Store.
var ErrClosed = errors.New("store closed")

// ErrLocked is wrapped by the error Open returns when the directory is
// already in use by another process or by another open Store.
var ErrLocked = errors.New("directory is locked by another process or store")

// Options configures Open.
type Options struct {
	// Dir is the directory holding the database. It is created if missing.
	Dir string
	// Logger receives Pebble's own log messages and storage events (background
	// errors, slow disk, write stalls). nil discards them.
	Logger *slog.Logger
	// CacheSize is the size in bytes of the block cache for reads that miss
	// the memtables. 0 means DefaultCacheSize.
	CacheSize int64
	// MemTableSize is the size in bytes of one memtable. Writes go to the
	// memtable and the write-ahead log; a full memtable is flushed to an L0
	// table in the background. Up to 4 memtables may exist
	// at once while flushes catch up. 0 means DefaultMemTableSize.
	MemTableSize uint64
}

// Meta is per-channel metadata kept durably.
type Meta struct {
	// Epoch is the log epoch. It changes only when the channel's log
	// restarted without history.
	Epoch uint64
	// TrimmedThrough is the highest seq ever deleted by retention (0 = none).
	// It lets the engine keep seqs continuous when every record was trimmed.
	TrimmedThrough uint64
}

// Record is one message in a channel's log.
type Record struct {
	// Channel is the channel name: 1..MaxChannelLen bytes, never containing
	// 0x00.
	Channel string
	// Seq is the record's position in the channel's log: >= 1 and gap-free.
	Seq uint64
	// Timestamp is in unix milliseconds, non-decreasing in Seq.
	Timestamp int64
	// Value is the opaque encoded message.
	Value []byte
}

// Tuning constants; see pebbleOptions.
const (
	memTableStopWrites    = 4
	l0CompactionThreshold = 4
	l0StopWritesThreshold = 24
	lBaseMaxBytes         = 256 << 20
	flushDelayDeleteRange = time.Minute
	diskSlowThreshold     = 5 * time.Second
)

// closedBit marks a closed store in Store.state; the lower bits count
// operations in flight.
const closedBit = int64(1) << 62

// Store is a durable store of channel logs over Pebble. It is safe for
// concurrent use.
type Store struct {
	db       *pebble.DB
	lock     *pebble.Lock
	fsCloser io.Closer
	log      *slog.Logger
	dir      string

	// state is closedBit | number of operations in flight. Operations
	// register in it so that Close waits for them instead of pulling the
	// database out from under an iterator.
	state     atomic.Int64
	idle      chan struct{} // closed when closing and nothing is in flight
	idleOnce  sync.Once
	closeDone chan struct{} // closed when Close has finished
	closeErr  error

	// metaMu orders TrimBefore's read-modify-write of a channel's meta
	// against blind writes: Commit and PutMeta hold it shared, TrimBefore
	// holds it exclusively while it re-reads the meta and applies its batch.
	metaMu sync.RWMutex
	// trimMu serializes TrimBefore and DeleteChannel.
	trimMu sync.Mutex
}

// Open opens (creating if needed) the store in opts.Dir. It fails with an
// error wrapping ErrLocked if the directory is in use by another process or
// another open Store.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("store: open: Options.Dir is empty")
	}
	if opts.CacheSize < 0 {
		return nil, fmt.Errorf("store: open %q: negative CacheSize %d", opts.Dir, opts.CacheSize)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("store: open %q: create directory: %w", opts.Dir, err)
	}
	lock, err := pebble.LockDirectory(opts.Dir, vfs.Default)
	if err != nil {
		if isLockConflict(err) {
			return nil, fmt.Errorf("store: open %q: %w: %w", opts.Dir, ErrLocked, err)
		}
		return nil, fmt.Errorf("store: open %q: lock directory: %w", opts.Dir, err)
	}
	s := &Store{
		lock:      lock,
		log:       logger,
		dir:       opts.Dir,
		idle:      make(chan struct{}),
		closeDone: make(chan struct{}),
	}
	po := s.pebbleOptions(opts)
	db, err := pebble.Open(opts.Dir, po)
	if err != nil {
		_ = s.fsCloser.Close()
		_ = lock.Close()
		return nil, fmt.Errorf("store: open %q: %w", opts.Dir, err)
	}
	s.db = db
	return s, nil
}

// isLockConflict reports whether err from pebble.LockDirectory means that the
// lock is held elsewhere, as opposed to, say, a permission problem creating
// the lock file.
func isLockConflict(err error) bool {
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		return false // os.Create of the LOCK file failed
	}
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) ||
		strings.Contains(err.Error(), "lock held by current process")
}

// pebbleOptions builds the Pebble configuration. The workload is append-only
// per channel (keys of a channel arrive in increasing order, many channels
// interleaved), written by one committer goroutine in batches of hundreds of
// small records, read mostly near the tail, and trimmed from the head by
// range deletions.
func (s *Store) pebbleOptions(opts Options) *pebble.Options {
	cacheSize := opts.CacheSize
	if cacheSize == 0 {
		cacheSize = DefaultCacheSize
	}
	memTable := opts.MemTableSize
	if memTable == 0 {
		memTable = DefaultMemTableSize
	}
	po := &pebble.Options{
		// Pin the on-disk format instead of following the library default,
		// so an upgrade of Pebble never silently ratchets the format.
		FormatMajorVersion: pebble.FormatValueSeparation,
		CacheSize:          cacheSize,
		// Large memtables (64 MiB by default instead of 4 MiB) mean few, large
		// flushes: at 200k records/s of ~170 bytes a memtable lasts seconds
		// rather than a fraction of one, L0 gets fewer files and recent
		// records (what resumes read) are served from memory. Allowing 4
		// queued memtables absorbs bursts while a flush runs instead of
		// stalling the committer; they only use memory while flushes lag.
		MemTableSize:                memTable,
		MemTableStopWritesThreshold: memTableStopWrites,
		// Compact L0 at the usual read-amplification of 4 but stop writes
		// only at 24 sublevels (default 12): with 2 cores a compaction can
		// fall behind during a burst, and a stall blocks every publisher's
		// ack, whereas temporary read amplification only costs reads.
		L0CompactionThreshold: l0CompactionThreshold,
		L0StopWritesThreshold: l0StopWritesThreshold,
		// Size Lbase close to L0's size at compaction time (a few memtables)
		// so L0->Lbase compactions do not rewrite a disproportionately large
		// Lbase.
		LBaseMaxBytes: lBaseMaxBytes,
		// Normally one compaction at a time, a second one when L0 or
		// compaction debt grows: the machine has 2 cores and the engine
		// needs one.
		CompactionConcurrencyRange: func() (int, int) { return 1, 2 },
		// Retention trims with range deletions; disk space is reclaimed only
		// once the tombstone leaves the memtable. With large memtables and a
		// low write rate that could take very long, so force a flush of a
		// memtable holding a range deletion after a minute.
		FlushDelayDeleteRange: flushDelayDeleteRange,
		// No WALMinSyncInterval: the engine already groups commits, an
		// artificial delay before each fsync would only add latency. No
		// WALBytesPerSync: with Commit(b, false) the engine calls Sync on its
		// own timer.
		Logger:        newPebbleLogger(s.log),
		EventListener: s.eventListener(),
	}
	// Bloom filters make point lookups (Get, meta and ext reads) skip tables
	// that cannot hold the key; 10 bits per key is about a 1% false
	// positive rate. Scans do not use them.
	po.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	// Disk-health checks report writes stuck for longer than
	// diskSlowThreshold. The closer is owned here so it is released on
	// every path, including a failed Open.
	po.FS, s.fsCloser = vfs.WithDiskHealthChecks(vfs.Default, diskSlowThreshold, nil, func(info vfs.DiskSlowInfo) {
		s.log.Warn("store: slow disk operation", slog.String("path", info.Path),
			slog.String("op", info.OpType.String()), slog.Duration("duration", info.Duration))
	})
	po.Lock = s.lock
	return po
}

// eventListener routes the Pebble events an operator cares about to the
// logger. Routine events (flushes, compactions, table creation) are not
// logged.
func (s *Store) eventListener() *pebble.EventListener {
	return &pebble.EventListener{
		BackgroundError: func(err error) {
			s.log.Error("store: background error", slog.Any("error", err))
		},
		// Pebble's default reports detected corruption through Fatalf, which
		// terminates the process. Reads of the affected range already fail
		// with an error; log it loudly instead.
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			s.log.Error("store: data corruption detected", slog.String("path", info.Path),
				slog.Any("error", info.Details))
		},
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			s.log.Warn("store: write stall begin", slog.String("reason", info.Reason))
		},
		WriteStallEnd: func() {
			s.log.Warn("store: write stall end")
		},
		LowDiskSpace: func(info pebble.LowDiskSpaceInfo) {
			s.log.Warn("store: low disk space", slog.Uint64("avail_bytes", info.AvailBytes),
				slog.Uint64("total_bytes", info.TotalBytes))
		},
	}
}

// acquire registers an operation in flight, failing if the store is closed.
// Every successful acquire must be paired with release.
func (s *Store) acquire() error {
	if s.state.Add(1)&closedBit != 0 {
		s.release()
		return ErrClosed
	}
	return nil
}

func (s *Store) release() {
	if s.state.Add(-1) == closedBit {
		s.idleOnce.Do(func() { close(s.idle) })
	}
}

// Close syncs the write-ahead log and closes the store. It waits for
// operations in flight (including running Scan callbacks) to finish; it must
// not be called from inside a callback. Calling Close again returns nil.
func (s *Store) Close() error {
	old := s.state.Or(closedBit)
	if old&closedBit != 0 {
		<-s.closeDone
		return nil
	}
	if old == 0 {
		s.idleOnce.Do(func() { close(s.idle) })
	}
	<-s.idle
	var errs []error
	if err := s.db.LogData(nil, pebble.Sync); err != nil {
		errs = append(errs, fmt.Errorf("sync: %w", err))
	}
	if err := s.db.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := s.fsCloser.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := s.lock.Close(); err != nil {
		errs = append(errs, fmt.Errorf("unlock: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		s.closeErr = fmt.Errorf("store: close %q: %w", s.dir, err)
	}
	close(s.closeDone)
	return s.closeErr
}

func writeOpts(sync bool) *pebble.WriteOptions {
	if sync {
		return pebble.Sync
	}
	return pebble.NoSync
}

// Commit applies b atomically. With sync=true it returns after the
// write-ahead log holding the batch is fsynced; with sync=false it returns
// once the batch is visible to readers and in the WAL buffer (durable after
// the next Sync or synced commit). A committed batch must be Reset before it
// is reused, or Closed. A failed Commit leaves the batch unchanged.
func (s *Store) Commit(b *Batch, sync bool) error {
	if b == nil || b.pb == nil {
		return errors.New("store: commit: batch is nil or closed")
	}
	if b.s != s {
		return errors.New("store: commit: batch belongs to another store")
	}
	if b.err != nil {
		return fmt.Errorf("store: commit: %w", b.err)
	}
	if b.committed {
		return errors.New("store: commit: batch already committed; Reset it before reuse")
	}
	if b.pb.Empty() {
		if sync {
			if err := s.Sync(); err != nil {
				return err
			}
		}
		b.committed = true
		return nil
	}
	if err := s.acquire(); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	defer s.release()
	s.metaMu.RLock()
	err := s.db.Apply(b.pb, writeOpts(sync))
	s.metaMu.RUnlock()
	if err != nil {
		return fmt.Errorf("store: commit %d ops: %w", b.pb.Count(), err)
	}
	b.committed = true
	return nil
}

// Sync makes every previously committed write durable by fsyncing the
// write-ahead log.
func (s *Store) Sync() error {
	if err := s.acquire(); err != nil {
		return fmt.Errorf("store: sync: %w", err)
	}
	defer s.release()
	// An empty synced WAL entry waits for the WAL to be fsynced up to and
	// including itself, and therefore every earlier write.
	if err := s.db.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("store: sync: %w", err)
	}
	return nil
}

// PutMeta stores the meta of a channel, replacing any previous one.
func (s *Store) PutMeta(channel string, m Meta, sync bool) error {
	if err := checkChannel(channel); err != nil {
		return fmt.Errorf("store: put meta: %w", err)
	}
	if err := s.acquire(); err != nil {
		return fmt.Errorf("store: put meta %q: %w", channel, err)
	}
	defer s.release()
	var buf [metaValueLen]byte
	s.metaMu.RLock()
	err := s.db.Set(metaKey(channel), appendMetaValue(buf[:0], m), writeOpts(sync))
	s.metaMu.RUnlock()
	if err != nil {
		return fmt.Errorf("store: put meta %q: %w", channel, err)
	}
	return nil
}

// closeIter closes it, keeping the first error in *err.
func closeIter(it *pebble.Iterator, err *error) {
	if cerr := it.Close(); cerr != nil && *err == nil {
		*err = cerr
	}
}

// readMeta reads the channel's meta through it, which must have been created
// for this purpose; it leaves the iterator's bounds on the meta key.
func readMeta(it *pebble.Iterator, channel string) (m Meta, found bool, err error) {
	mk := metaKey(channel)
	it.SetBounds(mk, append(mk, 0))
	if !it.First() {
		return Meta{}, false, it.Error()
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return Meta{}, false, err
	}
	m, err = decodeMetaValue(v)
	if err != nil {
		return Meta{}, false, err
	}
	return m, true, nil
}

// recordRange positions it over the channel's records and returns the first
// and last seq (ok=false if there are none).
func recordRange(it *pebble.Iterator, prefix []byte) (first, last uint64, ok bool, err error) {
	if !it.First() {
		return 0, 0, false, it.Error()
	}
	if first, err = decodeRecordKey(it.Key(), prefix); err != nil {
		return 0, 0, false, err
	}
	if !it.Last() {
		if err := it.Error(); err != nil {
			return 0, 0, false, err
		}
		return 0, 0, false, fmt.Errorf("%w: channel has a first record but no last", ErrCorrupt)
	}
	if last, err = decodeRecordKey(it.Key(), prefix); err != nil {
		return 0, 0, false, err
	}
	return first, last, true, nil
}

// newIter returns an iterator over [lower, upper) reading a consistent view.
func (s *Store) newIter(lower, upper []byte) (*pebble.Iterator, error) {
	return s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
}

// Channel returns the durable state of a channel: its meta (found=false if
// it has none), and the first and last seq of its retained records (0, 0 if
// none). Meta and range come from one consistent view, so after a trim
// first == m.TrimmedThrough+1 or there are no records.
func (s *Store) Channel(channel string) (m Meta, first, last uint64, found bool, err error) {
	if err := checkChannel(channel); err != nil {
		return Meta{}, 0, 0, false, fmt.Errorf("store: channel: %w", err)
	}
	if err := s.acquire(); err != nil {
		return Meta{}, 0, 0, false, fmt.Errorf("store: channel %q: %w", channel, err)
	}
	defer s.release()
	m, first, last, found, err = s.channel(channel)
	if err != nil {
		return Meta{}, 0, 0, false, fmt.Errorf("store: channel %q: %w", channel, err)
	}
	return m, first, last, found, nil
}

func (s *Store) channel(channel string) (m Meta, first, last uint64, found bool, err error) {
	prefix := recordPrefix(channel)
	it, err := s.newIter(nil, nil)
	if err != nil {
		return Meta{}, 0, 0, false, err
	}
	defer closeIter(it, &err)
	if m, found, err = readMeta(it, channel); err != nil {
		return Meta{}, 0, 0, false, err
	}
	it.SetBounds(prefix, recordPrefixEnd(channel))
	first, last, _, err = recordRange(it, prefix)
	return m, first, last, found, err
}

// Scan calls fn for the records of channel with from <= seq <= to, in
// ascending seq order (descending if reverse), until fn returns false.
// r.Value is only valid during the call to fn: copy it to keep it. fn must
// not call Close.
func (s *Store) Scan(channel string, from, to uint64, reverse bool, fn func(r Record) bool) (err error) {
	if err := checkChannel(channel); err != nil {
		return fmt.Errorf("store: scan: %w", err)
	}
	if from > to {
		return nil
	}
	if err := s.acquire(); err != nil {
		return fmt.Errorf("store: scan %q: %w", channel, err)
	}
	defer s.release()
	if err := s.scan(channel, from, to, reverse, fn); err != nil {
		return fmt.Errorf("store: scan %q [%d, %d]: %w", channel, from, to, err)
	}
	return nil
}

func (s *Store) scan(channel string, from, to uint64, reverse bool, fn func(r Record) bool) (err error) {
	lower, upper := recordBounds(channel, from, to)
	prefix := lower[:len(lower)-seqLen]
	it, err := s.newIter(lower, upper)
	if err != nil {
		return err
	}
	defer closeIter(it, &err)
	var valid bool
	if reverse {
		valid = it.Last()
	} else {
		valid = it.First()
	}
	for valid {
		seq, err := decodeRecordKey(it.Key(), prefix)
		if err != nil {
			return err
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("seq %d: %w", seq, err)
		}
		ts, value, err := decodeRecordValue(v)
		if err != nil {
			return fmt.Errorf("seq %d: %w", seq, err)
		}
		if !fn(Record{Channel: channel, Seq: seq, Timestamp: ts, Value: value}) {
			return nil
		}
		if reverse {
			valid = it.Prev()
		} else {
			valid = it.Next()
		}
	}
	return it.Error()
}

// Get returns the record of channel at seq (ok=false if it is not stored).
// The returned Value is a copy owned by the caller.
func (s *Store) Get(channel string, seq uint64) (Record, bool, error) {
	if err := checkChannel(channel); err != nil {
		return Record{}, false, fmt.Errorf("store: get: %w", err)
	}
	if err := s.acquire(); err != nil {
		return Record{}, false, fmt.Errorf("store: get %q/%d: %w", channel, seq, err)
	}
	defer s.release()
	v, closer, err := s.db.Get(appendRecordKey(nil, channel, seq))
	if errors.Is(err, pebble.ErrNotFound) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("store: get %q/%d: %w", channel, seq, err)
	}
	defer closer.Close()
	ts, value, err := decodeRecordValue(v)
	if err != nil {
		return Record{}, false, fmt.Errorf("store: get %q/%d: %w", channel, seq, err)
	}
	return Record{Channel: channel, Seq: seq, Timestamp: ts, Value: append([]byte(nil), value...)}, true, nil
}

// recordTimeAtOrAfter positions it at the first record with seq >= seq and
// returns that record's seq and timestamp (ok=false if there is none).
func recordTimeAtOrAfter(it *pebble.Iterator, prefix, keyBuf []byte, seq uint64) (uint64, int64, bool, error) {
	key := append(keyBuf[:0], prefix...)
	key = appendSeq(key, seq)
	if !it.SeekGE(key) {
		return 0, 0, false, it.Error()
	}
	return currentRecordTime(it, prefix)
}

func currentRecordTime(it *pebble.Iterator, prefix []byte) (uint64, int64, bool, error) {
	got, err := decodeRecordKey(it.Key(), prefix)
	if err != nil {
		return 0, 0, false, err
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return 0, 0, false, fmt.Errorf("seq %d: %w", got, err)
	}
	ts, _, err := decodeRecordValue(v)
	if err != nil {
		return 0, 0, false, fmt.Errorf("seq %d: %w", got, err)
	}
	return got, ts, true, nil
}

func appendSeq(dst []byte, seq uint64) []byte {
	return append(dst, byte(seq>>56), byte(seq>>48), byte(seq>>40), byte(seq>>32),
		byte(seq>>24), byte(seq>>16), byte(seq>>8), byte(seq))
}

// timeSearch binary-searches the channel's records (it must be bounded to
// them) for the lowest seq whose timestamp is >= ts. It returns the retained
// range [first, last] (any=false if empty) and cut, the seq found, or last+1
// if every record is older than ts. It needs O(log(last-first)) seeks and
// tolerates gaps in the seq range, relying only on timestamps being
// non-decreasing in seq.
func timeSearch(it *pebble.Iterator, prefix []byte, ts int64) (first, last, cut uint64, nonEmpty bool, err error) {
	if !it.Last() {
		return 0, 0, 0, false, it.Error()
	}
	last, lastTS, _, err := currentRecordTime(it, prefix)
	if err != nil {
		return 0, 0, 0, false, err
	}
	if !it.First() {
		if err := it.Error(); err != nil {
			return 0, 0, 0, false, err
		}
		return 0, 0, 0, false, fmt.Errorf("%w: channel has a last record but no first", ErrCorrupt)
	}
	first, firstTS, _, err := currentRecordTime(it, prefix)
	if err != nil {
		return 0, 0, 0, false, err
	}
	switch {
	case firstTS >= ts:
		return first, last, first, true, nil
	case lastTS < ts:
		return first, last, last + 1, true, nil
	}
	// Let g(x) be the timestamp of the first record with seq >= x. g is
	// non-decreasing; find the smallest x in (first, last] with g(x) >= ts.
	// Invariant: g(x) < ts for every x < lo, and g(hi) >= ts with the record
	// at or after hi being at seq found.
	keyBuf := make([]byte, 0, len(prefix)+seqLen)
	lo, hi, found := first+1, last, last
	for lo < hi {
		mid := lo + (hi-lo)/2
		got, gotTS, ok, err := recordTimeAtOrAfter(it, prefix, keyBuf, mid)
		if err != nil {
			return 0, 0, 0, false, err
		}
		if !ok || got > last {
			return 0, 0, 0, false, fmt.Errorf("%w: no record at or after seq %d below last %d", ErrCorrupt, mid, last)
		}
		if gotTS >= ts {
			hi, found = mid, got
		} else {
			lo = got + 1
		}
	}
	return first, last, found, true, nil
}

// SeqAtTime returns the lowest retained seq of channel whose Timestamp is
// >= ts, by binary search over the retained range using point seeks
// (timestamps are non-decreasing in seq). ok=false if there is none.
func (s *Store) SeqAtTime(channel string, ts int64) (seq uint64, ok bool, err error) {
	if err := checkChannel(channel); err != nil {
		return 0, false, fmt.Errorf("store: seq at time: %w", err)
	}
	if err := s.acquire(); err != nil {
		return 0, false, fmt.Errorf("store: seq at time %q: %w", channel, err)
	}
	defer s.release()
	seq, ok, err = s.seqAtTime(channel, ts)
	if err != nil {
		return 0, false, fmt.Errorf("store: seq at time %q %d: %w", channel, ts, err)
	}
	return seq, ok, nil
}

func (s *Store) seqAtTime(channel string, ts int64) (seq uint64, ok bool, err error) {
	prefix := recordPrefix(channel)
	it, err := s.newIter(prefix, recordPrefixEnd(channel))
	if err != nil {
		return 0, false, err
	}
	defer closeIter(it, &err)
	_, last, cut, nonEmpty, err := timeSearch(it, prefix, ts)
	if err != nil || !nonEmpty || cut > last {
		return 0, false, err
	}
	return cut, true, nil
}

// TrimBefore deletes the oldest records of channel, those with Timestamp <
// cutoff, but at most max of them per call (0 = no limit), with one range
// deletion, and raises the channel's Meta.TrimmedThrough to the highest seq
// deleted in the same atomic batch (creating the meta if the channel had
// none). It returns the number of records deleted, counted as a seq range,
// which is exact because logs are gap-free.
//
// The search for the cut point runs without locks; Commit is excluded only
// while TrimBefore re-reads the meta and applies its small batch. If the
// channel's epoch changed meanwhile, nothing is deleted. The write is not
// synced: after a crash the trimmed records and the old TrimmedThrough may
// both reappear, which is consistent.
func (s *Store) TrimBefore(channel string, cutoff int64, max int) (deleted int, err error) {
	if err := checkChannel(channel); err != nil {
		return 0, fmt.Errorf("store: trim: %w", err)
	}
	if max < 0 {
		return 0, fmt.Errorf("store: trim %q: negative max %d", channel, max)
	}
	if err := s.acquire(); err != nil {
		return 0, fmt.Errorf("store: trim %q: %w", channel, err)
	}
	defer s.release()
	s.trimMu.Lock()
	defer s.trimMu.Unlock()
	deleted, err = s.trimBefore(channel, cutoff, max)
	if err != nil {
		return 0, fmt.Errorf("store: trim %q before %d: %w", channel, cutoff, err)
	}
	return deleted, nil
}

func (s *Store) trimBefore(channel string, cutoff int64, max int) (int, error) {
	m0, found0, first, cut, err := s.trimPoint(channel, cutoff)
	if err != nil || cut <= first {
		return 0, err
	}
	n := cut - first
	if max > 0 && n > uint64(max) {
		n = uint64(max)
		cut = first + n
	}

	mk := metaKey(channel)
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(appendRecordKey(nil, channel, 0), appendRecordKey(nil, channel, cut), nil); err != nil {
		return 0, err
	}

	s.metaMu.Lock()
	defer s.metaMu.Unlock()
	m, found, err := s.getMeta(mk)
	if err != nil {
		return 0, err
	}
	if found != found0 || m.Epoch != m0.Epoch {
		// The log was restarted while the cut point was computed; the range
		// found belongs to the old log. Leave it to the next call.
		return 0, nil
	}
	if cut-1 > m.TrimmedThrough {
		m.TrimmedThrough = cut - 1
	}
	var buf [metaValueLen]byte
	if err := b.Set(mk, appendMetaValue(buf[:0], m), nil); err != nil {
		return 0, err
	}
	if err := s.db.Apply(b, pebble.NoSync); err != nil {
		return 0, err
	}
	return int(n), nil
}

// trimPoint reads, from one consistent view, the channel's meta, its first
// retained seq and the seq of its first record with Timestamp >= cutoff
// (last+1 if none; cut == first if nothing to trim).
func (s *Store) trimPoint(channel string, cutoff int64) (m Meta, found bool, first, cut uint64, err error) {
	it, err := s.newIter(nil, nil)
	if err != nil {
		return Meta{}, false, 0, 0, err
	}
	defer closeIter(it, &err)
	if m, found, err = readMeta(it, channel); err != nil {
		return Meta{}, false, 0, 0, err
	}
	prefix := recordPrefix(channel)
	it.SetBounds(prefix, recordPrefixEnd(channel))
	first, _, cut, nonEmpty, err := timeSearch(it, prefix, cutoff)
	if err != nil || !nonEmpty {
		return Meta{}, false, 0, 0, err
	}
	return m, found, first, cut, nil
}

// getMeta reads a meta key with a point lookup.
func (s *Store) getMeta(mk []byte) (Meta, bool, error) {
	v, closer, err := s.db.Get(mk)
	if errors.Is(err, pebble.ErrNotFound) {
		return Meta{}, false, nil
	}
	if err != nil {
		return Meta{}, false, err
	}
	defer closer.Close()
	m, err := decodeMetaValue(v)
	if err != nil {
		return Meta{}, false, err
	}
	return m, true, nil
}

// DeleteChannel removes every record and the meta of a channel, durably
// (the write is synced).
func (s *Store) DeleteChannel(channel string) error {
	if err := checkChannel(channel); err != nil {
		return fmt.Errorf("store: delete channel: %w", err)
	}
	if err := s.acquire(); err != nil {
		return fmt.Errorf("store: delete channel %q: %w", channel, err)
	}
	defer s.release()
	s.trimMu.Lock()
	defer s.trimMu.Unlock()
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(recordPrefix(channel), recordPrefixEnd(channel), nil); err != nil {
		return fmt.Errorf("store: delete channel %q: %w", channel, err)
	}
	if err := b.Delete(metaKey(channel), nil); err != nil {
		return fmt.Errorf("store: delete channel %q: %w", channel, err)
	}
	s.metaMu.RLock()
	err := s.db.Apply(b, pebble.Sync)
	s.metaMu.RUnlock()
	if err != nil {
		return fmt.Errorf("store: delete channel %q: %w", channel, err)
	}
	return nil
}

// Channels calls fn for every channel that has meta, in name order (bytewise),
// until fn returns false. fn must not call Close.
func (s *Store) Channels(fn func(channel string, m Meta) bool) (err error) {
	if err := s.acquire(); err != nil {
		return fmt.Errorf("store: channels: %w", err)
	}
	defer s.release()
	if err := s.channels(fn); err != nil {
		return fmt.Errorf("store: channels: %w", err)
	}
	return nil
}

func (s *Store) channels(fn func(channel string, m Meta) bool) (err error) {
	it, err := s.newIter([]byte{tagMeta}, []byte{tagMeta + 1})
	if err != nil {
		return err
	}
	defer closeIter(it, &err)
	for valid := it.First(); valid; valid = it.Next() {
		name := string(it.Key()[1:])
		if err := checkChannel(name); err != nil {
			return fmt.Errorf("%w: meta key: %w", ErrCorrupt, err)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("channel %q: %w", name, err)
		}
		m, err := decodeMetaValue(v)
		if err != nil {
			return fmt.Errorf("channel %q: %w", name, err)
		}
		if !fn(name, m) {
			return nil
		}
	}
	return it.Error()
}

// ExtScan calls fn for every ext key starting with prefix, in ascending key
// order, until fn returns false. key and value are only valid during the
// call. fn must not call Close.
func (s *Store) ExtScan(prefix []byte, fn func(key, value []byte) bool) error {
	if err := s.acquire(); err != nil {
		return fmt.Errorf("store: ext scan: %w", err)
	}
	defer s.release()
	if err := s.extScan(prefix, fn); err != nil {
		return fmt.Errorf("store: ext scan %q: %w", prefix, err)
	}
	return nil
}

func (s *Store) extScan(prefix []byte, fn func(key, value []byte) bool) (err error) {
	lower := extKey(prefix)
	it, err := s.newIter(lower, prefixEnd(lower))
	if err != nil {
		return err
	}
	defer closeIter(it, &err)
	for valid := it.First(); valid; valid = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if !fn(it.Key()[1:], v) {
			return nil
		}
	}
	return it.Error()
}

// ExtGet returns the value of an ext key (ok=false if absent). The value is
// a copy owned by the caller.
func (s *Store) ExtGet(key []byte) ([]byte, bool, error) {
	if err := s.acquire(); err != nil {
		return nil, false, fmt.Errorf("store: ext get: %w", err)
	}
	defer s.release()
	v, closer, err := s.db.Get(extKey(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("store: ext get %q: %w", key, err)
	}
	defer closer.Close()
	return append([]byte{}, v...), true, nil
}

// DiskUsage reports the bytes the store's files use on disk (tables, WAL,
// manifest, including obsolete files not yet deleted). It returns 0 once
// the store is closed.
func (s *Store) DiskUsage() uint64 {
	if s.acquire() != nil {
		return 0
	}
	defer s.release()
	return s.db.Metrics().DiskSpaceUsage()
}
