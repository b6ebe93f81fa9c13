package client

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/switchboardhq/switchboard/adapters/native"
	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/auth"
)

const testKey = "app:s3cret"

// testServer is a real engine with the REST API and the realtime protocol
// on a real HTTP server.
type testServer struct {
	e     *core.Engine
	authn *auth.Authenticator
	rt    *native.Realtime
	srv   *httptest.Server
}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	authn, err := auth.New(auth.Options{Keys: []auth.Key{
		{Name: "app", Secret: "s3cret", Capability: auth.Capability{"*": auth.AllOperations()}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	e, err := core.New(core.Options{Durability: core.DurabilityMemory, Auth: authn, ChannelMemoryLimit: 1_000_000})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := native.NewRealtime(e, native.RealtimeOptions{Heartbeat: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/realtime", rt)
	mux.Handle("/v1/", native.NewREST(e, authn, native.RESTOptions{}))
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		rt.Drain()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = rt.Wait(ctx)
		srv.Close()
		_ = e.Close(context.Background())
	})
	return &testServer{e: e, authn: authn, rt: rt, srv: srv}
}

func newClient(t *testing.T, opts Options) *Client {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// cutProxy forwards TCP connections and can cut them all at once.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.conns == nil {
				p.mu.Unlock()
				c.Close()
				u.Close()
				return
			}
			p.conns[c], p.conns[u] = struct{}{}, struct{}{}
			p.mu.Unlock()
			p.wg.Add(2)
			go p.pipe(c, u)
			go p.pipe(u, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			c.Close()
		}
		p.conns = nil
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// cut closes every connection the proxy carries.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *cutProxy) url() string { return "http://" + p.ln.Addr().String() }
