package mqtt

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/switchboardhq/switchboard/core"
)

// v5client is a paho.golang (MQTT 5) client and what it received.
type v5client struct {
	c       *paho.Client
	connack *paho.Connack
	mu      sync.Mutex
	got     []*paho.Publish
	arrived chan struct{}
}

type v5opts struct {
	clean   bool
	expiry  uint32
	user    string
	pass    string
	will    *paho.WillMessage
	willDly uint32
	aliases uint16
}

func (f *fixture) v5(t testing.TB, clientID string, o v5opts) *v5client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	vc := &v5client{arrived: make(chan struct{}, 1)}
	vc.c = paho.NewClient(paho.ClientConfig{
		ClientID: clientID,
		Conn:     nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			vc.mu.Lock()
			vc.got = append(vc.got, pr.Packet)
			vc.mu.Unlock()
			select {
			case vc.arrived <- struct{}{}:
			default:
			}
			return true, nil
		}},
	})
	if o.user == "" {
		o.user, o.pass = "app", "s3cret"
	}
	cp := &paho.Connect{
		ClientID: clientID, CleanStart: o.clean, KeepAlive: 30,
		Username: o.user, UsernameFlag: true, Password: []byte(o.pass), PasswordFlag: true,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &o.expiry},
	}
	if o.aliases > 0 {
		cp.Properties.TopicAliasMaximum = &o.aliases
	}
	if o.will != nil {
		cp.WillMessage = o.will
		cp.WillProperties = &paho.WillProperties{WillDelayInterval: &o.willDly}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vc.connack, err = vc.c.Connect(ctx, cp)
	if err != nil {
		if vc.connack != nil {
			return vc
		}
		t.Fatalf("connect %s: %v", clientID, err)
	}
	t.Cleanup(func() { _ = vc.c.Disconnect(&paho.Disconnect{}) })
	return vc
}

func (vc *v5client) subscribe(t testing.TB, opts ...paho.SubscribeOptions) *paho.Suback {
	t.Helper()
	return vc.subscribeWith(t, nil, opts...)
}

func (vc *v5client) subscribeWith(t testing.TB, props *paho.SubscribeProperties, opts ...paho.SubscribeOptions) *paho.Suback {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := vc.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: opts, Properties: props})
	if err != nil && sa == nil {
		t.Fatalf("subscribe: %v", err)
	}
	return sa
}

func (vc *v5client) publish(t testing.TB, p *paho.Publish) *paho.PublishResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := vc.c.Publish(ctx, p)
	if err != nil && r == nil {
		t.Fatalf("publish: %v", err)
	}
	return r
}

// wait waits for n messages in total and returns them.
func (vc *v5client) wait(t testing.TB, n int) []*paho.Publish {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		vc.mu.Lock()
		got := slices.Clone(vc.got)
		vc.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-vc.arrived:
		case <-deadline:
			t.Fatalf("got %d messages, want %d: %q", len(got), n, payloadsOf(got))
		}
	}
}

// quiet asserts that nothing more than n messages arrives for a while.
func (vc *v5client) quiet(t testing.TB, n int) {
	t.Helper()
	time.Sleep(200 * time.Millisecond)
	vc.mu.Lock()
	defer vc.mu.Unlock()
	if len(vc.got) != n {
		var p []string
		for _, m := range vc.got {
			p = append(p, m.Topic+"="+string(m.Payload))
		}
		t.Fatalf("got %d messages, want %d: %q", len(vc.got), n, p)
	}
}

func payloadsOf(ms []*paho.Publish) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = string(m.Payload)
	}
	return out
}

