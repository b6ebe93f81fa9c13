package sse

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/core/position"
	"github.com/switchboardhq/switchboard/internal/httperr"
)

type attachedData struct {
	ConnectionID string          `json:"connectionId"`
	Channels     []attachedEntry `json:"channels"`
}

type continuityData struct {
	Channels []continuityEntry `json:"channels"`
}

func decode[T any](t testing.TB, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("decoding %q: %v", s, err)
	}
	return v
}

func TestStreamDeliversEveryChannelInOrder(t *testing.T) {
	f := newFixture(t, fixtureOptions{sse: Options{Retry: 1500 * time.Millisecond}})
	s := openRaw(t, f.url("channels=a,b,c"), nil)
	h := s.resp.Header
	if got := h.Get("Content-Type"); got != "text/event-stream" {
		t.Errorf("Content-Type = %q", got)
	}
	if got := h.Get("Cache-Control"); !strings.Contains(got, "no-cache") {
		t.Errorf("Cache-Control = %q, want no-cache", got)
	}
	if got := h.Get("X-Accel-Buffering"); got != "no" {
		t.Errorf("X-Accel-Buffering = %q, want no", got)
	}
	if ev := s.next(t); ev.Retry != "1500" {
		t.Errorf("first event %+v, want the retry hint 1500", ev)
	}
	att := s.nextOf(t, eventAttached)
	if att.ID == "" {
		t.Error("attached event has no id")
	}
	ad := decode[attachedData](t, att.Data)
	if len(ad.Channels) != 3 || ad.ConnectionID == "" {
		t.Fatalf("attached data %+v", ad)
	}
	for i, c := range ad.Channels {
		if c.Channel != []string{"a", "b", "c"}[i] || c.Resumed || c.Serial == "" {
			t.Errorf("attached channel %d: %+v", i, c)
		}
	}

	want := map[string][]string{}
	for round := range 20 {
		for _, ch := range []string{"c", "a", "b"} {
			d := seqData(ch, round*3, 3)
			f.publish(t, ch, d...)
			want[ch] = append(want[ch], d...)
		}
	}
	got := map[string][]string{}
	ids := map[string]bool{}
	for range 180 {
		ev := s.nextOf(t, eventMessage)
		if ev.ID == "" || ids[ev.ID] {
			t.Fatalf("message event id %q is empty or repeated", ev.ID)
		}
		ids[ev.ID] = true
		m := ev.message(t)
		if m.Serial == "" || m.Timestamp == 0 {
			t.Errorf("message %+v lacks serial or timestamp", m)
		}
		got[m.Channel] = append(got[m.Channel], text(t, m))
	}
	for ch, w := range want {
		checkExactlyOnce(t, ch, got[ch], w)
	}
	if n := testutil.ToFloat64(f.h.metrics.streams); n != 1 {
		t.Errorf("switchboard_sse_streams = %v, want 1", n)
	}
	if n := testutil.ToFloat64(f.h.metrics.events.WithLabelValues(eventMessage)); n != 180 {
		t.Errorf("message events counted: %v, want 180", n)
	}
}

// An independent client whose connection is cut again and again while
// three channels are published to receives every message exactly once, in
// order, by resuming with Last-Event-ID.
func TestResumeAcrossDroppedConnections(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	fl := follow(t, f.url("channels=a,b,c"))
	waitFor(t, "the first attach", func() bool { return fl.attachedCount() > 0 })

	const perChannel = 400
	want := map[string][]string{}
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := 0; i < perChannel; i += 4 {
			for _, ch := range []string{"a", "b", "c"} {
				d := seqData(ch, i, 4)
				f.publish(t, ch, d...)
				want[ch] = append(want[ch], d...)
			}
			time.Sleep(4 * time.Millisecond)
		}
	}()
	// Cut every connection whenever the client has come back.
	cuts := 0
	for done := false; !done; {
		select {
		case <-published:
			done = true
		case <-time.After(30 * time.Millisecond):
			if fl.attachedCount() > cuts {
				fl.cut()
				cuts++
			}
		}
	}
	waitFor(t, "every message", func() bool {
		n := 0
		for _, ev := range fl.snapshot() {
			if ev.Event == eventMessage {
				n++
			}
		}
		return n >= 3*perChannel
	})
	evs := fl.snapshot()
	got := messagesByChannel(t, evs)
	for ch, w := range want {
		checkExactlyOnce(t, ch, got[ch], w)
	}
	for _, ev := range evs {
		if ev.Event == eventContinuity || ev.Event == eventError {
			t.Errorf("unexpected %s event: %s", ev.Event, ev.Data)
		}
	}
	if cuts < 3 || fl.attachedCount() <= cuts {
		t.Errorf("the client attached %d times over %d cuts; the test did not exercise resume", fl.attachedCount(), cuts)
	}
	t.Logf("%d cuts, %d attaches", cuts, fl.attachedCount())
}

