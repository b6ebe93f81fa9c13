package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Upper bounds that keep a configuration from asking for absurd allocations.
const (
	maxSize             = GiB
	maxSubscriberBuffer = 1 << 20
	maxSSEChannels      = 1000
	maxChannelMemory    = 10_000_000
	maxChannelNameLen   = 256
	maxQueueNameLen     = 255
)

// FieldError is a problem with one configuration key.
type FieldError struct {
	// Path is the key path, e.g. "resumeWindow", "tls.keyFile" or
	// "namespaces[1].retention". It is empty for problems with the whole
	// document.
	Path string
	// Source says where the offending value came from, e.g.
	// "switchboard.yaml:12", "line 12" (Parse), "environment variable
	// SWITCHBOARD_REGION" or "flag --region". It is empty for defaults and
	// values set in code.
	Source string
	// Err describes the problem.
	Err error
}

// Error formats the problem as "source: path: problem".
func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Source != "" {
		b.WriteString(e.Source)
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString("invalid")
	}
	return b.String()
}

// Unwrap returns the underlying problem.
func (e *FieldError) Unwrap() error { return e.Err }

// Validate checks the whole configuration and reports every problem found,
// joined with errors.Join; each is a *FieldError naming its key path.
func (c *Config) Validate() error {
	return joinFieldErrors(c.validate())
}

func joinFieldErrors(fes []*FieldError) error {
	if len(fes) == 0 {
		return nil
	}
	errs := make([]error, len(fes))
	for i, fe := range fes {
		errs[i] = fe
	}
	return errors.Join(errs...)
}

type problems []*FieldError

func (p *problems) add(path, format string, args ...any) {
	*p = append(*p, &FieldError{Path: path, Err: fmt.Errorf(format, args...)})
}

