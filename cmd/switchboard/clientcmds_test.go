package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/switchboardhq/switchboard/client"
	"github.com/switchboardhq/switchboard/internal/testserver"
)

func testServer(t *testing.T) string {
	t.Helper()
	return testserver.Start(t, testserver.Options{}).URL()
}

// run runs the binary's root command with args and returns its output.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCommand(&out, &errOut)
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

func TestClientCommands(t *testing.T) {
	url := testServer(t)
	conn := []string{"--server", url, "--key", "app:s3cret"}

	out, err := run(t, append([]string{"pub", "news", "first", "--name", "headline", "--id", "n-1"}, conn...)...)
	if err != nil {
		t.Fatal(err)
	}
	var ack map[string]any
	if err := json.Unmarshal([]byte(out), &ack); err != nil || ack["serial"] == "" || ack["id"] != "n-1" {
		t.Fatalf("pub printed %q (%v)", out, err)
	}
	if _, err := run(t, append([]string{"pub", "news", `{"n":2}`, "--json"}, conn...)...); err != nil {
		t.Fatal(err)
	}

	// sub --json --count: one JSON message per line, then it exits.
	out, err = run(t, append([]string{"sub", "news", "--rewind", "2", "--count", "2", "--json"}, conn...)...)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("sub printed %d lines: %q", len(lines), out)
	}
	var m1, m2 map[string]any
	_ = json.Unmarshal([]byte(lines[0]), &m1)
	_ = json.Unmarshal([]byte(lines[1]), &m2)
	if m1["data"] != "first" || m1["name"] != "headline" || m1["channel"] != "news" || m1["serial"] == "" {
		t.Errorf("first line %v", m1)
	}
	if d, _ := m2["data"].(map[string]any); d["n"] != float64(2) || m2["encoding"] != "json" {
		t.Errorf("second line %v", m2)
	}

	// A live subscriber gets what is published after it started.
	done := make(chan string, 1)
	go func() {
		out, err := run(t, append([]string{"sub", "live", "--count", "1"}, conn...)...)
		if err != nil {
			out = err.Error()
		}
		done <- out
	}()
	c, err := client.New(client.Options{URL: url, Key: "app:s3cret", ClientID: "pat"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.After(15 * time.Second)
	var live string
publish:
	for {
		if _, err := c.Channel("live").Publish(context.Background(), "tick", "now"); err != nil {
			t.Fatal(err)
		}
		select {
		case live = <-done:
			break publish
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatal("sub did not print the live message")
		}
	}
	if live != "live tick: now\n" {
		t.Errorf("sub printed %q", live)
	}

	out, err = run(t, append([]string{"history", "news", "--direction", "forwards", "--json"}, conn...)...)
	if err != nil || strings.Count(out, "\n") != 2 || !strings.Contains(strings.Split(out, "\n")[0], `"data":"first"`) {
		t.Errorf("history printed %q (%v)", out, err)
	}
	out, err = run(t, append([]string{"history", "news", "--limit", "1"}, conn...)...)
	if err != nil || strings.Count(out, "\n") != 1 {
		t.Errorf("history --limit 1 printed %q (%v)", out, err)
	}

	if err := c.Channel("lobby").Presence().Enter(context.Background(), "here"); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, append([]string{"presence", "lobby"}, conn...)...)
	if err != nil || !strings.Contains(out, `"clientId":"pat"`) || strings.Count(out, "\n") != 1 {
		t.Errorf("presence printed %q (%v)", out, err)
	}

	out, err = run(t, append([]string{"token", "--capability", `{"news":["subscribe"]}`, "--ttl", "10m", "--client-id", "bob"}, conn...)...)
	var td map[string]any
	if err != nil || json.Unmarshal([]byte(out), &td) != nil || td["token"] == "" || td["clientId"] != "bob" {
		t.Fatalf("token printed %q (%v)", out, err)
	}
	// The token subscribes but cannot publish.
	tok := td["token"].(string)
	if _, err := run(t, "pub", "news", "x", "--server", url, "--token", tok); err == nil || !strings.Contains(err.Error(), "40160") {
		t.Errorf("publishing with a subscribe-only token: %v", err)
	}
}

func TestClientCommandErrors(t *testing.T) {
	url := testServer(t)
	for _, args := range [][]string{
		{"sub", "a", "b", "--from", "AQ", "--server", url},
		{"history", "a", "--direction", "sideways", "--server", url},
		{"pub", "a", "{", "--json", "--server", url},
		{"pub", "a", "x", "--key", "app:s3cret", "--token", "t", "--server", url},
		{"token", "--capability", "nope", "--server", url},
	} {
		if _, err := run(t, args...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
	if _, err := run(t, "pub", "a", "x", "--server", url, "--key", "app:wrong"); err == nil || !strings.Contains(err.Error(), "40101") {
		t.Errorf("wrong key: %v", err)
	}
	// Nothing listens there: the command gives up after --timeout.
	if _, err := run(t, "pub", "a", "x", "--server", "http://127.0.0.1:1", "--timeout", "300ms"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("unreachable server: %v, want the timeout", err)
	}
}