func TestRewindParameterAndQualifier(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.publish(t, "a", seqData("a", 0, 10)...)
	f.publish(t, "b", seqData("b", 0, 10)...)
	f.publish(t, "c", seqData("c", 0, 10)...)
	// The qualifier of a wins over the stream's rewind; b and c take it.
	channels := url.QueryEscape("[?rewind=2]a,b,c")
	s := openRaw(t, f.url("channels="+channels+"&rewind=3"), nil)
	var evs []event
	for {
		ev := s.next(t)
		if ev.Event == eventAttached {
			break
		}
		evs = append(evs, ev)
	}
	got := messagesByChannel(t, evs)
	checkExactlyOnce(t, "a", got["a"], seqData("a", 8, 2))
	checkExactlyOnce(t, "b", got["b"], seqData("b", 7, 3))
	checkExactlyOnce(t, "c", got["c"], seqData("c", 7, 3))
	// The seam: the next message follows without gap or duplicate.
	f.publish(t, "a", "a-live")
	if m := s.nextOf(t, eventMessage).message(t); text(t, m) != "a-live" {
		t.Errorf("after the rewind got %q, want a-live", text(t, m))
	}
}

func TestResumeFromQueryAndHeader(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	s := openRaw(t, f.url("channels=a,b"), nil)
	s.nextOf(t, eventAttached)
	f.publish(t, "a", seqData("a", 0, 5)...)
	var ids []string
	for range 5 {
		ids = append(ids, s.nextOf(t, eventMessage).ID)
	}
	f.publish(t, "b", "b-0")

	// lastEvent= resumes after message 1 of a.
	q := openRaw(t, f.url("channels=b,a&lastEvent="+ids[1]), nil)
	var evs []event
	for ev := q.next(t); ev.Event != eventAttached; ev = q.next(t) {
		evs = append(evs, ev)
	}
	got := messagesByChannel(t, evs)
	checkExactlyOnce(t, "a", got["a"], seqData("a", 2, 3))
	checkExactlyOnce(t, "b", got["b"], []string{"b-0"})

	// Last-Event-ID (what a reconnecting browser sends) wins over lastEvent=
	// (what the page first opened with).
	r := openRaw(t, f.url("channels=a,b&lastEvent="+ids[0]), http.Header{"Last-Event-Id": {ids[3]}})
	evs = nil
	for ev := r.next(t); ev.Event != eventAttached; ev = r.next(t) {
		evs = append(evs, ev)
	}
	got = messagesByChannel(t, evs)
	checkExactlyOnce(t, "a", got["a"], []string{"a-0004"})
}

