// Package server assembles a Switchboard server from its configuration: the
// durable store, the channel engine, authentication, the protocol adapters
// and the operator endpoints (/healthz, /readyz, /metrics), with graceful
// shutdown.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	mqttadapter "github.com/switchboardhq/switchboard/adapters/mqtt"
	"github.com/switchboardhq/switchboard/adapters/native"
	"github.com/switchboardhq/switchboard/adapters/sse"
	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/core/channel"
	"github.com/switchboardhq/switchboard/core/store"
	"github.com/switchboardhq/switchboard/internal/config"
)

// Server is a running Switchboard server.
type Server struct {
	cfg      config.Config
	log      *slog.Logger
	store    *store.Store
	engine   *core.Engine
	auth     *auth.Authenticator
	registry *prometheus.Registry
	http     *http.Server
	events   *sse.Handler
	realtime *native.Realtime
	mqtt     *mqttadapter.Broker
	// mqttEvents hands the engine's channel events to the MQTT broker,
	// which is built after the engine.
	mqttEvents atomic.Pointer[mqttadapter.Broker]
	mqttAddrs  []string
	httpLn     net.Listener
	ready      atomic.Bool
}

// New builds a server from cfg and opens its listeners (so that a port
// conflict is reported before Run). Call Run to serve.
func New(cfg config.Config, log *slog.Logger) (_ *Server, err error) {
	s := &Server{cfg: cfg, log: log, registry: prometheus.NewRegistry()}
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	defer func() {
		if err != nil {
			s.closeStorage(context.Background())
		}
	}()

	durability, err := core.ParseDurability(string(cfg.Durability))
	if err != nil {
		return nil, err
	}
	if durability != core.DurabilityMemory {
		s.store, err = store.Open(store.Options{Dir: cfg.Data, Logger: log.With("component", "store")})
		if err != nil {
			return nil, fmt.Errorf("opening the data directory %q: %w", cfg.Data, err)
		}
	}

	s.auth, err = auth.New(auth.Options{Keys: authKeys(cfg.Keys), Dev: cfg.Dev, Anonymous: anonymousRules(cfg)})
	if err != nil {
		return nil, fmt.Errorf("configuring keys: %w", err)
	}

	s.engine, err = core.New(core.Options{
		Region:             cfg.Region,
		Durability:         durability,
		Store:              s.store,
		FlushInterval:      time.Duration(cfg.FlushInterval),
		ResumeWindow:       time.Duration(cfg.ResumeWindow),
		DedupWindow:        time.Duration(cfg.DedupWindow),
		PresenceGrace:      time.Duration(cfg.PresenceGrace),
		ConnectionStateTTL: time.Duration(cfg.ConnectionStateTTL),
		MaxMessageSize:     int(cfg.MaxMessageSize),
		SubscriberBuffer:   cfg.SubscriberBuffer,
		ChannelMemoryLimit: cfg.ChannelMemoryLimit,
		Namespace:          namespaceRules(cfg),
		Auth:               s.auth,
		Logger:             log.With("component", "engine"),
		Registerer:         s.registry,
		OnChannelEvent: func(ev core.ChannelEvent) {
			if b := s.mqttEvents.Load(); b != nil {
				b.OnChannelEvent(ev)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("starting the engine: %w", err)
	}

	events, err := sse.New(s.engine, sse.Options{
		Heartbeat:        time.Duration(cfg.SSE.Heartbeat),
		Retry:            time.Duration(cfg.SSE.Retry),
		MaxChannels:      cfg.SSE.MaxChannels,
		MaxStreamsPerKey: cfg.SSE.MaxStreamsPerKey,
		Buffer:           cfg.SSE.Buffer,
		WriteTimeout:     time.Duration(cfg.SSE.WriteTimeout),
		Logger:           log.With("component", "sse"),
		Registerer:       s.registry,
	})
	if err != nil {
		return nil, err
	}

	realtime, err := native.NewRealtime(s.engine, native.RealtimeOptions{
		Heartbeat:          time.Duration(cfg.Realtime.Heartbeat),
		FrameRate:          float64(cfg.Realtime.FrameRate),
		FrameBurst:         cfg.Realtime.FrameBurst,
		MaxPendingAttaches: cfg.Realtime.MaxPendingAttaches,
		ConnectionStateTTL: time.Duration(cfg.ConnectionStateTTL),
		MaxFrameSize:       int64(cfg.MaxRequestBody),
		OriginPatterns:     originPatterns(cfg.CORS.AllowedOrigins),
		Logger:             log.With("component", "realtime"),
		Registerer:         s.registry,
	})
	if err != nil {
		return nil, err
	}

	if err := s.newMQTT(cfg, log); err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	mux.Handle("/v1/mqtt", s.mqtt)
	mux.Handle("/v1/sse", events)
	mux.Handle("/v1/realtime", realtime)
	s.events, s.realtime = events, realtime
	mux.Handle("/v1/", native.NewREST(s.engine, s.auth, native.RESTOptions{
		MaxRequestBody: int64(cfg.MaxRequestBody),
		Logger:         log.With("component", "rest"),
	}))
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry}))
	s.http = &http.Server{
		Handler:           cors(cfg.CORS, mux),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if config.Enabled(cfg.HTTP) {
		s.httpLn, err = net.Listen("tcp", cfg.HTTP)
		if err != nil {
			return nil, fmt.Errorf("http listener: %w", err)
		}
	}
	return s, nil
}

// newMQTT builds the MQTT broker and opens its listeners.
func (s *Server) newMQTT(cfg config.Config, log *slog.Logger) error {
	b, err := mqttadapter.New(s.engine, mqttadapter.Options{
		Store:            s.store,
		AllowAnonymous:   cfg.MQTTBroker.AllowAnonymous,
		MaxSessionExpiry: time.Duration(cfg.MQTTBroker.MaxSessionExpiry),
		MaxInflight:      cfg.MQTTBroker.MaxInflight,
		ReceiveMaximum:   cfg.MQTTBroker.ReceiveMaximum,
		MaxPacketSize:    int(cfg.MQTTBroker.MaxPacketSize),
		Buffer:           cfg.SubscriberBuffer,
		Logger:           log.With("component", "mqtt"),
		Registerer:       s.registry,
	})
	if err != nil {
		return err
	}
	s.mqtt = b
	s.mqttEvents.Store(b)
	if config.Enabled(cfg.MQTT) {
		addr, err := b.Listen("tcp", cfg.MQTT, nil)
		if err != nil {
			return err
		}
		s.mqttAddrs = append(s.mqttAddrs, addr.String())
	}
	if config.Enabled(cfg.MQTTTLS) && cfg.TLS.Configured() {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			return fmt.Errorf("mqtt tls listener: loading the certificate: %w", err)
		}
		addr, err := b.Listen("tls", cfg.MQTTTLS, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		if err != nil {
			return err
		}
		s.mqttAddrs = append(s.mqttAddrs, addr.String())
	}
	return nil
}

// MQTTAddrs are the addresses of the MQTT listeners (TCP, then TLS).
func (s *Server) MQTTAddrs() []string { return s.mqttAddrs }

// Engine returns the server's channel engine.
func (s *Server) Engine() *core.Engine { return s.engine }

// HTTPAddr is the address the HTTP listener is bound to ("" when off).
func (s *Server) HTTPAddr() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// Run serves until ctx ends, then shuts down gracefully: the server stops
// being ready, stops accepting connections, lets in-flight requests finish
// (within the shutdown timeout), commits and acknowledges queued publishes,
// syncs and closes the store.
func (s *Server) Run(ctx context.Context) error {
	if s.cfg.Dev {
		s.log.Warn("DEVELOPMENT MODE: access is open to anyone without credentials; never use --dev in production")
	}
	errc := make(chan error, 1)
	if s.httpLn != nil {
		go func() {
			if err := s.http.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http server: %w", err)
			}
		}()
		s.log.Info("listener up", "protocol", "http", "addr", s.HTTPAddr(), "serves", "REST /v1, realtime /v1/realtime, SSE /v1/sse, MQTT over WebSocket /v1/mqtt, /healthz, /readyz, /metrics")
	} else {
		s.log.Info("listener off", "protocol", "http")
	}
	if err := s.mqtt.Start(); err != nil {
		return err
	}
	for _, addr := range s.mqttAddrs {
		s.log.Info("listener up", "protocol", "mqtt", "addr", addr)
	}
	for _, l := range []struct{ name, addr string }{{"stomp", s.cfg.STOMP}, {"amqp", s.cfg.AMQP}} {
		if config.Enabled(l.addr) {
			s.log.Warn("listener not started: this protocol adapter is not part of this build yet", "protocol", l.name, "addr", l.addr)
		}
	}
	s.log.Info("switchboard ready", "region", s.cfg.Region, "durability", string(s.cfg.Durability), "data", s.dataDir(), "dev", s.cfg.Dev)
	s.ready.Store(true)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	s.ready.Store(false)
	s.log.Info("shutting down", "timeout", time.Duration(s.cfg.ShutdownTimeout).String())
	sctx, cancel := context.WithTimeout(context.Background(), time.Duration(s.cfg.ShutdownTimeout))
	defer cancel()
	// Streams never go idle on their own: they end with a reconnection
	// hint, and their connections are waited for like the others.
	s.events.Drain()
	s.realtime.Drain()
	if err := s.mqtt.Close(sctx); err != nil {
		s.log.Warn("mqtt clients did not disconnect in time", "err", err)
	}
	if err := s.http.Shutdown(sctx); err != nil {
		s.log.Warn("http connections did not drain in time", "err", err)
	}
	if err := s.events.Wait(sctx); err != nil {
		s.log.Warn("sse streams did not drain in time", "err", err)
	}
	if err := s.realtime.Wait(sctx); err != nil {
		s.log.Warn("realtime connections did not drain in time", "err", err)
	}
	if err := s.closeStorage(sctx); err != nil {
		s.log.Error("shutdown", "err", err)
		if runErr == nil {
			runErr = err
		}
	}
	s.log.Info("stopped")
	return runErr
}

