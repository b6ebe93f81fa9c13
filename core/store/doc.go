// Package store is Switchboard's durable storage layer: a thin, fast
// persistence API over a Pebble LSM engine for per-channel message logs,
// per-channel metadata and a raw keyspace reserved for other packages.
//
// The engine owns ordering and group commit. It collects messages from many
// channels into one Batch in a single committer goroutine and calls
// Store.Commit once per batch. The store only checks that records are
// well formed; it does not check that sequence numbers are gap-free or that
// timestamps are non-decreasing. The engine guarantees both, and Scan,
// SeqAtTime and TrimBefore rely on them.
//
// # Key layout
//
// Every key starts with a one-byte keyspace tag, so the three keyspaces can
// never collide:
//
//	record: 'r' | channel | 0x00 | seq (8 bytes, big-endian)
//	meta:   'm' | channel
//	ext:    'x' | key
//
// Channel names are 1..256 bytes and never contain 0x00, so the 0x00
// terminator after the channel name ends the channel part of a record key.
// The record prefix of a channel is therefore never a prefix of another
// channel's records ("a" owns 'r' "a" 0x00 ..., "a:b" owns 'r' "a:b" 0x00 ...).
// Because seq is big-endian, a channel's records sort by seq, and a channel's
// log is one contiguous key range that a single range deletion can trim.
// Meta keys sort by channel name, which gives Channels its order.
//
// # Value encoding
//
// Record value (version 1):
//
//	0x01 | timestamp (8 bytes, big-endian two's complement int64, unix ms) | message bytes
//
// Meta value (version 1), exactly 17 bytes:
//
//	0x01 | epoch (8 bytes, big-endian) | trimmed-through seq (8 bytes, big-endian)
//
// Ext values are stored as given. Decoders check the version byte and the
// length and return an error wrapping ErrCorrupt for anything else; they never
// panic on stored bytes.
//
// # Durability
//
// Commit(b, true) returns after the write-ahead log holding the batch has been
// fsynced. Commit(b, false) returns once the batch is visible to readers and
// written to the WAL buffer; Sync later makes every such write durable. This
// supports the engine's fsync, batch (timer-driven Sync) and memory durability
// modes.
//
// # Concurrency
//
// A Store is safe for concurrent use. Readers (Scan, Get, Channel, ...) each
// see a consistent point-in-time view. TrimBefore and DeleteChannel are
// serialized with each other; TrimBefore's read-modify-write of a channel's
// meta excludes Commit only for the instant it takes to apply its own small
// batch. A Batch is not safe for concurrent use.
package store
