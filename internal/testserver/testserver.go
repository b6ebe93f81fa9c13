// Package testserver runs an in-process Switchboard for the tests of its
// clients: a memory-mode engine with the REST API and the realtime
// protocol on a loopback HTTP server. One API key, "app:s3cret" (Key),
// may do everything.
package testserver

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/switchboardhq/switchboard/adapters/native"
	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/auth"
)

// Key is the API key the server accepts.
const Key = "app:s3cret"

// Options adjust the server; zero values take the defaults.
type Options struct {
	// ChannelMemoryLimit is the messages each channel keeps (memory mode).
	ChannelMemoryLimit int
	// Heartbeat is the realtime protocol's heartbeat interval.
	Heartbeat time.Duration
}

// Server is a running test server; it stops when the test ends.
type Server struct {
	Engine *core.Engine
	Auth   *auth.Authenticator
	HTTP   *httptest.Server
}

// URL is the server's base URL.
func (s *Server) URL() string { return s.HTTP.URL }

// Addr is the server's listen address (host:port).
func (s *Server) Addr() string { return s.HTTP.Listener.Addr().String() }

// Start starts a server and registers its shutdown with tb.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	authn, err := auth.New(auth.Options{Keys: []auth.Key{
		{Name: "app", Secret: "s3cret", Capability: auth.Capability{"*": auth.AllOperations()}},
	}})
	if err != nil {
		tb.Fatal(err)
	}
	e, err := core.New(core.Options{Durability: core.DurabilityMemory, Auth: authn, ChannelMemoryLimit: opts.ChannelMemoryLimit})
	if err != nil {
		tb.Fatal(err)
	}
	rt, err := native.NewRealtime(e, native.RealtimeOptions{Heartbeat: opts.Heartbeat})
	if err != nil {
		tb.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/realtime", rt)
	mux.Handle("/v1/", native.NewREST(e, authn, native.RESTOptions{}))
	srv := httptest.NewServer(mux)
	tb.Cleanup(func() {
		rt.Drain()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rt.Wait(ctx); err != nil {
			tb.Error(err)
		}
		srv.Close()
		_ = e.Close(context.Background())
	})
	return &Server{Engine: e, Auth: authn, HTTP: srv}
}