// A resume that history no longer covers says so with a continuity event
// whose id moves the stream on, then continues live.
func TestContinuityWhenHistoryExpired(t *testing.T) {
	f := newFixture(t, fixtureOptions{engine: core.Options{ChannelMemoryLimit: 5}})
	s := openRaw(t, f.url("channels=a,b"), nil)
	s.nextOf(t, eventAttached)
	f.publish(t, "a", "a-0", "a-1")
	s.nextOf(t, eventMessage)
	old := s.nextOf(t, eventMessage).ID
	f.publish(t, "a", seqData("a", 2, 10)...) // a-0002 .. a-0011; only 5 kept

	r := openRaw(t, f.url("channels=a,b"), http.Header{"Last-Event-Id": {old}})
	cont := r.nextOf(t, eventContinuity)
	cd := decode[continuityData](t, cont.Data)
	if len(cd.Channels) != 1 || cd.Channels[0].Channel != "a" || cd.Channels[0].Reason != string(core.ReasonExpired) || cd.Channels[0].Serial == "" {
		t.Fatalf("continuity data %+v", cd)
	}
	if cont.ID == "" {
		t.Fatal("continuity event has no id")
	}
	att := decode[attachedData](t, r.nextOf(t, eventAttached).Data)
	if att.Channels[0].Resumed || !att.Channels[1].Resumed {
		t.Errorf("attached %+v: want a not resumed, b resumed", att.Channels)
	}
	f.publish(t, "a", "a-live")
	if m := r.nextOf(t, eventMessage).message(t); text(t, m) != "a-live" {
		t.Errorf("after the continuity event got %q, want a-live", text(t, m))
	}

	// Resuming from the continuity event's id is complete.
	again := openRaw(t, f.url("channels=a,b"), http.Header{"Last-Event-Id": {cont.ID}})
	var evs []event
	for ev := again.next(t); ev.Event != eventAttached; ev = again.next(t) {
		if ev.Event == eventContinuity {
			t.Fatalf("second continuity event: %s", ev.Data)
		}
		evs = append(evs, ev)
	}
	checkExactlyOnce(t, "a", messagesByChannel(t, evs)["a"], []string{"a-live"})
}

