package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

func mustParse(t *testing.T, doc string) Config {
	t.Helper()
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse(%q): %v", doc, err)
	}
	return c
}

func parseErr(t *testing.T, doc string) error {
	t.Helper()
	_, err := Parse([]byte(doc))
	if err == nil {
		t.Fatalf("Parse(%q) succeeded, want an error", doc)
	}
	return err
}

func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func newFlags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parsing flags %q: %v", args, err)
	}
	return fs
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	c := Default()
	checks := []struct {
		name      string
		got, want any
	}{
		{"region", c.Region, "local"},
		{"durability", c.Durability, DurabilityFsync},
		{"flushInterval", c.FlushInterval, Duration(10 * time.Millisecond)},
		{"data", c.Data, "./data"},
		{"http", c.HTTP, ":8080"},
		{"mqtt", c.MQTT, ":1883"},
		{"mqttTLS", c.MQTTTLS, ":8883"},
		{"stomp", c.STOMP, ":61613"},
		{"amqp", c.AMQP, ":5672"},
		{"dev", c.Dev, false},
		{"resumeWindow", c.ResumeWindow, Duration(2 * time.Minute)},
		{"dedupWindow", c.DedupWindow, Duration(2 * time.Minute)},
		{"presenceGrace", c.PresenceGrace, Duration(15 * time.Second)},
		{"connectionStateTTL", c.ConnectionStateTTL, Duration(2 * time.Minute)},
		{"maxMessageSize", c.MaxMessageSize, Size(65536)},
		{"maxRequestBody", c.MaxRequestBody, Size(1 << 20)},
		{"subscriberBuffer", c.SubscriberBuffer, 1024},
		{"channelMemoryLimit", c.ChannelMemoryLimit, 1000},
		{"cors.allowedOrigins", c.CORS.AllowedOrigins, []string{"*"}},
		{"cors.allowCredentials", c.CORS.AllowCredentials, false},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "text"},
		{"shutdownTimeout", c.ShutdownTimeout, Duration(15 * time.Second)},
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.want) {
			t.Errorf("default %s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
	for _, doc := range []string{"", "# only a comment\n", "---\n", "~\n"} {
		if got := mustParse(t, doc); !reflect.DeepEqual(got, Default()) {
			t.Errorf("Parse(%q) = %+v, want the defaults", doc, got)
		}
	}
	// Load without a file, environment or flags gives the defaults too.
	got, err := Load(newFlags(t), envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, Default()) {
		t.Errorf("Load() = %+v, want the defaults", got)
	}
}

func TestNames(t *testing.T) {
	want := map[string][2]string{
		"region":                      {"SWITCHBOARD_REGION", "region"},
		"durability":                  {"SWITCHBOARD_DURABILITY", "durability"},
		"flushInterval":               {"SWITCHBOARD_FLUSH_INTERVAL", "flush-interval"},
		"data":                        {"SWITCHBOARD_DATA", "data"},
		"http":                        {"SWITCHBOARD_HTTP", "http"},
		"mqtt":                        {"SWITCHBOARD_MQTT", "mqtt"},
		"mqttTLS":                     {"SWITCHBOARD_MQTT_TLS", "mqtt-tls"},
		"stomp":                       {"SWITCHBOARD_STOMP", "stomp"},
		"amqp":                        {"SWITCHBOARD_AMQP", "amqp"},
		"tls.certFile":                {"SWITCHBOARD_TLS_CERT_FILE", "tls-cert-file"},
		"tls.keyFile":                 {"SWITCHBOARD_TLS_KEY_FILE", "tls-key-file"},
		"dev":                         {"SWITCHBOARD_DEV", "dev"},
		"resumeWindow":                {"SWITCHBOARD_RESUME_WINDOW", "resume-window"},
		"dedupWindow":                 {"SWITCHBOARD_DEDUP_WINDOW", "dedup-window"},
		"presenceGrace":               {"SWITCHBOARD_PRESENCE_GRACE", "presence-grace"},
		"connectionStateTTL":          {"SWITCHBOARD_CONNECTION_STATE_TTL", "connection-state-ttl"},
		"maxMessageSize":              {"SWITCHBOARD_MAX_MESSAGE_SIZE", "max-message-size"},
		"maxRequestBody":              {"SWITCHBOARD_MAX_REQUEST_BODY", "max-request-body"},
		"subscriberBuffer":            {"SWITCHBOARD_SUBSCRIBER_BUFFER", "subscriber-buffer"},
		"channelMemoryLimit":          {"SWITCHBOARD_CHANNEL_MEMORY_LIMIT", "channel-memory-limit"},
		"cors.allowedOrigins":         {"SWITCHBOARD_CORS_ALLOWED_ORIGINS", "cors-allowed-origins"},
		"cors.allowCredentials":       {"SWITCHBOARD_CORS_ALLOW_CREDENTIALS", "cors-allow-credentials"},
		"realtime.heartbeat":          {"SWITCHBOARD_REALTIME_HEARTBEAT", "realtime-heartbeat"},
		"realtime.frameRate":          {"SWITCHBOARD_REALTIME_FRAME_RATE", "realtime-frame-rate"},
		"realtime.frameBurst":         {"SWITCHBOARD_REALTIME_FRAME_BURST", "realtime-frame-burst"},
		"realtime.maxPendingAttaches": {"SWITCHBOARD_REALTIME_MAX_PENDING_ATTACHES", "realtime-max-pending-attaches"},
		"sse.heartbeat":               {"SWITCHBOARD_SSE_HEARTBEAT", "sse-heartbeat"},
		"sse.retry":                   {"SWITCHBOARD_SSE_RETRY", "sse-retry"},
		"sse.maxChannels":             {"SWITCHBOARD_SSE_MAX_CHANNELS", "sse-max-channels"},
		"sse.maxStreamsPerKey":        {"SWITCHBOARD_SSE_MAX_STREAMS_PER_KEY", "sse-max-streams-per-key"},
		"sse.buffer":                  {"SWITCHBOARD_SSE_BUFFER", "sse-buffer"},
		"sse.writeTimeout":            {"SWITCHBOARD_SSE_WRITE_TIMEOUT", "sse-write-timeout"},
		"mqttBroker.maxSessionExpiry": {"SWITCHBOARD_MQTT_BROKER_MAX_SESSION_EXPIRY", "mqtt-broker-max-session-expiry"},
		"mqttBroker.maxInflight":      {"SWITCHBOARD_MQTT_BROKER_MAX_INFLIGHT", "mqtt-broker-max-inflight"},
		"mqttBroker.receiveMaximum":   {"SWITCHBOARD_MQTT_BROKER_RECEIVE_MAXIMUM", "mqtt-broker-receive-maximum"},
		"mqttBroker.maxPacketSize":    {"SWITCHBOARD_MQTT_BROKER_MAX_PACKET_SIZE", "mqtt-broker-max-packet-size"},
		"mqttBroker.allowAnonymous":   {"SWITCHBOARD_MQTT_BROKER_ALLOW_ANONYMOUS", "mqtt-broker-allow-anonymous"},
		"log.level":                   {"SWITCHBOARD_LOG_LEVEL", "log-level"},
		"log.format":                  {"SWITCHBOARD_LOG_FORMAT", "log-format"},
		"shutdownTimeout":             {"SWITCHBOARD_SHUTDOWN_TIMEOUT", "shutdown-timeout"},
	}
	sts := settings()
	if len(sts) != len(want) {
		t.Errorf("%d settings, want %d", len(sts), len(want))
	}
	fs := newFlags(t)
	for _, st := range sts {
		w, ok := want[st.key]
		if !ok {
			t.Errorf("unexpected setting %q", st.key)
			continue
		}
		if got := envName(st.key); got != w[0] {
			t.Errorf("envName(%q) = %q, want %q", st.key, got, w[0])
		}
		if got := flagName(st.key); got != w[1] {
			t.Errorf("flagName(%q) = %q, want %q", st.key, got, w[1])
		}
		if fs.Lookup(w[1]) == nil {
			t.Errorf("flag --%s not registered", w[1])
		}
	}
	// Every scalar YAML key of Config has a setting.
	keys := map[string]bool{}
	for _, st := range sts {
		keys[st.key] = true
	}
	for k := range yamlKeys(reflect.TypeFor[Config]()) {
		switch k {
		case "keys", "namespaces", "queues":
			continue
		case "tls", "cors", "sse", "realtime", "log", "mqttBroker":
			continue
		}
		if !keys[k] {
			t.Errorf("YAML key %q has no environment variable or flag", k)
		}
	}
	// The flags of the public contract.
	for _, name := range []string{"config", "dev", "data", "http", "mqtt", "stomp", "amqp", "region"} {
		if fs.Lookup(name) == nil {
			t.Errorf("flag --%s missing", name)
		}
	}
	// Registering twice is harmless.
	RegisterFlags(fs)
	RegisterFlags(nil)
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, "switchboard.yaml", `
region: from-file
http: ":1111"
mqtt: ":2222"
resumeWindow: 1m
dedupWindow: 1m
maxMessageSize: 1KiB
log:
  level: debug
dev: false
`)
	env := envMap(map[string]string{
		"SWITCHBOARD_CONFIG":           file,
		"SWITCHBOARD_REGION":           "from-env",
		"SWITCHBOARD_MQTT":             ":3333",
		"SWITCHBOARD_RESUME_WINDOW":    "3m",
		"SWITCHBOARD_MAX_MESSAGE_SIZE": "2KiB",
		"SWITCHBOARD_DEV":              "true",
	})
	fs := newFlags(t, "--region", "from-flag", "--max-message-size=3KiB", "--dedup-window", "5m")
	c, err := Load(fs, env)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"region (flag > env > file)", c.Region, "from-flag"},
		{"http (file)", c.HTTP, ":1111"},
		{"mqtt (env > file)", c.MQTT, ":3333"},
		{"resumeWindow (env > file)", c.ResumeWindow, Duration(3 * time.Minute)},
		{"dedupWindow (flag > file)", c.DedupWindow, Duration(5 * time.Minute)},
		{"maxMessageSize (flag > env > file)", c.MaxMessageSize, 3 * KiB},
		{"log.level (file)", c.Log.Level, "debug"},
		{"dev (env > file)", c.Dev, true},
		{"stomp (default)", c.STOMP, ":61613"},
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.want) {
			t.Errorf("%s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}

	// A flag left at its default does not override the file or environment.
	c, err = Load(newFlags(t, "--config", file), envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Region != "from-file" || c.HTTP != ":1111" {
		t.Errorf("region, http = %q, %q; want the file's values", c.Region, c.HTTP)
	}

	// --config wins over SWITCHBOARD_CONFIG.
	other := writeFile(t, "other.yaml", "region: other\n")
	c, err = Load(newFlags(t, "--config", other), envMap(map[string]string{"SWITCHBOARD_CONFIG": file}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Region != "other" {
		t.Errorf("region = %q, want the --config file's", c.Region)
	}
}

func TestFlagsAndEnvForms(t *testing.T) {
	// Boolean flags need no value; list flags take commas and accumulate.
	fs := newFlags(t, "--dev", "--cors-allowed-origins", "https://a.example, https://b.example",
		"--cors-allowed-origins", "https://c.example", "--cors-allow-credentials", "--http", "off")
	c, err := Load(fs, envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Dev || !c.CORS.AllowCredentials || c.HTTP != Off {
		t.Errorf("dev, allowCredentials, http = %v, %v, %q", c.Dev, c.CORS.AllowCredentials, c.HTTP)
	}
	want := []string{"https://a.example", "https://b.example", "https://c.example"}
	if !reflect.DeepEqual(c.CORS.AllowedOrigins, want) {
		t.Errorf("allowedOrigins = %q, want %q", c.CORS.AllowedOrigins, want)
	}

	c, err = Load(nil, envMap(map[string]string{
		"SWITCHBOARD_CORS_ALLOWED_ORIGINS": "https://x.example,https://y.example",
		"SWITCHBOARD_SUBSCRIBER_BUFFER":    "64",
		"SWITCHBOARD_TLS_CERT_FILE":        "cert.pem",
		"SWITCHBOARD_TLS_KEY_FILE":         "key.pem",
		"SWITCHBOARD_DURABILITY":           "memory",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.CORS.AllowedOrigins) != 2 || c.SubscriberBuffer != 64 || !c.TLS.Configured() || c.Durability != DurabilityMemory {
		t.Errorf("env not applied: %+v", c)
	}

	// Syntax errors in flags are reported by the flag parser with the flag name.
	for _, arg := range []string{"--resume-window=abc", "--max-message-size=lots", "--subscriber-buffer=x", "--dev=maybe"} {
		fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
		fs.SetOutput(io.Discard)
		RegisterFlags(fs)
		err := fs.Parse([]string{arg})
		name, _, _ := strings.Cut(strings.TrimPrefix(arg, "--"), "=")
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("Parse(%q) = %v, want an error naming %s", arg, err, name)
		}
	}
}

func TestLoadErrorsNameTheirSource(t *testing.T) {
	file := writeFile(t, "bad.yaml", "region: ok\n\nresumeWindow: soon\n")
	_, err := Load(newFlags(t, "--config", file), envMap(nil))
	if err == nil || !strings.Contains(err.Error(), file+":3: resumeWindow: invalid duration") {
		t.Errorf("file error = %v, want it at %s:3 naming resumeWindow", err, file)
	}

	_, err = Load(nil, envMap(map[string]string{
		"SWITCHBOARD_RESUME_WINDOW":    "soon",
		"SWITCHBOARD_MAX_REQUEST_BODY": "huge",
		"SWITCHBOARD_DEV":              "perhaps",
		"SWITCHBOARD_REGION":           "not a region",
	}))
	for _, want := range []string{
		"environment variable SWITCHBOARD_RESUME_WINDOW: resumeWindow: invalid duration",
		"environment variable SWITCHBOARD_MAX_REQUEST_BODY: maxRequestBody: invalid size",
		"environment variable SWITCHBOARD_DEV: dev: invalid boolean",
		"environment variable SWITCHBOARD_REGION: region: must be",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("env error = %v, want it to contain %q", err, want)
		}
	}

	file = writeFile(t, "ok.yaml", "durability: memory\nhttp: \":9000\"\n")
	_, err = Load(newFlags(t, "--config", file, "--durability", "sometimes", "--mqtt", "1883", "--stomp", ":9000"), envMap(nil))
	for _, want := range []string{
		`flag --durability: durability: must be fsync, batch or memory, not "sometimes"`,
		`flag --mqtt: mqtt: invalid address "1883"`,
		`flag --stomp: stomp: address ":9000" is already used by http`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("flag error = %v, want it to contain %q", err, want)
		}
	}

	// A persisted namespace in the file with durability memory from the
	// environment: the problem is reported at the file's line.
	file = writeFile(t, "ns.yaml", "namespaces:\n  - name: chat\n    persisted: true\n")
	_, err = Load(nil, envMap(map[string]string{"SWITCHBOARD_CONFIG": file, "SWITCHBOARD_DURABILITY": "memory"}))
	if err == nil || !strings.Contains(err.Error(), file+":3: namespaces[0].persisted") {
		t.Errorf("error = %v, want it at %s:3 naming namespaces[0].persisted", err, file)
	}

	_, err = Load(newFlags(t, "--config", filepath.Join(t.TempDir(), "missing.yaml")), envMap(nil))
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file error = %v, want os.ErrNotExist", err)
	}

	var fe *FieldError
	_, err = Load(nil, envMap(map[string]string{"SWITCHBOARD_LOG_LEVEL": "loud"}))
	if !errors.As(err, &fe) || fe.Path != "log.level" || fe.Source != "environment variable SWITCHBOARD_LOG_LEVEL" {
		t.Errorf("errors.As(%v) = %+v, want a FieldError for log.level from the environment", err, fe)
	}
}

func TestValidationErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // each must appear in the error
	}{
		{"unknown key", "resumeWindow: 1m\nresumewindow: 2m\n", []string{`line 2: resumewindow: unknown key (did you mean "resumeWindow"?)`}},
		{"unknown nested key", "log:\n  colour: red\n", []string{"line 2: log.colour: unknown key"}},
		{"unknown key in list item", "keys:\n  - name: a\n    secret: s\n    caps: {}\n", []string{"line 4: keys[0].caps: unknown key"}},
		{"unknown queue key", "queues:\n  - name: q\n    channels: x\n    retries: 3\n", []string{"line 4: queues[0].retries: unknown key"}},
		{"duplicate yaml key", "region: a\nregion: b\n", []string{"line 2: region: defined again (first at line 1)"}},
		{"bad durability", "durability: sometimes\n", []string{`line 1: durability: must be fsync, batch or memory, not "sometimes"`}},
		{"bad duration", "resumeWindow: 5\n", []string{`line 1: resumeWindow: invalid duration "5"`}},
		{"bad duration in list", "queues:\n  - {name: q, channels: x, ackDeadline: later}\n", []string{"line 2: queues[0].ackDeadline: invalid duration"}},
		{"bad int in list", "queues:\n  - name: q\n    channels: x\n    maxLength: long\n", []string{"line 4: queues[0].maxLength: cannot unmarshal"}},
		{"negative duration", "presenceGrace: -1s\n", []string{"presenceGrace: must not be negative"}},
		{"zero window", "dedupWindow: 0s\n", []string{"dedupWindow: must be more than 0"}},
		{"flush interval", "flushInterval: 2s\n", []string{"flushInterval: must be more than 0 and at most 1s"}},
		{"bad size", "maxMessageSize: 1.5MiB\n", []string{`line 1: maxMessageSize: invalid size "1.5MiB"`}},
		{"size out of range", "maxRequestBody: 2GiB\n", []string{"maxRequestBody: must be between 1 byte and 1GiB"}},
		{"size list", "maxRequestBody: [1]\n", []string{"line 1: maxRequestBody: want a size, not a list"}},
		{"bad region", "region: eu west\n", []string{"line 1: region: must be 1-64 characters"}},
		{"bad address", "http: localhost\namqp: \":99999\"\n", []string{`line 1: http: invalid address "localhost"`, `line 2: amqp: invalid address ":99999"`}},
		{"duplicate address", "mqtt: \":8080\"\n", []string{`line 1: mqtt: address ":8080" is already used by http`}},
		{"tls half", "tls:\n  certFile: c.pem\n", []string{"tls.keyFile: must be set when tls.certFile is set"}},
		{"bad log", "log: {level: loud, format: xml}\n", []string{"log.level: must be debug", "log.format: must be text or json"}},
		{"cors credentials with *", "cors:\n  allowCredentials: true\n", []string{`line 2: cors.allowCredentials: cannot be combined with the "*" origin`}},
		{"cors bad origin", "cors:\n  allowedOrigins: [\"https://ok.example\", \"not an origin\"]\n", []string{`cors.allowedOrigins[1]: invalid origin "not an origin"`}},
		{"int limits", "subscriberBuffer: 0\nchannelMemoryLimit: -5\n", []string{"line 1: subscriberBuffer: must be between 1", "line 2: channelMemoryLimit: must be between 1"}},
		{"duplicate key name", "keys:\n  - {name: app, secret: a}\n  - name: app\n    secret: b\n", []string{`line 3: keys[1].name: duplicate key name "app" (also keys[0])`}},
		{"empty key name and secret", "keys:\n  - name: \"\"\n    secret: \"\"\n", []string{"line 2: keys[0].name: must not be empty", "line 3: keys[0].secret: must not be empty"}},
		{"key name with colon", "keys:\n  - name: app:x\n    secret: s\n", []string{"line 2: keys[0].name: must not contain ':'"}},
		{"bad capability op", "keys:\n  - name: a\n    secret: s\n    capabilities:\n      \"chat:*\": [publish, shout]\n", []string{`line 5: keys[0].capabilities["chat:*"][1]: unknown operation "shout"`}},
		{"bad capability pattern", "keys:\n  - name: a\n    secret: s\n    capabilities:\n      \"*:room\": [publish]\n", []string{`line 5: keys[0].capabilities["*:room"]: invalid channel pattern "*:room"`}},
		{"empty capability", "keys:\n  - name: a\n    secret: s\n    capabilities: {x: []}\n", []string{"line 4: keys[0].capabilities.x: must list at least one operation"}},
		{"persisted with memory", "durability: memory\nnamespaces:\n  - name: chat\n    persisted: true\n", []string{"line 4: namespaces[0].persisted: a persisted namespace needs durability fsync or batch, but durability is memory"}},
		{"retention without persisted", "namespaces:\n  - name: a\n  - name: b\n    retention: 24h\n", []string{"line 4: namespaces[1].retention: is set but persisted is not true"}},
		{"forever without persisted", "namespaces:\n  - name: b\n    retention: forever\n", []string{"namespaces[0].retention: is set but persisted is not true"}},
		{"bad retention", "namespaces:\n  - name: b\n    persisted: true\n    retention: 0s\n", []string{`line 4: namespaces[0].retention: invalid retention "0s"`}},
		{"duplicate namespace", "namespaces:\n  - name: a\n  - name: a\n", []string{`line 3: namespaces[1].name: duplicate namespace "a"`}},
		{"namespace with colon", "namespaces:\n  - name: a:b\n", []string{"namespaces[0].name: must not contain ':'"}},
		{"anonymous admin", "namespaces:\n  - name: a\n    anonymous: [subscribe, admin]\n", []string{`namespaces[0].anonymous[1]: "admin" cannot be granted anonymously`}},
		{"namespace size", "namespaces:\n  - name: a\n    maxMessageSize: 5GiB\n", []string{"namespaces[0].maxMessageSize: must be between"}},
		{"queue problems", `queues:
  - name: jobs
    channels: "jobs:*"
    sources: [message, email]
    maxDeliveries: 0
    ackDeadline: 0s
    maxLength: 0
    ttl: -1s
    overflow: explode
  - name: jobs
    channels: ""
    sources: []
    deadLetter: jobs
`, []string{
			`line 4: queues[0].sources[1]: unknown source "email"`,
			"line 5: queues[0].maxDeliveries: must be at least 1",
			"line 6: queues[0].ackDeadline: must be more than 0",
			"line 7: queues[0].maxLength: must be at least 1",
			"line 8: queues[0].ttl: must not be negative",
			`line 9: queues[0].overflow: must be rejectNew or dropOldest, not "explode"`,
			`line 10: queues[1].name: duplicate queue "jobs"`,
			"line 11: queues[1].channels: must not be empty",
			"line 12: queues[1].sources: must list at least one",
			"line 13: queues[1].deadLetter: must differ from the queue's own name",
		}},
		{"queue name", "queues:\n  - name: \"bad name\"\n    channels: x\n", []string{`line 2: queues[0].name: invalid queue name "bad name"`}},
		{"not a mapping", "- region\n", []string{"line 1: the document must be a mapping"}},
		{"syntax error", "region: [\n", []string{"invalid YAML"}},
		{"two documents", "region: a\n---\nregion: b\n", []string{"one YAML document"}},
		{"empty value", "region:\nhttp: ~\nlog:\n  level:\n", []string{"line 1: region: has no value", "line 2: http: has no value", "line 4: log.level: has no value"}},
		{"wrong type", "dev: sometimes\n", []string{"line 1: dev: cannot unmarshal"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := parseErr(t, tt.doc)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error:\n%v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

func TestValidateCollectsAll(t *testing.T) {
	c := Default()
	c.Region = ""
	c.HTTP = "nowhere"
	c.Queues = []Queue{{Name: "q"}}
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate() = nil")
	}
	var paths []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("%T is not a *FieldError", e)
		}
		paths = append(paths, fe.Path)
	}
	for _, want := range []string{"region", "http", "queues[0].channels", "queues[0].sources", "queues[0].maxDeliveries", "queues[0].ackDeadline", "queues[0].maxLength", "queues[0].overflow"} {
		if !contains(paths, want) {
			t.Errorf("paths %q lack %q", paths, want)
		}
	}
	// A queue built with NewQueue is valid.
	c = Default()
	c.Queues = []Queue{NewQueue("q", "x:*")}
	if err := c.Validate(); err != nil {
		t.Errorf("NewQueue: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestOffAddresses(t *testing.T) {
	c := mustParse(t, "http: off\nmqtt: off\nstomp: \"127.0.0.1:0\"\namqp: \"[::1]:0\"\n")
	if Enabled(c.HTTP) || Enabled(c.MQTT) || !Enabled(c.STOMP) {
		t.Errorf("Enabled: http %v mqtt %v stomp %v", Enabled(c.HTTP), Enabled(c.MQTT), Enabled(c.STOMP))
	}
	want := []Listener{{"stomp", "127.0.0.1:0"}, {"amqp", "[::1]:0"}}
	if got := c.Listeners(); !reflect.DeepEqual(got, want) {
		t.Errorf("Listeners() = %v, want %v", got, want)
	}
	// The MQTT TLS listener needs a certificate.
	c = mustParse(t, "tls: {certFile: c.pem, keyFile: k.pem}\n")
	var names []string
	for _, l := range c.Listeners() {
		names = append(names, l.Name)
	}
	if want := []string{"http", "mqtt", "mqttTLS", "stomp", "amqp"}; !reflect.DeepEqual(names, want) {
		t.Errorf("Listeners() = %v, want %v", names, want)
	}
	d := Default()
	if got := d.Listeners(); len(got) != 4 {
		t.Errorf("default listeners = %v, want 4 (no TLS)", got)
	}
	parseErr(t, "http: OFF\n")
}

func TestSize(t *testing.T) {
	good := map[string]Size{
		"0":      0,
		"65536":  65536,
		"64KiB":  64 * KiB,
		"1MiB":   MiB,
		"1 mib":  MiB,
		"2GiB":   2 * GiB,
		"10B":    10,
		"2KB":    2000,
		"3MB":    3_000_000,
		" 7kib ": 7 * KiB,
	}
	for in, want := range good {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "KiB", "1.5MiB", "-1", "+1", "10XB", "1 2", "0x10", "9223372036854775807KiB", "99999999999999999999"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
	for s, want := range map[Size]string{65536: "64KiB", MiB: "1MiB", 3 * GiB: "3GiB", 1500: "1500", 0: "0"} {
		if got := s.String(); got != want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(s), got, want)
		}
	}
	c := mustParse(t, "maxMessageSize: 131072\nmaxRequestBody: 2MiB\n")
	if c.MaxMessageSize != 128*KiB || c.MaxRequestBody != 2*MiB {
		t.Errorf("sizes = %v, %v", c.MaxMessageSize, c.MaxRequestBody)
	}
}

func TestRetention(t *testing.T) {
	c := mustParse(t, `
durability: batch
namespaces:
  - name: a
    persisted: true
    retention: forever
  - name: b
    persisted: true
    retention: 36h
  - name: c
    persisted: true
  - name: d
`)
	type hist struct {
		keep    time.Duration
		forever bool
	}
	want := []hist{{0, true}, {36 * time.Hour, false}, {0, true}, {0, false}}
	for i, ns := range c.Namespaces {
		keep, forever := ns.History()
		if (hist{keep, forever}) != want[i] {
			t.Errorf("namespaces[%d].History() = %v, %v; want %v", i, keep, forever, want[i])
		}
	}
	if *c.Namespaces[0].Retention != Forever || c.Namespaces[0].Retention.String() != "forever" {
		t.Errorf("retention = %v, want forever", c.Namespaces[0].Retention)
	}
	if c.Namespaces[2].Retention != nil || c.Namespaces[3].Retention != nil {
		t.Error("unset retention is not nil")
	}
	for _, bad := range []string{"0s", "-1h", "always", "5"} {
		if _, err := parseRetention(bad); err == nil {
			t.Errorf("parseRetention(%q) succeeded", bad)
		}
	}
}

func TestNamespaceFor(t *testing.T) {
	c := mustParse(t, `
maxMessageSize: 1KiB
namespaces:
  - name: chat
    anonymous: [subscribe]
  - name: sensors
    maxMessageSize: 256
`)
	tests := []struct {
		channel string
		ns      string
		ok      bool
		size    Size
	}{
		{"chat:room-1", "chat", true, KiB},
		{"chat:a:b", "chat", true, KiB},
		{"sensors:42", "sensors", true, 256},
		{"chat", "", false, KiB},
		{"other:x", "", false, KiB},
		{":x", "", false, KiB},
		{"", "", false, KiB},
	}
	for _, tt := range tests {
		ns, ok := c.NamespaceFor(tt.channel)
		if ok != tt.ok || ns.Name != tt.ns {
			t.Errorf("NamespaceFor(%q) = %q, %v; want %q, %v", tt.channel, ns.Name, ok, tt.ns, tt.ok)
		}
		if got := c.MessageSizeLimit(tt.channel); got != tt.size {
			t.Errorf("MessageSizeLimit(%q) = %v, want %v", tt.channel, got, tt.size)
		}
	}
}

func TestQueues(t *testing.T) {
	c := mustParse(t, `
queues:
  - name: jobs
    channels: "jobs:*"
  - name: all
    channels: "*:orders:*"
    sources: [presence]
    maxDeliveries: 2
    ackDeadline: 1s
    maxLength: 10
    ttl: 1h
    overflow: dropOldest
    deadLetter: graveyard
`)
	want := NewQueue("jobs", "jobs:*")
	if !reflect.DeepEqual(c.Queues[0], want) {
		t.Errorf("queue with defaults = %+v, want %+v", c.Queues[0], want)
	}
	if got := c.Queues[0].DeadLetterQueue(); got != "jobs.dlq" {
		t.Errorf("default dead-letter queue = %q", got)
	}
	q := c.Queues[1]
	if q.MaxDeliveries != 2 || q.AckDeadline != Duration(time.Second) || q.MaxLength != 10 ||
		q.TTL != Duration(time.Hour) || q.Overflow != OverflowDropOldest || q.DeadLetterQueue() != "graveyard" ||
		!reflect.DeepEqual(q.Sources, []Source{SourcePresence}) {
		t.Errorf("queue = %+v", q)
	}
	matches := map[string]bool{
		"jobs:1": true, "jobs:": true, "jobs": false, "xjobs:1": false,
	}
	for ch, want := range matches {
		if got := c.Queues[0].Matches(ch); got != want {
			t.Errorf("jobs:* matches %q = %v", ch, got)
		}
	}
	for pattern, cases := range map[string]map[string]bool{
		"*:orders:*": {"eu:orders:1": true, "a:b:orders:c": true, ":orders:": true, "eu:order:1": false},
		"*":          {"": true, "anything": true},
		"a*b*c":      {"abc": true, "aXbYc": true, "acb": false, "abcx": false},
		"exact":      {"exact": true, "exactly": false},
	} {
		for ch, want := range cases {
			if got := globMatch(pattern, ch); got != want {
				t.Errorf("globMatch(%q, %q) = %v, want %v", pattern, ch, got, want)
			}
		}
	}
}

const secretValue = "s3cr3t-Value-Never-Shown"

func TestRedaction(t *testing.T) {
	c := mustParse(t, "keys:\n  - name: app\n    secret: "+secretValue+"\n    capabilities: {\"*\": [publish]}\n")
	if string(c.Keys[0].Secret) != secretValue {
		t.Fatalf("secret = %q", string(c.Keys[0].Secret))
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "config", c)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", c, "ptr", &c, "key", c.Keys[0], "keys", c.Keys)
	fmt.Fprintf(&buf, "%v %+v %#v %s %q %x\n", c, c, c, c.Keys[0].Secret, c.Keys[0].Secret, c.Keys[0].Secret)
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	buf.Write(js)
	ys, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	buf.Write(ys)
	out := buf.String()
	if strings.Contains(out, secretValue) {
		t.Errorf("secret leaked:\n%s", out)
	}
	if !strings.Contains(out, "keys.0.name=app") || !strings.Contains(out, "keys.0.secret=***") {
		t.Errorf("slog output lacks the key name or the redacted secret:\n%s", out)
	}

	// Errors never contain the secret either.
	for _, doc := range []string{
		"keys:\n  - name: app:" + secretValue + "\n    secret: x\n",
		"keys:\n  - name: app\n    secret: " + secretValue + "\n  - name: app\n    secret: " + secretValue + "\n",
		"keys:\n  - name: app\n    secret: " + secretValue + "\n    capabilities: {\"*\": [fly]}\n    extra: 1\n",
		"keys:\n  - name: app\n    secret: [" + secretValue + "]\n",
		"keys:\n  - name: app\n    secret: {" + secretValue + ": 1}\n",
		"keys:\n  - name: app\n    secret: " + secretValue + "\n    secret: " + secretValue + "\n",
		"keys:\n  - name: \"\"\n    secret: " + secretValue + "\nresumeWindow: x\n",
	} {
		err := parseErr(t, doc)
		if strings.Contains(err.Error(), secretValue) {
			t.Errorf("error reveals the secret: %v", err)
		}
	}
}

func TestExample(t *testing.T) {
	b, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(b)
	if err != nil {
		t.Fatalf("example.yaml: %v", err)
	}
	if c.Durability != DurabilityBatch || len(c.Keys) != 3 || len(c.Namespaces) != 3 || len(c.Queues) != 2 {
		t.Errorf("example.yaml: unexpected content %+v", c)
	}
	if ns, ok := c.NamespaceFor("chat:room-1"); !ok || !ns.Persisted || ns.Retention == nil || *ns.Retention != Retention(24*time.Hour) {
		t.Errorf("chat namespace = %+v, %v", ns, ok)
	}
	if q := c.Queues[0]; q.Name != "jobs" || q.TTL != Duration(time.Hour) {
		t.Errorf("jobs queue = %+v", q)
	}
	// Load reads the same file.
	l, err := Load(newFlags(t, "--config", "example.yaml"), envMap(nil))
	if err != nil || !reflect.DeepEqual(l, c) {
		t.Errorf("Load(example.yaml) = %+v, %v", l, err)
	}
	// The example survives a round trip through YAML (secrets aside).
	checkRoundTrip(t, c)
	checkRoundTrip(t, Default())
}

// checkRoundTrip checks that a valid config, written as YAML, parses back to
// the same config, with secrets redacted.
func checkRoundTrip(t *testing.T, c Config) {
	t.Helper()
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatalf("yaml.Marshal: %v", err)
	}
	back, err := Parse(out)
	if err != nil {
		t.Fatalf("Parse(yaml.Marshal(config)): %v\n%s", err, out)
	}
	again, err := yaml.Marshal(back)
	if err != nil {
		t.Fatalf("yaml.Marshal: %v", err)
	}
	if !bytes.Equal(out, again) {
		t.Errorf("round trip changed the config:\n%s\n---\n%s", out, again)
	}
}
