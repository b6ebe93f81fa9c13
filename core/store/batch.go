package store

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// MaxBatchBytes bounds the encoded size of one Batch. Writes that would grow a
// batch past it make the batch fail at Commit instead of growing further.
const MaxBatchBytes = 1 << 30

// errBatchCommitted is recorded by writes to a committed, not yet Reset batch.
var errBatchCommitted = errors.New("write to a committed batch; Reset it before reuse")

// errBatchClosed is recorded by writes to a closed batch.
var errBatchClosed = errors.New("write to a closed batch")

// Batch accumulates writes that Commit applies atomically. Its write methods
// do not return errors: the first invalid write (bad channel name, seq 0,
// oversized batch) is recorded and returned by Commit, which then applies
// nothing. Record keys and values are encoded straight into the batch
// buffer, so Append does not allocate once the buffer has grown to the
// working size; reuse a batch with Reset to keep that buffer. A Batch is not
// safe for concurrent use.
type Batch struct {
	s         *Store
	pb        *pebble.Batch
	err       error
	committed bool
}

// NewBatch returns an empty batch for s. Release it with Close when done.
func (s *Store) NewBatch() *Batch {
	return &Batch{s: s, pb: s.db.NewBatch()}
}

// writable reports whether a write may be added, recording why not.
func (b *Batch) writable(opLen int) bool {
	switch {
	case b.err != nil:
		return false
	case b.pb == nil:
		b.err = errBatchClosed
		return false
	case b.committed:
		b.err = errBatchCommitted
		return false
	case b.pb.Len()+opLen+16 > MaxBatchBytes:
		b.err = fmt.Errorf("batch would exceed %d bytes", MaxBatchBytes)
		return false
	}
	return true
}

// fail records err as the batch's error unless one is recorded already.
func (b *Batch) fail(err error) {
	if b.err == nil {
		b.err = err
	}
}

// Append adds a log record. Appending a seq that already exists overwrites
// it. r.Value is copied.
func (b *Batch) Append(r Record) {
	keyLen, valueLen := recordKeyLen(len(r.Channel)), recordHeaderLen+len(r.Value)
	if !b.writable(keyLen + valueLen) {
		return
	}
	if err := checkChannel(r.Channel); err != nil {
		b.fail(fmt.Errorf("append: %w", err))
		return
	}
	if r.Seq == 0 {
		b.fail(fmt.Errorf("append %q: seq 0 is invalid", r.Channel))
		return
	}
	op := b.pb.SetDeferred(keyLen, valueLen)
	putRecordKey(op.Key, r.Channel, r.Seq)
	putRecordValue(op.Value, r.Timestamp, r.Value)
	if err := op.Finish(); err != nil {
		b.fail(fmt.Errorf("append %q/%d: %w", r.Channel, r.Seq, err))
	}
}

// SetMeta sets the meta of channel, replacing the stored one. The whole Meta
// is written: carry TrimmedThrough forward from Store.Channel.
func (b *Batch) SetMeta(channel string, m Meta) {
	keyLen := 1 + len(channel)
	if !b.writable(keyLen + metaValueLen) {
		return
	}
	if err := checkChannel(channel); err != nil {
		b.fail(fmt.Errorf("set meta: %w", err))
		return
	}
	op := b.pb.SetDeferred(keyLen, metaValueLen)
	op.Key[0] = tagMeta
	copy(op.Key[1:], channel)
	appendMetaValue(op.Value[:0], m)
	if err := op.Finish(); err != nil {
		b.fail(fmt.Errorf("set meta %q: %w", channel, err))
	}
}

// Set sets key to value in the ext keyspace, reserved for other packages and
// isolated from records and meta. key and value are copied.
func (b *Batch) Set(key, value []byte) {
	keyLen := 1 + len(key)
	if !b.writable(keyLen + len(value)) {
		return
	}
	op := b.pb.SetDeferred(keyLen, len(value))
	op.Key[0] = tagExt
	copy(op.Key[1:], key)
	copy(op.Value, value)
	if err := op.Finish(); err != nil {
		b.fail(fmt.Errorf("ext set %q: %w", key, err))
	}
}

// Delete deletes key from the ext keyspace.
func (b *Batch) Delete(key []byte) {
	keyLen := 1 + len(key)
	if !b.writable(keyLen) {
		return
	}
	op := b.pb.DeleteDeferred(keyLen)
	op.Key[0] = tagExt
	copy(op.Key[1:], key)
	if err := op.Finish(); err != nil {
		b.fail(fmt.Errorf("ext delete %q: %w", key, err))
	}
}

// Count returns the number of writes in the batch.
func (b *Batch) Count() int {
	if b.pb == nil {
		return 0
	}
	return int(b.pb.Count())
}

// Reset empties the batch, clearing any recorded error and the committed
// state, so it can be reused; it keeps the buffer. Resetting a closed batch
// does nothing.
func (b *Batch) Reset() {
	if b.pb == nil {
		return
	}
	b.pb.Reset()
	b.err = nil
	b.committed = false
}

// Close releases the batch without committing it (a committed batch's
// writes stay applied). The batch must not be used afterwards; Close is
// idempotent.
func (b *Batch) Close() {
	if b.pb == nil {
		return
	}
	_ = b.pb.Close()
	b.pb = nil
}