func TestV5PropertiesRoundTripThroughTheChannel(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	sub := f.v5(t, "sub", v5opts{clean: true})
	id := 7
	sub.subscribeWith(t, &paho.SubscribeProperties{SubscriptionIdentifier: &id}, paho.SubscribeOptions{Topic: "dev/+/cmd", QoS: 2})
	pub := f.v5(t, "pub", v5opts{clean: true})
	pf := byte(1)
	exp := uint32(300)
	pub.publish(t, &paho.Publish{Topic: "dev/1/cmd", QoS: 1, Payload: []byte(`{"on":true}`), Properties: &paho.PublishProperties{
		ContentType: "application/json", ResponseTopic: "dev/1/reply", CorrelationData: []byte{0, 1, 2},
		PayloadFormat: &pf, MessageExpiry: &exp,
		User: paho.UserProperties{{Key: "name", Value: "switch"}, {Key: "trace", Value: "abc"}},
	}})
	m := sub.wait(t, 1)[0]
	if m.QoS != 1 || string(m.Payload) != `{"on":true}` {
		t.Fatalf("got qos %d payload %q", m.QoS, m.Payload)
	}
	p := m.Properties
	if p.ContentType != "application/json" || p.ResponseTopic != "dev/1/reply" || !slices.Equal(p.CorrelationData, []byte{0, 1, 2}) {
		t.Errorf("properties: %+v", p)
	}
	if p.PayloadFormat == nil || *p.PayloadFormat != 1 || p.MessageExpiry == nil || *p.MessageExpiry == 0 || *p.MessageExpiry > 300 {
		t.Errorf("format/expiry: %v %v", p.PayloadFormat, p.MessageExpiry)
	}
	if p.SubscriptionIdentifier == nil || *p.SubscriptionIdentifier != 7 {
		t.Errorf("subscription identifier: %v", p.SubscriptionIdentifier)
	}
	if p.User.Get("name") != "switch" || p.User.Get("trace") != "abc" {
		t.Errorf("user properties: %v", p.User)
	}
	// The channel holds the same message for every other protocol.
	page, err := f.e.History(context.Background(), nil, core.HistoryQuery{Channel: "dev/1/cmd", Direction: core.Forwards})
	if err != nil || len(page.Messages) != 1 {
		t.Fatalf("history: %v %v", page.Messages, err)
	}
	hm := page.Messages[0]
	if hm.Name != "switch" || hm.ContentType != "application/json" || hm.Extras["trace"] != "abc" || hm.Encoding != "utf-8" || hm.ClientID != "pub" {
		t.Errorf("channel message: %+v", hm)
	}
	// A message published elsewhere arrives with its name and extras.
	if _, err := f.e.Publish(context.Background(), nil, "", "rest", "dev/2/cmd", []*core.Message{{Name: "n", Data: []byte("hi"), Encoding: "utf-8", Extras: map[string]string{"k": "v"}}}); err != nil {
		t.Fatal(err)
	}
	m = sub.wait(t, 2)[1]
	if string(m.Payload) != "hi" || m.QoS != 2 || m.Properties.User.Get("name") != "n" || m.Properties.User.Get("k") != "v" {
		t.Errorf("from elsewhere: qos %d %q %v", m.QoS, m.Payload, m.Properties.User)
	}
}

func TestV5NoLocalRetainAsPublishedAndRetainHandling(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	c := f.v5(t, "me", v5opts{clean: true})
	c.subscribe(t, paho.SubscribeOptions{Topic: "loop", QoS: 1, NoLocal: true})
	c.publish(t, &paho.Publish{Topic: "loop", QoS: 1, Payload: []byte("mine")})
	other := f.v5(t, "other", v5opts{clean: true})
	other.publish(t, &paho.Publish{Topic: "loop", QoS: 1, Payload: []byte("theirs")})
	if got := payloadsOf(c.wait(t, 1)); !slices.Equal(got, []string{"theirs"}) {
		t.Fatalf("no-local: %q", got)
	}
	c.quiet(t, 1)

	// Retained: kept per channel, sent on subscribe with RETAIN, cleared by
	// an empty retained payload.
	other.publish(t, &paho.Publish{Topic: "state/a", QoS: 1, Retain: true, Payload: []byte("on")})
	other.publish(t, &paho.Publish{Topic: "state/b", QoS: 1, Retain: true, Payload: []byte("off")})
	other.publish(t, &paho.Publish{Topic: "state/c", QoS: 1, Payload: []byte("not retained")})
	late := f.v5(t, "late", v5opts{clean: true})
	late.subscribe(t, paho.SubscribeOptions{Topic: "state/+", QoS: 1, RetainAsPublished: true})
	got := late.wait(t, 2)
	slices.SortFunc(got, func(a, b *paho.Publish) int { return compare(a.Topic, b.Topic) })
	if got[0].Topic != "state/a" || string(got[0].Payload) != "on" || !got[0].Retain || got[1].Topic != "state/b" || !got[1].Retain {
		t.Fatalf("retained on subscribe: %+v %+v", got[0], got[1])
	}
	late.quiet(t, 2)
	// Live messages keep RETAIN with retain-as-published.
	other.publish(t, &paho.Publish{Topic: "state/a", QoS: 1, Retain: true, Payload: []byte("off")})
	if m := late.wait(t, 3)[2]; !m.Retain || string(m.Payload) != "off" {
		t.Fatalf("retain as published: %+v", m)
	}
	// Retain handling 2: nothing on subscribe; 1: only for a new subscription.
	never := f.v5(t, "never", v5opts{clean: true})
	never.subscribe(t, paho.SubscribeOptions{Topic: "state/a", QoS: 1, RetainHandling: 2})
	never.subscribe(t, paho.SubscribeOptions{Topic: "state/b", QoS: 1, RetainHandling: 1})
	never.wait(t, 1)
	never.subscribe(t, paho.SubscribeOptions{Topic: "state/b", QoS: 1, RetainHandling: 1})
	never.quiet(t, 1)
	// Clearing.
	other.publish(t, &paho.Publish{Topic: "state/a", QoS: 1, Retain: true, Payload: nil})
	fresh := f.v5(t, "fresh", v5opts{clean: true})
	fresh.subscribe(t, paho.SubscribeOptions{Topic: "state/a", QoS: 1})
	fresh.quiet(t, 0)
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestV5SessionResumesFromTheLogAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, fixtureOptions{dir: dir})
	c := f.v5(t, "device", v5opts{expiry: 3600})
	c.subscribe(t, paho.SubscribeOptions{Topic: "fleet/#", QoS: 1})
	pub := f.v5(t, "pub", v5opts{clean: true})
	pub.publish(t, &paho.Publish{Topic: "fleet/a", QoS: 1, Payload: []byte("online-0")})
	c.wait(t, 1)
	f.waitAcked(t, "device")
	if err := c.c.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	// Offline: messages on a known channel and on a channel that did not
	// exist before.
	want := []string{"online-0"}
	for i, p := range seq("off", 6) {
		topic := []string{"fleet/a", "fleet/new"}[i%2]
		pub.publish(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(p)})
		want = append(want, p)
	}
	addr := f.addr
	f.close()

	f2 := newFixture(t, fixtureOptions{dir: dir, addr: addr})
	c2 := f2.v5(t, "device", v5opts{expiry: 3600})
	if !c2.connack.SessionPresent {
		t.Fatal("session not present after restart")
	}
	got := payloadsOf(c2.wait(t, 6))
	slices.Sort(got)
	w := slices.Clone(want[1:])
	slices.Sort(w)
	if !slices.Equal(got, w) {
		t.Fatalf("replayed %q, want %q", got, w)
	}
	c2.quiet(t, 6)
	// Still subscribed: live messages flow.
	pub2 := f2.v5(t, "pub2", v5opts{clean: true})
	pub2.publish(t, &paho.Publish{Topic: "fleet/b", QoS: 1, Payload: []byte("live")})
	if m := c2.wait(t, 7)[6]; string(m.Payload) != "live" {
		t.Fatalf("live after resume: %q", m.Payload)
	}
}

func TestV5WillWithDelay(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	watcher := f.v5(t, "watcher", v5opts{clean: true})
	watcher.subscribe(t, paho.SubscribeOptions{Topic: "status/#", QoS: 1})

	// Killed connection: the will goes out.
	nc := dialRaw(t, f.addr)
	dying := paho.NewClient(paho.ClientConfig{ClientID: "dying", Conn: nc})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := dying.Connect(ctx, &paho.Connect{ClientID: "dying", CleanStart: true, KeepAlive: 30,
		Username: "app", UsernameFlag: true, Password: []byte("s3cret"), PasswordFlag: true,
		WillMessage: &paho.WillMessage{Topic: "status/dying", QoS: 1, Payload: []byte("gone")}}); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	if m := watcher.wait(t, 1)[0]; m.Topic != "status/dying" || string(m.Payload) != "gone" {
		t.Fatalf("will: %s %q", m.Topic, m.Payload)
	}

	// A normal disconnect sends no will.
	polite := f.v5(t, "polite", v5opts{clean: true, will: &paho.WillMessage{Topic: "status/polite", QoS: 1, Payload: []byte("gone")}})
	_ = polite.c.Disconnect(&paho.Disconnect{})
	watcher.quiet(t, 1)
}
