package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// result is one run's outcome; it is also the JSON line format.
type result struct {
	Scenario    string  `json:"scenario"`
	Broker      string  `json:"broker"`
	Note        string  `json:"note,omitempty"`
	QoS         int     `json:"qos"`
	SubQoS      int     `json:"subQos"`
	Size        int     `json:"size,omitempty"`
	Publishers  int     `json:"publishers,omitempty"`
	Subscribers int     `json:"subscribers,omitempty"`
	Senders     int     `json:"senders,omitempty"`
	Window      int     `json:"window,omitempty"`
	Inflight    int     `json:"inflight,omitempty"`
	OfferedRate float64 `json:"offeredRate,omitempty"` // publishes/s; 0: as fast as the windows allow

	Connections    int     `json:"connections"`
	ConnectSeconds float64 `json:"connectSeconds"`
	Seconds        float64 `json:"seconds,omitempty"`

	// Publishes sent inside the window, the deliveries they should
	// produce, those received, and the difference.
	Published int64 `json:"published,omitempty"`
	Expected  int64 `json:"expected,omitempty"`
	Delivered int64 `json:"delivered,omitempty"`
	Lost      int64 `json:"lost,omitempty"`
	// Rates over the window: publishes sent, PUBACKs received (QoS 1) and
	// deliveries received by the subscribers.
	PubRate float64 `json:"pubRate,omitempty"`
	AckRate float64 `json:"ackRate,omitempty"`
	MsgRate float64 `json:"msgRate,omitempty"`
	// Latency percentiles in milliseconds.
	P50  float64 `json:"p50ms,omitempty"`
	P90  float64 `json:"p90ms,omitempty"`
	P99  float64 `json:"p99ms,omitempty"`
	P999 float64 `json:"p999ms,omitempty"`
	Max  float64 `json:"maxms,omitempty"`
	// Stalls counts the times a sender waited a whole second for a
	// window to open (messages or acknowledgements lost).
	Stalls int `json:"stalls,omitempty"`
	// DrainSeconds is how long the run waited after the window for the
	// deliveries still in flight.
	DrainSeconds float64 `json:"drainSeconds,omitempty"`
	// CPU is where the machine's CPU went during the window.
	CPU *cpuUse `json:"cpu,omitempty"`
	// CoverageSeconds (many): time from the first publish until every
	// publishing connection had a message delivered; -1 if some never did.
	CoverageSeconds float64 `json:"coverageSeconds,omitempty"`

	// Idle memory: the broker's VmRSS before opening the connections,
	// once they are open and idle, and after closing them.
	RSSBefore     int64   `json:"rssBefore,omitempty"`
	RSSIdle       int64   `json:"rssIdle,omitempty"`
	RSSAfterClose int64   `json:"rssAfterClose,omitempty"`
	BytesPerConn  float64 `json:"bytesPerConn,omitempty"`
	// From the broker's metrics endpoint, when it has Go runtime gauges.
	GoroutinesPerConn float64 `json:"goroutinesPerConn,omitempty"`
	HeapPerConn       float64 `json:"heapPerConn,omitempty"`
	StackPerConn      float64 `json:"stackPerConn,omitempty"`
	GoroutinesLeft    float64 `json:"goroutinesLeftAfterClose,omitempty"`

	Errors     int    `json:"errors,omitempty"`
	FirstError string `json:"firstError,omitempty"`
}

func (r *result) setLatency(h *hdrhistogram.Histogram) {
	if h.TotalCount() == 0 {
		return
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	r.P50 = ms(h.ValueAtQuantile(50))
	r.P90 = ms(h.ValueAtQuantile(90))
	r.P99 = ms(h.ValueAtQuantile(99))
	r.P999 = ms(h.ValueAtQuantile(99.9))
	r.Max = ms(h.Max())
}

// line is the human-readable summary of a result.
func (r *result) line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-7s %-22s", r.Scenario, r.Broker)
	if r.Scenario == "idle" {
		fmt.Fprintf(&b, " conns=%d rss %s -> %s (after close %s) bytes/conn=%.0f connect=%.2fs",
			r.Connections, mib(r.RSSBefore), mib(r.RSSIdle), mib(r.RSSAfterClose), r.BytesPerConn, r.ConnectSeconds)
		if r.GoroutinesPerConn != 0 || r.HeapPerConn != 0 {
			fmt.Fprintf(&b, " goroutines/conn=%.2f heap/conn=%.0f stack/conn=%.0f goroutines-left=%.0f",
				r.GoroutinesPerConn, r.HeapPerConn, r.StackPerConn, r.GoroutinesLeft)
		}
		return b.String()
	}
	fmt.Fprintf(&b, " qos%d/%d pubs=%d subs=%d", r.QoS, r.SubQoS, r.Publishers, r.Subscribers)
	if r.OfferedRate > 0 {
		fmt.Fprintf(&b, " offered=%s/s", thousands(r.OfferedRate))
	}
	fmt.Fprintf(&b, " msgs/s=%s pub/s=%s", thousands(r.MsgRate), thousands(r.PubRate))
	if r.QoS > 0 {
		fmt.Fprintf(&b, " ack/s=%s", thousands(r.AckRate))
	}
	fmt.Fprintf(&b, " p50=%s p90=%s p99=%s p99.9=%s max=%s", ms(r.P50), ms(r.P90), ms(r.P99), ms(r.P999), ms(r.Max))
	fmt.Fprintf(&b, " delivered=%d/%d lost=%d stalls=%d connect=%.2fs", r.Delivered, r.Expected, r.Lost, r.Stalls, r.ConnectSeconds)
	if r.CoverageSeconds != 0 {
		fmt.Fprintf(&b, " all-topics-after=%.2fs", r.CoverageSeconds)
	}
	if c := r.CPU; c != nil {
		fmt.Fprintf(&b, " cpu(cores) broker=%.2f bench=%.2f other=%.2f idle=%.2f", c.Broker, c.Bench, c.Other, c.Idle)
	}
	if r.Errors > 0 {
		fmt.Fprintf(&b, " errors=%d first=%q", r.Errors, r.FirstError)
	}
	return b.String()
}

