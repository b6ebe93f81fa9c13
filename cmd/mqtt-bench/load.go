package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A load run: subscribers connect and subscribe first, then the publishing
// connections connect, then sender goroutines publish (closed loop within
// their windows, or paced at -rate) through a warm-up and the measurement
// window, then everything still in flight drains.
//
// Flow control keeps the broker's queues short so that the peak numbers
// describe a saturated broker, not a growing backlog:
//   - inflight: each sender has at most this many messages that were sent
//     but not yet received by every subscriber they are meant for;
//   - window: with QoS 1, each publishing connection has at most this many
//     publishes waiting for their PUBACK.

// topology is what a scenario connects.
type topology struct {
	subFilters []string         // one subscriber per filter
	pubTopic   func(int) string // topic of publishing connection i
	fanout     int64            // deliveries each publish should produce
}

// pubConn is one publishing connection.
type pubConn struct {
	idx    int
	c      net.Conn
	tpl    *publishTemplate
	acks   *gate // QoS 1: publishes awaiting PUBACK
	nextID uint16
	acked  atomic.Int64
}

// sender is a goroutine publishing round-robin over its connections.
type sender struct {
	idx      int
	conns    []*pubConn
	inflight *gate
	pace     *pacer
	inWindow int64 // publishes whose timestamp lies in the window
	writeErr error
}

// subscriber is one subscribing connection read by its own goroutine.
type subscriber struct {
	idx       int
	c         net.Conn
	received  atomic.Int64   // every PUBLISH
	inWindow  atomic.Int64   // PUBLISH sent inside the window
	firstSeen []atomic.Int64 // per publishing connection: first receive time, for coverage
}

type loadRun struct {
	cfg     *config
	top     topology
	win     *window
	lat     *latencies
	subs    []*subscriber
	pubs    []*pubConn
	senders []*sender
	stop    chan struct{}
	readers sync.WaitGroup
	errs    errOnce
	// publishStart is when the senders started (epoch ns).
	publishStart int64
}

// errOnce keeps the first error reported from any goroutine.
type errOnce struct {
	mu  sync.Mutex
	err error
	n   int
}

func (e *errOnce) set(err error) {
	e.mu.Lock()
	if e.err == nil {
		e.err = err
	}
	e.n++
	e.mu.Unlock()
}

// first returns the first error and how many were reported.
func (e *errOnce) first() (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n, e.err
}

// parallel runs fn(i) for i in [0, n) from workers goroutines and returns
// the first error.
func parallel(n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var errs errOnce
	var wg sync.WaitGroup
	for range min(workers, max(n, 1)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if _, err := errs.first(); err != nil {
					return
				}
				if err := fn(i); err != nil {
					errs.set(err)
				}
			}
		})
	}
	wg.Wait()
	_, err := errs.first()
	return err
}

