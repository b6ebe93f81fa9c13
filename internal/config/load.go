package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

const (
	// envPrefix starts the name of every environment variable.
	envPrefix = "SWITCHBOARD_"
	// configFlag is the flag naming the config file.
	configFlag = "config"
	// configEnv is the environment variable naming the config file.
	configEnv = envPrefix + "CONFIG"
)

// setting is one scalar configuration key, settable from the file, the
// environment and a flag.
type setting struct {
	key   string // YAML key path, e.g. "tls.certFile"
	usage string
	ptr   func(*Config) any // the field, as *string, *Duration, ...
}

// settings lists every scalar key in the order flags are registered.
func settings() []setting {
	return []setting{
		{"region", "region name (1-64 characters of A-Z a-z 0-9 _ -)", func(c *Config) any { return &c.Region }},
		{"durability", "when a publish is acknowledged: fsync, batch or memory", func(c *Config) any { return &c.Durability }},
		{"flushInterval", "longest flush delay in batch durability mode (at most 1s)", func(c *Config) any { return &c.FlushInterval }},
		{"data", "data directory of the embedded durable store", func(c *Config) any { return &c.Data }},
		{"http", "HTTP listen address (REST, WebSocket, SSE, metrics), or off", func(c *Config) any { return &c.HTTP }},
		{"mqtt", "MQTT listen address, or off", func(c *Config) any { return &c.MQTT }},
		{"mqttTLS", "MQTT over TLS listen address (used when a certificate is configured), or off", func(c *Config) any { return &c.MQTTTLS }},
		{"stomp", "STOMP listen address, or off", func(c *Config) any { return &c.STOMP }},
		{"amqp", "AMQP listen address, or off", func(c *Config) any { return &c.AMQP }},
		{"tls.certFile", "TLS certificate file (PEM)", func(c *Config) any { return &c.TLS.CertFile }},
		{"tls.keyFile", "TLS private key file (PEM)", func(c *Config) any { return &c.TLS.KeyFile }},
		{"dev", "insecure development mode: open access for everybody", func(c *Config) any { return &c.Dev }},
		{"resumeWindow", "how long every channel retains messages for resumes", func(c *Config) any { return &c.ResumeWindow }},
		{"dedupWindow", "how long a client-supplied message id is remembered", func(c *Config) any { return &c.DedupWindow }},
		{"presenceGrace", "how long a disconnected member stays present", func(c *Config) any { return &c.PresenceGrace }},
		{"connectionStateTTL", "how long a disconnected connection can resume", func(c *Config) any { return &c.ConnectionStateTTL }},
		{"maxMessageSize", "largest accepted message (e.g. 65536, 64KiB)", func(c *Config) any { return &c.MaxMessageSize }},
		{"maxRequestBody", "largest accepted HTTP request body (e.g. 1MiB)", func(c *Config) any { return &c.MaxRequestBody }},
		{"subscriberBuffer", "per-subscriber queue length before the slow-consumer policy applies", func(c *Config) any { return &c.SubscriberBuffer }},
		{"channelMemoryLimit", "most recent messages kept in memory per channel", func(c *Config) any { return &c.ChannelMemoryLimit }},
		{"cors.allowedOrigins", "comma-separated allowed CORS origins, or *", func(c *Config) any { return &c.CORS.AllowedOrigins }},
		{"cors.allowCredentials", "allow credentialed CORS requests", func(c *Config) any { return &c.CORS.AllowCredentials }},
		{"realtime.heartbeat", "interval of realtime (WebSocket) heartbeats", func(c *Config) any { return &c.Realtime.Heartbeat }},
		{"realtime.frameRate", "frames per second one realtime connection may send", func(c *Config) any { return &c.Realtime.FrameRate }},
		{"realtime.frameBurst", "burst of frames one realtime connection may send", func(c *Config) any { return &c.Realtime.FrameBurst }},
		{"realtime.maxPendingAttaches", "attach/detach requests waiting on one realtime connection", func(c *Config) any { return &c.Realtime.MaxPendingAttaches }},
		{"mqttBroker.maxSessionExpiry", "longest MQTT session kept for a disconnected client", func(c *Config) any { return &c.MQTTBroker.MaxSessionExpiry }},
		{"mqttBroker.maxInflight", "most QoS 1/2 messages in flight to one MQTT client", func(c *Config) any { return &c.MQTTBroker.MaxInflight }},
		{"mqttBroker.receiveMaximum", "most open QoS 2 publishes from one MQTT client", func(c *Config) any { return &c.MQTTBroker.ReceiveMaximum }},
		{"mqttBroker.maxPacketSize", "largest MQTT packet accepted", func(c *Config) any { return &c.MQTTBroker.MaxPacketSize }},
		{"mqttBroker.allowAnonymous", "let MQTT clients connect without credentials (anonymous rules apply)", func(c *Config) any { return &c.MQTTBroker.AllowAnonymous }},
		{"sse.heartbeat", "interval of SSE heartbeat comments", func(c *Config) any { return &c.SSE.Heartbeat }},
		{"sse.retry", "reconnection delay hinted to SSE clients", func(c *Config) any { return &c.SSE.Retry }},
		{"sse.maxChannels", "most channels on one SSE stream", func(c *Config) any { return &c.SSE.MaxChannels }},
		{"sse.maxStreamsPerKey", "most open SSE streams per API key", func(c *Config) any { return &c.SSE.MaxStreamsPerKey }},
		{"sse.buffer", "SSE stream queue length before the slow-consumer policy (0: subscriberBuffer)", func(c *Config) any { return &c.SSE.Buffer }},
		{"sse.writeTimeout", "longest blocked write to an SSE client before its stream is dropped", func(c *Config) any { return &c.SSE.WriteTimeout }},
		{"log.level", "log level: debug, info, warn or error", func(c *Config) any { return &c.Log.Level }},
		{"log.format", "log format: text or json", func(c *Config) any { return &c.Log.Format }},
		{"shutdownTimeout", "longest graceful shutdown", func(c *Config) any { return &c.ShutdownTimeout }},
	}
}

