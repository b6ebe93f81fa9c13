package core

// ring is a channel's in-memory log: the most recent delivered messages,
// contiguous in seq, bounded by a count. It grows on demand so that idle
// channels cost nothing.
type ring struct {
	buf   []*Message
	head  int    // index of the oldest message
	n     int    // number of messages
	limit int    // maximum number of messages
	start uint64 // seq of the oldest message (or of the next one when empty)
}

func (r *ring) init(limit int, next uint64) {
	r.limit = limit
	r.start = next
}

func (r *ring) len() int { return r.n }

// first is the seq of the oldest message held.
func (r *ring) first() uint64 { return r.start }

// last is the seq of the newest message held (first-1 when empty).
func (r *ring) last() uint64 { return r.start + uint64(r.n) - 1 }

func (r *ring) push(m *Message) {
	if r.n == 0 {
		r.start = m.Serial.Seq
	}
	if r.n == len(r.buf) {
		if len(r.buf) < r.limit {
			r.grow()
		} else {
			r.buf[r.head] = nil
			r.head = (r.head + 1) % len(r.buf)
			r.n--
			r.start++
		}
	}
	r.buf[(r.head+r.n)%len(r.buf)] = m
	r.n++
}

func (r *ring) grow() {
	size := min(max(2*len(r.buf), 8), r.limit)
	buf := make([]*Message, size)
	for i := 0; i < r.n; i++ {
		buf[i] = r.buf[(r.head+i)%len(r.buf)]
	}
	r.buf, r.head = buf, 0
}

// at returns the message with the given seq, which must be held.
func (r *ring) at(seq uint64) *Message {
	return r.buf[(r.head+int(seq-r.start))%len(r.buf)]
}

// slice returns the messages with seq in [from, to], which must be held.
func (r *ring) slice(from, to uint64) []*Message {
	if to < from {
		return nil
	}
	out := make([]*Message, 0, to-from+1)
	for s := from; s <= to; s++ {
		out = append(out, r.at(s))
	}
	return out
}

// seqAtTime returns the first held seq whose timestamp is >= ts, or
// last()+1 when none is.
func (r *ring) seqAtTime(ts int64) uint64 {
	lo, hi := 0, r.n
	for lo < hi {
		mid := (lo + hi) / 2
		if r.buf[(r.head+mid)%len(r.buf)].Timestamp < ts {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return r.start + uint64(lo)
}

// dropOlderThan removes messages with a timestamp before ts and releases
// the buffer when the ring becomes empty.
func (r *ring) dropOlderThan(ts int64) {
	for r.n > 0 && r.buf[r.head].Timestamp < ts {
		r.buf[r.head] = nil
		r.head = (r.head + 1) % len(r.buf)
		r.n--
		r.start++
	}
	if r.n == 0 {
		r.buf, r.head = nil, 0
	}
}