func (s *Server) dataDir() string {
	if s.store == nil {
		return "(memory)"
	}
	return s.cfg.Data
}

func (s *Server) closeStorage(ctx context.Context) error {
	var errs []error
	if s.engine != nil {
		if err := s.engine.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("engine: %w", err))
		}
	}
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("store: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if !s.ready.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"status":"not ready"}` + "\n"))
		return
	}
	_, _ = w.Write([]byte(`{"status":"ready"}` + "\n"))
}

func authKeys(keys []config.Key) []auth.Key {
	out := make([]auth.Key, 0, len(keys))
	for _, k := range keys {
		capab := auth.Capability{}
		for pattern, ops := range k.Capabilities {
			capab[pattern] = authOps(ops)
		}
		out = append(out, auth.Key{Name: k.Name, Secret: string(k.Secret), Capability: capab})
	}
	return out
}

func authOps(ops []config.Operation) []auth.Operation {
	var out []auth.Operation
	for _, op := range ops {
		if op == config.OpAll {
			return auth.AllOperations()
		}
		out = append(out, op)
	}
	return out
}

func anonymousRules(cfg config.Config) func(string) []auth.Operation {
	rules := map[string][]auth.Operation{}
	for _, ns := range cfg.Namespaces {
		if len(ns.Anonymous) > 0 {
			rules[ns.Name] = authOps(ns.Anonymous)
		}
	}
	return func(ch string) []auth.Operation { return rules[channel.Namespace(ch)] }
}