func (c *Config) validate() []*FieldError {
	var p problems

	if !validRegion(c.Region) {
		p.add("region", "must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'")
	}
	switch c.Durability {
	case DurabilityFsync, DurabilityBatch, DurabilityMemory:
	default:
		p.add("durability", "must be fsync, batch or memory, not %q", c.Durability)
	}
	if c.FlushInterval <= 0 || c.FlushInterval > Duration(time.Second) {
		p.add("flushInterval", "must be more than 0 and at most 1s, not %v", c.FlushInterval)
	}
	if strings.TrimSpace(c.Data) == "" {
		p.add("data", "must name a directory")
	}

	addrs := []struct{ key, addr string }{
		{"http", c.HTTP}, {"mqtt", c.MQTT}, {"mqttTLS", c.MQTTTLS}, {"stomp", c.STOMP}, {"amqp", c.AMQP},
	}
	seen := map[string]string{}
	for _, a := range addrs {
		if err := checkAddr(a.addr); err != nil {
			p.add(a.key, "%v", err)
			continue
		}
		if !Enabled(a.addr) || strings.HasSuffix(a.addr, ":0") {
			continue
		}
		if prev, dup := seen[a.addr]; dup {
			p.add(a.key, "address %q is already used by %s", a.addr, prev)
			continue
		}
		seen[a.addr] = a.key
	}
	switch {
	case c.TLS.CertFile != "" && c.TLS.KeyFile == "":
		p.add("tls.keyFile", "must be set when tls.certFile is set")
	case c.TLS.CertFile == "" && c.TLS.KeyFile != "":
		p.add("tls.certFile", "must be set when tls.keyFile is set")
	}

	for _, d := range []struct {
		key string
		d   Duration
	}{
		{"resumeWindow", c.ResumeWindow},
		{"dedupWindow", c.DedupWindow},
		{"connectionStateTTL", c.ConnectionStateTTL},
		{"shutdownTimeout", c.ShutdownTimeout},
		{"sse.heartbeat", c.SSE.Heartbeat},
		{"realtime.heartbeat", c.Realtime.Heartbeat},
		{"sse.retry", c.SSE.Retry},
		{"sse.writeTimeout", c.SSE.WriteTimeout},
		{"mqttBroker.maxSessionExpiry", c.MQTTBroker.MaxSessionExpiry},
	} {
		if d.d <= 0 {
			p.add(d.key, "must be more than 0, not %v", d.d)
		}
	}
	if c.PresenceGrace < 0 {
		p.add("presenceGrace", "must not be negative, not %v", c.PresenceGrace)
	}
	checkSize(&p, "maxMessageSize", c.MaxMessageSize, false)
	checkSize(&p, "maxRequestBody", c.MaxRequestBody, false)
	if c.SubscriberBuffer < 1 || c.SubscriberBuffer > maxSubscriberBuffer {
		p.add("subscriberBuffer", "must be between 1 and %d, not %d", maxSubscriberBuffer, c.SubscriberBuffer)
	}
	if c.ChannelMemoryLimit < 1 || c.ChannelMemoryLimit > maxChannelMemory {
		p.add("channelMemoryLimit", "must be between 1 and %d, not %d", maxChannelMemory, c.ChannelMemoryLimit)
	}

	for _, v := range []struct {
		key string
		n   int
	}{
		{"realtime.frameRate", c.Realtime.FrameRate},
		{"realtime.frameBurst", c.Realtime.FrameBurst},
		{"realtime.maxPendingAttaches", c.Realtime.MaxPendingAttaches},
	} {
		if v.n < 1 || v.n > 1_000_000 {
			p.add(v.key, "must be between 1 and 1000000, not %d", v.n)
		}
	}
	if c.SSE.MaxChannels < 1 || c.SSE.MaxChannels > maxSSEChannels {
		p.add("sse.maxChannels", "must be between 1 and %d, not %d", maxSSEChannels, c.SSE.MaxChannels)
	}
	if c.MQTTBroker.MaxInflight < 1 || c.MQTTBroker.MaxInflight > 65535 {
		p.add("mqttBroker.maxInflight", "must be between 1 and 65535, not %d", c.MQTTBroker.MaxInflight)
	}
	if c.MQTTBroker.ReceiveMaximum < 1 || c.MQTTBroker.ReceiveMaximum > 65535 {
		p.add("mqttBroker.receiveMaximum", "must be between 1 and 65535, not %d", c.MQTTBroker.ReceiveMaximum)
	}
	if c.MQTTBroker.MaxPacketSize < 1024 || c.MQTTBroker.MaxPacketSize > 256*MiB {
		p.add("mqttBroker.maxPacketSize", "must be between 1KiB and 256MiB, not %v", c.MQTTBroker.MaxPacketSize)
	}
	if c.SSE.MaxStreamsPerKey < 1 {
		p.add("sse.maxStreamsPerKey", "must be at least 1, not %d", c.SSE.MaxStreamsPerKey)
	}
	if c.SSE.Buffer < 0 || c.SSE.Buffer > maxSubscriberBuffer {
		p.add("sse.buffer", "must be between 0 (use subscriberBuffer) and %d, not %d", maxSubscriberBuffer, c.SSE.Buffer)
	}

	wildcard := false
	for i, o := range c.CORS.AllowedOrigins {
		if o == "*" {
			wildcard = true
			continue
		}
		if err := checkOrigin(o); err != nil {
			p.add(indexPath("cors.allowedOrigins", i), "%v", err)
		}
	}
	if c.CORS.AllowCredentials && wildcard {
		p.add("cors.allowCredentials", `cannot be combined with the "*" origin: list the allowed origins in cors.allowedOrigins`)
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		p.add("log.level", "must be debug, info, warn or error, not %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		p.add("log.format", "must be text or json, not %q", c.Log.Format)
	}

	c.validateKeys(&p)
	c.validateNamespaces(&p)
	c.validateQueues(&p)
	return p
}

func (c *Config) validateKeys(p *problems) {
	names := map[string]int{}
	for i, k := range c.Keys {
		base := indexPath("keys", i)
		// The name is not echoed when it contains ':', in case a
		// "name:secret" pair was pasted into it.
		switch {
		case k.Name == "":
			p.add(base+".name", "must not be empty")
		case strings.Contains(k.Name, ":"):
			p.add(base+".name", "must not contain ':' (the secret goes in the secret key)")
		case len(k.Name) > maxChannelNameLen || !printable(k.Name):
			p.add(base+".name", "must be at most %d bytes of printable UTF-8", maxChannelNameLen)
		default:
			if prev, dup := names[k.Name]; dup {
				p.add(base+".name", "duplicate key name %q (also keys[%d])", k.Name, prev)
			} else {
				names[k.Name] = i
			}
		}
		if k.Secret == "" {
			p.add(base+".secret", "must not be empty")
		}
		for _, pattern := range sortedKeys(k.Capabilities) {
			path := joinKey(base+".capabilities", pattern)
			if err := checkCapabilityPattern(pattern); err != nil {
				p.add(path, "%v", err)
			}
			ops := k.Capabilities[pattern]
			if len(ops) == 0 {
				p.add(path, "must list at least one operation")
			}
			for j, op := range ops {
				if !validOperation(op) {
					p.add(indexPath(path, j), "unknown operation %q: want publish, subscribe, presence, history, queue, admin or \"*\"", op)
				}
			}
		}
	}
}

func (c *Config) validateNamespaces(p *problems) {
	names := map[string]int{}
	for i, ns := range c.Namespaces {
		base := indexPath("namespaces", i)
		switch {
		case ns.Name == "":
			p.add(base+".name", "must not be empty")
		case strings.Contains(ns.Name, ":"):
			p.add(base+".name", "must not contain ':' (a namespace is the part of a channel name before the first ':')")
		case len(ns.Name) > maxChannelNameLen || !printable(ns.Name):
			p.add(base+".name", "must be at most %d bytes of printable UTF-8", maxChannelNameLen)
		default:
			if prev, dup := names[ns.Name]; dup {
				p.add(base+".name", "duplicate namespace %q (also namespaces[%d])", ns.Name, prev)
			} else {
				names[ns.Name] = i
			}
		}
		if ns.Persisted && c.Durability == DurabilityMemory {
			p.add(base+".persisted", "a persisted namespace needs durability fsync or batch, but durability is memory (nothing is written to disk)")
		}
		if ns.Retention != nil {
			switch {
			case !ns.Persisted:
				p.add(base+".retention", "is set but persisted is not true: retention applies only to persisted namespaces (set persisted: true or remove retention)")
			case *ns.Retention < 0:
				p.add(base+".retention", "must be positive or \"forever\", not %v", time.Duration(*ns.Retention))
			}
		}
		if ns.MaxMessageSize != 0 {
			checkSize(p, base+".maxMessageSize", ns.MaxMessageSize, true)
		}
		for j, op := range ns.Anonymous {
			switch op {
			case OpPublish, OpSubscribe, OpPresence, OpHistory, OpQueue:
			case OpAdmin, OpAll:
				p.add(indexPath(base+".anonymous", j), "%q cannot be granted anonymously: list the operations (publish, subscribe, presence, history, queue)", op)
			default:
				p.add(indexPath(base+".anonymous", j), "unknown operation %q: want publish, subscribe, presence, history or queue", op)
			}
		}
	}
}

func (c *Config) validateQueues(p *problems) {
	names := map[string]int{}
	for i, q := range c.Queues {
		base := indexPath("queues", i)
		if err := checkQueueName(q.Name); err != nil {
			p.add(base+".name", "%v", err)
		} else if prev, dup := names[q.Name]; dup {
			p.add(base+".name", "duplicate queue %q (also queues[%d])", q.Name, prev)
		} else {
			names[q.Name] = i
		}
		if q.Channels == "" {
			p.add(base+".channels", "must not be empty (use \"*\" for every channel)")
		} else if len(q.Channels) > maxChannelNameLen || !printable(q.Channels) {
			p.add(base+".channels", "must be at most %d bytes of printable UTF-8", maxChannelNameLen)
		}
		if len(q.Sources) == 0 {
			p.add(base+".sources", "must list at least one of message, presence, lifecycle")
		}
		seen := map[Source]bool{}
		for j, s := range q.Sources {
			switch s {
			case SourceMessage, SourcePresence, SourceLifecycle:
				if seen[s] {
					p.add(indexPath(base+".sources", j), "%q is listed twice", s)
				}
				seen[s] = true
			default:
				p.add(indexPath(base+".sources", j), "unknown source %q: want message, presence or lifecycle", s)
			}
		}
		if q.MaxDeliveries < 1 {
			p.add(base+".maxDeliveries", "must be at least 1, not %d", q.MaxDeliveries)
		}
		if q.AckDeadline <= 0 {
			p.add(base+".ackDeadline", "must be more than 0, not %v", q.AckDeadline)
		}
		if q.MaxLength < 1 {
			p.add(base+".maxLength", "must be at least 1, not %d", q.MaxLength)
		}
		if q.TTL < 0 {
			p.add(base+".ttl", "must not be negative (0 means no TTL), not %v", q.TTL)
		}
		switch q.Overflow {
		case OverflowRejectNew, OverflowDropOldest:
		default:
			p.add(base+".overflow", "must be rejectNew or dropOldest, not %q", q.Overflow)
		}
		if q.Name != "" {
			dlq := q.DeadLetterQueue()
			if err := checkQueueName(dlq); err != nil {
				p.add(base+".deadLetter", "%v", err)
			} else if dlq == q.Name {
				p.add(base+".deadLetter", "must differ from the queue's own name")
			}
		}
	}
}

func validRegion(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func checkQueueName(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if len(s) > maxQueueNameLen {
		return fmt.Errorf("must be at most %d characters", maxQueueNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == ':') {
			return fmt.Errorf("invalid queue name %q: use A-Z, a-z, 0-9, '.', '_', ':' and '-'", s)
		}
	}
	return nil
}

// checkAddr accepts Off or host:port with a numeric port.
func checkAddr(addr string) error {
	if addr == Off {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("invalid address %q: want host:port, :port or %q", addr, Off)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("invalid address %q: the port must be a number from 0 to 65535", addr)
	}
	return nil
}

func checkOrigin(o string) error {
	u, err := url.Parse(o)
	if err != nil || u.Scheme == "" || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(o, " \t") {
		return fmt.Errorf("invalid origin %q: want scheme://host[:port] or \"*\"", o)
	}
	return nil
}

func checkSize(p *problems, path string, s Size, override bool) {
	if s < 1 || s > maxSize {
		hint := ""
		if override {
			hint = " (leave unset to use the server-wide maxMessageSize)"
		}
		p.add(path, "must be between 1 byte and %v, not %v%s", maxSize, s, hint)
	}
}

// checkCapabilityPattern accepts "*", "prefix*" and exact channel names.
func checkCapabilityPattern(s string) error {
	switch {
	case s == "":
		return errors.New("empty channel pattern")
	case len(s) > maxChannelNameLen || !printable(s):
		return fmt.Errorf("channel pattern must be at most %d bytes of printable UTF-8", maxChannelNameLen)
	}
	if i := strings.IndexByte(s, '*'); i >= 0 && i != len(s)-1 {
		return fmt.Errorf("invalid channel pattern %q: '*' may only end a pattern (\"*\", \"prefix*\")", s)
	}
	return nil
}

func validOperation(op Operation) bool {
	return op == OpAll || op.Valid()
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}
