package client

import (
	"context"
	"time"
)

// pendingOp is a message or presence frame waiting for its ack. It is sent
// again, unchanged, on every new connection until acknowledged; message
// ids make the retry harmless.
type pendingOp struct {
	serial int64
	frame  map[string]any
	done   chan struct{}
	res    []PublishResult
	err    error
}

func (p *pendingOp) finish(res []PublishResult, err error) {
	select {
	case <-p.done:
		return
	default:
	}
	p.res, p.err = res, err
	close(p.done)
}

// submit queues a frame needing an ack (msgSerial is set here), sends it
// if connected, and waits for the ack or ctx. A publish cancelled by ctx
// may still be accepted later (retries keep its ids).
func (c *Client) submit(ctx context.Context, frame map[string]any) ([]PublishResult, error) {
	c.mu.Lock()
	switch c.state {
	case StateClosing, StateClosed:
		c.mu.Unlock()
		return nil, ErrClosed
	case StateFailed:
		err := c.lastErr
		c.mu.Unlock()
		return nil, err
	case StateSuspended:
		c.mu.Unlock()
		return nil, ErrSuspended
	}
	if c.link == nil && len(c.pending) >= c.opts.MaxQueuedPublishes {
		c.mu.Unlock()
		return nil, ErrQueueFull
	}
	p := &pendingOp{serial: c.nextMsgSerial, frame: frame, done: make(chan struct{})}
	c.nextMsgSerial++
	frame["msgSerial"] = p.serial
	c.pending = append(c.pending, p)
	l := c.link
	c.mu.Unlock()
	if l != nil {
		_ = l.send(frame) // on failure the reconnect sends it again
	}
	select {
	case <-p.done:
		return p.res, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// acked resolves the pending operations an ack or nack covers.
func (c *Client) acked(f *serverFrame) {
	count := max(f.Count, 1)
	c.mu.Lock()
	var done []*pendingOp
	keep := c.pending[:0]
	for _, p := range c.pending {
		if p.serial >= f.MsgSerial && p.serial < f.MsgSerial+int64(count) {
			done = append(done, p)
			continue
		}
		keep = append(keep, p)
	}
	clear(c.pending[len(keep):])
	c.pending = keep
	c.mu.Unlock()
	var res []PublishResult
	for _, r := range f.Results {
		pr := PublishResult{ID: r.ID, Serial: r.Serial, Duplicate: r.Duplicate}
		if r.Timestamp != 0 {
			pr.Timestamp = time.UnixMilli(r.Timestamp)
		}
		res = append(res, pr)
	}
	for _, p := range done {
		if f.Action == "nack" {
			var err error = f.Error
			if f.Error == nil {
				err = &Error{Message: "refused by the server"}
			}
			p.finish(nil, err)
			continue
		}
		p.finish(res, nil)
	}
}

// takeQueuedLocked removes every pending operation (the connection is
// suspended: they fail rather than wait indefinitely).
func (c *Client) takeQueuedLocked() []*pendingOp {
	p := c.pending
	c.pending = nil
	return p
}
