package core

import (
	"context"
	"time"

	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/core/channel"
	"github.com/switchboardhq/switchboard/core/position"
	"github.com/switchboardhq/switchboard/core/store"
)

// Direction orders history.
type Direction int

// History directions.
const (
	Backwards Direction = iota // newest first (default)
	Forwards                   // oldest first
)

// ParseDirection parses "forwards" or "backwards" ("" is backwards).
func ParseDirection(s string) (Direction, error) {
	switch s {
	case "", "backwards":
		return Backwards, nil
	case "forwards":
		return Forwards, nil
	}
	return 0, apierr.New(apierr.InvalidParameter, "direction %q must be forwards or backwards", s)
}

// History limits.
const (
	DefaultHistoryLimit = 100
	MaxHistoryLimit     = 1000
)

// HistoryQuery selects messages of one channel.
type HistoryQuery struct {
	Channel string
	// Start and End bound message timestamps (inclusive); zero is unbounded.
	Start, End time.Time
	Direction  Direction
	Limit      int // default 100, max 1000
	// From continues after this position (exclusive) in Direction: the
	// cursor of the previous page, or any channel serial.
	From string
}

// HistoryPage is one page of history.
type HistoryPage struct {
	Messages []*Message
	// Next is the From of the next page; "" when this is the last one.
	Next string
}

// History returns retained messages of a channel.
func (e *Engine) History(_ context.Context, id *auth.Identity, q HistoryQuery) (HistoryPage, error) {
	if err := channel.ValidateName(q.Channel); err != nil {
		return HistoryPage{}, err
	}
	if id != nil {
		if err := id.Check(q.Channel, auth.OpHistory); err != nil {
			return HistoryPage{}, err
		}
	}
	switch {
	case q.Limit == 0:
		q.Limit = DefaultHistoryLimit
	case q.Limit < 0 || q.Limit > MaxHistoryLimit:
		return HistoryPage{}, apierr.New(apierr.InvalidParameter, "limit must be between 1 and %d", MaxHistoryLimit)
	}
	if !q.Start.IsZero() && !q.End.IsZero() && q.End.Before(q.Start) {
		return HistoryPage{}, apierr.New(apierr.InvalidParameter, "end is before start")
	}
	var from position.Serial
	hasFrom := q.From != ""
	if hasFrom {
		p, err := position.Parse(q.From)
		if err != nil {
			return HistoryPage{}, err
		}
		s, ok := p.Get(e.opts.Region)
		if !ok {
			return HistoryPage{}, apierr.New(apierr.InvalidPosition, "position has no serial for region %q", e.opts.Region)
		}
		from = s
	}
	if e.opts.Store != nil {
		return e.storeHistory(q, from, hasFrom)
	}
	return e.memoryHistory(q, from, hasFrom)
}

// bounds narrows [lo, hi] by the cursor.
func narrow(q HistoryQuery, from position.Serial, hasFrom bool, lo, hi uint64) (uint64, uint64) {
	if !hasFrom {
		return lo, hi
	}
	if q.Direction == Forwards {
		return max(lo, from.Seq+1), hi
	}
	if from.Seq == 0 {
		return 1, 0
	}
	return lo, min(hi, from.Seq-1)
}

func (e *Engine) storeHistory(q HistoryQuery, from position.Serial, hasFrom bool) (HistoryPage, error) {
	st := e.opts.Store
	meta, first, last, found, err := st.Channel(q.Channel)
	if err != nil {
		return HistoryPage{}, apierr.Wrap(err, apierr.StorageFailure, "reading history of %q", q.Channel)
	}
	if !found || first == 0 {
		return HistoryPage{Messages: []*Message{}}, nil
	}
	if hasFrom && from.Epoch != meta.Epoch {
		return HistoryPage{}, apierr.New(apierr.InvalidPosition, "position belongs to an earlier log of channel %q", q.Channel)
	}
	lo, hi := first, last
	if !q.Start.IsZero() {
		s, ok, err := st.SeqAtTime(q.Channel, q.Start.UnixMilli())
		if err != nil {
			return HistoryPage{}, apierr.Wrap(err, apierr.StorageFailure, "reading history of %q", q.Channel)
		}
		if !ok {
			return HistoryPage{Messages: []*Message{}}, nil
		}
		lo = max(lo, s)
	}
	if !q.End.IsZero() {
		s, ok, err := st.SeqAtTime(q.Channel, q.End.UnixMilli()+1)
		if err != nil {
			return HistoryPage{}, apierr.Wrap(err, apierr.StorageFailure, "reading history of %q", q.Channel)
		}
		if ok {
			if s == 0 {
				return HistoryPage{Messages: []*Message{}}, nil
			}
			hi = min(hi, s-1)
		}
	}
	lo, hi = narrow(q, from, hasFrom, lo, hi)
	page := HistoryPage{Messages: make([]*Message, 0, min(q.Limit, 64))}
	if lo > hi {
		return page, nil
	}
	var decodeErr error
	more := false
	err = st.Scan(q.Channel, lo, hi, q.Direction == Backwards, func(r store.Record) bool {
		if len(page.Messages) == q.Limit {
			more = true
			return false
		}
		m, err := decodeRecord(q.Channel, r.Value)
		if err != nil {
			decodeErr = err
			return false
		}
		page.Messages = append(page.Messages, m)
		return true
	})
	if err == nil {
		err = decodeErr
	}
	if err != nil {
		return HistoryPage{}, apierr.Wrap(err, apierr.StorageFailure, "reading history of %q", q.Channel)
	}
	if more {
		page.Next = page.Messages[len(page.Messages)-1].Position
	}
	return page, nil
}

func (e *Engine) memoryHistory(q HistoryQuery, from position.Serial, hasFrom bool) (HistoryPage, error) {
	page := HistoryPage{Messages: []*Message{}}
	ch := e.lookup(q.Channel)
	if ch == nil {
		if hasFrom {
			return HistoryPage{}, apierr.New(apierr.InvalidPosition, "position belongs to an earlier log of channel %q", q.Channel)
		}
		return page, nil
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed || ch.log.len() == 0 {
		return page, nil
	}
	if hasFrom && from.Epoch != ch.epoch {
		return HistoryPage{}, apierr.New(apierr.InvalidPosition, "position belongs to an earlier log of channel %q", q.Channel)
	}
	lo, hi := ch.log.first(), ch.log.last()
	if !q.Start.IsZero() {
		lo = max(lo, ch.log.seqAtTime(q.Start.UnixMilli()))
	}
	if !q.End.IsZero() {
		hi = min(hi, ch.log.seqAtTime(q.End.UnixMilli()+1)-1)
	}
	lo, hi = narrow(q, from, hasFrom, lo, hi)
	if lo > hi || lo == 0 {
		return page, nil
	}
	n := hi - lo + 1
	take := min(n, uint64(q.Limit))
	if q.Direction == Forwards {
		page.Messages = ch.log.slice(lo, lo+take-1)
	} else {
		for s := hi; s+take > hi; s-- {
			page.Messages = append(page.Messages, ch.log.at(s))
		}
	}
	if n > take {
		page.Next = page.Messages[len(page.Messages)-1].Position
	}
	return page, nil
}