// envName returns the environment variable of a key path:
// "tls.certFile" -> "SWITCHBOARD_TLS_CERT_FILE".
func envName(key string) string {
	return envPrefix + strings.ToUpper(splitKey(key, '_'))
}

// flagName returns the flag of a key path: "tls.certFile" -> "tls-cert-file".
func flagName(key string) string {
	return strings.ToLower(splitKey(key, '-'))
}

// splitKey separates the words of a camel-case key path with sep, keeping
// acronyms together ("mqttTLS" -> "mqtt_TLS", "connectionStateTTL" ->
// "connection_State_TTL").
func splitKey(key string, sep byte) string {
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c == '.' {
			b.WriteByte(sep)
			continue
		}
		if i > 0 && isUpper(c) {
			prev := key[i-1]
			next := byte(0)
			if i+1 < len(key) {
				next = key[i+1]
			}
			if isLower(prev) || isDigit(prev) || (isUpper(prev) && isLower(next)) {
				b.WriteByte(sep)
			}
		}
		b.WriteByte(c)
	}
	return b.String()
}

func isUpper(c byte) bool { return c >= 'A' && c <= 'Z' }
func isLower(c byte) bool { return c >= 'a' && c <= 'z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// setValue parses s into the field p points to.
func setValue(p any, s string) error {
	switch p := p.(type) {
	case *string:
		*p = s
	case *Durability:
		*p = Durability(s)
	case *bool:
		v, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("invalid boolean %q: want true or false", s)
		}
		*p = v
	case *int:
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("invalid integer %q", s)
		}
		*p = v
	case *Duration:
		v, err := parseDuration(s)
		if err != nil {
			return err
		}
		*p = v
	case *Size:
		v, err := parseSize(s)
		if err != nil {
			return err
		}
		*p = v
	case *[]string:
		*p = splitList(s)
	default:
		return fmt.Errorf("unsupported setting type %T", p)
	}
	return nil
}

// formatValue renders the field p points to in the syntax setValue reads.
func formatValue(p any) string {
	switch p := p.(type) {
	case *string:
		return *p
	case *Durability:
		return string(*p)
	case *bool:
		return strconv.FormatBool(*p)
	case *int:
		return strconv.Itoa(*p)
	case *Duration:
		return p.String()
	case *Size:
		return p.String()
	case *[]string:
		return strings.Join(*p, ",")
	}
	return ""
}

