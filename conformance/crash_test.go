package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboardhq/switchboard/core/position"
)

// TestKill9LosesNoAcknowledgedMessage publishes over REST from several
// clients, kills the server with SIGKILL mid-stream, restarts it on the same
// data directory and checks that every acknowledged message is in history
// exactly once with gap-free serials of one epoch, and that the serials
// continue after the restart.
func TestKill9LosesNoAcknowledgedMessage(t *testing.T) {
	data := t.TempDir()
	srv := startServer(t, data) // default durability: fsync

	const channels, publishers = 3, 6
	type acked struct{ id, serial string }
	var mu sync.Mutex
	ackedBy := map[string][]acked{}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var failures atomic.Int64
	for p := 0; p < publishers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch := fmt.Sprintf("persisted:crash-%d", p%channels)
			for i := 0; !stop.Load(); i++ {
				id := fmt.Sprintf("p%d-%d", p, i)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				resp, body, err := srv.do(ctx, http.MethodPost, "/v1/channels/"+ch+"/messages",
					map[string]any{"id": id, "name": "tick", "data": id})
				cancel()
				if err != nil {
					failures.Add(1) // the kill: not acknowledged, may or may not be stored
					return
				}
				if resp.StatusCode != http.StatusCreated {
					t.Errorf("publish %s: %d %s", id, resp.StatusCode, body)
					return
				}
				var r publishReply
				if err := json.Unmarshal(body, &r); err != nil || len(r.Messages) != 1 {
					t.Errorf("publish reply %s: %v", body, err)
					return
				}
				mu.Lock()
				ackedBy[ch] = append(ackedBy[ch], acked{id, r.Messages[0].Serial})
				mu.Unlock()
			}
		}()
	}
	// Let load build up, then kill while requests are in flight.
	time.Sleep(1500 * time.Millisecond)
	srv.kill()
	stop.Store(true)
	wg.Wait()

	total := 0
	for _, a := range ackedBy {
		total += len(a)
	}
	if total < 50 {
		t.Fatalf("only %d publishes were acknowledged before the kill; the test needs load", total)
	}
	t.Logf("%d acknowledged publishes before SIGKILL, %d in flight", total, failures.Load())

	srv2 := startServer(t, data)
	for ch, acks := range ackedBy {
		hist := srv2.history(t, ch)
		seen := map[string]int{}
		var epoch uint64
		for i, m := range hist {
			seen[m.ID]++
			p, err := position.Parse(m.Serial)
			if err != nil {
				t.Fatalf("%s: bad serial %q: %v", ch, m.Serial, err)
			}
			s := p.Entries()[0]
			if i == 0 {
				epoch = s.Epoch
			}
			if s.Epoch != epoch || s.Seq != uint64(i+1) {
				t.Fatalf("%s: message %d has serial %+v, want epoch %d seq %d", ch, i, s, epoch, i+1)
			}
		}
		for _, a := range acks {
			if seen[a.id] != 1 {
				t.Fatalf("%s: acknowledged message %s appears %d times in history after restart", ch, a.id, seen[a.id])
			}
		}
		for id, n := range seen {
			if n != 1 {
				t.Fatalf("%s: message %s appears %d times", ch, id, n)
			}
		}
		// Serials continue in the same epoch after the restart.
		resp, body, err := srv2.do(context.Background(), http.MethodPost, "/v1/channels/"+ch+"/messages", map[string]any{"data": "after"})
		if err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("publish after restart: %v %s", err, body)
		}
		var r publishReply
		_ = json.Unmarshal(body, &r)
		p, err := position.Parse(r.Messages[0].Serial)
		if err != nil {
			t.Fatal(err)
		}
		if s := p.Entries()[0]; s.Epoch != epoch || s.Seq != uint64(len(hist)+1) {
			t.Fatalf("%s: first serial after restart %+v, want epoch %d seq %d", ch, s, epoch, len(hist)+1)
		}
		// A retry of an acknowledged id after the restart is a duplicate.
		last := acks[len(acks)-1]
		resp, body, err = srv2.do(context.Background(), http.MethodPost, "/v1/channels/"+ch+"/messages", map[string]any{"id": last.id, "data": last.id})
		if err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("retry after restart: %v %s", err, body)
		}
		_ = json.Unmarshal(body, &r)
		if !r.Messages[0].Duplicate || r.Messages[0].Serial != last.serial {
			t.Fatalf("%s: retry of %s after restart was not deduplicated: %s", ch, last.id, body)
		}
	}
}

// TestGracefulShutdownKeepsEverything stops the server with SIGTERM under
// load and checks it exits cleanly with every acknowledged message stored.
func TestGracefulShutdownKeepsEverything(t *testing.T) {
	data := t.TempDir()
	srv := startServer(t, data, "--durability", "batch")
	var ids []string
	for i := 0; i < 200; i++ {
		id := fmt.Sprintf("g-%d", i)
		resp, body, err := srv.do(context.Background(), http.MethodPost, "/v1/channels/plain/messages", map[string]any{"id": id, "data": id})
		if err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("publish: %v %s", err, body)
		}
		ids = append(ids, id)
	}
	srv.stop(t)
	srv2 := startServer(t, data, "--durability", "batch")
	hist := srv2.history(t, "plain")
	if len(hist) != len(ids) {
		t.Fatalf("history has %d messages, want %d", len(hist), len(ids))
	}
	for i, m := range hist {
		if m.ID != ids[i] || m.Data != ids[i] {
			t.Fatalf("message %d is %+v, want %s", i, m, ids[i])
		}
	}
}