func readResults(file string) ([]result, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []result
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var r result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// rowName describes a result's scenario for the report.
func rowName(r *result) string {
	var s string
	switch r.Scenario {
	case "fanout":
		s = fmt.Sprintf("fan-out, QoS %d, 1 → %s", r.QoS, thousands(float64(r.Subscribers)))
	case "fanin":
		s = fmt.Sprintf("fan-in, QoS %d, %d → 1", r.QoS, r.Publishers)
	case "many":
		s = fmt.Sprintf("%s topics, QoS %d, → 1 on bench/#", thousands(float64(r.Publishers)), r.QoS)
	case "idle":
		return fmt.Sprintf("idle, %s connections", thousands(float64(r.Connections)))
	default:
		s = r.Scenario
	}
	if r.OfferedRate > 0 {
		return s + fmt.Sprintf(", paced at %s pub/s", thousands(r.OfferedRate))
	}
	return s + ", peak"
}

// printReport writes the results as a markdown table, in file order.
func printReport(w io.Writer, file string) error {
	results, err := readResults(file)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "| scenario | broker | msgs/s | p50 | p99 | bytes/idle conn | broker CPU | notes |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---|")
	for i := range results {
		r := &results[i]
		rate, p50, p99, mem, cpu := "", "", "", "", ""
		var notes []string
		if r.Scenario == "idle" {
			mem = thousands(r.BytesPerConn)
			if r.GoroutinesPerConn != 0 {
				notes = append(notes, fmt.Sprintf("heap %s B + stacks %s B per conn, %.1f goroutines per conn",
					thousands(r.HeapPerConn), thousands(r.StackPerConn), r.GoroutinesPerConn))
			}
		} else {
			rate, p50, p99 = thousands(r.MsgRate), ms(r.P50), ms(r.P99)
			if r.QoS > 0 {
				notes = append(notes, fmt.Sprintf("%s PUBACK/s", thousands(r.AckRate)))
			}
			if r.Lost > 0 {
				notes = append(notes, fmt.Sprintf("**%s of %s deliveries lost**", thousands(float64(r.Lost)), thousands(float64(r.Expected))))
			}
			if r.Stalls > 0 {
				notes = append(notes, fmt.Sprintf("%d stalls", r.Stalls))
			}
			if c := r.CPU; c != nil {
				cpu = fmt.Sprintf("%.2f", c.Broker)
				if c.Other >= 0.1 {
					notes = append(notes, fmt.Sprintf("other processes used %.1f cores", c.Other))
				}
			}
			if r.CoverageSeconds > 0 {
				notes = append(notes, fmt.Sprintf("all topics delivered %.1f s after the first publish", r.CoverageSeconds))
			} else if r.CoverageSeconds < 0 {
				notes = append(notes, "**some topics never delivered**")
			}
		}
		if r.Errors > 0 {
			notes = append(notes, fmt.Sprintf("**%d errors: %s**", r.Errors, r.FirstError))
		}
		if r.Note != "" {
			notes = append(notes, r.Note)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", rowName(r), r.Broker, rate, p50, p99, mem, cpu, strings.Join(notes, "; "))
	}
	return nil
}

// thousands formats a number rounded to an integer with thousands
// separators.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// ms formats a latency in milliseconds with about three significant
// digits.
func ms(v float64) string {
	switch {
	case v == 0:
		return "–"
	case v < 1:
		return fmt.Sprintf("%.0f µs", v*1000)
	case v < 10:
		return fmt.Sprintf("%.2f ms", v)
	case v < 100:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.0f ms", v)
}

func mib(b int64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }
