package native

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/auth"
)

// rtFixture is a real engine with the realtime protocol on a real server.
type rtFixture struct {
	e     *core.Engine
	authn *auth.Authenticator
	rt    *Realtime
	srv   *httptest.Server
}

func newRTFixture(t *testing.T, opts RealtimeOptions, eopts core.Options) *rtFixture {
	t.Helper()
	authn := newTestAuth(t)
	eopts.Durability = core.DurabilityMemory
	eopts.Auth = authn
	e, err := core.New(eopts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	rt, err := NewRealtime(e, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rt)
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		rt.Drain()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rt.Wait(ctx); err != nil {
			t.Error(err)
		}
	})
	return &rtFixture{e: e, authn: authn, rt: rt, srv: srv}
}

// rtClient is a raw protocol client: frames in, frames out.
type rtClient struct {
	t      *testing.T
	ws     *websocket.Conn
	frames chan map[string]any
	raw    chan []byte
	closed chan struct{}
	err    error
}

func (f *rtFixture) dial(t *testing.T, query string) *rtClient {
	t.Helper()
	u := "ws" + strings.TrimPrefix(f.srv.URL, "http") + "/v1/realtime?" + query
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	ws.SetReadLimit(8 << 20)
	c := &rtClient{t: t, ws: ws, frames: make(chan map[string]any, 4096), raw: make(chan []byte, 4096), closed: make(chan struct{})}
	go func() {
		defer close(c.closed)
		for {
			_, b, err := ws.Read(context.Background())
			if err != nil {
				c.err = err
				return
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				c.err = fmt.Errorf("server frame %q: %w", b, err)
				return
			}
			c.frames <- m
			c.raw <- b
		}
	}()
	t.Cleanup(func() {
		_ = ws.CloseNow()
		<-c.closed
	})
	return c
}

func (c *rtClient) sendJSON(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRaw(b)
}

func (c *rtClient) sendRaw(b []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// next returns the next frame other than a heartbeat.
func (c *rtClient) next() map[string]any {
	c.t.Helper()
	for {
		if m := c.nextAny(); m["action"] != "heartbeat" {
			return m
		}
	}
}

// nextAny returns the next frame.
func (c *rtClient) nextAny() map[string]any {
	c.t.Helper()
	for {
		select {
		case m := <-c.frames:
			<-c.raw
			return m
		case <-c.closed:
			if len(c.frames) > 0 {
				continue
			}
			c.t.Fatalf("connection ended: %v", c.err)
		case <-time.After(10 * time.Second):
			c.t.Fatal("no frame within 10s")
		}
	}
}

// expect returns the next frame, which must have the given action.
func (c *rtClient) expect(action string) map[string]any {
	c.t.Helper()
	m := c.next()
	if m["action"] != action {
		c.t.Fatalf("got %v, want action %q", m, action)
	}
	return m
}

// waitClosed waits for the server to end the connection.
func (c *rtClient) waitClosed() {
	c.t.Helper()
	select {
	case <-c.closed:
	case <-time.After(10 * time.Second):
		c.t.Fatal("the server did not close the connection")
	}
}

func errorCode(m map[string]any) apierr.Code {
	e, _ := m["error"].(map[string]any)
	n, _ := e["code"].(float64)
	return apierr.Code(n)
}

// messagesOf returns the data of a message frame's messages.
func messagesOf(m map[string]any) []string {
	var out []string
	for _, x := range m["messages"].([]any) {
		out = append(out, fmt.Sprint(x.(map[string]any)["data"]))
	}
	return out
}

func TestRealtimeConnectAttachPublish(t *testing.T) {
	f := newRTFixture(t, RealtimeOptions{}, core.Options{})
	sub := f.dial(t, "key="+testKey+"&clientId=sub")
	hello := sub.expect("connected")
	if hello["connectionId"] == "" || hello["connectionKey"] == "" || hello["resumed"] != false || hello["clientId"] != "sub" {
		t.Fatalf("connected frame %v", hello)
	}
	details := hello["connectionDetails"].(map[string]any)
	if details["connectionStateTtl"].(float64) != 120000 || details["maxMessageSize"].(float64) != 65536 || details["heartbeatInterval"].(float64) != 15000 {
		t.Errorf("connection details %v", details)
	}
	sub.sendJSON(map[string]any{"action": "attach", "channel": "room"})
	att := sub.expect("attached")
	if att["channel"] != "room" || att["channelSerial"] == "" || att["resumed"] != false {
		t.Fatalf("attached frame %v", att)
	}

	pub := f.dial(t, "key="+testKey)
	pub.expect("connected")
	pub.sendJSON(map[string]any{"action": "message", "channel": "room", "msgSerial": 0,
		"messages": []map[string]any{{"id": "m1", "data": "one"}, {"id": "m2", "data": "two"}}})
	ack := pub.expect("ack")
	results := ack["results"].([]any)
	if ack["msgSerial"].(float64) != 0 || len(results) != 2 || results[0].(map[string]any)["serial"] == "" {
		t.Fatalf("ack %v", ack)
	}
	got := messagesOf(sub.expect("message"))
	if strings.Join(got, ",") != "one,two" {
		t.Errorf("delivered %v, want one,two in one frame", got)
	}
	// A retry with the same ids is acknowledged as a duplicate, not delivered.
	pub.sendJSON(map[string]any{"action": "message", "channel": "room", "msgSerial": 1, "messages": map[string]any{"id": "m1", "data": "one"}})
	if r := pub.expect("ack")["results"].([]any)[0].(map[string]any); r["duplicate"] != true {
		t.Errorf("retry ack %v, want duplicate", r)
	}
	pub.sendJSON(map[string]any{"action": "message", "channel": "room", "msgSerial": 2, "messages": map[string]any{"data": "three"}})
	pub.expect("ack")
	if got := messagesOf(sub.expect("message")); strings.Join(got, ",") != "three" {
		t.Errorf("after the duplicate got %v, want three", got)
	}
	sub.sendJSON(map[string]any{"action": "detach", "channel": "room"})
	sub.expect("detached")
	pub.sendJSON(map[string]any{"action": "message", "channel": "room", "msgSerial": 3, "messages": map[string]any{"data": "four"}})
	pub.expect("ack")
	sub.sendJSON(map[string]any{"action": "heartbeat"})
	if m := sub.nextAny(); m["action"] != "heartbeat" {
		t.Errorf("got %v after detach, want only the heartbeat reply", m)
	}
	sub.sendJSON(map[string]any{"action": "close"})
	sub.expect("closed")
	sub.waitClosed()
}

func TestRealtimeRewindComesBeforeAttached(t *testing.T) {
	f := newRTFixture(t, RealtimeOptions{}, core.Options{})
	pub := f.dial(t, "key="+testKey)
	pub.expect("connected")
	for i := range 5 {
		pub.sendJSON(map[string]any{"action": "message", "channel": "log", "msgSerial": i, "messages": map[string]any{"data": fmt.Sprint(i)}})
		pub.expect("ack")
	}
	sub := f.dial(t, "key="+testKey)
	sub.expect("connected")
	sub.sendJSON(map[string]any{"action": "attach", "channel": "log", "rewind": "3"})
	var got []string
	for {
		m := sub.next()
		if m["action"] == "attached" {
			break
		}
		got = append(got, messagesOf(m)...)
	}
	if strings.Join(got, ",") != "2,3,4" {
		t.Errorf("rewind delivered %v, want 2,3,4 before attached", got)
	}
}

// A dropped connection resumed with its connection key keeps its id, and
// re-attaching from its channel serial delivers what it missed exactly
// once.
func TestRealtimeConnectionRecovery(t *testing.T) {
	f := newRTFixture(t, RealtimeOptions{}, core.Options{})
	a := f.dial(t, "key="+testKey+"&clientId=alice")
	hello := a.expect("connected")
	a.sendJSON(map[string]any{"action": "attach", "channel": "feed"})
	a.expect("attached")
	pub := f.dial(t, "key="+testKey)
	pub.expect("connected")
	publish := func(i int) {
		pub.sendJSON(map[string]any{"action": "message", "channel": "feed", "msgSerial": i, "messages": map[string]any{"data": fmt.Sprint(i)}})
		pub.expect("ack")
	}
	publish(0)
	m := a.expect("message")
	last := m["messages"].([]any)[0].(map[string]any)["serial"].(string)
	_ = a.ws.CloseNow() // the network fails
	a.waitClosed()
	for i := 1; i <= 3; i++ {
		publish(i)
	}
	b := f.dial(t, "key="+testKey+"&clientId=alice&resume="+url.QueryEscape(hello["connectionKey"].(string)))
	hello2 := b.expect("connected")
	if hello2["resumed"] != true || hello2["connectionId"] != hello["connectionId"] || hello2["connectionKey"] == hello["connectionKey"] {
		t.Fatalf("resumed connection %v (was %v)", hello2, hello)
	}
	b.sendJSON(map[string]any{"action": "attach", "channel": "feed", "channelSerial": last})
	var got []string
	for {
		m := b.next()
		if m["action"] == "attached" {
			if m["resumed"] != true {
				t.Errorf("attached %v, want resumed", m)
			}
			break
		}
		got = append(got, messagesOf(m)...)
	}
	if strings.Join(got, ",") != "1,2,3" {
		t.Errorf("missed messages %v, want 1,2,3", got)
	}
	// The old key was used up; an unknown key says so and starts afresh.
	c := f.dial(t, "key="+testKey+"&clientId=alice&resume="+url.QueryEscape(hello["connectionKey"].(string)))
	hello3 := c.expect("connected")
	if hello3["resumed"] != false || errorCode(hello3) != apierr.ConnectionExpired || hello3["connectionId"] == hello["connectionId"] {
		t.Errorf("reusing a key: %v", hello3)
	}
}

func TestRealtimeBadInput(t *testing.T) {
	f := newRTFixture(t, RealtimeOptions{MaxFrameSize: 4096, MaxPendingAttaches: 2}, core.Options{})
	cases := []struct {
		name  string
		frame string
		code  apierr.Code
	}{
		{"malformed JSON", `{"action":`, apierr.InvalidJSON},
		{"unknown field", `{"action":"heartbeat","bogus":1}`, apierr.InvalidJSON},
		{"no action", `{}`, apierr.InvalidJSON},
		{"unknown action", `{"action":"explode"}`, apierr.BadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := f.dial(t, "key="+testKey)
			c.expect("connected")
			c.sendRaw([]byte(tc.frame))
			if m := c.expect("error"); errorCode(m) != tc.code {
				t.Errorf("error %v, want code %d", m, tc.code)
			}
			c.waitClosed()
		})
	}
	t.Run("oversize frame", func(t *testing.T) {
		c := f.dial(t, "key="+testKey)
		c.expect("connected")
		c.sendRaw([]byte(`{"action":"heartbeat","channel":"` + strings.Repeat("x", 5000) + `"}`))
		c.waitClosed()
		if websocket.CloseStatus(c.err) != websocket.StatusMessageTooBig {
			t.Errorf("closed with %v, want StatusMessageTooBig", c.err)
		}
	})
	t.Run("refused at connect", func(t *testing.T) {
		for q, code := range map[string]apierr.Code{
			"key=app:wrong":                            apierr.InvalidCredentials,
			"key=" + testKey + "&x=1":                  apierr.InvalidParameter,
			"key=" + testKey + "&format=msgpack&bogus": apierr.InvalidParameter,
		} {
			c := f.dial(t, q)
			if m := c.expect("error"); errorCode(m) != code {
				t.Errorf("%s: %v, want code %d", q, m, code)
			}
			c.waitClosed()
		}
	})
	t.Run("errors that keep the connection", func(t *testing.T) {
		f := newRTFixture(t, RealtimeOptions{}, core.Options{})
		c := f.dial(t, "key=narrow:n4rrow")
		c.expect("connected")
		c.sendJSON(map[string]any{"action": "attach", "channel": "secret"})
		if m := c.expect("error"); m["channel"] != "secret" || errorCode(m) != apierr.OperationNotAllowed {
			t.Errorf("denied attach: %v", m)
		}
		c.sendJSON(map[string]any{"action": "attach", "channel": "[?rewind=x]a"})
		if m := c.expect("error"); errorCode(m) != apierr.InvalidQualifier {
			t.Errorf("bad qualifier: %v", m)
		}
		c.sendJSON(map[string]any{"action": "message", "channel": "list:b", "msgSerial": 7, "messages": map[string]any{"data": "x"}})
		if m := c.expect("nack"); m["msgSerial"].(float64) != 7 || errorCode(m) != apierr.OperationNotAllowed {
			t.Errorf("denied publish: %v", m)
		}
		c.sendJSON(map[string]any{"action": "message", "channel": "other:x", "msgSerial": 8, "messages": map[string]any{"data": strings.Repeat("x", 70000)}})
		if m := c.expect("nack"); m["msgSerial"].(float64) != 8 || errorCode(m) != apierr.MessageTooLarge {
			t.Errorf("oversize message: %v", m)
		}
		c.sendJSON(map[string]any{"action": "heartbeat"})
		if m := c.nextAny(); m["action"] != "heartbeat" {
			t.Errorf("got %v, want the heartbeat reply", m)
		}
	})
}

func TestRealtimeFrameRateLimit(t *testing.T) {
	f := newRTFixture(t, RealtimeOptions{FrameRate: 1, FrameBurst: 5}, core.Options{})
	c := f.dial(t, "key="+testKey)
	c.expect("connected")
	for range 10 {
		// The server may close before the last ones are written.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = c.ws.Write(ctx, websocket.MessageText, []byte(`{"action":"heartbeat"}`))
		cancel()
	}
	for {
		m := c.next()
		if m["action"] == "error" {
			if errorCode(m) != apierr.RateLimited {
				t.Errorf("error %v, want rate limited", m)
			}
			break
		}
	}
	c.waitClosed()
}

func TestRealtimePresenceAndSync(t *testing.T) {
	f := newRTFixture(t, RealtimeOptions{}, core.Options{})
	watcher := f.dial(t, "key="+testKey)
	watcher.expect("connected")
	watcher.sendJSON(map[string]any{"action": "attach", "channel": "lobby", "presence": true})
	watcher.expect("attached")
	var members []*rtClient
	for i := range 5 {
		c := f.dial(t, fmt.Sprintf("key=%s&clientId=user%d", testKey, i))
		c.expect("connected")
		c.sendJSON(map[string]any{"action": "presence", "channel": "lobby", "msgSerial": 0, "presence": map[string]any{"action": "enter", "data": fmt.Sprint(i)}})
		c.expect("ack")
		members = append(members, c)
		if p := watcher.expect("presence")["presence"].([]any)[0].(map[string]any); p["action"] != "enter" || p["clientId"] != fmt.Sprintf("user%d", i) {
			t.Errorf("presence event %v", p)
		}
	}
	var seen []string
	cursor := ""
	for page := 0; ; page++ {
		req := map[string]any{"action": "sync", "channel": "lobby", "limit": 2}
		if cursor != "" {
			req["cursor"] = cursor
		}
		watcher.sendJSON(req)
		m := watcher.expect("sync")
		for _, p := range m["presence"].([]any) {
			seen = append(seen, p.(map[string]any)["clientId"].(string))
		}
		c, _ := m["cursor"].(string)
		if c == "" {
			break
		}
		cursor = c
		if page > 5 {
			t.Fatal("sync does not end")
		}
	}
	if strings.Join(seen, ",") != "user0,user1,user2,user3,user4" {
		t.Errorf("sync pages gave %v", seen)
	}
	// Without a client id there is no presence.
	anon := f.dial(t, "key="+testKey)
	anon.expect("connected")
	anon.sendJSON(map[string]any{"action": "presence", "channel": "lobby", "msgSerial": 4, "presence": map[string]any{"action": "enter"}})
	if m := anon.expect("nack"); m["msgSerial"].(float64) != 4 {
		t.Errorf("nack %v", m)
	}
	members[0].sendJSON(map[string]any{"action": "close"})
	members[0].expect("closed")
	if p := watcher.expect("presence")["presence"].([]any)[0].(map[string]any); p["action"] != "leave" || p["clientId"] != "user0" {
		t.Errorf("after close: %v", p)
	}
}

