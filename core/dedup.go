package core

// future is the outcome of a publish, shared with duplicate publishes that
// arrive while it is still in flight.
type future struct {
	done   chan struct{}
	result PublishResult
	err    error
}

func newFuture() *future { return &future{done: make(chan struct{})} }

func resolvedFuture(r PublishResult) *future {
	f := &future{done: make(chan struct{}), result: r}
	close(f.done)
	return f
}

func (f *future) resolve(r PublishResult, err error) {
	f.result, f.err = r, err
	close(f.done)
}

// failed reports whether the future completed with an error.
func (f *future) failed() bool {
	select {
	case <-f.done:
		return f.err != nil
	default:
		return false
	}
}

type dedupEntry struct {
	id     string
	at     int64 // ms
	result *future
}

// dedupIndex remembers the client-supplied ids of a channel's recent
// messages, in acceptance order, for the dedup window.
type dedupIndex struct {
	byID  map[string]*future
	order []dedupEntry // FIFO; head at order[0]
}

func newDedupIndex() *dedupIndex { return &dedupIndex{byID: make(map[string]*future)} }

func (d *dedupIndex) len() int { return len(d.byID) }

func (d *dedupIndex) add(e dedupEntry) {
	d.byID[e.id] = e.result
	d.order = append(d.order, e)
}

// lookup finds a live entry for id. It is safe on a nil index.
func (d *dedupIndex) lookup(id string) (*future, bool) {
	if d == nil {
		return nil, false
	}
	f, ok := d.byID[id]
	if ok && f.failed() {
		delete(d.byID, id)
		return nil, false
	}
	return f, ok
}

// expire forgets ids accepted before cutoff, and the oldest ids beyond max.
func (d *dedupIndex) expire(cutoff int64, max int) {
	i := 0
	for i < len(d.order) && (d.order[i].at < cutoff || len(d.order)-i > max) {
		e := d.order[i]
		if d.byID[e.id] == e.result {
			delete(d.byID, e.id)
		}
		i++
	}
	if i > 0 {
		d.order = append(d.order[:0:0], d.order[i:]...)
	}
}