func namespaceRules(cfg config.Config) func(string) core.NamespaceRules {
	rules := map[string]core.NamespaceRules{}
	for _, ns := range cfg.Namespaces {
		keep, forever := ns.History()
		r := core.NamespaceRules{Persisted: ns.Persisted, MaxMessageSize: int(ns.MaxMessageSize)}
		if ns.Persisted && !forever {
			r.Retention = keep
		}
		rules[ns.Name] = r
	}
	return func(ns string) core.NamespaceRules { return rules[ns] }
}

// originPatterns turns the CORS origins into the host patterns WebSocket
// upgrades are checked against.
func originPatterns(origins []string) []string {
	out := make([]string, 0, len(origins))
	for _, o := range origins {
		if o == "*" {
			out = append(out, "*")
			continue
		}
		if _, host, ok := strings.Cut(o, "://"); ok {
			out = append(out, host)
		}
	}
	return out
}

// cors applies the cross-origin policy to every response.
func cors(policy config.CORS, next http.Handler) http.Handler {
	any := slices.Contains(policy.AllowedOrigins, "*")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin != "" && (any || slices.Contains(policy.AllowedOrigins, origin)) {
			h := w.Header()
			if any && !policy.AllowCredentials {
				h.Set("Access-Control-Allow-Origin", "*")
			} else {
				h.Set("Access-Control-Allow-Origin", origin)
				h.Add("Vary", "Origin")
			}
			if policy.AllowCredentials {
				h.Set("Access-Control-Allow-Credentials", "true")
			}
			h.Set("Access-Control-Expose-Headers", "Link, X-Request-Id")
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
				if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
					h.Set("Access-Control-Allow-Headers", sanitizeHeaderList(req))
				}
				h.Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// sanitizeHeaderList keeps only header-name characters from a requested
// header list before echoing it.
func sanitizeHeaderList(s string) string {
	return strings.Map(func(r rune) rune {
		if r == ',' || r == ' ' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return -1
	}, s)
}