func runLoad(cfg *config, top topology) (*result, error) {
	r := &loadRun{cfg: cfg, top: top, win: newWindow(), lat: newLatencies(), stop: make(chan struct{})}
	res := &result{
		Scenario: cfg.scenario, Broker: cfg.label, QoS: cfg.qos, SubQoS: cfg.subQoS, Size: cfg.size,
		Publishers: cfg.pubs, Subscribers: len(top.subFilters), Senders: cfg.senders,
		Window: cfg.window, Inflight: cfg.inflight, OfferedRate: cfg.rate,
	}
	defer r.closeAll()

	// Subscribers first, so that no publish can miss them.
	connectStart := time.Now()
	r.subs = make([]*subscriber, len(top.subFilters))
	err := parallel(len(r.subs), cfg.dialers, func(i int) error {
		c, err := dial(cfg.broker, fmt.Sprintf("%s-sub-%d", cfg.clientPrefix, i), cfg.keepalive, cfg.timeout)
		if err != nil {
			return err
		}
		s := &subscriber{idx: i, c: c}
		r.subs[i] = s
		return subscribe(c, top.subFilters[i], byte(cfg.subQoS), cfg.timeout)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribers: %w", err)
	}
	if cfg.coverage {
		for _, s := range r.subs {
			s.firstSeen = make([]atomic.Int64, cfg.pubs)
		}
	}
	for _, s := range r.subs {
		r.readers.Add(1)
		go r.readSubscriber(s)
	}

	// Publishing connections.
	r.pubs = make([]*pubConn, cfg.pubs)
	err = parallel(cfg.pubs, cfg.dialers, func(i int) error {
		c, err := dial(cfg.broker, fmt.Sprintf("%s-pub-%d", cfg.clientPrefix, i), cfg.keepalive, cfg.timeout)
		if err != nil {
			return err
		}
		p := &pubConn{idx: i, c: c, tpl: newPublishTemplate(top.pubTopic(i), byte(cfg.qos), cfg.size)}
		if cfg.qos > 0 {
			p.acks = newGate(cfg.window)
		}
		r.pubs[i] = p
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("publishers: %w", err)
	}
	for _, p := range r.pubs {
		if p.acks != nil {
			r.readers.Add(1)
			go r.readAcks(p)
		}
	}
	res.ConnectSeconds = time.Since(connectStart).Seconds()
	res.Connections = len(r.subs) + len(r.pubs)

	// Senders: connection i belongs to sender i % senders.
	r.senders = make([]*sender, cfg.senders)
	for i := range r.senders {
		s := &sender{idx: i}
		if cfg.inflight > 0 {
			s.inflight = newGate(cfg.inflight * int(top.fanout))
		}
		r.senders[i] = s
	}
	for i, p := range r.pubs {
		s := r.senders[i%len(r.senders)]
		s.conns = append(s.conns, p)
	}
	r.publishStart = now()
	var sendersDone sync.WaitGroup
	for _, s := range r.senders {
		if cfg.rate > 0 {
			s.pace = newPacer(cfg.rate/float64(len(r.senders)), r.publishStart)
		}
		sendersDone.Go(func() { r.send(s) })
	}

	// Warm-up, then the measurement window.
	time.Sleep(cfg.warmup)
	r.win.start.Store(now())
	t0, recv0 := time.Now(), r.received()
	acked0, cpu0 := r.acked(), sampleCPU(cfg.pid)
	time.Sleep(cfg.duration)
	r.win.end.Store(now())
	elapsed, recv1 := time.Since(t0), r.received()
	acked1, cpu1 := r.acked(), sampleCPU(cfg.pid)
	res.CPU = cpuBetween(cpu0, cpu1, elapsed.Seconds())
	close(r.stop)
	sendersDone.Wait()

	// Drain: wait for what was sent inside the window, until everything
	// expected arrived or nothing arrived for a while.
	for _, s := range r.senders {
		res.Published += s.inWindow
		res.Stalls += stallsOf(s.inflight)
		if s.writeErr != nil {
			r.errs.set(s.writeErr)
		}
	}
	for _, p := range r.pubs {
		res.Stalls += stallsOf(p.acks)
	}
	res.Expected = res.Published * top.fanout
	last, lastChange := r.inWindow(), time.Now()
	drainStart := time.Now()
	for deadline := drainStart.Add(cfg.drain); time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		n := r.inWindow()
		if n >= res.Expected || time.Since(lastChange) > cfg.drainQuiet {
			break
		}
		if n != last {
			last, lastChange = n, time.Now()
		}
	}

	res.DrainSeconds = time.Since(drainStart).Seconds()
	secs := elapsed.Seconds()
	res.Seconds = secs
	res.MsgRate = float64(recv1-recv0) / secs
	res.PubRate = float64(res.Published) / secs
	if cfg.qos > 0 {
		res.AckRate = float64(acked1-acked0) / secs
	}
	res.Delivered = r.inWindow()
	res.Lost = max(res.Expected-res.Delivered, 0)
	res.setLatency(r.lat.merged())
	if cfg.coverage {
		res.CoverageSeconds = r.coverage()
	}
	if n, err := r.errs.first(); err != nil {
		res.Errors = n
		res.FirstError = err.Error()
	}
	return res, nil
}

func stallsOf(g *gate) int {
	if g == nil {
		return 0
	}
	return g.stalls
}

func (r *loadRun) received() (n int64) {
	for _, s := range r.subs {
		n += s.received.Load()
	}
	return n
}

func (r *loadRun) inWindow() (n int64) {
	for _, s := range r.subs {
		n += s.inWindow.Load()
	}
	return n
}

func (r *loadRun) acked() (n int64) {
	for _, p := range r.pubs {
		n += p.acked.Load()
	}
	return n
}

// coverage is how long after the senders started every publishing
// connection had at least one message received (by every subscriber), in
// seconds; -1 if some never had.
func (r *loadRun) coverage() float64 {
	var last int64
	for _, s := range r.subs {
		for i := range s.firstSeen {
			t := s.firstSeen[i].Load()
			if t == 0 {
				return -1
			}
			last = max(last, t)
		}
	}
	return float64(last-r.publishStart) / 1e9
}

// send publishes until stop is closed.
func (r *loadRun) send(s *sender) {
	cfg := r.cfg
	fanout := r.top.fanout
	for i := 0; ; i++ {
		p := s.conns[i%len(s.conns)]
		var sentAt int64
		if s.pace != nil {
			var ok bool
			if sentAt, ok = s.pace.wait(r.stop); !ok {
				return
			}
		} else {
			select {
			case <-r.stop:
				return
			default:
			}
		}
		if s.inflight != nil && !s.inflight.take(fanout, r.stop) {
			return
		}
		if p.acks != nil && !p.acks.take(1, r.stop) {
			return
		}
		if s.pace == nil {
			sentAt = now()
		}
		putPayloadHeader(p.tpl.payload(), header{sentAt: sentAt, sender: uint32(s.idx), conn: uint32(p.idx)})
		if cfg.qos > 0 {
			if p.nextID++; p.nextID == 0 {
				p.nextID = 1
			}
			p.tpl.setID(p.nextID)
		}
		if _, err := p.c.Write(p.tpl.buf); err != nil {
			if s.writeErr == nil {
				s.writeErr = fmt.Errorf("publish on connection %d: %w", p.idx, err)
			}
			// Give the units back: this message will never arrive.
			if s.inflight != nil {
				s.inflight.release(fanout)
			}
			if p.acks != nil {
				p.acks.release(1)
			}
			select {
			case <-r.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		if r.win.contains(sentAt) {
			s.inWindow++
		}
	}
}

// readSubscriber receives publishes, records their latency, returns
// in-flight units to their sender and acknowledges QoS 1 deliveries (the
// PUBACKs of one read are written together).
func (r *loadRun) readSubscriber(s *subscriber) {
	defer r.readers.Done()
	br := bufio.NewReaderSize(s.c, r.cfg.readBuffer)
	pr := newPacketReader(br)
	var acks []byte
	for {
		typ, flags, body, err := pr.next()
		if err != nil {
			if !r.ended(err) {
				r.errs.set(fmt.Errorf("subscriber %d: %w", s.idx, err))
			}
			return
		}
		if typ == typePublish {
			t := now()
			id, payload, err := publishBody(flags, body)
			if err != nil {
				r.errs.set(fmt.Errorf("subscriber %d: %w", s.idx, err))
				return
			}
			s.received.Add(1)
			if h, ok := parsePayloadHeader(payload); ok {
				if r.win.contains(h.sentAt) {
					r.lat.record(s.idx, t-h.sentAt)
					s.inWindow.Add(1)
				}
				if int(h.sender) < len(r.senders) {
					if g := r.senders[h.sender].inflight; g != nil {
						g.release(1)
					}
				}
				if int(h.conn) < len(s.firstSeen) && s.firstSeen[h.conn].Load() == 0 {
					s.firstSeen[h.conn].Store(t)
				}
			}
			if (flags>>1)&3 > 0 {
				acks = appendPuback(acks, id)
			}
		}
		if len(acks) > 0 && br.Buffered() == 0 {
			if _, err := s.c.Write(acks); err != nil {
				if !r.ended(err) {
					r.errs.set(fmt.Errorf("subscriber %d PUBACK: %w", s.idx, err))
				}
				return
			}
			acks = acks[:0]
		}
	}
}

// readAcks reads the PUBACKs of a QoS 1 publishing connection.
func (r *loadRun) readAcks(p *pubConn) {
	defer r.readers.Done()
	pr := newPacketReader(bufio.NewReaderSize(p.c, 512))
	for {
		typ, _, _, err := pr.next()
		if err != nil {
			if !r.ended(err) {
				r.errs.set(fmt.Errorf("publisher %d: %w", p.idx, err))
			}
			return
		}
		if typ == typePuback {
			p.acked.Add(1)
			p.acks.release(1)
		}
	}
}

// closeAll disconnects every connection and waits for the readers.
func (r *loadRun) closeAll() {
	_ = parallel(len(r.pubs), r.cfg.dialers, func(i int) error {
		if p := r.pubs[i]; p != nil {
			disconnect(p.c)
		}
		return nil
	})
	_ = parallel(len(r.subs), r.cfg.dialers, func(i int) error {
		if s := r.subs[i]; s != nil {
			disconnect(s.c)
		}
		return nil
	})
	r.readers.Wait()
}

// ended reports whether a read error only says that the run is over: the
// connection was closed here, or by the broker after the DISCONNECT sent at
// the end. An end of file before that is the broker dropping the client.
func (r *loadRun) ended(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return true
	}
	select {
	case <-r.stop:
		return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
	default:
		return false
	}
}
