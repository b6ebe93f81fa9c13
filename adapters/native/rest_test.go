package native

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/core/store"
)

const testKey = "app:s3cret"

func testKeys() []auth.Key {
	return []auth.Key{
		{Name: "app", Secret: "s3cret", Capability: auth.Capability{
			"*": {auth.OpPublish, auth.OpSubscribe, auth.OpPresence, auth.OpHistory},
		}},
		{Name: "narrow", Secret: "n4rrow", Capability: auth.Capability{
			"list:b":  {auth.OpSubscribe},
			"list:d":  {auth.OpHistory},
			"other:*": {auth.OpPublish},
		}},
	}
}

func newTestAuth(t testing.TB) *auth.Authenticator {
	t.Helper()
	a, err := auth.New(auth.Options{Keys: testKeys()})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// fixture is a real engine and the REST API on a real HTTP server.
type fixture struct {
	e     *core.Engine
	authn *auth.Authenticator
	srv   *httptest.Server
}

func newMemoryEngine(t testing.TB, authn *auth.Authenticator, now func() time.Time) *core.Engine {
	t.Helper()
	e, err := core.New(core.Options{Durability: core.DurabilityMemory, Auth: authn, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	return e
}

func newFixture(t *testing.T, opts RESTOptions) *fixture {
	t.Helper()
	authn := newTestAuth(t)
	return serve(t, newMemoryEngine(t, authn, nil), authn, opts)
}

func serve(t *testing.T, e *core.Engine, authn *auth.Authenticator, opts RESTOptions) *fixture {
	t.Helper()
	srv := httptest.NewServer(NewREST(e, authn, opts))
	t.Cleanup(srv.Close)
	return &fixture{e: e, authn: authn, srv: srv}
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request. auth is "" (none), a key "name:secret" (sent as
// Basic) or "Bearer ..." (sent as is).
func (f *fixture) do(t *testing.T, method, path, authz, body string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case strings.HasPrefix(authz, "Bearer "):
		req.Header.Set("Authorization", authz)
	case authz != "":
		name, secret, _ := strings.Cut(authz, ":")
		req.SetBasicAuth(name, secret)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if method != http.MethodHead {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: Content-Type %q, want application/json", method, path, ct)
		}
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

type publishReply struct {
	Channel  string `json:"channel"`
	Messages []struct {
		ID        string `json:"id"`
		Serial    string `json:"serial"`
		Timestamp int64  `json:"timestamp"`
		Duplicate bool   `json:"duplicate"`
	} `json:"messages"`
}

type errorReply struct {
	Error struct {
		Code       int    `json:"code"`
		StatusCode int    `json:"statusCode"`
		Message    string `json:"message"`
	} `json:"error"`
}

func decode[T any](t *testing.T, r reply) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(string(r.body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decoding %T from %q: %v", v, r.body, err)
	}
	return v
}

// wantStatus fails unless r has the status.
func wantStatus(t *testing.T, r reply, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
}

// wantError checks an error reply: status, code and the exact body shape.
func wantError(t *testing.T, r reply, code apierr.Code, msgContains string) errorReply {
	t.Helper()
	if r.status != code.Status() {
		t.Fatalf("status %d, want %d; body %s", r.status, code.Status(), r.body)
	}
	e := decode[errorReply](t, r)
	if e.Error.Code != int(code) || e.Error.StatusCode != r.status {
		t.Fatalf("error %+v, want code %d statusCode %d", e.Error, code, r.status)
	}
	if e.Error.Message == "" || !strings.Contains(e.Error.Message, msgContains) {
		t.Fatalf("message %q does not contain %q", e.Error.Message, msgContains)
	}
	if r.status == http.StatusUnauthorized && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("401 without WWW-Authenticate: Bearer (got %q)", r.header.Get("WWW-Authenticate"))
	}
	return e
}

var linkRE = regexp.MustCompile(`^<([^>]+)>; rel="next"$`)

// nextLink returns the target of a Link rel="next" header, or "".
func nextLink(t *testing.T, r reply) string {
	t.Helper()
	l := r.header.Get("Link")
	if l == "" {
		return ""
	}
	m := linkRE.FindStringSubmatch(l)
	if m == nil {
		t.Fatalf("malformed Link header %q", l)
	}
	if !strings.HasPrefix(m[1], "/v1/") {
		t.Fatalf("Link target %q is not a relative /v1/ URL", m[1])
	}
	return m[1]
}

// publishData publishes messages with the given data strings one request
// at a time.
func (f *fixture) publishData(t *testing.T, path string, data ...string) {
	t.Helper()
	for _, d := range data {
		body, _ := json.Marshal(map[string]string{"data": d})
		wantStatus(t, f.do(t, "POST", path, testKey, string(body)), http.StatusCreated)
	}
}

// walkHistory follows Link headers from path and returns every message.
func (f *fixture) walkHistory(t *testing.T, path string) (msgs []core.MessageJSON, pages int) {
	t.Helper()
	for path != "" {
		r := f.do(t, "GET", path, testKey, "")
		wantStatus(t, r, http.StatusOK)
		msgs = append(msgs, decode[[]core.MessageJSON](t, r)...)
		pages++
		if pages > 100 {
			t.Fatal("pagination does not end")
		}
		path = nextLink(t, r)
	}
	return msgs, pages
}

func dataOf(t *testing.T, msgs []core.MessageJSON) []string {
	t.Helper()
	out := make([]string, len(msgs))
	for i, m := range msgs {
		var s string
		if err := json.Unmarshal(m.Data, &s); err != nil {
			t.Fatalf("message %d data %s is not a string: %v", i, m.Data, err)
		}
		out[i] = s
	}
	return out
}

func seq(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = strconv.Itoa(i)
	}
	return out
}

func TestPublishOneAndArray(t *testing.T) {
	f := newFixture(t, RESTOptions{})
	r := f.do(t, "POST", "/v1/channels/chat:room-1/messages", testKey, `{"name":"greet","data":"hello","extras":{"k":"v"}}`)
	wantStatus(t, r, http.StatusCreated)
	one := decode[publishReply](t, r)
	if one.Channel != "chat:room-1" || len(one.Messages) != 1 {
		t.Fatalf("reply %+v", one)
	}
	if m := one.Messages[0]; m.ID == "" || m.Serial == "" || m.Timestamp <= 0 || m.Duplicate {
		t.Fatalf("result %+v", m)
	}
	if strings.Contains(string(r.body), "duplicate") {
		t.Fatalf("fresh publish reports a duplicate field: %s", r.body)
	}

	r = f.do(t, "POST", "/v1/channels/chat:room-1/messages", testKey,
		`[{"name":"a","data":"1"},{"name":"b","data":{"x":1}},{"name":"c","data":"/wA=","encoding":"base64"}]`)
	wantStatus(t, r, http.StatusCreated)
	arr := decode[publishReply](t, r)
	if len(arr.Messages) != 3 {
		t.Fatalf("reply %+v", arr)
	}
	serials := map[string]bool{one.Messages[0].Serial: true}
	for _, m := range arr.Messages {
		if serials[m.Serial] || m.ID == "" {
			t.Fatalf("result %+v repeats a serial or lacks an id", m)
		}
		serials[m.Serial] = true
	}

	r = f.do(t, "GET", "/v1/channels/chat:room-1/messages?direction=forwards", testKey, "")
	wantStatus(t, r, http.StatusOK)
	hist := decode[[]core.MessageJSON](t, r)
	if len(hist) != 4 {
		t.Fatalf("history has %d messages, want 4: %s", len(hist), r.body)
	}
	wantNames := []string{"greet", "a", "b", "c"}
	for i, m := range hist {
		if m.Name != wantNames[i] || m.Channel != "chat:room-1" || m.Serial == "" {
			t.Fatalf("history[%d] = %+v", i, m)
		}
	}
	if hist[0].ID != one.Messages[0].ID || hist[0].Serial != one.Messages[0].Serial || hist[0].Extras["k"] != "v" {
		t.Fatalf("history[0] = %+v, published %+v", hist[0], one.Messages[0])
	}
	if string(hist[2].Data) != `{"x":1}` || hist[2].Encoding != "json" {
		t.Fatalf("JSON data came back as %s (%q)", hist[2].Data, hist[2].Encoding)
	}
	if string(hist[3].Data) != `"/wA="` || hist[3].Encoding != "base64" {
		t.Fatalf("binary data came back as %s (%q)", hist[3].Data, hist[3].Encoding)
	}
	if r.header.Get("Link") != "" {
		t.Fatalf("unexpected Link %q", r.header.Get("Link"))
	}
}

func TestPublishIdempotent(t *testing.T) {
	f := newFixture(t, RESTOptions{})
	body := `[{"id":"m-1","data":"one"},{"id":"m-2","data":"two"}]`
	r := f.do(t, "POST", "/v1/channels/orders/messages", testKey, body)
	wantStatus(t, r, http.StatusCreated)
	first := decode[publishReply](t, r)
	r = f.do(t, "POST", "/v1/channels/orders/messages", testKey, body)
	wantStatus(t, r, http.StatusCreated)
	again := decode[publishReply](t, r)
	for i := range 2 {
		a, b := first.Messages[i], again.Messages[i]
		if a.Duplicate || !b.Duplicate || a.ID != b.ID || a.Serial != b.Serial || a.Timestamp != b.Timestamp {
			t.Fatalf("message %d: first %+v, again %+v", i, a, b)
		}
	}
	msgs, _ := f.walkHistory(t, "/v1/channels/orders/messages?direction=forwards")
	if got := dataOf(t, msgs); !slices.Equal(got, []string{"one", "two"}) {
		t.Fatalf("history %v", got)
	}
}

func TestHistoryPagination(t *testing.T) {
	for _, mode := range []string{"memory", "fsync"} {
		t.Run(mode, func(t *testing.T) {
			authn := newTestAuth(t)
			var e *core.Engine
			if mode == "memory" {
				e = newMemoryEngine(t, authn, nil)
			} else {
				e = newDurableEngine(t, authn, t.TempDir())
			}
			f := serve(t, e, authn, RESTOptions{})
			const n = 23
			base := "/v1/channels/sensors%2F42/messages"
			f.publishData(t, base, seq(n)...)

			msgs, pages := f.walkHistory(t, base+"?direction=forwards&limit=5")
			if got := dataOf(t, msgs); !slices.Equal(got, seq(n)) {
				t.Fatalf("forwards: %v", got)
			}
			if pages != 5 {
				t.Fatalf("forwards took %d pages, want 5", pages)
			}
			for _, m := range msgs {
				if m.Channel != "sensors/42" {
					t.Fatalf("channel %q", m.Channel)
				}
			}

			msgs, pages = f.walkHistory(t, base+"?limit=4")
			want := seq(n)
			slices.Reverse(want)
			if got := dataOf(t, msgs); !slices.Equal(got, want) {
				t.Fatalf("backwards: %v", got)
			}
			if pages != 6 {
				t.Fatalf("backwards took %d pages, want 6", pages)
			}

			// The Link keeps the escaped channel and the other parameters.
			r := f.do(t, "GET", base+"?direction=backwards&limit=10", testKey, "")
			link := nextLink(t, r)
			u, err := url.Parse(link)
			if err != nil {
				t.Fatal(err)
			}
			if u.EscapedPath() != base {
				t.Fatalf("Link path %q, want %q", u.EscapedPath(), base)
			}
			q := u.Query()
			if q.Get("direction") != "backwards" || q.Get("limit") != "10" || q.Get("from") == "" || len(q) != 3 {
				t.Fatalf("Link query %v", q)
			}

			// Exactly one full page: no Link.
			r = f.do(t, "GET", base+"?limit="+strconv.Itoa(n), testKey, "")
			wantStatus(t, r, http.StatusOK)
			if len(decode[[]core.MessageJSON](t, r)) != n || r.header.Get("Link") != "" {
				t.Fatalf("full page: Link %q", r.header.Get("Link"))
			}
		})
	}
}

func newDurableEngine(t *testing.T, authn *auth.Authenticator, dir string) *core.Engine {
	t.Helper()
	st, err := store.Open(store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	e, err := core.New(core.Options{Durability: core.DurabilityFsync, Store: st, Auth: authn})
	if err != nil {
		_ = st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.Close(context.Background())
		_ = st.Close()
	})
	return e
}

func TestDurablePublishSurvivesRestart(t *testing.T) {
	authn := newTestAuth(t)
	dir := t.TempDir()
	st, err := store.Open(store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	e, err := core.New(core.Options{Durability: core.DurabilityFsync, Store: st, Auth: authn})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewREST(e, authn, RESTOptions{}))
	f := &fixture{e: e, authn: authn, srv: srv}
	f.publishData(t, "/v1/channels/audit/messages", "a", "b", "c")
	srv.Close()
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	f = serve(t, newDurableEngine(t, authn, dir), authn, RESTOptions{})
	msgs, _ := f.walkHistory(t, "/v1/channels/audit/messages?direction=forwards")
	if got := dataOf(t, msgs); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("after restart: %v", got)
	}
}

func TestPublishTimeout(t *testing.T) {
	authn := newTestAuth(t)
	e := newDurableEngine(t, authn, t.TempDir())
	// A deadline that has passed before the commit can finish.
	f := serve(t, e, authn, RESTOptions{PublishTimeout: time.Nanosecond})
	r := f.do(t, "POST", "/v1/channels/slow/messages", testKey, `{"id":"x-1","data":"d"}`)
	wantError(t, r, apierr.Timeout, "retry")

	// Retrying with the same id never duplicates.
	g := serve(t, e, authn, RESTOptions{})
	wantStatus(t, g.do(t, "POST", "/v1/channels/slow/messages", testKey, `{"id":"x-1","data":"d"}`), http.StatusCreated)
	msgs, _ := g.walkHistory(t, "/v1/channels/slow/messages")
	if len(msgs) != 1 || msgs[0].ID != "x-1" {
		t.Fatalf("history %+v", msgs)
	}
}

// clock is a settable clock for the engine.
type clock struct{ ms atomic.Int64 }

func (c *clock) now() time.Time { return time.UnixMilli(c.ms.Load()) }

func TestHistoryStartEnd(t *testing.T) {
	authn := newTestAuth(t)
	base := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	var c clock
	c.ms.Store(base.UnixMilli())
	f := serve(t, newMemoryEngine(t, authn, c.now), authn, RESTOptions{})
	// Message i is published at base + i seconds.
	for i := range 10 {
		c.ms.Store(base.Add(time.Duration(i) * time.Second).UnixMilli())
		f.publishData(t, "/v1/channels/timed/messages", strconv.Itoa(i))
	}
	at := func(i int) time.Time { return base.Add(time.Duration(i) * time.Second) }
	ms := func(i int) string { return strconv.FormatInt(at(i).UnixMilli(), 10) }
	rfc := func(i int) string { return url.QueryEscape(at(i).In(time.FixedZone("", 2*3600)).Format(time.RFC3339)) }
	cases := []struct {
		query string
		want  []string
	}{
		{"start=" + ms(3) + "&end=" + ms(6), []string{"3", "4", "5", "6"}},
		{"start=" + rfc(3) + "&end=" + rfc(6), []string{"3", "4", "5", "6"}},
		{"start=" + ms(8), []string{"8", "9"}},
		{"end=" + ms(1), []string{"0", "1"}},
		{"start=" + ms(3) + "&end=" + ms(8) + "&limit=2", []string{"3", "4", "5", "6", "7", "8"}},
		{"start=" + strconv.FormatInt(at(4).UnixMilli()+1, 10) + "&end=" + ms(5), []string{"5"}},
		{"start=" + ms(20), nil},
	}
	for _, tc := range cases {
		msgs, _ := f.walkHistory(t, "/v1/channels/timed/messages?direction=forwards&"+tc.query)
		if got := dataOf(t, msgs); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.query, got, tc.want)
		}
	}
	// Backwards with bounds.
	msgs, _ := f.walkHistory(t, "/v1/channels/timed/messages?limit=3&start="+ms(2)+"&end="+ms(7))
	if got := dataOf(t, msgs); !slices.Equal(got, []string{"7", "6", "5", "4", "3", "2"}) {
		t.Errorf("backwards bounded: %v", got)
	}
}

func TestHistoryBadParameters(t *testing.T) {
	f := newFixture(t, RESTOptions{})
	f.publishData(t, "/v1/channels/p/messages", "x")
	cases := []struct {
		query string
		code  apierr.Code
		names string
	}{
		{"limit=0", apierr.InvalidParameter, "limit"},
		{"limit=5000", apierr.InvalidParameter, "limit"},
		{"limit=-1", apierr.InvalidParameter, "limit"},
		{"limit=ten", apierr.InvalidParameter, "limit"},
		{"limit=", apierr.InvalidParameter, "limit"},
		{"limit=5&limit=6", apierr.InvalidParameter, "limit"},
		{"direction=sideways", apierr.InvalidParameter, "direction"},
		{"direction=", apierr.InvalidParameter, "direction"},
		{"colour=blue", apierr.InvalidParameter, "colour"},
		{"rewind=5", apierr.InvalidParameter, "rewind"},
		{"from=not-a-position!", apierr.InvalidPosition, ""},
		{"from=", apierr.InvalidParameter, "from"},
		{"start=yesterday", apierr.InvalidParameter, "start"},
		{"end=-5", apierr.InvalidParameter, "end"},
		{"start=2000&end=1000", apierr.InvalidParameter, "end"},
		{"limit=%zz", apierr.InvalidParameter, "query"},
	}
	for _, tc := range cases {
		r := f.do(t, "GET", "/v1/channels/p/messages?"+tc.query, testKey, "")
		if r.status != tc.code.Status() {
			t.Errorf("%s: status %d, body %s", tc.query, r.status, r.body)
			continue
		}
		wantError(t, r, tc.code, tc.names)
	}
	// Rewind in a qualifier does not apply to history.
	wantError(t, f.do(t, "GET", "/v1/channels/%5B%3Frewind%3D5%5Dp/messages", testKey, ""), apierr.InvalidQualifier, "rewind")
}

func TestPublishBadInput(t *testing.T) {
	f := newFixture(t, RESTOptions{MaxRequestBody: 200 << 10})
	path := "/v1/channels/in/messages"
	big := `{"data":"` + strings.Repeat("x", 70<<10) + `"}`
	wantError(t, f.do(t, "POST", path, testKey, big), apierr.MessageTooLarge, "exceeds")

	huge := `{"data":"` + strings.Repeat("x", 300<<10) + `"}`
	wantError(t, f.do(t, "POST", path, testKey, huge), apierr.RequestTooLarge, "limit")

	for _, body := range []string{
		`{"name":`,
		`{"name":5}`,
		`{"name":"a","colour":"red"}`,
		`{"extras":{"a":1}}`,
		`[]`,
		`[{"data":"a"},7]`,
		`{"data":"!!","encoding":"base64"}`,
		`{"data":"a"} {"data":"b"}`,
		`"text"`,
	} {
		r := f.do(t, "POST", path, testKey, body)
		if r.status != http.StatusBadRequest {
			t.Errorf("%s: status %d, body %s", body, r.status, r.body)
			continue
		}
		wantError(t, r, apierr.InvalidJSON, "")
	}

	// No body at all.
	wantError(t, f.do(t, "POST", path, testKey, ""), apierr.InvalidJSON, "empty")

	// A content type that is not JSON.
	req, _ := http.NewRequest("POST", f.srv.URL+path, strings.NewReader(`{"data":"x"}`))
	req.Header.Set("Content-Type", "text/plain")
	req.SetBasicAuth("app", "s3cret")
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantError(t, reply{status: resp.StatusCode, header: resp.Header, body: b}, apierr.BadRequest, "Content-Type")

	// application/json with a charset is fine.
	req, _ = http.NewRequest("POST", f.srv.URL+path, strings.NewReader(`{"data":"x"}`))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.SetBasicAuth("app", "s3cret")
	resp, err = f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("charset: status %d", resp.StatusCode)
	}

	// Publish takes no query parameters besides credentials.
	wantError(t, f.do(t, "POST", path+"?ttl=5", testKey, `{"data":"x"}`), apierr.InvalidParameter, "ttl")
	wantStatus(t, f.do(t, "POST", path+"?key="+testKey, "", `{"data":"x"}`), http.StatusCreated)

	// Nothing of the refused requests was published.
	msgs, _ := f.walkHistory(t, path)
	if len(msgs) != 2 {
		t.Fatalf("%d messages in history, want 2", len(msgs))
	}
}

func TestAuthErrors(t *testing.T) {
	f := newFixture(t, RESTOptions{})
	path := "/v1/channels/secure/messages"
	body := `{"data":"x"}`
	wantError(t, f.do(t, "POST", path, "", body), apierr.Unauthorized, "credentials required")
	wantError(t, f.do(t, "GET", path, "", ""), apierr.Unauthorized, "credentials required")
	wantError(t, f.do(t, "POST", path, "app:wrong", body), apierr.InvalidCredentials, "invalid credentials")
	wantError(t, f.do(t, "POST", path, "nobody:s3cret", body), apierr.InvalidCredentials, "invalid credentials")
	wantError(t, f.do(t, "POST", path, "Bearer abc.def.ghi", body), apierr.TokenInvalid, "")
	wantError(t, f.do(t, "POST", path, "Bearer app:wrong", body), apierr.InvalidCredentials, "")

	// Errors never echo the secret.
	r := f.do(t, "POST", path, "app:wrong-secret-value", body)
	if strings.Contains(string(r.body), "wrong-secret-value") {
		t.Fatalf("secret leaked: %s", r.body)
	}

	// A token that may only subscribe cannot publish.
	id, err := f.authn.Authenticate(auth.Credentials{Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	sub, _, err := f.authn.IssueToken(id, auth.TokenRequest{Capability: auth.Capability{"*": {auth.OpSubscribe}}})
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, f.do(t, "POST", path, "Bearer "+sub, body), apierr.OperationNotAllowed, "publish")
	wantError(t, f.do(t, "GET", path, "Bearer "+sub, ""), apierr.OperationNotAllowed, "history")

	// An expired token: issued by the same key three hours ago for one hour.
	past, err := auth.New(auth.Options{Keys: testKeys(), Now: func() time.Time { return time.Now().Add(-3 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	pid, err := past.Authenticate(auth.Credentials{Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	old, _, err := past.IssueToken(pid, auth.TokenRequest{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, f.do(t, "POST", path, "Bearer "+old, body), apierr.TokenExpired, "")
	wantError(t, f.do(t, "GET", path+"?accessToken="+old, "", ""), apierr.TokenExpired, "")

	// Credentials in two places are a bad request.
	wantError(t, f.do(t, "GET", path+"?key="+testKey, testKey, ""), apierr.BadRequest, "more than once")
}

type tokenReply struct {
	Token      string          `json:"token"`
	Expires    int64           `json:"expires"`
	KeyName    string          `json:"keyName"`
	ClientID   string          `json:"clientId"`
	Capability auth.Capability `json:"capability"`
}

func TestTokens(t *testing.T) {
	f := newFixture(t, RESTOptions{})
	before := time.Now()
	r := f.do(t, "POST", "/v1/tokens", testKey, `{"capability":{"chat:*":["publish","history"]},"clientId":"bob","ttl":"10m"}`)
	wantStatus(t, r, http.StatusCreated)
	tok := decode[tokenReply](t, r)
	if tok.Token == "" || tok.KeyName != "app" || tok.ClientID != "bob" {
		t.Fatalf("token reply %+v", tok)
	}
	exp := time.UnixMilli(tok.Expires)
	if exp.Before(before.Add(10*time.Minute-2*time.Second)) || exp.After(time.Now().Add(10*time.Minute+time.Second)) {
		t.Fatalf("expires %v, want about 10 minutes from now", exp)
	}
	if !slices.Equal(tok.Capability["chat:*"], []auth.Operation{auth.OpPublish, auth.OpHistory}) || len(tok.Capability) != 1 {
		t.Fatalf("capability %v", tok.Capability)
	}

	bearer := "Bearer " + tok.Token
	r = f.do(t, "POST", "/v1/channels/chat:lobby/messages", bearer, `{"data":"from bob"}`)
	wantStatus(t, r, http.StatusCreated)
	r = f.do(t, "GET", "/v1/channels/chat:lobby/messages", bearer, "")
	wantStatus(t, r, http.StatusOK)
	hist := decode[[]core.MessageJSON](t, r)
	if len(hist) != 1 || hist[0].ClientID != "bob" {
		t.Fatalf("history %+v", hist)
	}
	wantError(t, f.do(t, "POST", "/v1/channels/chat:lobby/messages", bearer, `{"data":"x","clientId":"mallory"}`), apierr.OperationNotAllowed, "clientId")
	wantError(t, f.do(t, "POST", "/v1/channels/news/messages", bearer, `{"data":"x"}`), apierr.OperationNotAllowed, "publish")
	// A token cannot issue tokens.
	wantError(t, f.do(t, "POST", "/v1/tokens", bearer, `{}`), apierr.Forbidden, "token")

	// Defaults: the key's capability, the default lifetime, no clientId.
	for _, body := range []string{"", "{}", "null"} {
		r = f.do(t, "POST", "/v1/tokens", testKey, body)
		wantStatus(t, r, http.StatusCreated)
		def := decode[tokenReply](t, r)
		if len(def.Capability["*"]) != 4 || def.ClientID != "" {
			t.Fatalf("default token %+v", def)
		}
		if d := time.Until(time.UnixMilli(def.Expires)); d < 59*time.Minute || d > 61*time.Minute {
			t.Fatalf("default lifetime %v", d)
		}
	}
	// ttl in milliseconds.
	r = f.do(t, "POST", "/v1/tokens", testKey, `{"ttl":60000}`)
	wantStatus(t, r, http.StatusCreated)
	if d := time.Until(time.UnixMilli(decode[tokenReply](t, r).Expires)); d < 58*time.Second || d > 61*time.Second {
		t.Fatalf("lifetime %v, want 60s", d)
	}

	bad := []struct {
		body string
		code apierr.Code
	}{
		{`{"ttl":true}`, apierr.InvalidJSON},
		{`{"ttl":1.5}`, apierr.InvalidJSON},
		{`{"ttl":[1]}`, apierr.InvalidJSON},
		{`{"ttl":"soon"}`, apierr.InvalidParameter},
		{`{"ttl":"-1h"}`, apierr.InvalidParameter},
		{`{"ttl":0}`, apierr.InvalidParameter},
		{`{"ttl":"1000h"}`, apierr.InvalidParameter},
		{`{"ttl":99999999999999999999}`, apierr.InvalidParameter},
		{`{"clientId":7}`, apierr.InvalidJSON},
		{`{"colour":"red"}`, apierr.InvalidJSON},
		{`{"capability":"all"}`, apierr.InvalidJSON},
		{`{"capability":{"*":"publish"}}`, apierr.InvalidJSON},
		{`{"capability":{"*":["fly"]}}`, apierr.BadRequest},
		{`{"capability":{}}`, apierr.BadRequest},
		{`{"capability":{"*":["admin"]}}`, apierr.OperationNotAllowed},
		{`{"clientId":"a\u0001b"}`, apierr.InvalidParameter},
		{`{"ttl":"1h"`, apierr.InvalidJSON},
		{`[]`, apierr.InvalidJSON},
		{`{} {}`, apierr.InvalidJSON},
	}
	for _, tc := range bad {
		r := f.do(t, "POST", "/v1/tokens", testKey, tc.body)
		if r.status != tc.code.Status() {
			t.Errorf("%s: status %d body %s", tc.body, r.status, r.body)
			continue
		}
		wantError(t, r, tc.code, "")
	}
	wantError(t, f.do(t, "POST", "/v1/tokens", "", `{}`), apierr.Unauthorized, "")
	wantError(t, f.do(t, "POST", "/v1/tokens", "app:nope", `{}`), apierr.InvalidCredentials, "")
}

func TestEscapedChannelNames(t *testing.T) {
	f := newFixture(t, RESTOptions{})
	cases := []struct{ path, name string }{
		{"chat:room-1", "chat:room-1"},
		{"sensors%2F42", "sensors/42"},
		{"a%20b%3Fc%23d", "a b?c#d"},
		{"%C3%A9t%C3%A9", "été"},
		{"%2E%2E", ".."},
		{"x%2F..%2Fy", "x/../y"},
	}
	for _, tc := range cases {
		r := f.do(t, "POST", "/v1/channels/"+tc.path+"/messages", testKey, `{"data":"`+tc.name+`"}`)
		wantStatus(t, r, http.StatusCreated)
		if got := decode[publishReply](t, r).Channel; got != tc.name {
			t.Errorf("%s: reply channel %q, want %q", tc.path, got, tc.name)
		}
		page, err := f.e.History(context.Background(), nil, core.HistoryQuery{Channel: tc.name})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Messages) != 1 || string(page.Messages[0].Data) != tc.name {
			t.Errorf("%s: engine history of %q has %d messages", tc.path, tc.name, len(page.Messages))
		}
		r = f.do(t, "GET", "/v1/channels/"+tc.path+"/messages", testKey, "")
		wantStatus(t, r, http.StatusOK)
		if h := decode[[]core.MessageJSON](t, r); len(h) != 1 || h[0].Channel != tc.name {
			t.Errorf("%s: REST history %s", tc.path, r.body)
		}
	}
	// A rewind qualifier cannot be published to.
	wantError(t, f.do(t, "POST", "/v1/channels/%5B%3Frewind%3D5%5Dx/messages", testKey, `{"data":"x"}`), apierr.InvalidQualifier, "rewind")
	// A bad qualifier or a bad name.
	wantError(t, f.do(t, "POST", "/v1/channels/%5B%3Fcolour%3Dred%5Dx/messages", testKey, `{"data":"x"}`), apierr.InvalidQualifier, "")
	wantError(t, f.do(t, "POST", "/v1/channels/a%01b/messages", testKey, `{"data":"x"}`), apierr.InvalidChannelName, "")
	wantError(t, f.do(t, "POST", "/v1/channels/"+strings.Repeat("n", 300)+"/messages", testKey, `{"data":"x"}`), apierr.InvalidChannelName, "")
	// An empty qualifier is refused too.
	wantError(t, f.do(t, "POST", "/v1/channels/%5B%3F%5Dplain/messages", testKey, `{"data":"x"}`), apierr.InvalidQualifier, "")
}

func TestNotFoundAndMethodNotAllowed(t *testing.T) {
	f := newFixture(t, RESTOptions{})
	for _, p := range []string{"/v1/nope", "/v1/channels/x", "/v1/channels/x/messages/y", "/v1/", "/elsewhere"} {
		wantError(t, f.do(t, "GET", p, testKey, ""), apierr.NotFound, "no such resource")
	}
	cases := []struct {
		method, path string
		allow        []string
	}{
		{"DELETE", "/v1/channels/x/messages", []string{"GET", "HEAD", "POST"}},
		{"PUT", "/v1/channels/x/presence", []string{"GET", "HEAD"}},
		{"POST", "/v1/stats", []string{"GET", "HEAD"}},
		{"GET", "/v1/tokens", []string{"POST"}},
		{"POST", "/v1/channels", []string{"GET", "HEAD"}},
	}
	for _, tc := range cases {
		r := f.do(t, tc.method, tc.path, testKey, "")
		wantError(t, r, apierr.MethodNotAllowed, tc.method)
		allow := strings.Split(r.header.Get("Allow"), ", ")
		slices.Sort(allow)
		if !slices.Equal(allow, tc.allow) {
			t.Errorf("%s %s: Allow %v, want %v", tc.method, tc.path, allow, tc.allow)
		}
	}
}

func TestPresence(t *testing.T) {
	f := newFixture(t, RESTOptions{})
	id, err := f.authn.Authenticate(auth.Credentials{Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.e.Connect(id, core.ConnectOptions{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.EnterPresence(ctx, "room:1", "hello", ""); err != nil {
		t.Fatal(err)
	}
	r := f.do(t, "GET", "/v1/channels/room:1/presence", testKey, "")
	wantStatus(t, r, http.StatusOK)
	members := decode[[]core.PresenceMessage](t, r)
	if len(members) != 1 {
		t.Fatalf("members %s", r.body)
	}
	m := members[0]
	if m.ClientID != "alice" || m.ConnectionID != c.ID() || m.Data != "hello" || m.Action != core.ActionPresent {
		t.Fatalf("member %+v", m)
	}
	if err := c.LeavePresence(ctx, "room:1"); err != nil {
		t.Fatal(err)
	}
	r = f.do(t, "GET", "/v1/channels/room:1/presence", testKey, "")
	wantStatus(t, r, http.StatusOK)
	if string(r.body) != "[]\n" {
		t.Fatalf("after leave: %s", r.body)
	}
	wantStatus(t, f.do(t, "GET", "/v1/channels/never-used/presence", testKey, ""), http.StatusOK)
	wantError(t, f.do(t, "GET", "/v1/channels/room:1/presence", "", ""), apierr.Unauthorized, "")
	wantError(t, f.do(t, "GET", "/v1/channels/room:1/presence?x=1", testKey, ""), apierr.InvalidParameter, "x")
}

func TestChannelsListing(t *testing.T) {
	f := newFixture(t, RESTOptions{})
	names := []string{"list:a", "list:b", "list:c", "list:d", "list:e"}
	for _, n := range append(slices.Clone(names), "other:z") {
		f.publishData(t, "/v1/channels/"+n+"/messages", "x")
	}
	var got []string
	path := "/v1/channels?prefix=list:&limit=2"
	pages := 0
	for path != "" {
		r := f.do(t, "GET", path, testKey, "")
		wantStatus(t, r, http.StatusOK)
		for _, c := range decode[[]core.ChannelInfo](t, r) {
			if c.Position == "" || c.LastActive == 0 {
				t.Errorf("channel info %+v", c)
			}
			got = append(got, c.Name)
		}
		path = nextLink(t, r)
		if pages++; pages > 10 {
			t.Fatal("pagination does not end")
		}
	}
	if !slices.Equal(got, names) || pages != 3 {
		t.Fatalf("listed %v in %d pages", got, pages)
	}

	// Everything, with the default limit.
	r := f.do(t, "GET", "/v1/channels", testKey, "")
	wantStatus(t, r, http.StatusOK)
	if all := decode[[]core.ChannelInfo](t, r); len(all) != 6 || r.header.Get("Link") != "" {
		t.Fatalf("all channels: %s (Link %q)", r.body, r.header.Get("Link"))
	}

	// A key that may subscribe to one list channel (and only read the
	// history of another) sees only that one.
	r = f.do(t, "GET", "/v1/channels?limit=1", "narrow:n4rrow", "")
	wantStatus(t, r, http.StatusOK)
	if vis := decode[[]core.ChannelInfo](t, r); len(vis) != 1 || vis[0].Name != "list:b" || r.header.Get("Link") != "" {
		t.Fatalf("narrow key sees %s (Link %q)", r.body, r.header.Get("Link"))
	}
	// Anonymous callers see nothing here.
	r = f.do(t, "GET", "/v1/channels", "", "")
	wantStatus(t, r, http.StatusOK)
	if string(r.body) != "[]\n" {
		t.Fatalf("anonymous sees %s", r.body)
	}

	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "sort=name", "prefix=a&prefix=b", "after=" + strings.Repeat("z", 300)} {
		wantError(t, f.do(t, "GET", "/v1/channels?"+q, testKey, ""), apierr.InvalidParameter, "")
	}
}

func TestChannelsListingPaginationLinkEscapes(t *testing.T) {
	f := newFixture(t, RESTOptions{})
	names := []string{"esc:a&b", "esc:a/b", "esc:a>b", "esc:a b"}
	for _, n := range names {
		f.publishData(t, "/v1/channels/"+url.PathEscape(n)+"/messages", "x")
	}
	var got []string
	path := "/v1/channels?prefix=" + url.QueryEscape("esc:") + "&limit=1"
	for i := 0; path != ""; i++ {
		if i > 10 {
			t.Fatal("pagination does not end")
		}
		r := f.do(t, "GET", path, testKey, "")
		wantStatus(t, r, http.StatusOK)
		for _, c := range decode[[]core.ChannelInfo](t, r) {
			got = append(got, c.Name)
		}
		path = nextLink(t, r)
	}
	want := slices.Clone(names)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("listed %q, want %q", got, want)
	}
}

type statsReply struct {
	core.Stats
	ServerTime int64 `json:"serverTime"`
	UptimeMs   int64 `json:"uptimeMs"`
}

func TestStats(t *testing.T) {
	f := newFixture(t, RESTOptions{})
	f.publishData(t, "/v1/channels/s1/messages", "a", "b")
	f.publishData(t, "/v1/channels/s2/messages", "c")
	wantStatus(t, f.do(t, "POST", "/v1/channels/s2/messages", testKey, `[{"id":"d"},{"id":"d"}]`), http.StatusCreated)
	id, err := f.authn.Authenticate(auth.Credentials{Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.e.Connect(id, core.ConnectOptions{ClientID: "carol"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Attach(context.Background(), "s1", core.AttachOptions{}); err != nil {
		t.Fatal(err)
	}

	r := f.do(t, "GET", "/v1/stats", testKey, "")
	wantStatus(t, r, http.StatusOK)
	s := decode[statsReply](t, r)
	if s.Region != "local" || s.Durability != "memory" || s.ActiveChannels != 2 || s.Connections != 1 ||
		s.Subscriptions != 1 || s.MessagesPublished != 4 || s.Duplicates != 1 || s.PublishRequests != 4 ||
		s.ServerTime <= 0 || s.UptimeMs < 0 {
		t.Fatalf("stats %s", r.body)
	}
	wantError(t, f.do(t, "GET", "/v1/stats", "", ""), apierr.Unauthorized, "credentials")
	wantError(t, f.do(t, "GET", "/v1/stats?verbose=1", testKey, ""), apierr.InvalidParameter, "verbose")
}

func TestDevMode(t *testing.T) {
	authn, err := auth.New(auth.Options{Keys: testKeys(), Dev: true})
	if err != nil {
		t.Fatal(err)
	}
	f := serve(t, newMemoryEngine(t, authn, nil), authn, RESTOptions{})
	wantStatus(t, f.do(t, "POST", "/v1/channels/dev/messages", "", `{"data":"open"}`), http.StatusCreated)
	wantStatus(t, f.do(t, "GET", "/v1/stats", "", ""), http.StatusOK)
	wantError(t, f.do(t, "POST", "/v1/tokens", "", `{}`), apierr.Unauthorized, "key")
	// Given credentials are still verified.
	wantError(t, f.do(t, "POST", "/v1/channels/dev/messages", "app:wrong", `{"data":"x"}`), apierr.InvalidCredentials, "")
}

func TestInternalErrorsDoNotLeak(t *testing.T) {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/v1/stats", nil)
	a := &restAPI{log: discardLogger()}
	a.writeError(rec, req, fmt.Errorf("disk /secret/path exploded"))
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status %d", rec.Code)
	}
	if strings.Contains(rec.Body.String(), "secret") || !strings.Contains(rec.Body.String(), `"code":50000`) {
		t.Fatalf("body %s", rec.Body.String())
	}
}

func TestPaginationLinkNeverEchoesCredentials(t *testing.T) {
	f := newFixture(t, RESTOptions{})
	f.publishData(t, "/v1/channels/secret-link/messages", seq(3)...)
	r := f.do(t, "GET", "/v1/channels/secret-link/messages?limit=1&key="+testKey, "", "")
	wantStatus(t, r, http.StatusOK)
	link := nextLink(t, r)
	if link == "" {
		t.Fatal("expected a next link")
	}
	if strings.Contains(link, "s3cret") || strings.Contains(link, "key=") {
		t.Fatalf("Link header repeats the credential: %q", link)
	}
	if !strings.Contains(link, "limit=1") || !strings.Contains(link, "from=") {
		t.Fatalf("Link header lost the query: %q", link)
	}
}