func typeName(p any) string {
	switch p.(type) {
	case *bool:
		return "bool"
	case *int:
		return "int"
	case *Duration:
		return "duration"
	case *Size:
		return "size"
	case *[]string:
		return "strings"
	}
	return "string"
}

// splitList splits a comma-separated list, trimming spaces and dropping
// empty items.
func splitList(s string) []string {
	out := []string{}
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// flagValue is the pflag.Value of a setting. It checks the syntax of each
// value as the flag is parsed; Load applies it.
type flagValue struct {
	st      setting
	value   string
	changed bool
}

func (v *flagValue) String() string { return v.value }

func (v *flagValue) Type() string { return typeName(v.st.ptr(&Config{})) }

func (v *flagValue) Set(s string) error {
	var scratch Config
	if err := setValue(v.st.ptr(&scratch), s); err != nil {
		return err
	}
	if _, list := v.st.ptr(&scratch).(*[]string); list && v.changed {
		v.value += "," + s // repeated list flags accumulate
	} else {
		v.value = s
	}
	v.changed = true
	return nil
}

// RegisterFlags registers on fs the flag "config" (the config file) and one
// flag per scalar configuration key, with the defaults as default values.
// Flags already defined on fs are left alone.
func RegisterFlags(fs *pflag.FlagSet) {
	if fs == nil {
		return
	}
	if fs.Lookup(configFlag) == nil {
		fs.String(configFlag, "", "YAML config file (env "+configEnv+")")
	}
	def := Default()
	for _, st := range settings() {
		name := flagName(st.key)
		if fs.Lookup(name) != nil {
			continue
		}
		p := st.ptr(&def)
		f := fs.VarPF(&flagValue{st: st, value: formatValue(p)}, name, "", st.usage+" (env "+envName(st.key)+")")
		if _, ok := p.(*bool); ok {
			f.NoOptDefVal = "true"
		}
	}
}

// Load builds the effective configuration: the defaults, overridden by the
// YAML file named by the --config flag (or else by SWITCHBOARD_CONFIG), by
// environment variables, then by the flags of fs that were set explicitly.
// lookupEnv reads the environment (os.LookupEnv when nil); a variable that
// is set applies even when empty. fs may be nil.
// It reports every problem found, each naming its key and where the value
// came from (file and line, environment variable or flag).
func Load(fs *pflag.FlagSet, lookupEnv func(string) (string, bool)) (Config, error) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	cfg := Default()
	var ix *index

	path := ""
	if fs != nil {
		if f := fs.Lookup(configFlag); f != nil && f.Changed {
			path = f.Value.String()
		}
	}
	if path == "" {
		if v, ok := lookupEnv(configEnv); ok {
			path = v
		}
	}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("reading config file: %w", err)
		}
		ix, err = decode(b, path, &cfg)
		if err != nil {
			return Config{}, fmt.Errorf("invalid configuration:\n%w", err)
		}
	}

	origins := map[string]string{}
	var errs []*FieldError
	for _, st := range settings() {
		name := envName(st.key)
		v, ok := lookupEnv(name)
		if !ok {
			continue
		}
		src := "environment variable " + name
		if err := setValue(st.ptr(&cfg), v); err != nil {
			errs = append(errs, &FieldError{Path: st.key, Source: src, Err: err})
			continue
		}
		origins[st.key] = src
	}
	if fs != nil {
		for _, st := range settings() {
			name := flagName(st.key)
			f := fs.Lookup(name)
			if f == nil || !f.Changed {
				continue
			}
			src := "flag --" + name
			if err := setValue(st.ptr(&cfg), f.Value.String()); err != nil {
				errs = append(errs, &FieldError{Path: st.key, Source: src, Err: err})
				continue
			}
			origins[st.key] = src
		}
	}

	for _, fe := range cfg.validate() {
		fe.Source = sourceOf(fe.Path, ix, origins)
		errs = append(errs, fe)
	}
	if err := joinFieldErrors(errs); err != nil {
		return Config{}, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, nil
}

// Parse decodes one YAML document over Default() and validates the result.
// Unknown keys, and keys of scalar settings written without a value, are
// errors. Problems are reported with their line and key
// path, e.g. "line 12: namespaces[1].retention: ...".
func Parse(yamlBytes []byte) (Config, error) {
	cfg := Default()
	ix, err := decode(yamlBytes, "", &cfg)
	if err != nil {
		return Config{}, err
	}
	fes := cfg.validate()
	for _, fe := range fes {
		fe.Source = sourceOf(fe.Path, ix, nil)
	}
	if err := joinFieldErrors(fes); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// sourceOf says where the value at path came from: an environment variable
// or flag recorded in origins, else the file line in ix.
func sourceOf(path string, ix *index, origins map[string]string) string {
	for p := path; p != ""; p = parentPath(p) {
		if src, ok := origins[p]; ok {
			return src
		}
	}
	if ix != nil {
		for p := path; p != ""; p = parentPath(p) {
			if line, ok := ix.lines[p]; ok {
				return ix.at(line)
			}
		}
	}
	return ""
}

// decode decodes one YAML document into cfg, strictly, and returns the
// index of its keys. An empty document leaves cfg unchanged.
func decode(b []byte, file string, cfg *Config) (*index, error) {
	ix := &index{file: file}
	syntax := func(err error) error {
		if file != "" {
			return fmt.Errorf("invalid YAML in %s: %w", file, err)
		}
		return fmt.Errorf("invalid YAML: %w", err)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return ix, nil
		}
		return nil, syntax(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, syntax(err)
		}
		return nil, &FieldError{Source: ix.at(extra.Line), Err: errors.New("a config file holds one YAML document, found another")}
	}
	ix = buildIndex(file, &doc)
	if len(doc.Content) == 1 {
		top := doc.Content[0]
		if top.Kind != yaml.MappingNode && top.ShortTag() != "!!null" {
			return nil, &FieldError{Source: ix.at(top.Line), Err: fmt.Errorf("the document must be a mapping of keys to values, not %s", kindName(top.Kind))}
		}
	}
	// An empty value would silently keep the default: make it an error.
	var errs []*FieldError
	for _, st := range settings() {
		if e := ix.entry(st.key); e != nil && e.value.ShortTag() == "!!null" {
			errs = append(errs, &FieldError{Path: st.key, Source: ix.at(e.value.Line), Err: errors.New("has no value: write a value or remove the key")})
		}
	}

	strict := yaml.NewDecoder(bytes.NewReader(b))
	strict.KnownFields(true)
	err := strict.Decode(cfg)
	var te *yaml.TypeError
	switch {
	case err == nil, errors.Is(err, io.EOF):
	case errors.As(err, &te):
		errs = append(errs, ix.typeErrors(te)...)
	default:
		return nil, syntax(err)
	}
	if len(errs) > 0 {
		return nil, joinFieldErrors(errs)
	}
	return ix, nil
}

// UnmarshalYAML implements yaml.Unmarshaler: keys missing from the mapping
// get their defaults (see NewQueue) and unknown keys are errors.
func (q *Queue) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return nodeError(n, fmt.Errorf("want a queue (a mapping), not %s", kindName(n.Kind)))
	}
	var unknown []string
	known := yamlKeys(reflect.TypeFor[Queue]())
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if k.Kind == yaml.ScalarNode && (k.Value == "<<" || known[k.Value]) {
			continue
		}
		// Same wording as the decoder's own unknown-field errors.
		unknown = append(unknown, fmt.Sprintf("line %d: field %s not found in type config.Queue", k.Line, k.Value))
	}
	type plain Queue // without this method
	v := plain(NewQueue("", ""))
	err := n.Decode(&v)
	var te *yaml.TypeError
	switch {
	case err == nil && len(unknown) == 0:
	case err == nil:
		return &yaml.TypeError{Errors: unknown}
	case errors.As(err, &te):
		return &yaml.TypeError{Errors: append(unknown, te.Errors...)}
	default:
		return err
	}
	*q = Queue(v)
	return nil
}
