package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	r3sse "github.com/r3labs/sse/v2"
	backoff "gopkg.in/cenkalti/backoff.v1"
)

// sseFollower is an independent SSE client (r3labs/sse) that reconnects,
// as a browser EventSource does, whenever its stream ends or breaks,
// sending the last event id it saw.
type sseFollower struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	messages map[string][]string // data per channel
	opens    int
	bad      []string // continuity and error events
}

func followSSE(t *testing.T, url string) *sseFollower {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := r3sse.NewClient(url, r3sse.ClientMaxBufferSize(1<<20))
	c.Connection = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	c.ReconnectStrategy = backoff.WithContext(backoff.NewConstantBackOff(50*time.Millisecond), ctx)
	fl := &sseFollower{cancel: cancel, done: make(chan struct{}), messages: map[string][]string{}}
	go func() {
		defer close(fl.done)
		for ctx.Err() == nil {
			_ = c.SubscribeRawWithContext(ctx, fl.record)
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-fl.done })
	return fl
}

func (fl *sseFollower) record(ev *r3sse.Event) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	switch string(ev.Event) {
	case "message":
		var m struct {
			Channel string `json:"channel"`
			Data    string `json:"data"`
		}
		if err := json.Unmarshal(ev.Data, &m); err != nil {
			fl.bad = append(fl.bad, "undecodable message: "+string(ev.Data))
			return
		}
		fl.messages[m.Channel] = append(fl.messages[m.Channel], m.Data)
	case "attached":
		fl.opens++
	case "continuity", "error":
		fl.bad = append(fl.bad, string(ev.Event)+": "+string(ev.Data))
	}
}

func (fl *sseFollower) count() int {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	n := 0
	for _, m := range fl.messages {
		n += len(m)
	}
	return n
}

func (fl *sseFollower) attaches() int {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.opens
}

// publishUntilAcked publishes one message with an idempotency id, retrying
// (with the same id) until the server acknowledges it.
func publishUntilAcked(ctx context.Context, baseURL, channel, id string) error {
	body, _ := json.Marshal(map[string]string{"id": id, "data": id})
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/v1/channels/"+channel+"/messages", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.SetBasicAuth("app", "s3cret-value")
		req.Header.Set("Content-Type", "application/json")
		resp, err := httpClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusCreated {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("publishing %s: %w", id, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// An SSE client on three channels, whose connection is cut and whose server
// is killed with SIGKILL and restarted while publishers keep going, gets
// every acknowledged message exactly once, in order, on every channel.
func TestSSEResumesAcrossCutsAndKill9(t *testing.T) {
	addr := freePort(t)
	data := t.TempDir()
	srv := startServerOn(t, addr, data)
	proxy := newCutProxy(t, addr)
	channels := []string{"persisted:sse-a", "persisted:sse-b", "sse-c"}
	fl := followSSE(t, "http://"+proxy.Addr()+"/v1/sse?key=app:s3cret-value&channels=persisted:sse-a,persisted:sse-b,sse-c")
	waitUntil(t, 15*time.Second, "the first attach", func() bool { return fl.attaches() > 0 })

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const perChannel = 150
	var wg sync.WaitGroup
	errs := make(chan error, len(channels))
	for _, ch := range channels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perChannel {
				if err := publishUntilAcked(ctx, "http://"+addr, ch, fmt.Sprintf("%s-%04d", ch, i)); err != nil {
					errs <- err
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	waitUntil(t, 30*time.Second, "some traffic", func() bool { return fl.count() >= 60 })
	proxy.Cut()
	waitUntil(t, 30*time.Second, "more traffic", func() bool { return fl.count() >= 150 })
	srv.kill()
	time.Sleep(300 * time.Millisecond)
	startServerOn(t, addr, data)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "every message", func() bool { return fl.count() >= len(channels)*perChannel })
	time.Sleep(200 * time.Millisecond) // let any duplicate arrive before checking

	fl.mu.Lock()
	defer fl.mu.Unlock()
	for _, ch := range channels {
		got := fl.messages[ch]
		if len(got) != perChannel {
			t.Errorf("%s: %d messages, want %d", ch, len(got), perChannel)
		}
		for i := range min(len(got), perChannel) {
			if want := fmt.Sprintf("%s-%04d", ch, i); got[i] != want {
				t.Errorf("%s: message %d is %q, want %q (lost, duplicated or reordered)", ch, i, got[i], want)
				break
			}
		}
	}
	if len(fl.bad) > 0 {
		t.Errorf("the stream reported: %v", fl.bad)
	}
	if fl.opens < 3 {
		t.Errorf("%d attaches; want at least 3 (first, after the cut, after the restart)", fl.opens)
	}
	t.Logf("%d attaches", fl.opens)
}

// waitUntil polls cond until it holds or fails the test after timeout.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
