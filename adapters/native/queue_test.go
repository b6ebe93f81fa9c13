package native

import "testing"

func TestBoundedQueue(t *testing.T) {
	q := newBoundedQueue[int](3)
	if ok, start := q.pushStart(1); !ok || !start {
		t.Fatalf("first push: ok=%v start=%v", ok, start)
	}
	if ok, start := q.pushStart(2); !ok || start {
		t.Fatalf("second push while a worker runs: ok=%v start=%v", ok, start)
	}
	if !q.push(3) || q.push(4) {
		t.Fatal("the bound of 3 was not enforced")
	}
	for want := 1; want <= 3; want++ {
		if v, ok := q.pop(); !ok || v != want {
			t.Fatalf("pop = %d %v, want %d", v, ok, want)
		}
	}
	if _, ok := q.pop(); ok {
		t.Fatal("pop from an empty queue")
	}
	// The worker is gone: the next push starts one.
	if ok, start := q.pushStart(5); !ok || !start {
		t.Fatalf("push after the worker left: ok=%v start=%v", ok, start)
	}
	select {
	case <-q.ready:
	default:
		t.Fatal("push did not signal")
	}
}
