package core

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"testing"
	"time"

	"github.com/switchboardhq/switchboard/core/position"
	"github.com/switchboardhq/switchboard/core/store"
)

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.UnixMilli(1_700_000_000_000)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// publishBatch publishes n messages (data from..from+n-1) in one request.
func publishBatch(t testing.TB, e *Engine, ch string, from, n int) []PublishResult {
	t.Helper()
	msgs := make([]*Message, n)
	for i := range msgs {
		msgs[i] = &Message{Name: "n", Data: []byte(fmt.Sprint(from + i))}
	}
	res, err := e.Publish(context.Background(), nil, "", "", ch, msgs)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Regression: Guarantee 4 with dedupWindow > resumeWindow
// (a valid configuration): the janitor closes the idle channel after the
// resume window and drops its idempotency index; durable mode rebuilds it
// from the store, whose records retention already trimmed to the resume
// window. A retry inside the dedup window is accepted and delivered twice.
func TestReviewDedupWindowOutlivesIdleChannel(t *testing.T) {
	for _, md := range modes() {
		t.Run(md.name, func(t *testing.T) {
			clk := newFakeClock()
			e, _ := md.build(t, Options{Now: clk.Now, ResumeWindow: time.Minute, DedupWindow: 10 * time.Minute,
				JanitorInterval: 2 * time.Millisecond})
			ctx := context.Background()
			r1, err := e.Publish(ctx, nil, "", "", "dd", []*Message{{ID: "once", Data: []byte("a")}})
			if err != nil {
				t.Fatal(err)
			}
			clk.Advance(3 * time.Minute)      // past the resume window, inside the dedup window
			time.Sleep(50 * time.Millisecond) // let the janitor and retention run
			r2, err := e.Publish(ctx, nil, "", "", "dd", []*Message{{ID: "once", Data: []byte("a")}})
			if err != nil {
				t.Fatal(err)
			}
			if !r2[0].Duplicate || r2[0].Serial != r1[0].Serial {
				t.Fatalf("retry 3m after the original (dedup window 10m) was accepted again: first %+v, retry %+v", r1[0], r2[0])
			}
			// Past the dedup window the channel closes and the id is new again.
			clk.Advance(11 * time.Minute)
			waitFor(t, "idle channel to close", func() bool { return len(e.ActiveChannels("dd", "", 0)) == 0 })
			r3, err := e.Publish(ctx, nil, "", "", "dd", []*Message{{ID: "once", Data: []byte("a")}})
			if err != nil || r3[0].Duplicate {
				t.Fatalf("retry after the dedup window: %+v %v", r3, err)
			}
		})
	}
}

// Regression: Retention trims the store while a resume is being
// replayed from it (the reader is slow, Attach waits in pushWait). catchUp
// finds the gap, queues a continuity event, then jumps to the start of the
// in-memory log: the store-retained messages in between are skipped and the
// attachment still reports Resumed=true with no Continuity.
func TestReviewReplayGapDuringResume(t *testing.T) {
	for _, md := range modes()[1:] {
		t.Run(md.name, func(t *testing.T) {
			clk := newFakeClock()
			e, _ := md.build(t, Options{Now: clk.Now, ChannelMemoryLimit: 10, JanitorInterval: time.Hour,
				Namespace: func(string) NamespaceRules { return NamespaceRules{Persisted: true} }})
			res := publishBatch(t, e, "gap", 0, 1000) // seqs 1..1000 at T
			clk.Advance(time.Second)
			cut := clk.Now().UnixMilli()
			publishBatch(t, e, "gap", 1000, 1000) // seqs 1001..2000 at T+1s

			c := connect(t, e, ConnectOptions{Buffer: 5})
			type result struct {
				a   *Attachment
				err error
			}
			done := make(chan result, 1)
			go func() {
				a, err := c.Attach(context.Background(), "gap", AttachOptions{From: res[1].Serial}) // after seq 2
				done <- result{a, err}
			}()
			// The first store page (3..514) is read; Attach now waits for the reader.
			waitFor(t, "attach to block on a full queue", func() bool { return c.q.len() == 5 })
			if _, err := e.opts.Store.TrimBefore("gap", cut, 0); err != nil { // retention: seqs 1..1000 go
				t.Fatal(err)
			}

			var seqs []uint64
			var contAt = -1
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for len(seqs) == 0 || seqs[len(seqs)-1] != 2000 {
				evs, err := c.Next(ctx, 100)
				if err != nil {
					t.Fatalf("after %d messages: %v", len(seqs), err)
				}
				for _, ev := range evs {
					switch ev.Kind {
					case EventMessage:
						seqs = append(seqs, ev.Message.Serial.Seq)
					case EventContinuity:
						contAt = len(seqs)
					}
				}
			}
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			if contAt < 0 {
				t.Fatalf("no continuity event although seqs 515..1000 were trimmed mid-replay")
			}
			if r.a.Resumed || r.a.Continuity == nil {
				t.Errorf("a continuity event was queued during the replay, but the attachment says Resumed=%v Continuity=%+v", r.a.Resumed, r.a.Continuity)
			}
			if after := seqs[contAt:]; len(after) == 0 || after[0] != 1001 {
				first := uint64(0)
				if len(after) > 0 {
					first = after[0]
				}
				t.Errorf("after the gap delivery resumed at seq %d; seqs 1001..%d are still retained in the store but were skipped", first, first-1)
			}
		})
	}
}

// Regression: rewind=N counts back from ch.next-1, i.e. from
// serials that are sequenced but not yet written, and registers the
// attachment with after = start-1 > delivered. If that write then fails,
// the serials are rolled back and reused by the next accepted messages,
// which the attached subscriber silently skips (after > their seq).
// The store write failure is injected by running the real committer
// process() with a batch of another store, so Commit returns an error.
func TestReviewRewindCountSkipsSerialsReusedAfterFailedWrite(t *testing.T) {
	for _, md := range modes()[1:] {
		t.Run(md.name, func(t *testing.T) {
			e, _ := md.build(t, Options{})
			publishN(t, e, "rb", 0, 10) // seqs 1..10 accepted and delivered

			// A publish of 3 messages is sequenced (seqs 11..13) and queued.
			failed := make(chan error, 1)
			var req *commitReq
			if err := e.withChannel("rb", func(ch *channelState) error {
				msgs := []*Message{{ID: autoID(), Data: []byte("x")}, {ID: autoID(), Data: []byte("y")}, {ID: autoID(), Data: []byte("z")}}
				ch.assignLocked(msgs, e.now())
				req = &commitReq{ch: ch, gen: ch.gen.Load(), msgs: msgs, complete: func(err error) { failed <- err }}
				return nil
			}); err != nil {
				t.Fatal(err)
			}

			// A subscriber attaches with rewind=2 while that write is in flight.
			c := connect(t, e, ConnectOptions{Buffer: 100})
			if _, err := c.Attach(context.Background(), "[?rewind=2]rb", AttachOptions{}); err != nil {
				t.Fatal(err)
			}

			// The write fails (disk full, ...): serials 11..13 are rolled back.
			other, err := store.Open(store.Options{Dir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			b := other.NewBatch()
			defer b.Close()
			e.commit.process(b, []*commitReq{req}, nil)
			if err := <-failed; err == nil {
				t.Fatal("injected store failure did not fail the request")
			}

			// New publishes are accepted and acknowledged as seqs 11..13.
			acked := publishN(t, e, "rb", 10, 3)
			if p, _ := position.Parse(acked[0].Serial); p.Entries()[0].Seq != 11 {
				t.Fatalf("serials not reused gap-free: first new serial %+v", p.Entries())
			}
			var got []uint64
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			for len(got) == 0 || got[len(got)-1] != 13 {
				evs, err := c.Next(ctx, 100)
				if err != nil {
					break
				}
				for _, ev := range evs {
					if ev.Kind == EventMessage {
						got = append(got, ev.Message.Serial.Seq)
					}
				}
			}
			have := map[uint64]bool{}
			for _, s := range got {
				have[s] = true
			}
			for s := uint64(11); s <= 13; s++ {
				if !have[s] {
					t.Fatalf("attached subscriber never received acked seq %d (received %v)", s, got)
				}
			}
		})
	}
}

// Regression: eventQueue.close signals q.space once, so when two Attach calls of
// one connection are both waiting for room during a replay, Close wakes only
// one of them; the other stays blocked until its context ends (forever with
// context.Background: a goroutine leak and a hung adapter).
func TestReviewCloseWakesEveryBlockedAttach(t *testing.T) {
	e, _ := modes()[2].build(t, Options{ChannelMemoryLimit: 2})
	publishN(t, e, "wa", 0, 20)
	publishN(t, e, "wb", 0, 20)
	c, err := e.Connect(devIdentity, ConnectOptions{Buffer: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	type result struct {
		name    string
		err     error
		elapsed time.Duration
	}
	var closedAt time.Time
	var closedMu sync.Mutex
	results := make(chan result, 2)
	for _, name := range []string{"wa", "wb"} {
		go func() {
			_, err := c.Attach(ctx, "[?rewind=20]"+name, AttachOptions{})
			closedMu.Lock()
			el := time.Since(closedAt)
			closedMu.Unlock()
			results <- result{name, err, el}
		}()
	}
	waitFor(t, "queue to fill", func() bool { return c.q.len() == 2 })
	time.Sleep(200 * time.Millisecond) // both replays are now waiting for room
	closedMu.Lock()
	closedAt = time.Now()
	closedMu.Unlock()
	c.Close()
	for range 2 {
		r := <-results
		if r.err == nil || errors.Is(r.err, context.DeadlineExceeded) || r.elapsed > time.Second {
			t.Errorf("Attach %s returned %v %v after Close; want ErrClosed at once", r.name, r.err, r.elapsed.Round(time.Millisecond))
		}
	}
}

// Regression: sweepChannels reads ch.initDone holding only the shard
// lock, while channelState.init writes it under ch.mu.
func TestReviewJanitorInitDoneRace(t *testing.T) {
	e, _ := modes()[0].build(t, Options{JanitorInterval: time.Millisecond})
	for i := range 5 {
		// Open a channel, then stay away from every shard lock for a few
		// sweeps (any later e.channel call would order us after the janitor).
		publishN(t, e, fmt.Sprintf("init-%d", i), 0, 1)
		time.Sleep(10 * time.Millisecond)
	}
}

// Regression: Attachment.Detach and Conn.Close may both detach the
// same attachment; Engine.detach reads a.ch without conn.q.mu while the
// other writes it (a.ch = nil) under conn.q.mu.
func TestReviewDetachCloseRace(t *testing.T) {
	e, _ := modes()[0].build(t, Options{})
	for range 200 {
		c, err := e.Connect(devIdentity, ConnectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		a, err := c.Attach(context.Background(), "dc", AttachOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		wg.Add(2)
		go func() { defer wg.Done(); <-start; c.Close() }()
		go func() { defer wg.Done(); <-start; a.Detach() }()
		close(start)
		wg.Wait()
	}
}

// Regression: Memory mode: an idle channel is closed and reopened with a new
// epoch and seqs from 1. A resume from the old log is reported as
// unknown-position instead of epoch-changed, because the "ahead of the log"
// check runs before the epoch check.
func TestReviewMemoryEpochChangeReason(t *testing.T) {
	clk := newFakeClock()
	e, _ := modes()[0].build(t, Options{Now: clk.Now, ResumeWindow: time.Minute, DedupWindow: time.Minute, JanitorInterval: 2 * time.Millisecond})
	res := publishN(t, e, "ep", 0, 5)
	clk.Advance(2 * time.Minute)
	waitFor(t, "idle channel to close", func() bool { return len(e.ActiveChannels("ep", "", 0)) == 0 })
	clk.Advance(time.Millisecond)
	publishN(t, e, "ep", 5, 1) // new log: epoch changes, seq 1
	c := connect(t, e, ConnectOptions{})
	a, err := c.Attach(context.Background(), "ep", AttachOptions{From: res[4].Serial})
	if err != nil {
		t.Fatal(err)
	}
	if a.Resumed || a.Continuity == nil || a.Continuity.Reason != ReasonEpochChanged {
		t.Fatalf("resume from a previous log: resumed=%v continuity=%+v, want %s", a.Resumed, a.Continuity, ReasonEpochChanged)
	}
}

// With fan-out stalled behind an
// acknowledged publish, resume exactly at the acked-but-undelivered serial,
// resume before it, and rewind over it: no gap and no duplicate at the seam.
func TestReviewResumeAtAckedNotYetFannedOut(t *testing.T) {
	for _, md := range modes()[1:] {
		t.Run(md.name, func(t *testing.T) {
			e, _ := md.build(t, Options{})
			publishN(t, e, "seam", 0, 5) // seqs 1..5 delivered
			// Stall the fan-out worker of "seam" on a channel lock we hold.
			blocker := &channelState{}
			blocker.mu.Lock()
			idx := maphash.String(e.commit.seed, "seam") % uint64(len(e.commit.fanout))
			e.commit.fanout[idx] <- &commitReq{ch: blocker}
			acked := publishN(t, e, "seam", 5, 3) // seqs 6..8: acked, not fanned out

			ctx := context.Background()
			atAck := connect(t, e, ConnectOptions{})
			a1, err := atAck.Attach(ctx, "seam", AttachOptions{From: acked[2].Serial}) // after 8
			if err != nil || !a1.Resumed || a1.Continuity != nil {
				t.Fatalf("resume at acked serial: %v %+v", err, a1)
			}
			before := connect(t, e, ConnectOptions{})
			if a, err := before.Attach(ctx, "seam", AttachOptions{From: acked[0].Serial}); err != nil || !a.Resumed { // after 6
				t.Fatalf("resume before acked serial: %v %+v", err, a)
			}
			rew := connect(t, e, ConnectOptions{})
			if _, err := rew.Attach(ctx, "[?rewind=2]seam", AttachOptions{}); err != nil {
				t.Fatal(err)
			}
			blocker.mu.Unlock()
			publishN(t, e, "seam", 8, 1) // seq 9

			m1, _ := collect(t, atAck, 1)
			checkSeq(t, m1, 8)
			m2, _ := collect(t, before, 3)
			checkSeq(t, m2, 6)
			m3, _ := collect(t, rew, 3)
			checkSeq(t, m3, 6)
			expectQuiet(t, atAck)
			expectQuiet(t, before)
			expectQuiet(t, rew)
		})
	}
}

// Regression: the in-memory part of a rewind larger than the connection's
// buffer must not overfill the queue (which made the very next live message
// drop the attachment as a slow consumer); Attach waits for the reader.
func TestReviewRewindLargerThanBufferDropsAttachment(t *testing.T) {
	for _, md := range modes() {
		t.Run(md.name, func(t *testing.T) {
			e, _ := md.build(t, Options{})
			publishN(t, e, "big", 0, 50)
			waitFor(t, "fan-out", func() bool {
				var d uint64
				_ = e.withChannel("big", func(ch *channelState) error { d = ch.delivered; return nil })
				return d == 50
			})
			c := connect(t, e, ConnectOptions{Buffer: 10})
			type result struct {
				msgs  []*Message
				conts []*Continuity
				err   error
			}
			rc := make(chan result, 1)
			go func() {
				m, cs, err := tryCollect(c, 51)
				rc <- result{m, cs, err}
			}()
			if _, err := c.Attach(context.Background(), "[?rewind=50]big", AttachOptions{}); err != nil {
				t.Fatal(err)
			}
			publishN(t, e, "big", 50, 1) // a live message right after the replay
			r := <-rc
			if r.err != nil || len(r.conts) > 0 {
				t.Fatalf("rewind=50 with buffer 10, then 1 live message: %v, continuity %+v", r.err, r.conts)
			}
			checkSeq(t, r.msgs, 0)
		})
	}
}
