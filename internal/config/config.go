// Package config holds the configuration of the switchboard server.
//
// The effective configuration is assembled from four sources, each one
// overriding the previous: built-in defaults (Default), a YAML file (named by
// the --config flag or the SWITCHBOARD_CONFIG environment variable),
// environment variables, and command-line flags that were set explicitly.
//
// Every scalar key of the file has an environment variable and a flag. The
// environment variable is SWITCHBOARD_ followed by the key in upper snake
// case, with nested keys joined by an underscore; the flag is the key in
// kebab case, with nested keys joined by a dash:
//
//	resumeWindow         SWITCHBOARD_RESUME_WINDOW         --resume-window
//	tls.certFile         SWITCHBOARD_TLS_CERT_FILE         --tls-cert-file
//	cors.allowedOrigins  SWITCHBOARD_CORS_ALLOWED_ORIGINS  --cors-allowed-origins (comma-separated)
//
// The lists keys, namespaces and queues are read from the file only.
// Durations use Go syntax ("500ms", "2m"); sizes are bytes, optionally with
// a unit ("65536", "64KiB", "1MiB"). A listen address of "off" disables
// that listener.
package config

import (
	"log/slog"
	"strings"
	"time"

	"github.com/switchboardhq/switchboard/core/auth"
)

// Off is the listen address that disables a listener.
const Off = "off"

// Durability says when a publish is acknowledged.
type Durability string

// Durability modes.
const (
	// DurabilityFsync acknowledges a publish once its batch is fsynced.
	DurabilityFsync Durability = "fsync"
	// DurabilityBatch acknowledges once written, fsyncing at least every
	// FlushInterval.
	DurabilityBatch Durability = "batch"
	// DurabilityMemory keeps messages in memory only.
	DurabilityMemory Durability = "memory"
)

// Operation is an operation that a capability grants on matching channels:
// one of auth's operations, or OpAll.
type Operation = auth.Operation

// Operations, as defined by package auth. OpAll grants every operation.
const (
	OpPublish   = auth.OpPublish
	OpSubscribe = auth.OpSubscribe
	OpPresence  = auth.OpPresence
	OpHistory   = auth.OpHistory
	OpQueue     = auth.OpQueue
	OpAdmin     = auth.OpAdmin
	OpAll       = Operation(auth.WildcardOperation)
)

// Source is a kind of channel event that a queue rule can route.
type Source string

// Queue sources.
const (
	SourceMessage   Source = "message"
	SourcePresence  Source = "presence"
	SourceLifecycle Source = "lifecycle"
)

// Overflow is what a full queue does with a new entry.
type Overflow string

// Overflow policies.
const (
	// OverflowRejectNew refuses the new entry.
	OverflowRejectNew Overflow = "rejectNew"
	// OverflowDropOldest discards the oldest entry to make room.
	OverflowDropOldest Overflow = "dropOldest"
)

