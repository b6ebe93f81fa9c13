// Package conformance drives a real switchboard binary over real sockets
// with independent clients.
package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binary is the switchboard binary built once for the package's tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "switchboard-conformance-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "switchboard")
	build := exec.Command("go", "build", "-race", "-o", binary, "../cmd/switchboard")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building switchboard:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is one running switchboard process.
type server struct {
	t       testing.TB
	cmd     *exec.Cmd
	baseURL string
	logs    *lockedBuffer
	done    chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

const testConfig = `
keys:
  - name: app
    secret: s3cret-value
    capabilities: {"*": [publish, subscribe, presence, history]}
namespaces:
  - name: persisted
    persisted: true
    retention: 24h
`

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startServer runs switchboard with the given data directory and extra
// flags on a free port, and waits until /readyz answers 200.
func startServer(t testing.TB, dataDir string, extra ...string) *server {
	t.Helper()
	return startServerOn(t, freePort(t), dataDir, extra...)
}

// startServerOn is startServer on a given HTTP address, so that a restarted
// server comes back where its clients expect it.
func startServerOn(t testing.TB, addr, dataDir string, extra ...string) *server {
	t.Helper()
	cfgPath := filepath.Join(t.TempDir(), "switchboard.yaml")
	if err := os.WriteFile(cfgPath, []byte(testConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"serve", "--config", cfgPath, "--data", dataDir, "--http", addr,
		"--mqtt", "off", "--stomp", "off", "--amqp", "off"}, extra...)
	s := &server{t: t, baseURL: "http://" + addr, logs: &lockedBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(binary, args...)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			t.Logf("server logs:\n%s", s.logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.baseURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		select {
		case <-s.done:
			t.Fatalf("server exited during start:\n%s", s.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready after 30s:\n%s", s.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill stops the process with SIGKILL: no shutdown code runs.
func (s *server) kill() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-s.done
}

// stop stops the process with SIGTERM and waits for a graceful exit.
func (s *server) stop(t testing.TB) {
	t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not stop within 30s:\n%s", s.logs.String())
	}
	if code := s.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("server exited with %d:\n%s", code, s.logs.String())
	}
}

type publishReply struct {
	Channel  string `json:"channel"`
	Messages []struct {
		ID        string `json:"id"`
		Serial    string `json:"serial"`
		Timestamp int64  `json:"timestamp"`
		Duplicate bool   `json:"duplicate"`
	} `json:"messages"`
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

func (s *server) do(ctx context.Context, method, path string, body any) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.baseURL+path, rd)
	if err != nil {
		return nil, nil, err
	}
	req.SetBasicAuth("app", "s3cret-value")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

type historyMessage struct {
	ID        string `json:"id"`
	Data      string `json:"data"`
	Serial    string `json:"serial"`
	Timestamp int64  `json:"timestamp"`
}

// history reads a channel's whole history, oldest first, following Link
// headers.
func (s *server) history(t testing.TB, channel string) []historyMessage {
	t.Helper()
	var all []historyMessage
	path := "/v1/channels/" + channel + "/messages?direction=forwards&limit=1000"
	for path != "" {
		resp, body, err := s.do(context.Background(), http.MethodGet, path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("history %s: %d %s", path, resp.StatusCode, body)
		}
		var page []historyMessage
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatalf("history body: %v: %s", err, body)
		}
		all = append(all, page...)
		path = nextLink(resp.Header.Get("Link"))
	}
	return all
}

// nextLink extracts the rel="next" target of a Link header.
func nextLink(h string) string {
	for _, part := range strings.Split(h, ",") {
		part = strings.TrimSpace(part)
		if !strings.Contains(part, `rel="next"`) {
			continue
		}
		start, end := strings.Index(part, "<"), strings.Index(part, ">")
		if start >= 0 && end > start {
			return part[start+1 : end]
		}
	}
	return ""
}
