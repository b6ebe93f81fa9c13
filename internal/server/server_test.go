package server

import (
	"context"
	"github.com/coder/websocket"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboardhq/switchboard/internal/config"
)

// startTestServer runs a server; done is closed when Run returns, with its
// result in *runErr.
func startTestServer(t *testing.T, yaml string) (s *Server, base string, cancel context.CancelFunc, done <-chan struct{}, runErr *error) {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTP = "127.0.0.1:0"
	cfg.MQTT, cfg.STOMP, cfg.AMQP = config.Off, config.Off, config.Off
	cfg.Data = t.TempDir()
	s, err = New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{})
	runErr = new(error)
	go func() { *runErr = s.Run(ctx); close(finished) }()
	base = "http://" + s.HTTPAddr()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("server not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() {
		cancel()
		<-finished
	})
	return s, base, cancel, finished, runErr
}

func get(t *testing.T, url string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

const testYAML = `
keys:
  - name: app
    secret: s3cret
    capabilities: {"*": ["*"]}
namespaces:
  - name: public
    anonymous: [history]
  - name: archive
    persisted: true
    retention: forever
cors:
  allowedOrigins: ["https://app.example.com"]
  allowCredentials: true
`

func TestOperatorEndpointsAndShutdown(t *testing.T) {
	_, base, cancel, done, runErr := startTestServer(t, testYAML)
	if code, _, body := get(t, base+"/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("healthz %d %s", code, body)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/channels/archive:x/messages", strings.NewReader(`{"data":"kept"}`))
	req.SetBasicAuth("app", "s3cret")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("publish: %v %v", err, resp)
	}
	resp.Body.Close()
	code, _, metrics := get(t, base+"/metrics")
	if code != 200 || !strings.Contains(metrics, "switchboard_messages_published_total 1") || !strings.Contains(metrics, "go_goroutines") {
		t.Fatalf("metrics %d:\n%s", code, metrics)
	}
	cancel()
	select {
	case <-done:
		if *runErr != nil {
			t.Fatalf("Run returned %v", *runErr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("graceful shutdown did not finish")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("listener still accepting after shutdown")
	}
}

func TestAnonymousNamespaceRule(t *testing.T) {
	_, base, _, _, _ := startTestServer(t, testYAML)
	if code, _, body := get(t, base+"/v1/channels/public:news/messages"); code != 200 {
		t.Fatalf("anonymous history on public namespace: %d %s", code, body)
	}
	if code, _, body := get(t, base+"/v1/channels/private:x/messages"); code != 401 || !strings.Contains(body, `"code":40100`) {
		t.Fatalf("anonymous history elsewhere: %d %s", code, body)
	}
}

func TestCORS(t *testing.T) {
	_, base, _, _, _ := startTestServer(t, testYAML)
	req, _ := http.NewRequest(http.MethodOptions, base+"/v1/channels/a/messages", nil)
	req.Header.Set("Origin", "https://app.example.com")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "authorization, content-type, x<script>;=1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	h := resp.Header
	if resp.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		h.Get("Access-Control-Allow-Credentials") != "true" || strings.ContainsAny(h.Get("Access-Control-Allow-Headers"), "<>;=") || !strings.Contains(h.Get("Access-Control-Allow-Headers"), "content-type") {
		t.Fatalf("preflight: %d %v", resp.StatusCode, h)
	}
	_, h2, _ := get(t, base+"/healthz", "Origin", "https://evil.example.com")
	if h2.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("foreign origin allowed: %v", h2)
	}
}

func TestPortConflictIsReportedByNew(t *testing.T) {
	s, _, _, _, _ := startTestServer(t, testYAML)
	cfg, _ := config.Parse([]byte(testYAML))
	cfg.HTTP = s.HTTPAddr()
	cfg.MQTT, cfg.STOMP, cfg.AMQP = config.Off, config.Off, config.Off
	cfg.Durability = config.DurabilityMemory
	if _, err := New(cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "http listener") {
		t.Fatalf("New with a taken port: %v", err)
	}
}

// Open SSE streams do not hold up a graceful shutdown: they end with a
// reconnection hint and Run returns promptly.
func TestShutdownEndsSSEStreams(t *testing.T) {
	_, base, cancel, done, runErr := startTestServer(t, testYAML)
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/sse?key=app:s3cret&channels=a,b", nil)
	req.Header.Set("Origin", "https://app.example.com")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// The CORS headers survive the stream taking its connection over.
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "*" && got != "https://app.example.com" {
		t.Errorf("Access-Control-Allow-Origin = %q, want the origin allowed", got)
	}
	buf := make([]byte, 4096)
	var got strings.Builder
	for !strings.Contains(got.String(), "event: attached") {
		n, err := resp.Body.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("stream ended before attaching: %v: %s", err, got.String())
		}
	}
	start := time.Now()
	cancel()
	rest, _ := io.ReadAll(resp.Body)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of shutdown with a stream open")
	}
	if *runErr != nil {
		t.Errorf("Run: %v", *runErr)
	}
	if !strings.Contains(string(rest), "retry: ") {
		t.Errorf("the stream ended without a retry hint: %q", rest)
	}
	t.Logf("shutdown with an open stream took %v", time.Since(start))
}

// Open realtime connections are told to reconnect elsewhere and do not
// hold up a graceful shutdown.
func TestShutdownDisconnectsRealtimeConnections(t *testing.T) {
	_, base, cancel, done, _ := startTestServer(t, testYAML)
	ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/v1/realtime?key=app:s3cret", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	read := func() string {
		_, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return string(b)
	}
	if got := read(); !strings.Contains(got, `"action":"connected"`) {
		t.Fatalf("first frame %s", got)
	}
	cancel()
	if got := read(); !strings.Contains(got, `"action":"disconnect"`) || !strings.Contains(got, `"retryIn"`) {
		t.Errorf("frame at shutdown %s, want disconnect with a retry hint", got)
	}
	// Reading answers the server's close frame.
	if _, _, err := ws.Read(ctx); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("close %v, want going away", err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of shutdown with a realtime connection open")
	}
}
