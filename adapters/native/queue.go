package native

import "sync"

// boundedQueue is a FIFO of at most limit items that allocates only as it
// fills: a buffered channel of the same bound would hold its whole
// capacity on every idle connection.
type boundedQueue[T any] struct {
	mu      sync.Mutex
	items   []T
	head    int
	limit   int
	running bool          // a worker is draining the queue (see pushStart)
	ready   chan struct{} // signalled when items were pushed
}

func newBoundedQueue[T any](limit int) *boundedQueue[T] {
	return &boundedQueue[T]{limit: limit, ready: make(chan struct{}, 1)}
}

// push appends v and reports false when the queue is full.
func (q *boundedQueue[T]) push(v T) bool {
	ok, _ := q.pushStart(v)
	return ok
}

// pushStart appends v and also reports whether the caller must start a
// worker to drain the queue: true once per worker, until that worker's pop
// finds the queue empty.
func (q *boundedQueue[T]) pushStart(v T) (ok, start bool) {
	q.mu.Lock()
	if len(q.items)-q.head >= q.limit {
		q.mu.Unlock()
		return false, false
	}
	q.items = append(q.items, v)
	if !q.running {
		q.running, start = true, true
	}
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true, start
}

// pop removes the oldest item. When the queue is empty it reports false and
// marks the worker as gone, so that the next pushStart starts another.
func (q *boundedQueue[T]) pop() (T, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var zero T
	if q.head == len(q.items) {
		q.running = false
		if cap(q.items) > 16 {
			q.items = nil // an idle connection keeps no burst-sized buffer
		} else {
			q.items = q.items[:0]
		}
		q.head = 0
		return zero, false
	}
	v := q.items[q.head]
	q.items[q.head] = zero
	q.head++
	return v, true
}
