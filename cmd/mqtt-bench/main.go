// Command mqtt-bench is a load generator for MQTT brokers. It measures
// throughput, end-to-end latency and idle-connection memory in a few fixed
// scenarios, the same way against any broker, so that Switchboard's MQTT
// adapter can be compared with another broker (scripts/bench-mqtt.sh runs it
// against Mosquitto and Switchboard side by side).
//
// Scenarios (-scenario):
//
//	fanout  one QoS 0 publisher, -subs subscribers (1,000) on one topic
//	fanin   -pubs QoS 1 publishers (50), each with a PUBACK window, one
//	        subscriber, all on one topic
//	many    -pubs publishing connections (10,000), each on its own topic
//	        bench/<i>, one subscriber on bench/#
//	idle    -conns idle connections (5,000) with one subscription each; the
//	        broker's resident memory (-pid) before and after, per connection
//
// Latency is the time from the send timestamp carried in each payload to its
// receipt, recorded in an HDR histogram. Without -rate the senders publish
// as fast as their windows allow (the peak); with -rate they publish on a
// fixed schedule and the timestamp is the scheduled time, so that a sender
// held back by the broker is charged to the latency.
//
// Each run prints one result line; -json FILE also appends the result as a
// JSON line (FILE "-" is standard output). -report FILE turns such a file
// into a markdown table.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime/pprof"
	"time"
)

// config is the command line.
type config struct {
	broker       string
	label        string
	scenario     string
	pubs         int
	subs         int
	conns        int
	senders      int
	size         int
	qos          int
	subQoS       int
	window       int
	inflight     int
	rate         float64
	rateFrom     string
	rateFactor   float64
	duration     time.Duration
	warmup       time.Duration
	drain        time.Duration
	drainQuiet   time.Duration
	settle       time.Duration
	timeout      time.Duration
	keepalive    uint16
	dialers      int
	readBuffer   int
	pid          int
	metricsURL   string
	clientPrefix string
	coverage     bool
	jsonOut      string
	note         string
	cpuProfile   string
}

// scenarioDefaults are the values a flag left at its zero value takes.
var scenarioDefaults = map[string]config{
	"fanout": {pubs: 1, subs: 1000, senders: 1, qos: 0, subQoS: 0, window: 16, inflight: 16},
	"fanin":  {pubs: 50, subs: 1, senders: 50, qos: 1, subQoS: 1, window: 16, inflight: 64},
	"many":   {pubs: 10000, subs: 1, senders: 4, qos: 0, subQoS: 0, window: 16, inflight: 128},
	"idle":   {conns: 5000, window: 16},
}

func main() {
	if err := benchMain(); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "mqtt-bench:", err)
		os.Exit(1)
	}
}

func benchMain() error {
	cfg, report, err := parseFlags(os.Args[1:])
	if err != nil || cfg == nil && report == "" {
		return err
	}
	if report != "" {
		return printReport(os.Stdout, report)
	}
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	res, err := run(cfg)
	if err != nil {
		return fmt.Errorf("%s %s: %w", cfg.scenario, cfg.label, err)
	}
	res.Note = cfg.note
	if cfg.jsonOut != "-" {
		fmt.Println(res.line())
	}
	if cfg.jsonOut != "" {
		return appendJSON(cfg.jsonOut, res)
	}
	return nil
}