// Config is the configuration of the whole server. The YAML key of each
// field is given in its tag.
type Config struct {
	// Region names this region: 1–64 characters of A–Z, a–z, 0–9, '_' and '-'.
	Region string `yaml:"region"`
	// Durability says when a publish is acknowledged.
	Durability Durability `yaml:"durability"`
	// FlushInterval bounds the delay before a write is flushed in batch
	// durability mode; more than zero and at most one second.
	FlushInterval Duration `yaml:"flushInterval"`
	// Data is the directory of the embedded durable store.
	Data string `yaml:"data"`

	// Listen addresses (host:port, or Off). MQTTTLS is only used when TLS
	// is configured.
	HTTP    string `yaml:"http"`
	MQTT    string `yaml:"mqtt"`
	MQTTTLS string `yaml:"mqttTLS"`
	STOMP   string `yaml:"stomp"`
	AMQP    string `yaml:"amqp"`
	// TLS holds the certificate used by the TLS listeners.
	TLS TLS `yaml:"tls"`

	// Dev enables the insecure development mode (open access).
	Dev bool `yaml:"dev"`

	// ResumeWindow is how long every channel retains messages for resumes.
	ResumeWindow Duration `yaml:"resumeWindow"`
	// DedupWindow is how long a client-supplied message id is remembered.
	DedupWindow Duration `yaml:"dedupWindow"`
	// PresenceGrace is how long a disconnected member stays present before
	// it is removed (0 removes it at once).
	PresenceGrace Duration `yaml:"presenceGrace"`
	// ConnectionStateTTL is how long a disconnected connection's state is
	// kept for it to resume.
	ConnectionStateTTL Duration `yaml:"connectionStateTTL"`

	// MaxMessageSize is the largest accepted message, unless a namespace
	// overrides it.
	MaxMessageSize Size `yaml:"maxMessageSize"`
	// MaxRequestBody is the largest accepted HTTP request body.
	MaxRequestBody Size `yaml:"maxRequestBody"`
	// SubscriberBuffer is the length of a subscriber's queue before the
	// slow-consumer policy applies.
	SubscriberBuffer int `yaml:"subscriberBuffer"`
	// ChannelMemoryLimit is the number of most recent messages of a channel
	// kept in memory: the channel's whole log in memory durability, a cache
	// of the store's tail (at most 128) in the durable modes.
	ChannelMemoryLimit int `yaml:"channelMemoryLimit"`

	// CORS is the cross-origin policy of the HTTP listener.
	CORS CORS `yaml:"cors"`
	// SSE configures the Server-Sent Events endpoint.
	SSE SSE `yaml:"sse"`
	// Realtime configures the native realtime protocol (WebSocket).
	Realtime Realtime `yaml:"realtime"`
	// MQTTBroker configures the MQTT adapter (listeners: mqtt, mqttTLS and
	// /v1/mqtt on the HTTP listener).
	MQTTBroker MQTTBroker `yaml:"mqttBroker"`
	// Log configures the server's logs.
	Log Log `yaml:"log"`
	// ShutdownTimeout bounds a graceful shutdown.
	ShutdownTimeout Duration `yaml:"shutdownTimeout"`

	// Keys are the API keys.
	Keys []Key `yaml:"keys"`
	// Namespaces carry per-namespace rules.
	Namespaces []Namespace `yaml:"namespaces"`
	// Queues are the work queues and the rules that feed them.
	Queues []Queue `yaml:"queues"`
}

// TLS names a certificate and its private key (both PEM files). Either both
// or neither are set.
type TLS struct {
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
}

// Configured reports whether a certificate is configured.
func (t TLS) Configured() bool { return t.CertFile != "" && t.KeyFile != "" }

// CORS is a cross-origin resource sharing policy.
type CORS struct {
	// AllowedOrigins lists the allowed origins ("https://app.example.com"),
	// or "*" for any origin. Empty allows no cross-origin request.
	AllowedOrigins []string `yaml:"allowedOrigins"`
	// AllowCredentials allows credentialed requests; it cannot be combined
	// with the "*" origin.
	AllowCredentials bool `yaml:"allowCredentials"`
}

// SSE configures the Server-Sent Events endpoint (GET /v1/sse).
type SSE struct {
	// Heartbeat is the interval of heartbeat comments on idle streams.
	Heartbeat Duration `yaml:"heartbeat"`
	// Retry is the reconnection delay hinted to clients.
	Retry Duration `yaml:"retry"`
	// MaxChannels bounds the channels of one stream.
	MaxChannels int `yaml:"maxChannels"`
	// MaxStreamsPerKey bounds the open streams of one API key (anonymous
	// streams share one count).
	MaxStreamsPerKey int `yaml:"maxStreamsPerKey"`
	// Buffer is a stream's queue of undelivered events before the
	// slow-consumer policy applies; 0 uses subscriberBuffer.
	Buffer int `yaml:"buffer"`
	// WriteTimeout bounds how long a write to a client that does not read
	// may block before its stream is dropped.
	WriteTimeout Duration `yaml:"writeTimeout"`
}

// MQTTBroker configures the MQTT adapter.
type MQTTBroker struct {
	// MaxSessionExpiry caps the session expiry MQTT 5 clients ask for and
	// is the expiry of MQTT 3.1.1 persistent sessions.
	MaxSessionExpiry Duration `yaml:"maxSessionExpiry"`
	// MaxInflight bounds the QoS 1/2 messages in flight to one client.
	MaxInflight int `yaml:"maxInflight"`
	// ReceiveMaximum bounds the QoS 2 publishes a client may have open
	// towards the server.
	ReceiveMaximum int `yaml:"receiveMaximum"`
	// MaxPacketSize is the largest MQTT packet accepted.
	MaxPacketSize Size `yaml:"maxPacketSize"`
	// AllowAnonymous lets MQTT clients connect without credentials; they
	// may then use only what the namespaces' anonymous rules allow.
	AllowAnonymous bool `yaml:"allowAnonymous"`
}

