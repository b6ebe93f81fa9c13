package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// runIdle opens -conns connections, each subscribed to its own topic
// idle/<i>, leaves them idle and reports how much the broker's resident
// memory grew per connection. The generator's side of each connection is a
// bare socket: no goroutine, no buffer.
//
// The broker should be freshly started: a process that already served load
// keeps freed memory resident and would hand it to the new connections
// without growing.
func runIdle(cfg *config) (*result, error) {
	res := &result{Scenario: cfg.scenario, Broker: cfg.label, Connections: cfg.conns, SubQoS: 0}
	rss0, err := readRSS(cfg.pid)
	if err != nil {
		return nil, err
	}
	m0 := scrape(cfg.metricsURL)

	conns := make([]net.Conn, cfg.conns)
	defer func() {
		_ = parallel(len(conns), cfg.dialers, func(i int) error {
			if conns[i] != nil {
				disconnect(conns[i])
				conns[i] = nil
			}
			return nil
		})
	}()
	start := time.Now()
	err = parallel(cfg.conns, cfg.dialers, func(i int) error {
		c, err := dial(cfg.broker, fmt.Sprintf("%s-%d", cfg.clientPrefix, i), cfg.keepalive, cfg.timeout)
		if err != nil {
			return err
		}
		conns[i] = c
		return subscribe(c, fmt.Sprintf("idle/%d", i), 0, cfg.timeout)
	})
	if err != nil {
		return nil, err
	}
	res.ConnectSeconds = time.Since(start).Seconds()
	time.Sleep(cfg.settle)
	rss1, err := readRSS(cfg.pid)
	if err != nil {
		return nil, err
	}
	m1 := scrape(cfg.metricsURL)
	n := float64(cfg.conns)
	res.RSSBefore, res.RSSIdle = rss0, rss1
	res.BytesPerConn = float64(rss1-rss0) / n
	if m0 != nil && m1 != nil {
		per := func(name string) float64 { return (m1[name] - m0[name]) / n }
		res.GoroutinesPerConn = per("go_goroutines")
		res.HeapPerConn = per("go_memstats_heap_inuse_bytes")
		res.StackPerConn = per("go_memstats_stack_inuse_bytes")
	}

	// Close them all and look at what stays behind.
	_ = parallel(len(conns), cfg.dialers, func(i int) error {
		disconnect(conns[i])
		conns[i] = nil
		return nil
	})
	time.Sleep(cfg.settle)
	if res.RSSAfterClose, err = readRSS(cfg.pid); err != nil {
		return nil, err
	}
	if m2 := scrape(cfg.metricsURL); m0 != nil && m2 != nil {
		res.GoroutinesLeft = m2["go_goroutines"] - m0["go_goroutines"]
	}
	return res, nil
}

// readRSS returns the resident set size of a process in bytes (VmRSS in
// /proc/<pid>/status).
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || f[1] != "kB" {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				break
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS for process %d", pid)
}

// scrape reads the unlabelled samples of a Prometheus text endpoint; nil if
// there is no URL or it cannot be read.
func scrape(url string) map[string]float64 {
	if url == "" {
		return nil
	}
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || strings.ContainsRune(line, '{') {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			out[name] = v
		}
	}
	return out
}