func parseFlags(args []string) (*config, string, error) {
	fs := flag.NewFlagSet("mqtt-bench", flag.ContinueOnError)
	cfg := &config{}
	var qos, subQoS, keepalive int
	var report string
	var freePorts int
	fs.StringVar(&cfg.broker, "broker", "127.0.0.1:1883", "broker address (host:port, plain TCP)")
	fs.StringVar(&cfg.label, "label", "", "broker name in the results (default: the address)")
	fs.StringVar(&cfg.scenario, "scenario", "fanout", "fanout, fanin, many or idle")
	fs.IntVar(&cfg.pubs, "pubs", 0, "publishing connections (scenario default)")
	fs.IntVar(&cfg.subs, "subs", 0, "subscribing connections, fanout only (default 1000)")
	fs.IntVar(&cfg.conns, "conns", 0, "idle connections, idle only (default 5000)")
	fs.IntVar(&cfg.senders, "senders", 0, "sender goroutines sharing the publishing connections (scenario default)")
	fs.IntVar(&cfg.size, "size", 100, "payload bytes (at least 16: timestamp and ids)")
	fs.IntVar(&qos, "qos", -1, "QoS of the publishes, 0 or 1 (scenario default)")
	fs.IntVar(&subQoS, "sub-qos", -1, "QoS of the subscriptions (default: -qos)")
	fs.IntVar(&cfg.window, "window", 0, "QoS 1: publishes awaiting PUBACK per connection (scenario default)")
	fs.IntVar(&cfg.inflight, "inflight", 0, "messages per sender sent but not yet received by every subscriber (scenario default; -1: unlimited)")
	fs.Float64Var(&cfg.rate, "rate", 0, "publishes per second over all senders; 0 publishes as fast as the windows allow")
	fs.StringVar(&cfg.rateFrom, "rate-from", "", "JSON result file: offer -rate-factor times the delivered rate of its last result for the same scenario and label")
	fs.Float64Var(&cfg.rateFactor, "rate-factor", 0.5, "share of the -rate-from rate to offer")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "measurement window")
	fs.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "load before the measurement window")
	fs.DurationVar(&cfg.drain, "drain", 10*time.Second, "longest wait for in-flight messages after the window")
	fs.DurationVar(&cfg.drainQuiet, "drain-quiet", 3*time.Second, "stop draining once nothing arrived for this long")
	fs.DurationVar(&cfg.settle, "settle", 3*time.Second, "idle: wait before reading the broker's memory")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "connect and subscribe timeout")
	fs.IntVar(&keepalive, "keepalive", 600, "MQTT keepalive in seconds (no PINGREQ is sent: keep it above the run's length)")
	fs.IntVar(&cfg.dialers, "dialers", 16, "connections opened in parallel")
	fs.IntVar(&cfg.readBuffer, "read-buffer", 8192, "read buffer of each subscriber")
	fs.IntVar(&cfg.pid, "pid", 0, "process id of the broker: idle reads its VmRSS, the other scenarios its CPU time")
	fs.StringVar(&cfg.metricsURL, "metrics", "", "idle: Prometheus endpoint of the broker (Go runtime gauges, if it has them)")
	fs.StringVar(&cfg.clientPrefix, "client-prefix", "", "client id prefix (default: unique per run)")
	fs.StringVar(&cfg.jsonOut, "json", "", "append the result as a JSON line to this file (- for standard output)")
	fs.StringVar(&cfg.note, "note", "", "free text stored with the result (for example the broker's settings)")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write the generator's own CPU profile to this file")
	fs.IntVar(&freePorts, "free-ports", 0, "print this many free TCP ports on 127.0.0.1 and exit (for scripts)")
	fs.StringVar(&report, "report", "", "print a markdown table of the results in this JSON lines file and exit")
	if err := fs.Parse(args); err != nil {
		return nil, "", err
	}
	if report != "" {
		return nil, report, nil
	}
	if freePorts > 0 {
		return nil, "", printFreePorts(freePorts)
	}
	def, ok := scenarioDefaults[cfg.scenario]
	if !ok {
		return nil, "", fmt.Errorf("unknown scenario %q", cfg.scenario)
	}
	orDefault := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	orDefault(&cfg.pubs, def.pubs)
	orDefault(&cfg.subs, def.subs)
	orDefault(&cfg.conns, def.conns)
	orDefault(&cfg.senders, def.senders)
	orDefault(&cfg.window, def.window)
	orDefault(&cfg.inflight, def.inflight)
	cfg.qos, cfg.subQoS = def.qos, def.subQoS
	if qos >= 0 {
		cfg.qos, cfg.subQoS = qos, qos
	}
	if subQoS >= 0 {
		cfg.subQoS = subQoS
	}
	switch {
	case cfg.qos > 1 || cfg.subQoS > 1:
		return nil, "", errors.New("only QoS 0 and 1 are supported")
	case cfg.size < payloadHeader:
		return nil, "", fmt.Errorf("-size must be at least %d", payloadHeader)
	case cfg.window < 1 || cfg.window > 65000:
		return nil, "", errors.New("-window must be between 1 and 65000")
	case cfg.scenario == "idle" && cfg.pid <= 0:
		return nil, "", errors.New("idle needs the broker's -pid")
	}
	if cfg.inflight < 0 {
		cfg.inflight = 0
	}
	cfg.senders = min(cfg.senders, cfg.pubs)
	cfg.keepalive = uint16(keepalive)
	if cfg.label == "" {
		cfg.label = cfg.broker
	}
	if cfg.clientPrefix == "" {
		cfg.clientPrefix = fmt.Sprintf("mb%d-%s", os.Getpid(), cfg.scenario)
	}
	if cfg.rateFrom != "" {
		r, err := rateFrom(cfg.rateFrom, cfg.scenario, cfg.label)
		if err != nil {
			return nil, "", err
		}
		cfg.rate = r * cfg.rateFactor
	}
	return cfg, "", nil
}

func run(cfg *config) (*result, error) {
	switch cfg.scenario {
	case "fanout":
		filters := make([]string, cfg.subs)
		for i := range filters {
			filters[i] = "bench/fanout"
		}
		return runLoad(cfg, topology{
			subFilters: filters,
			pubTopic:   func(int) string { return "bench/fanout" },
			fanout:     int64(cfg.subs),
		})
	case "fanin":
		return runLoad(cfg, topology{
			subFilters: []string{"bench/fanin"},
			pubTopic:   func(int) string { return "bench/fanin" },
			fanout:     1,
		})
	case "many":
		cfg.coverage = true
		return runLoad(cfg, topology{
			subFilters: []string{"bench/#"},
			pubTopic:   func(i int) string { return fmt.Sprintf("bench/%d", i) },
			fanout:     1,
		})
	case "idle":
		return runIdle(cfg)
	}
	return nil, fmt.Errorf("unknown scenario %q", cfg.scenario)
}

// rateFrom finds the delivered rate of the last result in file for the
// scenario and label, in publishes per second.
func rateFrom(file, scenario, label string) (float64, error) {
	results, err := readResults(file)
	if err != nil {
		return 0, err
	}
	for i := len(results) - 1; i >= 0; i-- {
		r := results[i]
		if r.Scenario == scenario && r.Broker == label && r.OfferedRate == 0 && r.MsgRate > 0 {
			fanout := float64(max(r.Subscribers, 1))
			if scenario != "fanout" {
				fanout = 1
			}
			return r.MsgRate / fanout, nil
		}
	}
	return 0, fmt.Errorf("%s has no peak result for %s on %s", file, scenario, label)
}

func appendJSON(file string, res *result) error {
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if file == "-" {
		_, err = os.Stdout.Write(b)
		return err
	}
	f, err := os.OpenFile(file, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// printFreePorts prints n TCP ports that were free on 127.0.0.1 a moment
// ago, one a line. They are held open together so that they differ.
func printFreePorts(n int) error {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		lns = append(lns, ln)
		fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	}
	return nil
}