// Realtime configures the native realtime protocol (GET /v1/realtime).
type Realtime struct {
	// Heartbeat is the interval of server heartbeats on idle connections.
	Heartbeat Duration `yaml:"heartbeat"`
	// FrameRate and FrameBurst bound the frames one connection may send
	// per second; a connection over the limit is closed.
	FrameRate  int `yaml:"frameRate"`
	FrameBurst int `yaml:"frameBurst"`
	// MaxPendingAttaches bounds attach and detach requests waiting on one
	// connection.
	MaxPendingAttaches int `yaml:"maxPendingAttaches"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
}

// SlogLevel returns Level as a slog.Level (info if Level is not valid).
func (l Log) SlogLevel() slog.Level {
	switch l.Level {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// Key is an API key. Clients authenticate with "name:secret" or with tokens
// signed by the secret.
type Key struct {
	// Name identifies the key; non-empty, unique, without ':'.
	Name string `yaml:"name"`
	// Secret is the shared secret; it is never rendered in clear.
	Secret Secret `yaml:"secret"`
	// Capabilities maps a channel pattern ("*", "prefix*" or an exact
	// channel name) to the operations allowed on matching channels.
	Capabilities map[string][]Operation `yaml:"capabilities"`
}

// Namespace carries the rules of the channels named "<Name>:...".
type Namespace struct {
	// Name is the part of a channel name before its first ':'.
	Name string `yaml:"name"`
	// Persisted keeps the namespace's history in the durable store.
	Persisted bool `yaml:"persisted"`
	// Retention is how long a persisted namespace keeps history; nil (not
	// set) keeps it forever. It may only be set when Persisted is true.
	Retention *Retention `yaml:"retention,omitempty"`
	// MaxMessageSize overrides Config.MaxMessageSize when not zero.
	MaxMessageSize Size `yaml:"maxMessageSize,omitempty"`
	// Anonymous lists the operations allowed without credentials.
	Anonymous []Operation `yaml:"anonymous,omitempty"`
}

// History reports how long the namespace keeps durable history: forever is
// true when it never expires. A namespace that is not persisted returns
// (0, false): it keeps only the resume window.
func (n Namespace) History() (keep time.Duration, forever bool) {
	if !n.Persisted {
		return 0, false
	}
	if n.Retention == nil || *n.Retention == Forever {
		return 0, true
	}
	return time.Duration(*n.Retention), false
}

// Queue is a durable work queue and the rule that feeds it.
type Queue struct {
	// Name identifies the queue: 1–255 characters of A–Z, a–z, 0–9, '.',
	// '_', ':' and '-'.
	Name string `yaml:"name"`
	// Channels is a glob over channel names; '*' matches any run of
	// characters.
	Channels string `yaml:"channels"`
	// Sources are the kinds of channel events routed (default [message]).
	Sources []Source `yaml:"sources"`
	// MaxDeliveries is how often an entry is delivered before it moves to
	// the dead-letter queue (default 5).
	MaxDeliveries int `yaml:"maxDeliveries"`
	// AckDeadline is how long a delivery may stay unacknowledged before it is
	// delivered again (default 30s).
	AckDeadline Duration `yaml:"ackDeadline"`
	// MaxLength is the most entries the queue holds (default 100000).
	MaxLength int `yaml:"maxLength"`
	// TTL discards entries older than this; 0 (the default) never does.
	TTL Duration `yaml:"ttl"`
	// Overflow is what happens when the queue is full (default rejectNew).
	Overflow Overflow `yaml:"overflow"`
	// DeadLetter names the dead-letter queue; empty means "<Name>.dlq".
	DeadLetter string `yaml:"deadLetter,omitempty"`
}

// NewQueue returns a queue rule with the default settings.
func NewQueue(name, channels string) Queue {
	return Queue{
		Name:          name,
		Channels:      channels,
		Sources:       []Source{SourceMessage},
		MaxDeliveries: 5,
		AckDeadline:   Duration(30 * time.Second),
		MaxLength:     100000,
		Overflow:      OverflowRejectNew,
	}
}

// DeadLetterQueue returns the name of the queue's dead-letter queue.
func (q Queue) DeadLetterQueue() string {
	if q.DeadLetter != "" {
		return q.DeadLetter
	}
	return q.Name + ".dlq"
}

// Matches reports whether the queue's channel glob matches channel.
func (q Queue) Matches(channel string) bool { return globMatch(q.Channels, channel) }

// globMatch matches name against pattern, where '*' matches any run of bytes
// and every other byte matches itself. It runs in O(len(pattern)*len(name)).
func globMatch(pattern, name string) bool {
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case p < len(pattern) && pattern[p] == name[n]:
			p++
			n++
		case star >= 0:
			mark++
			p, n = star+1, mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// Default returns the built-in configuration.
func Default() Config {
	return Config{
		Region:             "local",
		Durability:         DurabilityFsync,
		FlushInterval:      Duration(10 * time.Millisecond),
		Data:               "./data",
		HTTP:               ":8080",
		MQTT:               ":1883",
		MQTTTLS:            ":8883",
		STOMP:              ":61613",
		AMQP:               ":5672",
		ResumeWindow:       Duration(2 * time.Minute),
		DedupWindow:        Duration(2 * time.Minute),
		PresenceGrace:      Duration(15 * time.Second),
		ConnectionStateTTL: Duration(2 * time.Minute),
		MaxMessageSize:     64 * KiB,
		MaxRequestBody:     1 * MiB,
		SubscriberBuffer:   1024,
		ChannelMemoryLimit: 1000,
		CORS:               CORS{AllowedOrigins: []string{"*"}},
		Realtime: Realtime{
			Heartbeat:          Duration(15 * time.Second),
			FrameRate:          500,
			FrameBurst:         1000,
			MaxPendingAttaches: 64,
		},
		SSE: SSE{
			Heartbeat:        Duration(15 * time.Second),
			Retry:            Duration(2 * time.Second),
			MaxChannels:      100,
			MaxStreamsPerKey: 10000,
			WriteTimeout:     Duration(30 * time.Second),
		},
		MQTTBroker: MQTTBroker{
			MaxSessionExpiry: Duration(24 * time.Hour),
			MaxInflight:      1024,
			ReceiveMaximum:   1024,
			MaxPacketSize:    1 * MiB,
		},
		Log:             Log{Level: "info", Format: "text"},
		ShutdownTimeout: Duration(15 * time.Second),
	}
}

// Enabled reports whether a listen address enables its listener, i.e. is
// not Off.
func Enabled(addr string) bool { return addr != Off }

// Listener is one network listener of the server.
type Listener struct {
	// Name is the configuration key of the listener: http, mqtt, mqttTLS,
	// stomp or amqp.
	Name string
	// Addr is the listen address (host:port).
	Addr string
}

// Listeners returns the enabled listeners in a fixed order. The MQTT TLS
// listener is included only when a certificate is configured.
func (c *Config) Listeners() []Listener {
	all := []Listener{
		{"http", c.HTTP},
		{"mqtt", c.MQTT},
		{"mqttTLS", c.MQTTTLS},
		{"stomp", c.STOMP},
		{"amqp", c.AMQP},
	}
	out := all[:0]
	for _, l := range all {
		if !Enabled(l.Addr) || (l.Name == "mqttTLS" && !c.TLS.Configured()) {
			continue
		}
		out = append(out, l)
	}
	return out
}

// NamespaceFor returns the rules of the namespace of a (bare, unqualified)
// channel name, i.e. the part before its first ':'. ok is false when the
// channel has no namespace or its namespace is not configured.
func (c *Config) NamespaceFor(channel string) (ns Namespace, ok bool) {
	name, _, found := strings.Cut(channel, ":")
	if !found {
		return Namespace{}, false
	}
	for _, n := range c.Namespaces {
		if n.Name == name {
			return n, true
		}
	}
	return Namespace{}, false
}

// MessageSizeLimit returns the largest message accepted on channel: its
// namespace's MaxMessageSize if set, Config.MaxMessageSize otherwise.
func (c *Config) MessageSizeLimit(channel string) Size {
	if ns, ok := c.NamespaceFor(channel); ok && ns.MaxMessageSize > 0 {
		return ns.MaxMessageSize
	}
	return c.MaxMessageSize
}
