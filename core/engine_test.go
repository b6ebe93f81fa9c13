package core

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/core/channel"
	"github.com/switchboardhq/switchboard/core/position"
	"github.com/switchboardhq/switchboard/core/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var devIdentity = &auth.Identity{Dev: true, ClientID: "tester"}

type modeSetup struct {
	name  string
	build func(t *testing.T, opts Options) (*Engine, func() *Engine)
}

// modes returns engine builders for every durability mode; the second
// function restarts the engine on the same store (durable modes only).
func modes() []modeSetup {
	durable := func(d Durability) func(t *testing.T, opts Options) (*Engine, func() *Engine) {
		return func(t *testing.T, opts Options) (*Engine, func() *Engine) {
			dir := t.TempDir()
			st, err := store.Open(store.Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			opts.Durability, opts.Store = d, st
			e := mustEngine(t, opts)
			var cur = e
			t.Cleanup(func() { _ = cur.Close(context.Background()); _ = st.Close() })
			restart := func() *Engine {
				if err := cur.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
				cur = mustEngine(t, opts)
				return cur
			}
			return e, restart
		}
	}
	return []modeSetup{
		{"memory", func(t *testing.T, opts Options) (*Engine, func() *Engine) {
			opts.Durability = DurabilityMemory
			e := mustEngine(t, opts)
			t.Cleanup(func() { _ = e.Close(context.Background()) })
			return e, nil
		}},
		{"batch", durable(DurabilityBatch)},
		{"fsync", durable(DurabilityFsync)},
	}
}

func mustEngine(t testing.TB, opts Options) *Engine {
	t.Helper()
	e, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func connect(t testing.TB, e *Engine, opts ConnectOptions) *Conn {
	t.Helper()
	c, err := e.Connect(devIdentity, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func publishN(t testing.TB, e *Engine, ch string, from, n int) []PublishResult {
	t.Helper()
	var out []PublishResult
	for i := from; i < from+n; i++ {
		res, err := e.Publish(context.Background(), nil, "", "", ch, []*Message{{Name: "n", Data: []byte(fmt.Sprint(i))}})
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		out = append(out, res...)
	}
	return out
}

// collect reads message events until n messages or a timeout.
func collect(t testing.TB, c *Conn, n int) (msgs []*Message, conts []*Continuity) {
	t.Helper()
	msgs, conts, err := tryCollect(c, n)
	if err != nil {
		t.Fatal(err)
	}
	return msgs, conts
}

// tryCollect is collect for goroutines other than the test's.
func tryCollect(c *Conn, n int) (msgs []*Message, conts []*Continuity, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for len(msgs) < n {
		evs, err := c.Next(ctx, n-len(msgs))
		if err != nil {
			return msgs, conts, fmt.Errorf("after %d of %d messages (%v): %w", len(msgs), n, datas(msgs), err)
		}
		for _, ev := range evs {
			switch ev.Kind {
			case EventMessage:
				msgs = append(msgs, ev.Message)
			case EventContinuity:
				conts = append(conts, ev.Continuity)
			}
		}
	}
	return msgs, conts, nil
}

func expectQuiet(t testing.TB, c *Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if evs, err := c.Next(ctx, 10); err == nil {
		t.Fatalf("unexpected events: %+v (first message %+v)", evs, evs[0].Message)
	}
}

func datas(msgs []*Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = string(m.Data)
	}
	return out
}

func checkSeq(t testing.TB, msgs []*Message, firstData int) {
	t.Helper()
	for i, m := range msgs {
		if want := fmt.Sprint(firstData + i); string(m.Data) != want {
			t.Fatalf("message %d is %q, want %q (all: %v)", i, m.Data, want, datas(msgs))
		}
		if i > 0 && m.Serial.Seq != msgs[i-1].Serial.Seq+1 {
			t.Fatalf("serial gap: %d then %d", msgs[i-1].Serial.Seq, m.Serial.Seq)
		}
	}
}

func TestPublishSubscribeOrder(t *testing.T) {
	for _, md := range modes() {
		t.Run(md.name, func(t *testing.T) {
			e, _ := md.build(t, Options{})
			c := connect(t, e, ConnectOptions{})
			if _, err := c.Attach(context.Background(), "room", AttachOptions{}); err != nil {
				t.Fatal(err)
			}
			res := publishN(t, e, "room", 0, 50)
			msgs, _ := collect(t, c, 50)
			checkSeq(t, msgs, 0)
			if msgs[0].Serial.Seq != 1 || msgs[0].Serial.Region != "local" {
				t.Fatalf("first serial %+v", msgs[0].Serial)
			}
			for i := range res {
				if res[i].Serial != msgs[i].Position {
					t.Fatalf("ack serial %q != delivered %q", res[i].Serial, msgs[i].Position)
				}
			}
			expectQuiet(t, c)
		})
	}
}

func TestConcurrentPublishersSameOrderForAll(t *testing.T) {
	for _, md := range modes() {
		t.Run(md.name, func(t *testing.T) {
			e, _ := md.build(t, Options{})
			subs := make([]*Conn, 3)
			for i := range subs {
				subs[i] = connect(t, e, ConnectOptions{Buffer: 10000})
				if _, err := subs[i].Attach(context.Background(), "x", AttachOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			const pubs, each = 4, 100
			var wg sync.WaitGroup
			for p := 0; p < pubs; p++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					conn, err := e.Connect(devIdentity, ConnectOptions{})
					if err != nil {
						t.Error(err)
						return
					}
					defer conn.Close()
					var prev uint64
					for i := 0; i < each; i++ {
						res, err := conn.Publish(context.Background(), "x", []*Message{{Data: []byte(fmt.Sprintf("%d-%d", p, i))}})
						if err != nil {
							t.Error(err)
							return
						}
						s, _ := position.Parse(res[0].Serial)
						seq := s.Entries()[0].Seq
						if seq <= prev {
							t.Errorf("publisher %d: serial went back %d -> %d", p, prev, seq)
						}
						prev = seq
					}
				}()
			}
			wg.Wait()
			var first []string
			for i, c := range subs {
				msgs, _ := collect(t, c, pubs*each)
				for j := 1; j < len(msgs); j++ {
					if msgs[j].Serial.Seq != msgs[j-1].Serial.Seq+1 {
						t.Fatalf("gap in serials")
					}
				}
				if i == 0 {
					first = datas(msgs)
					continue
				}
				for j, d := range datas(msgs) {
					if d != first[j] {
						t.Fatalf("subscriber %d differs at %d: %q vs %q", i, j, d, first[j])
					}
				}
			}
		})
	}
}

func TestRewindSeam(t *testing.T) {
	for _, md := range modes() {
		t.Run(md.name, func(t *testing.T) {
			e, _ := md.build(t, Options{ChannelMemoryLimit: 20})
			publishN(t, e, "r", 0, 30)
			// Publish concurrently with the attach: the seam must have no gap
			// or duplicate.
			done := make(chan struct{})
			go func() {
				defer close(done)
				publishN(t, e, "r", 30, 30)
			}()
			c := connect(t, e, ConnectOptions{Buffer: 1000})
			if _, err := c.Attach(context.Background(), "[?rewind=10]r", AttachOptions{}); err != nil {
				t.Fatal(err)
			}
			<-done
			msgs, _ := collect(t, c, 1)
			first := msgs[0]
			var n int
			fmt.Sscan(string(first.Data), &n)
			// At least the 10 messages before the attach, whenever it ran.
			if n > 50 || n < 20 {
				t.Fatalf("rewind=10 started at message %d, expected 20..50", n)
			}
			rest, _ := collect(t, c, 60-n-1)
			checkSeq(t, append(msgs, rest...), n)
			expectQuiet(t, c)
		})
	}
}

func TestRewindFromStoreBeyondMemory(t *testing.T) {
	for _, md := range modes()[1:] {
		t.Run(md.name, func(t *testing.T) {
			e, _ := md.build(t, Options{ChannelMemoryLimit: 5, SubscriberBuffer: 8})
			publishN(t, e, "deep", 0, 100)
			// Let fan-out settle: otherwise the tail arrives live, as a burst
			// larger than the 8-event buffer (correctly a slow consumer).
			waitFor(t, "fan-out", func() bool {
				var d uint64
				_ = e.withChannel("deep", func(ch *channelState) error { d = ch.delivered; return nil })
				return d == 100
			})
			c := connect(t, e, ConnectOptions{})
			// The replay (60) is larger than the queue (8): Attach waits for
			// the reader, which must run concurrently.
			type result struct {
				msgs []*Message
				err  error
			}
			got := make(chan result, 1)
			go func() {
				m, _, err := tryCollect(c, 60)
				got <- result{m, err}
			}()
			if _, err := c.Attach(context.Background(), "deep", AttachOptions{Rewind: &channel.Rewind{Count: 60}}); err != nil {
				t.Fatal(err)
			}
			r := <-got
			if r.err != nil {
				t.Fatal(r.err)
			}
			checkSeq(t, r.msgs, 40)
		})
	}
}

func TestRewindByDuration(t *testing.T) {
	for _, md := range modes() {
		t.Run(md.name, func(t *testing.T) {
			clk := newFakeClock()
			e, _ := md.build(t, Options{Now: clk.Now})
			for i := 0; i < 10; i++ {
				publishN(t, e, "t", i, 1)
				clk.Advance(10 * time.Second)
			}
			// now = T+100s; messages at T+0..T+90s. rewind=35s -> T+65.. -> 7,8,9
			c := connect(t, e, ConnectOptions{})
			if _, err := c.Attach(context.Background(), "[?rewind=35s]t", AttachOptions{}); err != nil {
				t.Fatal(err)
			}
			msgs, _ := collect(t, c, 3)
			checkSeq(t, msgs, 7)
			expectQuiet(t, c)
		})
	}
}

func TestResumeExactAfterDisconnect(t *testing.T) {
	for _, md := range modes() {
		t.Run(md.name, func(t *testing.T) {
			e, _ := md.build(t, Options{ChannelMemoryLimit: 16})
			c := connect(t, e, ConnectOptions{})
			if _, err := c.Attach(context.Background(), "res", AttachOptions{}); err != nil {
				t.Fatal(err)
			}
			publishN(t, e, "res", 0, 10)
			msgs, _ := collect(t, c, 10)
			pos := msgs[9].Position
			c.Drop()
			publishN(t, e, "res", 10, 40) // more than the in-memory log in durable modes
			c2 := connect(t, e, ConnectOptions{Buffer: 100})
			a, err := c2.Attach(context.Background(), "res", AttachOptions{From: pos})
			if md.name == "memory" {
				// Memory mode keeps only 16: continuity must be reported lost.
				if err != nil {
					t.Fatal(err)
				}
				if a.Resumed || a.Continuity == nil || a.Continuity.Reason != ReasonExpired {
					t.Fatalf("memory resume beyond the log: resumed=%v continuity=%+v", a.Resumed, a.Continuity)
				}
				publishN(t, e, "res", 50, 1)
				live, _ := collect(t, c2, 1)
				checkSeq(t, live, 50)
				return
			}
			if err != nil || !a.Resumed || a.Continuity != nil {
				t.Fatalf("resume: %v resumed=%v continuity=%+v", err, a.Resumed, a.Continuity)
			}
			got, _ := collect(t, c2, 40)
			checkSeq(t, got, 10)
			expectQuiet(t, c2)
		})
	}
}

func TestResumeRandomInterleavings(t *testing.T) {
	for _, md := range modes() {
		t.Run(md.name, func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			rng := rand.New(rand.NewPCG(seed, 7))
			t.Logf("seed %d", seed)
			// Durable modes keep only 64 in memory so resumes read the store;
			// memory mode must hold everything the test can leave unread.
			limit := 64
			if md.name == "memory" {
				limit = 4096
			}
			e, _ := md.build(t, Options{ChannelMemoryLimit: limit})
			var got []string
			published := 0
			pos := ""
			ctx := context.Background()
			for round := 0; round < 30; round++ {
				c, err := e.Connect(devIdentity, ConnectOptions{Buffer: 4096})
				if err != nil {
					t.Fatal(err)
				}
				// Publish concurrently with the (re)attach.
				burst := rng.IntN(20)
				done := make(chan struct{})
				go func(from, n int) {
					defer close(done)
					publishN(t, e, "rand", from, n)
				}(published, burst)
				a, err := c.Attach(ctx, "rand", AttachOptions{From: pos})
				if err != nil {
					t.Fatal(err)
				}
				if pos != "" && !a.Resumed {
					t.Fatalf("round %d: resume not complete: %+v", round, a.Continuity)
				}
				<-done
				published += burst
				more := rng.IntN(30)
				publishN(t, e, "rand", published, more)
				published += more
				// Read a random part of what is due, then drop.
				due := published - len(got)
				read := rng.IntN(due + 1)
				if pos == "" {
					// First attach starts live: the first burst may have
					// been partly before it.
					msgs, _ := collect(t, c, 1)
					var n int
					fmt.Sscan(string(msgs[0].Data), &n)
					if round != 0 || n > burst {
						t.Fatalf("unexpected first message %d", n)
					}
					for i := 0; i < n; i++ {
						got = append(got, fmt.Sprint(i)) // they predate the subscriber
					}
					got = append(got, string(msgs[0].Data))
					due = published - len(got)
					read = rng.IntN(due + 1)
				}
				if read > 0 {
					msgs, _ := collect(t, c, read)
					got = append(got, datas(msgs)...)
				}
				if len(got) > 0 {
					pos = position.Of(position.Serial{Region: "local", Epoch: e.epochOf("rand"), Seq: uint64(len(got))}).String()
				}
				c.Drop()
			}
			c := connect(t, e, ConnectOptions{Buffer: 4096})
			if _, err := c.Attach(ctx, "rand", AttachOptions{From: pos}); err != nil {
				t.Fatal(err)
			}
			if rest := published - len(got); rest > 0 {
				msgs, _ := collect(t, c, rest)
				got = append(got, datas(msgs)...)
			}
			expectQuiet(t, c)
			for i, d := range got {
				if d != fmt.Sprint(i) {
					t.Fatalf("message %d is %q (seed %d)", i, d, seed)
				}
			}
			if len(got) != published {
				t.Fatalf("got %d of %d", len(got), published)
			}
		})
	}
}

// epochOf returns a channel's epoch (test helper).
func (e *Engine) epochOf(name string) uint64 {
	var ep uint64
	_ = e.withChannel(name, func(ch *channelState) error { ep = ch.epoch; return nil })
	return ep
}

func TestResumeContinuityLost(t *testing.T) {
	e, _ := modes()[0].build(t, Options{})
	publishN(t, e, "c", 0, 3)
	c := connect(t, e, ConnectOptions{})
	other := position.Of(position.Serial{Region: "local", Epoch: 12345, Seq: 2}).String()
	a, err := c.Attach(context.Background(), "c", AttachOptions{From: other})
	if err != nil {
		t.Fatal(err)
	}
	if a.Resumed || a.Continuity == nil || a.Continuity.Reason != ReasonEpochChanged {
		t.Fatalf("other epoch: %+v %+v", a.Resumed, a.Continuity)
	}
	ahead := position.Of(position.Serial{Region: "local", Epoch: e.epochOf("c"), Seq: 99}).String()
	a, err = c.Attach(context.Background(), "c", AttachOptions{From: ahead})
	if err != nil || a.Continuity == nil || a.Continuity.Reason != ReasonUnknownPosition {
		t.Fatalf("ahead: %v %+v", err, a.Continuity)
	}
	if _, err := c.Attach(context.Background(), "c", AttachOptions{From: "garbage!"}); apierr.CodeOf(err) != apierr.InvalidPosition {
		t.Fatalf("bad position: %v", err)
	}
}

func TestIdempotentPublish(t *testing.T) {
	for _, md := range modes() {
		t.Run(md.name, func(t *testing.T) {
			e, restart := md.build(t, Options{})
			c := connect(t, e, ConnectOptions{})
			if _, err := c.Attach(context.Background(), "d", AttachOptions{}); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			r1, err := e.Publish(ctx, nil, "", "", "d", []*Message{{ID: "m1", Data: []byte("a")}})
			if err != nil {
				t.Fatal(err)
			}
			r2, err := e.Publish(ctx, nil, "", "", "d", []*Message{{ID: "m1", Data: []byte("a")}, {ID: "m2", Data: []byte("b")}, {ID: "m2"}})
			if err != nil {
				t.Fatal(err)
			}
			if !r2[0].Duplicate || r2[0].Serial != r1[0].Serial || r2[1].Duplicate || !r2[2].Duplicate || r2[2].Serial != r2[1].Serial {
				t.Fatalf("dedup results %+v then %+v", r1, r2)
			}
			msgs, _ := collect(t, c, 2)
			if datas(msgs)[0] != "a" || datas(msgs)[1] != "b" {
				t.Fatalf("delivered %v", datas(msgs))
			}
			expectQuiet(t, c)
			if restart != nil {
				e = restart()
				r3, err := e.Publish(ctx, nil, "", "", "d", []*Message{{ID: "m2", Data: []byte("b")}})
				if err != nil || !r3[0].Duplicate || r3[0].Serial != r2[1].Serial {
					t.Fatalf("dedup across restart: %+v %v", r3, err)
				}
			}
		})
	}
}

func TestDedupWindowExpires(t *testing.T) {
	clk := newFakeClock()
	e, _ := modes()[0].build(t, Options{Now: clk.Now, DedupWindow: time.Minute, JanitorInterval: 5 * time.Millisecond})
	ctx := context.Background()
	r1, _ := e.Publish(ctx, nil, "", "", "w", []*Message{{ID: "x"}})
	clk.Advance(61 * time.Second)
	time.Sleep(50 * time.Millisecond) // let the janitor expire the id
	r2, err := e.Publish(ctx, nil, "", "", "w", []*Message{{ID: "x"}})
	if err != nil || r2[0].Duplicate || r2[0].Serial == r1[0].Serial {
		t.Fatalf("id outside the window must be new: %+v %v", r2, err)
	}
}

func TestSlowConsumerLosesContinuityNotPublisher(t *testing.T) {
	for _, md := range modes() {
		t.Run(md.name, func(t *testing.T) {
			e, _ := md.build(t, Options{})
			slow := connect(t, e, ConnectOptions{Buffer: 10})
			fast := connect(t, e, ConnectOptions{Buffer: 1000})
			if _, err := slow.Attach(context.Background(), "s", AttachOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := fast.Attach(context.Background(), "s", AttachOptions{}); err != nil {
				t.Fatal(err)
			}
			publishN(t, e, "s", 0, 30) // the slow one reads nothing meanwhile
			fmsgs, _ := collect(t, fast, 30)
			checkSeq(t, fmsgs, 0)
			// The slow one gets what fitted, then a continuity event.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			var got []*Message
			var cont *Continuity
			for cont == nil {
				evs, err := slow.Next(ctx, 100)
				if err != nil {
					t.Fatal(err)
				}
				for _, ev := range evs {
					if ev.Kind == EventMessage {
						got = append(got, ev.Message)
					} else if ev.Kind == EventContinuity {
						cont = ev.Continuity
					}
				}
			}
			if cont.Reason != ReasonSlowConsumer || len(got) == 0 || cont.Position != got[len(got)-1].Position {
				t.Fatalf("continuity %+v after %d messages", cont, len(got))
			}
			// Resuming from the given position recovers the rest exactly; the
			// replay is larger than the buffer, so it is read concurrently.
			type result struct {
				msgs []*Message
				err  error
			}
			rc := make(chan result, 1)
			go func() {
				m, _, err := tryCollect(slow, 30-len(got))
				rc <- result{m, err}
			}()
			a, err := slow.Attach(context.Background(), "s", AttachOptions{From: cont.Position})
			if err != nil || !a.Resumed {
				t.Fatalf("resume after slow: %v %+v", err, a)
			}
			r := <-rc
			if r.err != nil {
				t.Fatal(r.err)
			}
			checkSeq(t, append(got, r.msgs...), 0)
		})
	}
}

func TestPresenceGraceAndResume(t *testing.T) {
	e, _ := modes()[0].build(t, Options{PresenceGrace: 100 * time.Millisecond})
	ctx := context.Background()
	watcher := connect(t, e, ConnectOptions{})
	if _, err := watcher.Attach(ctx, "p", AttachOptions{Presence: true}); err != nil {
		t.Fatal(err)
	}
	anyClient := &auth.Identity{Dev: true}
	c, err := e.Connect(anyClient, ConnectOptions{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.EnterPresence(ctx, "p", "hi", ""); err != nil {
		t.Fatal(err)
	}
	members, _ := e.PresenceMembers(ctx, nil, "p")
	if len(members) != 1 || members[0].ClientID != "alice" || members[0].Data != "hi" {
		t.Fatalf("members %+v", members)
	}
	id := c.ID()
	c.Drop()
	// A quick reconnect with the same connection id keeps the member.
	c2, err := e.Connect(anyClient, ConnectOptions{ConnectionID: id, ClientID: "alice"})
	if err != nil || c2.ID() != id {
		t.Fatalf("reclaim: %v %s", err, c2.ID())
	}
	time.Sleep(200 * time.Millisecond)
	if m, _ := e.PresenceMembers(ctx, nil, "p"); len(m) != 1 {
		t.Fatalf("member flapped after resume: %+v", m)
	}
	c2.Drop()
	time.Sleep(250 * time.Millisecond)
	if m, _ := e.PresenceMembers(ctx, nil, "p"); len(m) != 0 {
		t.Fatalf("member still present after grace: %+v", m)
	}
	// The watcher saw enter then leave, and no flap in between.
	ctx2, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var actions []PresenceAction
	for len(actions) < 2 {
		evs, err := watcher.Next(ctx2, 10)
		if err != nil {
			t.Fatalf("presence events %v: %v", actions, err)
		}
		for _, ev := range evs {
			if ev.Kind == EventPresence {
				actions = append(actions, ev.Presence.Action)
			}
		}
	}
	if actions[0] != ActionEnter || actions[1] != ActionLeave {
		t.Fatalf("presence events %v", actions)
	}
	expectQuiet(t, watcher)
}

func TestPresenceLeaveOnClose(t *testing.T) {
	e, _ := modes()[0].build(t, Options{})
	ctx := context.Background()
	c, _ := e.Connect(devIdentity, ConnectOptions{})
	if err := c.EnterPresence(ctx, "q", "", ""); err != nil {
		t.Fatal(err)
	}
	if err := c.UpdatePresence(ctx, "q", "busy", ""); err != nil {
		t.Fatal(err)
	}
	m, _ := e.PresenceMembers(ctx, nil, "q")
	if len(m) != 1 || m[0].Data != "busy" || m[0].Action != ActionPresent {
		t.Fatalf("members %+v", m)
	}
	c.Close()
	if m, _ := e.PresenceMembers(ctx, nil, "q"); len(m) != 0 {
		t.Fatalf("orderly close must leave at once: %+v", m)
	}
}

func TestDurableRestartKeepsSerials(t *testing.T) {
	for _, md := range modes()[1:] {
		t.Run(md.name, func(t *testing.T) {
			e, restart := md.build(t, Options{})
			res := publishN(t, e, "k", 0, 5)
			e = restart()
			res2 := publishN(t, e, "k", 5, 1)
			p1, _ := position.Parse(res[4].Serial)
			p2, _ := position.Parse(res2[0].Serial)
			a, b := p1.Entries()[0], p2.Entries()[0]
			if a.Epoch != b.Epoch || b.Seq != a.Seq+1 {
				t.Fatalf("serials not continuous across restart: %+v then %+v", a, b)
			}
			page, err := e.History(context.Background(), nil, HistoryQuery{Channel: "k", Direction: Forwards})
			if err != nil {
				t.Fatal(err)
			}
			checkSeq(t, page.Messages, 0)
			if len(page.Messages) != 6 {
				t.Fatalf("history has %d messages", len(page.Messages))
			}
			// Resume across the restart.
			c := connect(t, e, ConnectOptions{})
			at, err := c.Attach(context.Background(), "k", AttachOptions{From: res[1].Serial})
			if err != nil || !at.Resumed {
				t.Fatalf("resume across restart: %v %+v", err, at)
			}
			msgs, _ := collect(t, c, 4)
			checkSeq(t, msgs, 2)
		})
	}
}

func TestHistoryPagination(t *testing.T) {
	for _, md := range modes() {
		t.Run(md.name, func(t *testing.T) {
			e, _ := md.build(t, Options{})
			publishN(t, e, "h", 0, 25)
			ctx := context.Background()
			for _, dir := range []Direction{Forwards, Backwards} {
				var all []*Message
				q := HistoryQuery{Channel: "h", Direction: dir, Limit: 10}
				for pages := 0; ; pages++ {
					page, err := e.History(ctx, nil, q)
					if err != nil {
						t.Fatal(err)
					}
					all = append(all, page.Messages...)
					if page.Next == "" {
						if pages != 2 {
							t.Fatalf("%d pages", pages+1)
						}
						break
					}
					q.From = page.Next
				}
				if dir == Backwards {
					for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
						all[i], all[j] = all[j], all[i]
					}
				}
				if len(all) != 25 {
					t.Fatalf("direction %d: %d messages", dir, len(all))
				}
				checkSeq(t, all, 0)
			}
		})
	}
}

func TestHistoryTimeBounds(t *testing.T) {
	for _, md := range modes() {
		t.Run(md.name, func(t *testing.T) {
			clk := newFakeClock()
			e, _ := md.build(t, Options{Now: clk.Now})
			for i := 0; i < 10; i++ {
				publishN(t, e, "tb", i, 1)
				clk.Advance(time.Second)
			}
			base := time.UnixMilli(1_700_000_000_000)
			page, err := e.History(context.Background(), nil, HistoryQuery{Channel: "tb", Direction: Forwards,
				Start: base.Add(3 * time.Second), End: base.Add(6 * time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			if d := datas(page.Messages); fmt.Sprint(d) != "[3 4 5 6]" {
				t.Fatalf("time-bounded history %v", d)
			}
		})
	}
}

func TestRetentionTrimsStoreAndSignalsContinuity(t *testing.T) {
	for _, md := range modes()[1:] {
		t.Run(md.name, func(t *testing.T) {
			clk := newFakeClock()
			e, _ := md.build(t, Options{Now: clk.Now, ResumeWindow: time.Minute, DedupWindow: time.Minute, JanitorInterval: 5 * time.Millisecond, ChannelMemoryLimit: 2})
			res := publishN(t, e, "ret", 0, 5)
			clk.Advance(2 * time.Minute)
			publishN(t, e, "ret", 5, 1)
			deadline := time.Now().Add(5 * time.Second)
			for {
				page, err := e.History(context.Background(), nil, HistoryQuery{Channel: "ret", Direction: Forwards})
				if err != nil {
					t.Fatal(err)
				}
				if len(page.Messages) == 1 {
					checkSeq(t, page.Messages, 5)
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("retention did not trim: %v", datas(page.Messages))
				}
				time.Sleep(10 * time.Millisecond)
			}
			c := connect(t, e, ConnectOptions{})
			a, err := c.Attach(context.Background(), "ret", AttachOptions{From: res[1].Serial})
			if err != nil || a.Resumed || a.Continuity == nil || a.Continuity.Reason != ReasonExpired {
				t.Fatalf("resume into trimmed log: %v %+v", err, a)
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	e, _ := modes()[0].build(t, Options{MaxMessageSize: 10})
	ctx := context.Background()
	cases := []struct {
		ch   string
		msgs []*Message
		code apierr.Code
	}{
		{"", []*Message{{}}, apierr.InvalidChannelName},
		{"[?rewind=5]x", []*Message{{}}, apierr.InvalidQualifier},
		{"[?bogus=1]x", []*Message{{}}, apierr.InvalidQualifier},
		{"x", []*Message{{Data: make([]byte, 11)}}, apierr.MessageTooLarge},
		{"x", nil, apierr.BadRequest},
	}
	for _, tc := range cases {
		if _, err := e.Publish(ctx, nil, "", "", tc.ch, tc.msgs); apierr.CodeOf(err) != tc.code {
			t.Errorf("publish %q: %v, want %d", tc.ch, err, tc.code)
		}
	}
	limited := &auth.Identity{KeyName: "k", Capability: auth.Capability{"chat:*": {auth.OpSubscribe}}}
	if _, err := e.Publish(ctx, limited, "", "", "chat:a", []*Message{{}}); apierr.CodeOf(err) != apierr.OperationNotAllowed {
		t.Errorf("publish without capability: %v", err)
	}
	c, _ := e.Connect(limited, ConnectOptions{})
	defer c.Close()
	if _, err := c.Attach(ctx, "other", AttachOptions{}); apierr.CodeOf(err) != apierr.OperationNotAllowed {
		t.Errorf("attach without capability: %v", err)
	}
	if _, err := c.Attach(ctx, "chat:a", AttachOptions{}); err != nil {
		t.Errorf("attach with capability: %v", err)
	}
}

func TestIdleChannelsCloseWithLifecycleEvents(t *testing.T) {
	clk := newFakeClock()
	var evMu sync.Mutex
	var events []ChannelEvent
	e, _ := modes()[1].build(t, Options{Now: clk.Now, JanitorInterval: 5 * time.Millisecond, ResumeWindow: time.Minute,
		OnChannelEvent: func(ev ChannelEvent) { evMu.Lock(); events = append(events, ev); evMu.Unlock() }})
	publishN(t, e, "life", 0, 1)
	if got := e.ActiveChannels("", "", 0); len(got) != 1 || got[0].Name != "life" {
		t.Fatalf("active %+v", got)
	}
	clk.Advance(2 * time.Minute)
	deadline := time.Now().Add(5 * time.Second)
	for len(e.ActiveChannels("", "", 0)) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("idle channel not closed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The closed event is emitted right after the channel leaves the table.
	var got []ChannelEvent
	waitFor(t, "lifecycle events", func() bool {
		evMu.Lock()
		defer evMu.Unlock()
		got = append(got[:0], events...)
		return len(got) >= 2
	})
	events = got
	if len(events) != 2 || events[0].Kind != ChannelOpened || events[1].Kind != ChannelClosed {
		t.Fatalf("events %+v", events)
	}
	// Reopening continues the serials.
	res := publishN(t, e, "life", 1, 1)
	p, _ := position.Parse(res[0].Serial)
	if p.Entries()[0].Seq != 2 {
		t.Fatalf("serial after reopen %+v", p.Entries())
	}
}

// A dropped connection's id can be taken back for the connection-state TTL
// (its presence only within the presence grace), by the same key and
// client only.
func TestConnectionIDReservedForTheStateTTL(t *testing.T) {
	e, _ := modes()[0].build(t, Options{PresenceGrace: 50 * time.Millisecond, ConnectionStateTTL: 300 * time.Millisecond})
	ctx := context.Background()
	all := auth.Capability{"*": auth.AllOperations()}
	alice := &auth.Identity{KeyName: "app", ClientID: "alice", Capability: all}
	c, err := e.Connect(alice, ConnectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.EnterPresence(ctx, "room", "", ""); err != nil {
		t.Fatal(err)
	}
	id := c.ID()
	c.Drop()
	waitFor(t, "the member to leave after the grace", func() bool {
		m, _ := e.PresenceMembers(ctx, nil, "room")
		return len(m) == 0
	})
	// Another client, or another key, cannot take the id.
	bob, err := e.Connect(&auth.Identity{KeyName: "app", ClientID: "bob", Capability: all}, ConnectOptions{ConnectionID: id})
	if err != nil || bob.ID() == id {
		t.Fatalf("another client took the id: %v %q", err, bob.ID())
	}
	bob.Close()
	other, err := e.Connect(&auth.Identity{KeyName: "other", ClientID: "alice", Capability: all}, ConnectOptions{ConnectionID: id})
	if err != nil || other.ID() == id {
		t.Fatalf("another key took the id: %v %q", err, other.ID())
	}
	other.Close()
	// The same client gets it back after the grace, without its member.
	c2, err := e.Connect(alice, ConnectOptions{ConnectionID: id})
	if err != nil || c2.ID() != id {
		t.Fatalf("reclaim within the TTL: %v %q, want %q", err, c2.ID(), id)
	}
	if m, _ := e.PresenceMembers(ctx, nil, "room"); len(m) != 0 {
		t.Errorf("the member came back with the id: %+v", m)
	}
	// Beyond the TTL the id is gone.
	c2.Drop()
	time.Sleep(400 * time.Millisecond)
	c3, err := e.Connect(alice, ConnectOptions{ConnectionID: id})
	if err != nil || c3.ID() == id {
		t.Fatalf("reclaim after the TTL: %v %q", err, c3.ID())
	}
	c3.Close()
}