func TestUnenvelopedData(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	s := openRaw(t, f.url("channels=raw&enveloped=false"), nil)
	s.nextOf(t, eventAttached)
	f.publish(t, "raw", "line1\nline2\r\nline3\rline4", "", "plain")
	ctx := context.Background()
	if _, err := f.e.Publish(ctx, nil, "", "", "raw", []*core.Message{{Data: []byte{0xff, 0x00, 0x01}}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"line1\nline2\nline3\nline4", "", "plain", base64.StdEncoding.EncodeToString([]byte{0xff, 0x00, 0x01})} {
		ev := s.nextOf(t, eventMessage)
		if ev.Data != want || ev.ID == "" {
			t.Errorf("event %+v, want data %q with an id", ev, want)
		}
	}
}

func TestPresenceEvents(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	s := openRaw(t, f.url("channels=room&presence=true"), nil)
	s.nextOf(t, eventAttached)
	id, err := f.e.Authenticate(auth.Credentials{Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	member, err := f.e.Connect(id, core.ConnectOptions{ClientID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	if err := member.EnterPresence(context.Background(), "room", "hi", ""); err != nil {
		t.Fatal(err)
	}
	ev := s.nextOf(t, eventPresence)
	p := decode[core.PresenceMessage](t, ev.Data)
	if p.Action != core.ActionEnter || p.ClientID != "alice" || p.Channel != "room" || p.Data != "hi" {
		t.Errorf("presence event %+v", p)
	}

	// Without presence=true there are no presence events.
	quiet := openRaw(t, f.url("channels=room"), nil)
	quiet.nextOf(t, eventAttached)
	if err := member.LeavePresence(context.Background(), "room"); err != nil {
		t.Fatal(err)
	}
	f.publish(t, "room", "after-leave")
	if ev := quiet.nextOf(t, eventMessage); text(t, ev.message(t)) != "after-leave" {
		t.Errorf("got %+v", ev)
	}
	if ev := s.nextOf(t, eventPresence); decode[core.PresenceMessage](t, ev.Data).Action != core.ActionLeave {
		t.Errorf("want a leave event, got %s", ev.Data)
	}
}

func TestHeartbeatComments(t *testing.T) {
	f := newFixture(t, fixtureOptions{sse: Options{Heartbeat: 20 * time.Millisecond}})
	s := openRaw(t, f.url("channels=quiet"), nil)
	for range 2 {
		select {
		case c := <-s.comments:
			if c != ": heartbeat" {
				t.Errorf("comment %q", c)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no heartbeat within 5s")
		}
	}
}

func TestBadRequestsAreRefusedBeforeTheStream(t *testing.T) {
	f := newFixture(t, fixtureOptions{sse: Options{MaxChannels: 3}})
	other := newTokenCodec([]string{"x"}).encode([]position.Position{{}})
	base := f.srv.URL + "/v1/sse?"
	cases := []struct {
		name   string
		url    string
		header http.Header
		status int
		code   apierr.Code
	}{
		{"no channels", base + "key=" + testKey, nil, 400, apierr.InvalidParameter},
		{"empty channels", base + "key=" + testKey + "&channels=", nil, 400, apierr.InvalidParameter},
		{"unknown parameter", f.url("channels=a&chanels=b"), nil, 400, apierr.InvalidParameter},
		{"repeated parameter", f.url("channels=a&channels=b"), nil, 400, apierr.InvalidParameter},
		{"malformed query", f.url("channels=a&%zz"), nil, 400, apierr.InvalidParameter},
		{"empty channel in list", f.url("channels=a,,b"), nil, 400, apierr.InvalidChannelName},
		{"control character", f.url("channels=a%01"), nil, 400, apierr.InvalidChannelName},
		{"bad qualifier", f.url("channels=" + url.QueryEscape("[?rewnd=1]a")), nil, 400, apierr.InvalidQualifier},
		{"duplicate channel", f.url("channels=a,b,a"), nil, 400, apierr.InvalidParameter},
		{"too many channels", f.url("channels=a,b,c,d"), nil, 400, apierr.InvalidParameter},
		{"bad rewind", f.url("channels=a&rewind=-1"), nil, 400, apierr.InvalidParameter},
		{"bad presence", f.url("channels=a&presence=maybe"), nil, 400, apierr.InvalidParameter},
		{"bad enveloped", f.url("channels=a&enveloped=yes"), nil, 400, apierr.InvalidParameter},
		{"empty lastEvent", f.url("channels=a&lastEvent="), nil, 400, apierr.InvalidParameter},
		{"corrupt Last-Event-ID", f.url("channels=a"), http.Header{"Last-Event-Id": {"AQIDBAUGBwgJ"}}, 400, apierr.InvalidPosition},
		{"integer Last-Event-ID", f.url("channels=a"), http.Header{"Last-Event-Id": {"17"}}, 400, apierr.InvalidPosition},
		{"Last-Event-ID of other channels", f.url("channels=a"), http.Header{"Last-Event-Id": {other}}, 400, apierr.InvalidPosition},
		{"two Last-Event-ID headers", f.url("channels=a"), http.Header{"Last-Event-Id": {other, other}}, 400, apierr.InvalidParameter},
		{"forged lastEvent", f.url("channels=a&lastEvent=" + other), nil, 400, apierr.InvalidPosition},
		{"wrong secret", base + "key=app:wrong&channels=a", nil, 401, apierr.InvalidCredentials},
		{"unknown key", base + "key=nobody:x&channels=a", nil, 401, apierr.InvalidCredentials},
		{"bad token", base + "accessToken=not-a-token&channels=a", nil, 401, apierr.TokenInvalid},
		{"two credentials", f.url("channels=a&accessToken=x"), nil, 400, apierr.BadRequest},
		{"denied channel", base + "key=narrow:n4rrow&channels=open:1,secret", nil, 401, apierr.OperationNotAllowed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := get(t, c.url, c.header)
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			e := decode[httperr.Body](t, string(body))
			if e.Error.Code != c.code || e.Error.StatusCode != c.status || e.Error.Message == "" {
				t.Errorf("error %+v, want code %d", e.Error, c.code)
			}
		})
	}
	t.Run("no credentials", func(t *testing.T) {
		resp := get(t, base+"channels=a", nil)
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("status %d, want 401", resp.StatusCode)
		}
	})
	t.Run("POST", func(t *testing.T) {
		resp, err := http.Post(f.url("channels=a"), "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET" {
			t.Errorf("status %d Allow %q, want 405 GET", resp.StatusCode, resp.Header.Get("Allow"))
		}
	})
	t.Run("narrow key on its own channels", func(t *testing.T) {
		s := openRaw(t, base+"key=narrow:n4rrow&channels=open:1,open:2", nil)
		s.nextOf(t, eventAttached)
	})
	if n := testutil.ToFloat64(f.h.metrics.refused.WithLabelValues("400")); n < 10 {
		t.Errorf("refused{400} = %v", n)
	}
}

func TestStreamsPerKeyLimit(t *testing.T) {
	// A client that leaves is noticed at the next heartbeat.
	f := newFixture(t, fixtureOptions{sse: Options{MaxStreamsPerKey: 2, Heartbeat: 50 * time.Millisecond}})
	first := openRaw(t, f.url("channels=a"), nil)
	openRaw(t, f.url("channels=b"), nil)
	resp := get(t, f.url("channels=c"), nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || decode[httperr.Body](t, string(body)).Error.Code != apierr.RateLimited {
		t.Fatalf("third stream: %d %s, want 429 with code %d", resp.StatusCode, body, apierr.RateLimited)
	}
	// Another key is not affected.
	openRaw(t, f.srv.URL+"/v1/sse?key=narrow:n4rrow&channels=open:x", nil).nextOf(t, eventAttached)
	// Closing a stream frees its slot.
	first.resp.Body.Close()
	waitFor(t, "the slot to be released", func() bool {
		resp := get(t, f.url("channels=c"), nil)
		ok := resp.StatusCode == http.StatusOK
		resp.Body.Close()
		return ok
	})
}

func TestDrainEndsStreamsWithARetryHint(t *testing.T) {
	retry := 400 * time.Millisecond
	f := newFixture(t, fixtureOptions{sse: Options{Retry: retry}})
	s := openRaw(t, f.url("channels=a"), nil)
	s.nextOf(t, eventAttached)
	f.h.Drain()
	rest := s.ended(t)
	if len(rest) != 1 || rest[0].Retry == "" {
		t.Fatalf("events at drain: %+v, want one retry hint", rest)
	}
	ms, _ := strconv.Atoi(rest[0].Retry)
	if d := time.Duration(ms) * time.Millisecond; d < retry || d > 3*retry {
		t.Errorf("drain retry hint %v, want between %v and %v", d, retry, 3*retry)
	}
	// A new request gets an empty stream with a retry hint, not an error
	// status (which would make an EventSource give up for good).
	late := openRaw(t, f.url("channels=a"), nil)
	rest = late.ended(t)
	if len(rest) != 1 || rest[0].Retry == "" {
		t.Errorf("a new stream while draining got %+v, want only a retry hint", rest)
	}
}

func TestTokenExpiryEndsTheStream(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	id, err := f.authn.Authenticate(auth.Credentials{Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := f.authn.IssueToken(id, auth.TokenRequest{TTL: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := openRaw(t, f.srv.URL+"/v1/sse?channels=a&accessToken="+url.QueryEscape(tok), nil)
	s.nextOf(t, eventAttached)
	rest := s.ended(t)
	if len(rest) != 1 || rest[0].Event != eventError {
		t.Fatalf("events at expiry: %+v, want one error event", rest)
	}
	if e := decode[httperr.Body](t, rest[0].Data); e.Error.Code != apierr.TokenExpired {
		t.Errorf("error %+v, want code %d", e.Error, apierr.TokenExpired)
	}
}

// A client that stops reading fills its stream's bounded buffer: the
// stream ends with a slow-consumer continuity event, and resuming from its
// last event id delivers the rest exactly once.
func TestSlowConsumerGetsContinuityThenResumes(t *testing.T) {
	const total = 1500
	f := newFixture(t, fixtureOptions{
		sse:    Options{Buffer: 16},
		engine: core.Options{ChannelMemoryLimit: 2 * total},
	})
	start := make(chan struct{})
	s := openRawPaused(t, f.url("channels=firehose"), nil, start)
	waitFor(t, "the stream to attach", func() bool { return f.e.Stats().Subscriptions == 1 })
	// The client does not read while 1500 messages of 16 KiB (24 MiB, far
	// more than the socket buffers hold) are published.
	pad := strings.Repeat("x", 16<<10)
	var want []string
	t0 := time.Now()
	for i := range total {
		d := strconv.Itoa(i) + ":" + pad
		f.publish(t, "firehose", d)
		want = append(want, d)
	}
	t.Logf("published in %v", time.Since(t0))
	close(start)
	var got []string
	lastID := ""
	var cont *event
	for ev := range s.events {
		switch ev.Event {
		case eventMessage:
			got = append(got, text(t, ev.message(t)))
			lastID = ev.ID
		case eventContinuity:
			cont = &ev
		}
	}
	if cont == nil {
		t.Fatalf("the stream ended after %d of %d messages without a continuity event", len(got), total)
	}
	if cd := decode[continuityData](t, cont.Data); cd.Channels[0].Reason != string(core.ReasonSlowConsumer) {
		t.Errorf("continuity %+v, want reason slow-consumer", cd)
	}
	if len(got) == total {
		t.Fatal("every message fitted: the test did not make the consumer slow")
	}
	t.Logf("the slow stream got %d of %d messages before its continuity event", len(got), total)
	r := openRaw(t, f.url("channels=firehose"), http.Header{"Last-Event-Id": {lastID}})
	for ev := r.next(t); ev.Event != eventAttached; ev = r.next(t) {
		if ev.Event == eventMessage {
			got = append(got, text(t, ev.message(t)))
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("after resuming: %d messages, want %d exactly once in order", len(got), total)
	}
	if n := testutil.ToFloat64(f.h.metrics.streamEnds.WithLabelValues(string(core.ReasonSlowConsumer))); n != 1 {
		t.Errorf("stream ends for slow-consumer: %v, want 1", n)
	}
}

func TestHTTP2(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	srv := httptest.NewUnstartedServer(f.h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	resp, err := srv.Client().Get(srv.URL + "/v1/sse?key=" + testKey + "&channels=a,b")
	if err != nil {
		t.Fatal(err)
	}
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
		t.Fatalf("proto %s status %d, want HTTP/2 200", resp.Proto, resp.StatusCode)
	}
	if resp.Header.Get("Connection") != "" {
		t.Errorf("HTTP/2 response carries Connection: %q", resp.Header.Get("Connection"))
	}
	s := &rawStream{resp: resp, events: make(chan event, 64), comments: make(chan string, 8), done: make(chan struct{})}
	go s.read()
	t.Cleanup(func() { resp.Body.Close(); <-s.done })
	s.nextOf(t, eventAttached)
	f.publish(t, "b", "over-h2")
	if m := s.nextOf(t, eventMessage).message(t); text(t, m) != "over-h2" || m.Channel != "b" {
		t.Errorf("got %+v", m)
	}
}

// An HTTP/1.0 client gets a stream delimited by the connection's end (no
// chunked encoding, which HTTP/1.0 does not know).
func TestHTTP10ClientGetsAPlainStream(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	conn, err := net.Dial("tcp", f.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /v1/sse?key="+testKey+"&channels=old HTTP/1.0\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	var head strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the response head: %v (%q)", err, head.String())
		}
		head.WriteString(line)
		if line == "\r\n" {
			break
		}
	}
	if !strings.HasPrefix(head.String(), "HTTP/1.0 200 OK\r\n") || strings.Contains(head.String(), "Transfer-Encoding") ||
		!strings.Contains(head.String(), "Content-Type: text/event-stream\r\n") {
		t.Fatalf("response head:\n%s", head.String())
	}
	var body strings.Builder
	for !strings.Contains(body.String(), "event: attached") {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v (%q)", err, body.String())
		}
		body.WriteString(line)
	}
	f.publish(t, "old", "over-http/1.0")
	for !strings.Contains(body.String(), "over-http/1.0") {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v (%q)", err, body.String())
		}
		body.WriteString(line)
	}
}