func TestRealtimeTokenRenewalAndExpiry(t *testing.T) {
	f := newRTFixture(t, RealtimeOptions{}, core.Options{})
	id, err := f.authn.Authenticate(auth.Credentials{Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	token := func(ttl time.Duration) string {
		tok, _, err := f.authn.IssueToken(id, auth.TokenRequest{TTL: ttl, ClientID: "carol"})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	c := f.dial(t, "accessToken="+url.QueryEscape(token(1500*time.Millisecond)))
	c.expect("connected")
	c.sendJSON(map[string]any{"action": "auth", "accessToken": token(time.Hour)})
	if m := c.expect("authorized"); m["expires"].(float64) < float64(time.Now().Add(50*time.Minute).UnixMilli()) {
		t.Errorf("authorized %v", m)
	}
	time.Sleep(2 * time.Second)
	c.sendJSON(map[string]any{"action": "heartbeat"})
	if m := c.nextAny(); m["action"] != "heartbeat" { // still connected after the first token expired
		t.Errorf("got %v, want the heartbeat reply", m)
	}

	d := f.dial(t, "accessToken="+url.QueryEscape(token(time.Second)))
	d.expect("connected")
	if m := d.expect("error"); errorCode(m) != apierr.TokenExpired {
		t.Errorf("expiry: %v", m)
	}
	d.waitClosed()
}

func TestRealtimeDrainSendsDisconnect(t *testing.T) {
	f := newRTFixture(t, RealtimeOptions{}, core.Options{})
	c := f.dial(t, "key="+testKey)
	c.expect("connected")
	f.rt.Drain()
	m := c.expect("disconnect")
	if errorCode(m) != apierr.Unavailable || m["retryIn"].(float64) < 1000 {
		t.Errorf("disconnect frame %v", m)
	}
	c.waitClosed()
}

func TestRealtimeHeartbeats(t *testing.T) {
	f := newRTFixture(t, RealtimeOptions{Heartbeat: 30 * time.Millisecond}, core.Options{})
	c := f.dial(t, "key="+testKey)
	<-c.frames // connected
	<-c.raw
	select {
	case m := <-c.frames:
		if m["action"] != "heartbeat" {
			t.Errorf("got %v, want a heartbeat", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no heartbeat")
	}
}

// A client often notices a dead connection before the server does: a
// resume with the key of a connection that still looks up replaces it.
func TestRealtimeResumeReplacesAConnectionStillUp(t *testing.T) {
	f := newRTFixture(t, RealtimeOptions{}, core.Options{})
	a := f.dial(t, "key="+testKey+"&clientId=dave")
	hello := a.expect("connected")
	b := f.dial(t, "key="+testKey+"&clientId=dave&resume="+url.QueryEscape(hello["connectionKey"].(string)))
	hello2 := b.expect("connected")
	if hello2["resumed"] != true || hello2["connectionId"] != hello["connectionId"] {
		t.Fatalf("resume over a live connection: %v (was %v)", hello2, hello)
	}
	a.waitClosed()
	b.sendJSON(map[string]any{"action": "heartbeat"})
	if m := b.nextAny(); m["action"] != "heartbeat" {
		t.Errorf("the resumed connection answered %v", m)
	}
}

// With format=msgpack every frame is a binary MessagePack map, and binary
// message data travels as bin, without base64.
func TestRealtimeMessagePack(t *testing.T) {
	f := newRTFixture(t, RealtimeOptions{}, core.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(f.srv.URL, "http")+"/v1/realtime?format=msgpack&key="+testKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	read := func() map[string]any {
		t.Helper()
		for {
			typ, b, err := ws.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if typ != websocket.MessageBinary {
				t.Fatalf("a %v frame with format=msgpack", typ)
			}
			var m map[string]any
			if err := msgpack.Unmarshal(b, &m); err != nil {
				t.Fatalf("frame %x: %v", b, err)
			}
			if m["action"] != "heartbeat" {
				return m
			}
		}
	}
	write := func(v any) {
		t.Helper()
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := ws.Write(ctx, websocket.MessageBinary, b); err != nil {
			t.Fatal(err)
		}
	}
	if m := read(); m["action"] != "connected" || m["connectionId"] == "" {
		t.Fatalf("first frame %v", m)
	}
	write(map[string]any{"action": "attach", "channel": "mp"})
	if m := read(); m["action"] != "attached" {
		t.Fatalf("%v, want attached", m)
	}
	write(map[string]any{"action": "message", "channel": "mp", "msgSerial": 1, "messages": []any{
		map[string]any{"id": "bin", "data": []byte{0, 1, 2, 0xff}},
		map[string]any{"id": "txt", "data": "hello", "name": "greeting"},
		map[string]any{"id": "obj", "data": map[string]any{"n": 1}},
	}})
	var gotAck, gotMsgs bool
	for !gotAck || !gotMsgs {
		m := read()
		switch m["action"] {
		case "ack":
			gotAck = true
		case "message":
			gotMsgs = true
			msgs := m["messages"].([]any)
			bin := msgs[0].(map[string]any)
			if d, ok := bin["data"].([]byte); !ok || !bytes.Equal(d, []byte{0, 1, 2, 0xff}) || bin["encoding"] != nil {
				t.Errorf("binary message %#v", bin)
			}
			if txt := msgs[1].(map[string]any); txt["data"] != "hello" || txt["name"] != "greeting" {
				t.Errorf("text message %#v", txt)
			}
			if obj := msgs[2].(map[string]any); obj["encoding"] != "json" {
				t.Errorf("JSON message %#v", obj)
			}
		default:
			t.Fatalf("unexpected frame %v", m)
		}
	}
	// A text frame breaks the format: error, close.
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"action":"heartbeat"}`)); err != nil {
		t.Fatal(err)
	}
	if m := read(); m["action"] != "error" {
		t.Errorf("%v, want an error", m)
	}
}
