package conformance

// MQTT conformance: a real switchboard process with its MQTT listener open,
// driven over real sockets by three independent clients: Eclipse Paho's Go
// MQTT 5 client (github.com/eclipse/paho.golang), its MQTT 3.1.1 client
// (github.com/eclipse/paho.mqtt.golang) and Debian's mosquitto_pub and
// mosquitto_sub. The REST API is the other side of the cross-protocol
// checks.
//
// Checks wait for events (a message, an acknowledgement, a process exit);
// the only sleeps are where time itself is the subject (a will delay) or
// must pass for a state to be reached (a session checkpoint). "Nothing else
// arrived" is checked with a fence: a message published afterwards on the
// same channel, which must be the next one the client gets, since a channel
// is delivered in order.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"
	paho3 "github.com/eclipse/paho.mqtt.golang"
)

const (
	// mqttUser and mqttSecret are the test configuration's key: MQTT
	// username and password are an API key's name and secret.
	mqttUser   = "app"
	mqttSecret = "s3cret-value"
	// mqttWait bounds every awaited MQTT event.
	mqttWait = 10 * time.Second
	// checkpointInterval is how often the server stores the positions of
	// persistent sessions (the MQTT adapter's default).
	checkpointInterval = time.Second
)

// ---------------------------------------------------------------------------
// Server

// mqttServer is a switchboard process with its MQTT listener open, and
// what it takes to start it again in place (same HTTP and MQTT addresses,
// same data directory).
type mqttServer struct {
	*server
	httpAddr, mqttAddr, data string
	extra                    []string
}

// startMQTTServer starts switchboard with the MQTT listener on a free port.
// Extra flags follow "--mqtt ADDR", so a later "--config FILE" replaces the
// harness's configuration (the last flag wins).
func startMQTTServer(t *testing.T, extra ...string) *mqttServer {
	t.Helper()
	httpAddr := freePort(t)
	mqttAddr := freePort(t)
	for mqttAddr == httpAddr {
		mqttAddr = freePort(t)
	}
	m := &mqttServer{httpAddr: httpAddr, mqttAddr: mqttAddr, data: t.TempDir(), extra: extra}
	m.start(t)
	return m
}

// start runs the process (again) on the server's addresses and data.
func (m *mqttServer) start(t *testing.T) {
	t.Helper()
	m.server = startServerOn(t, m.httpAddr, m.data, append([]string{"--mqtt", m.mqttAddr}, m.extra...)...)
}

// publish posts one message, or several in one request, to a channel over
// REST and fails the test unless the server acknowledges them (201).
func (m *mqttServer) publish(t testing.TB, channel string, msgs ...map[string]any) {
	t.Helper()
	var body any = msgs
	if len(msgs) == 1 {
		body = msgs[0]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, b, err := m.do(ctx, http.MethodPost, "/v1/channels/"+url.PathEscape(channel)+"/messages", body)
	if err != nil {
		t.Fatalf("REST publish to %s: %v", channel, err)
	}
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("REST publish to %s: %d %s", channel, resp.StatusCode, b)
	}
}

// publishData posts each text as its own message, in order.
func (m *mqttServer) publishData(t testing.TB, channel string, data ...string) {
	t.Helper()
	for _, d := range data {
		m.publish(t, channel, map[string]any{"data": d})
	}
}

// restMessage is a message as the REST history returns it.
type restMessage struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Data        json.RawMessage   `json:"data"`
	Encoding    string            `json:"encoding"`
	ContentType string            `json:"contentType"`
	ClientID    string            `json:"clientId"`
	Extras      map[string]string `json:"extras"`
	Channel     string            `json:"channel"`
	Serial      string            `json:"serial"`
}

// text is the message's data when it is a JSON string, its raw JSON
// otherwise.
func (r restMessage) text() string {
	var s string
	if err := json.Unmarshal(r.Data, &s); err == nil {
		return s
	}
	return string(r.Data)
}

// fullHistory reads a channel's whole history over REST, oldest first, with
// every field.
func (m *mqttServer) fullHistory(t testing.TB, channel string) []restMessage {
	t.Helper()
	var all []restMessage
	path := "/v1/channels/" + url.PathEscape(channel) + "/messages?direction=forwards&limit=1000"
	for path != "" {
		resp, body, err := m.do(context.Background(), http.MethodGet, path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("history %s: %d %s", path, resp.StatusCode, body)
		}
		var page []restMessage
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatalf("history body: %v: %s", err, body)
		}
		all = append(all, page...)
		path = nextLink(resp.Header.Get("Link"))
	}
	return all
}

// ---------------------------------------------------------------------------
// Received messages

// mqttMessage is one PUBLISH a client received.
type mqttMessage struct {
	Topic       string
	Payload     string
	QoS         byte
	Retain      bool
	Dup         bool
	ContentType string              // MQTT 5
	UTF8        bool                // MQTT 5 payload format indicator 1
	User        []paho.UserProperty // MQTT 5 user properties, in order
	At          time.Time           // when the client acknowledged it
}

func (m mqttMessage) String() string {
	return fmt.Sprintf("%s %q q%d r%t", m.Topic, m.Payload, m.QoS, m.Retain)
}

// mqttInbox collects what a client received, across its connections.
type mqttInbox struct {
	mu      sync.Mutex
	msgs    []mqttMessage
	changed chan struct{}
}

func newInbox() *mqttInbox { return &mqttInbox{changed: make(chan struct{}, 1)} }

func (in *mqttInbox) add(m mqttMessage) {
	in.mu.Lock()
	in.msgs = append(in.msgs, m)
	in.mu.Unlock()
	select {
	case in.changed <- struct{}{}:
	default:
	}
}

func (in *mqttInbox) all() []mqttMessage {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.msgs)
}

func (in *mqttInbox) len() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.msgs)
}

// tryWait waits until cond holds for the messages received so far; it
// returns them, and false if mqttWait passed first.
func (in *mqttInbox) tryWait(cond func([]mqttMessage) bool) ([]mqttMessage, bool) {
	deadline := time.NewTimer(mqttWait)
	defer deadline.Stop()
	for {
		msgs := in.all()
		if cond(msgs) {
			return msgs, true
		}
		select {
		case <-in.changed:
		case <-deadline.C:
			return in.all(), false
		}
	}
}

// wait is tryWait that fails the test on timeout.
func (in *mqttInbox) wait(t testing.TB, what string, cond func([]mqttMessage) bool) []mqttMessage {
	t.Helper()
	msgs, ok := in.tryWait(cond)
	if !ok {
		t.Fatalf("timed out after %v waiting for %s; received %d messages: %v", mqttWait, what, len(msgs), msgs)
	}
	return msgs
}

// has reports whether a message with this topic and payload is among msgs.
func has(msgs []mqttMessage, topic, payload string) bool {
	return slices.ContainsFunc(msgs, func(m mqttMessage) bool { return m.Topic == topic && m.Payload == payload })
}

// waitFor waits until a message with this topic and payload arrived at or
// after index from.
func (in *mqttInbox) waitFor(t testing.TB, from int, topic, payload string) []mqttMessage {
	t.Helper()
	return in.wait(t, fmt.Sprintf("%q on %s", payload, topic), func(msgs []mqttMessage) bool {
		return from <= len(msgs) && has(msgs[from:], topic, payload)
	})
}

// onTopic keeps the messages of one topic.
func onTopic(msgs []mqttMessage, topic string) []mqttMessage {
	var out []mqttMessage
	for _, m := range msgs {
		if m.Topic == topic {
			out = append(out, m)
		}
	}
	return out
}

// payloadsOf lists the payloads of the messages of one topic.
func payloadsOf(msgs []mqttMessage, topic string) []string {
	out := []string{}
	for _, m := range onTopic(msgs, topic) {
		out = append(out, m.Payload)
	}
	return out
}

// userProps renders MQTT 5 user properties as "key=value" strings.
func userProps(u []paho.UserProperty) []string {
	out := []string{}
	for _, p := range u {
		out = append(out, p.Key+"="+p.Value)
	}
	return out
}

func numbered(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

// ---------------------------------------------------------------------------
// MQTT 5 client (paho.golang)

// credentials are an MQTT username and password.
type credentials struct{ user, pass string }

// v5Options configure one MQTT 5 connection.
type v5Options struct {
	clean     bool         // Clean Start
	expiry    uint32       // Session Expiry Interval, seconds
	creds     *credentials // nil: the test key
	will      *paho.WillMessage
	willDelay uint32
	// dial opens the network connection; default: TCP to the MQTT listener.
	dial func() (net.Conn, error)
}

// v5Client is one MQTT 5 connection. The test owns its network connection,
// so that it can drop it without a DISCONNECT.
type v5Client struct {
	id      string
	c       *paho.Client
	conn    net.Conn
	connack *paho.Connack
	sess    *state.State
	done    bool
}

// ackingSession is paho's in-memory session state that records every
// received message once its acknowledgement (PUBACK or PUBREC) is written:
// a test that saw a message knows the server gets the acknowledgement
// before anything the test sends next on that connection (a DISCONNECT).
type ackingSession struct {
	*state.State
	in *mqttInbox
}

func (s ackingSession) Ack(pb *packets.Publish) error {
	err := s.State.Ack(pb)
	m := mqttMessage{Topic: pb.Topic, Payload: string(pb.Payload), QoS: pb.QoS, Retain: pb.Retain, Dup: pb.Duplicate, At: time.Now()}
	if p := pb.Properties; p != nil {
		m.ContentType = p.ContentType
		m.UTF8 = p.PayloadFormat != nil && *p.PayloadFormat == 1
		for _, u := range p.User {
			m.User = append(m.User, paho.UserProperty{Key: u.Key, Value: u.Value})
		}
	}
	if s.in != nil {
		s.in.add(m)
	}
	return err
}

// connectV5 connects an MQTT 5 client whose messages go to in (nil: not
// recorded). On refusal it returns the client (with the CONNACK, if one
// came) and the error.
func connectV5(t testing.TB, addr, id string, in *mqttInbox, o v5Options) (*v5Client, error) {
	t.Helper()
	dial := o.dial
	if dial == nil {
		dial = func() (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }
	}
	raw, err := dial()
	if err != nil {
		t.Fatalf("dialing the MQTT listener: %v", err)
	}
	// paho writes one packet in several Write calls from more than one
	// goroutine (publishes, acknowledgements, pings): it needs a
	// connection that serialises packets, which a WebSocket's is not.
	conn := packets.NewThreadSafeConn(raw)
	user, pass := mqttUser, mqttSecret
	if o.creds != nil {
		user, pass = o.creds.user, o.creds.pass
	}
	sess := state.NewInMemory()
	cl := &v5Client{id: id, conn: conn, sess: sess}
	cl.c = paho.NewClient(paho.ClientConfig{
		Conn:    conn,
		Session: ackingSession{State: sess, in: in},
		// Messages are recorded by the session on acknowledgement.
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(paho.PublishReceived) (bool, error) { return true, nil },
		},
	})
	cp := &paho.Connect{
		ClientID: id, KeepAlive: 30, CleanStart: o.clean,
		Username: user, UsernameFlag: user != "", Password: []byte(pass), PasswordFlag: pass != "",
		Properties: &paho.ConnectProperties{SessionExpiryInterval: paho.Uint32(o.expiry), RequestProblemInfo: true},
	}
	if o.will != nil {
		cp.WillMessage = o.will
		cp.WillProperties = &paho.WillProperties{WillDelayInterval: paho.Uint32(o.willDelay)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), mqttWait)
	defer cancel()
	cl.connack, err = cl.c.Connect(ctx, cp)
	if err != nil {
		cl.done = true
		_ = conn.Close()
		_ = sess.Close()
		return cl, err
	}
	t.Cleanup(cl.close)
	return cl, nil
}

// mustV5 connects an MQTT 5 client and fails the test if it is refused.
func mustV5(t testing.TB, addr, id string, in *mqttInbox, o v5Options) *v5Client {
	t.Helper()
	cl, err := connectV5(t, addr, id, in, o)
	if err != nil {
		t.Fatalf("MQTT 5 connect %s: %v (CONNACK %+v)", id, err, cl.connack)
	}
	return cl
}

// sessionPresent reports the CONNACK's Session Present flag.
func (cl *v5Client) sessionPresent() bool { return cl.connack.SessionPresent }

// continuity is the CONNACK's switchboard-continuity user property.
func (cl *v5Client) continuity() string {
	if cl.connack.Properties == nil {
		return ""
	}
	return cl.connack.Properties.User.Get("switchboard-continuity")
}

// subscribe sends one SUBSCRIBE and returns its reason codes; it fails the
// test only when no SUBACK came.
func (cl *v5Client) subscribe(t testing.TB, subs ...paho.SubscribeOptions) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), mqttWait)
	defer cancel()
	sa, err := cl.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs})
	if sa == nil {
		t.Fatalf("%s: SUBSCRIBE %+v: %v", cl.id, subs, err)
	}
	return sa.Reasons
}

// mustSubscribe subscribes and fails the test unless each filter is
// granted its QoS.
func (cl *v5Client) mustSubscribe(t testing.TB, subs ...paho.SubscribeOptions) {
	t.Helper()
	got := cl.subscribe(t, subs...)
	want := make([]byte, len(subs))
	for i, s := range subs {
		want[i] = s.QoS
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s: SUBACK reason codes %v, want %v", cl.id, got, want)
	}
}

// send publishes p and returns the server's response (for QoS 0, once
// written).
func (cl *v5Client) send(t testing.TB, p *paho.Publish) (*paho.PublishResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), mqttWait)
	defer cancel()
	return cl.c.Publish(ctx, p)
}

// publish publishes and fails the test unless the server accepts it.
func (cl *v5Client) publish(t testing.TB, topic, payload string, qos byte) {
	t.Helper()
	cl.mustSend(t, &paho.Publish{Topic: topic, Payload: []byte(payload), QoS: qos})
}

func (cl *v5Client) mustSend(t testing.TB, p *paho.Publish) {
	t.Helper()
	resp, err := cl.send(t, p)
	if err != nil {
		t.Fatalf("%s: publish %q to %s at QoS %d: %v", cl.id, p.Payload, p.Topic, p.QoS, err)
	}
	if resp != nil && resp.ReasonCode >= 0x80 {
		t.Fatalf("%s: publish %q to %s refused with reason 0x%02x", cl.id, p.Payload, p.Topic, resp.ReasonCode)
	}
}

// disconnect ends the connection with a normal DISCONNECT.
func (cl *v5Client) disconnect(t testing.TB) {
	t.Helper()
	if cl.done {
		return
	}
	cl.done = true
	if err := cl.c.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
		t.Fatalf("%s: DISCONNECT: %v", cl.id, err)
	}
	<-cl.c.Done()
	_ = cl.sess.Close()
}

// drop closes the network connection without a DISCONNECT, as a device
// that loses power does.
func (cl *v5Client) drop() {
	if cl.done {
		return
	}
	cl.done = true
	_ = cl.conn.Close()
	<-cl.c.Done()
	_ = cl.sess.Close()
}

func (cl *v5Client) close() {
	if cl.done {
		return
	}
	cl.done = true
	_ = cl.c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	<-cl.c.Done()
	_ = cl.sess.Close()
}

// ---------------------------------------------------------------------------
// MQTT 3.1.1 client (paho.mqtt.golang)

// v3Options configure one MQTT 3.1.1 connection.
type v3Options struct {
	clean bool
	creds *credentials // nil: the test key
	will  *paho.WillMessage
}

// v3Client is one MQTT 3.1.1 connection.
type v3Client struct {
	id         string
	c          paho3.Client
	mu         sync.Mutex
	conn       net.Conn // the TCP connection, to drop it
	present    bool
	returnCode byte
	done       bool
}

// connectV3 connects an MQTT 3.1.1 client whose messages go to in (nil:
// not recorded). Messages are acknowledged by hand before they are
// recorded, for the same reason as ackingSession.
func connectV3(t testing.TB, addr, id string, in *mqttInbox, o v3Options) (*v3Client, error) {
	t.Helper()
	cl := &v3Client{id: id}
	user, pass := mqttUser, mqttSecret
	if o.creds != nil {
		user, pass = o.creds.user, o.creds.pass
	}
	opts := paho3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetUsername(user).SetPassword(pass).SetCleanSession(o.clean).SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(10 * time.Second).
		SetKeepAlive(30 * time.Second).SetOrderMatters(true).SetAutoAckDisabled(true).
		SetDefaultPublishHandler(func(_ paho3.Client, m paho3.Message) {
			m.Ack()
			if in != nil {
				in.add(mqttMessage{Topic: m.Topic(), Payload: string(m.Payload()), QoS: m.Qos(), Retain: m.Retained(), Dup: m.Duplicate(), At: time.Now()})
			}
		}).
		SetCustomOpenConnectionFn(func(u *url.URL, _ paho3.ClientOptions) (net.Conn, error) {
			c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
			cl.mu.Lock()
			cl.conn = c
			cl.mu.Unlock()
			return c, err
		})
	if o.will != nil {
		opts.SetWill(o.will.Topic, string(o.will.Payload), o.will.QoS, o.will.Retain)
	}
	cl.c = paho3.NewClient(opts)
	tok := cl.c.Connect()
	if !tok.WaitTimeout(mqttWait) {
		t.Fatalf("MQTT 3.1.1 connect %s: no CONNACK", id)
	}
	ct := tok.(*paho3.ConnectToken)
	cl.returnCode, cl.present = ct.ReturnCode(), ct.SessionPresent()
	if err := tok.Error(); err != nil {
		cl.done = true
		return cl, err
	}
	t.Cleanup(cl.close)
	return cl, nil
}

// mustV3 connects an MQTT 3.1.1 client and fails the test if it is refused.
func mustV3(t testing.TB, addr, id string, in *mqttInbox, o v3Options) *v3Client {
	t.Helper()
	cl, err := connectV3(t, addr, id, in, o)
	if err != nil {
		t.Fatalf("MQTT 3.1.1 connect %s: %v (return code %d)", id, err, cl.returnCode)
	}
	return cl
}

// subscribe subscribes to filters (filter → QoS) in one SUBSCRIBE and
// returns the granted QoS (or 0x80) of each.
func (cl *v3Client) subscribe(t testing.TB, filters map[string]byte) map[string]byte {
	t.Helper()
	tok := cl.c.SubscribeMultiple(filters, nil)
	if !tok.WaitTimeout(mqttWait) {
		t.Fatalf("%s: no SUBACK for %v", cl.id, filters)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: SUBSCRIBE %v: %v", cl.id, filters, err)
	}
	return tok.(*paho3.SubscribeToken).Result()
}

// mustSubscribe subscribes to one filter and fails the test unless it is
// granted qos.
func (cl *v3Client) mustSubscribe(t testing.TB, filter string, qos byte) {
	t.Helper()
	if got := cl.subscribe(t, map[string]byte{filter: qos}); got[filter] != qos {
		t.Fatalf("%s: SUBACK for %s granted %d, want %d", cl.id, filter, got[filter], qos)
	}
}

// publish publishes and waits until it is written (QoS 0) or acknowledged.
func (cl *v3Client) publish(t testing.TB, topic, payload string, qos byte, retain bool) {
	t.Helper()
	tok := cl.c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(mqttWait) || tok.Error() != nil {
		t.Fatalf("%s: publish %q to %s at QoS %d: %v", cl.id, payload, topic, qos, tok.Error())
	}
}

// disconnect ends the connection with a normal DISCONNECT.
func (cl *v3Client) disconnect() {
	if cl.done {
		return
	}
	cl.done = true
	cl.c.Disconnect(1000)
}

// drop closes the TCP connection without a DISCONNECT.
func (cl *v3Client) drop() {
	if cl.done {
		return
	}
	cl.done = true
	cl.mu.Lock()
	c := cl.conn
	cl.mu.Unlock()
	_ = c.Close()
}

func (cl *v3Client) close() {
	if cl.done {
		return
	}
	cl.done = true
	cl.c.Disconnect(100)
}

// ---------------------------------------------------------------------------
// 1. QoS

// TestMQTTQoSMatrix publishes at QoS 0, 1 and 2 from an MQTT 5 and an MQTT
// 3.1.1 client to subscribers of both versions at QoS 0, 1 and 2: every
// subscriber gets every message once, in publish order, at QoS
// min(publish, subscribe), without RETAIN or DUP.
func TestMQTTQoSMatrix(t *testing.T) {
	srv := startMQTTServer(t)

	type sub struct {
		name string
		qos  byte
		in   *mqttInbox
	}
	var subs []sub
	for q := byte(0); q <= 2; q++ {
		in5, in3 := newInbox(), newInbox()
		c5 := mustV5(t, srv.mqttAddr, fmt.Sprintf("qos-sub5-q%d", q), in5, v5Options{clean: true})
		c5.mustSubscribe(t, paho.SubscribeOptions{Topic: "qos/+", QoS: q})
		c3 := mustV3(t, srv.mqttAddr, fmt.Sprintf("qos-sub3-q%d", q), in3, v3Options{clean: true})
		c3.mustSubscribe(t, "qos/+", q)
		subs = append(subs, sub{fmt.Sprintf("v5 subscriber at QoS %d", q), q, in5}, sub{fmt.Sprintf("v3.1.1 subscriber at QoS %d", q), q, in3})
	}

	// Each publisher cycles through QoS 0, 1, 2 on its own topic; the QoS
	// is part of the payload.
	const perTopic = 30
	pub5 := mustV5(t, srv.mqttAddr, "qos-pub5", nil, v5Options{clean: true})
	pub3 := mustV3(t, srv.mqttAddr, "qos-pub3", nil, v3Options{clean: true})
	want := map[string][]string{}
	for i := range perTopic {
		q := byte(i % 3)
		p5 := fmt.Sprintf("v5-%02d-q%d", i, q)
		pub5.publish(t, "qos/v5", p5, q)
		want["qos/v5"] = append(want["qos/v5"], p5)
		p3 := fmt.Sprintf("v3-%02d-q%d", i, q)
		pub3.publish(t, "qos/v3", p3, q, false)
		want["qos/v3"] = append(want["qos/v3"], p3)
	}

	for _, s := range subs {
		for _, topic := range []string{"qos/v5", "qos/v3"} {
			last := want[topic][perTopic-1]
			msgs := onTopic(s.in.waitFor(t, 0, topic, last), topic)
			if got := payloadsOf(msgs, topic); !slices.Equal(got, want[topic]) {
				t.Errorf("%s, %s: got %q, want %q", s.name, topic, got, want[topic])
				continue
			}
			for i, m := range msgs {
				pubQoS := byte(i % 3)
				if wantQoS := min(pubQoS, s.qos); m.QoS != wantQoS || m.Retain || m.Dup {
					t.Errorf("%s, %s: %q delivered at QoS %d retain=%t dup=%t, want QoS %d (published at %d), no retain, no dup",
						s.name, topic, m.Payload, m.QoS, m.Retain, m.Dup, wantQoS, pubQoS)
				}
			}
		}
	}
}

// ---------------------------------------------------------------------------
// 2. Retained messages

// TestMQTTRetained checks retained messages: the latest retained publish of
// a topic is sent to each new subscriber with RETAIN set (MQTT 5 and 3.1.1),
// a retained publish with an empty payload clears it, retain handling 1
// sends it to new subscriptions only and 2 never, and retain-as-published
// keeps RETAIN on live messages.
func TestMQTTRetained(t *testing.T) {
	srv := startMQTTServer(t)
	pub := mustV5(t, srv.mqttAddr, "ret-pub", nil, v5Options{clean: true})
	retain := func(topic, payload string, qos byte) {
		t.Helper()
		pub.mustSend(t, &paho.Publish{Topic: topic, Payload: []byte(payload), QoS: qos, Retain: true})
	}
	retain("ret/a", "a-1", 1)
	retain("ret/a", "a-2", 1) // replaces a-1
	retain("ret/b", "b-1", 0)
	retain("ret/c", "c-1", 2) // QoS 2 so that the QoS 0 publish before it was processed

	// checkNext waits until in has n+1 messages on topic and checks the
	// last one.
	checkNext := func(who string, in *mqttInbox, topic string, n int, payload string, qos byte, retained bool) {
		t.Helper()
		msgs := onTopic(in.wait(t, fmt.Sprintf("message %d on %s for %s", n+1, topic, who), func(m []mqttMessage) bool {
			return len(onTopic(m, topic)) > n
		}), topic)
		if m := msgs[n]; m.Payload != payload || m.QoS != qos || m.Retain != retained {
			t.Errorf("%s: message %d on %s is %v, want %q q%d r%t (all: %v)", who, n+1, topic, m, payload, qos, retained, msgs)
		}
	}

	// A new MQTT 5 subscriber gets the latest retained message, flagged,
	// then live messages unflagged. A fence on the topic shows that a-1 was
	// not sent as well.
	in1 := newInbox()
	s1 := mustV5(t, srv.mqttAddr, "ret-s1", in1, v5Options{clean: true})
	s1.mustSubscribe(t, paho.SubscribeOptions{Topic: "ret/a", QoS: 1})
	checkNext("v5 subscriber", in1, "ret/a", 0, "a-2", 1, true)
	srv.publishData(t, "ret/a", "a-live")
	checkNext("v5 subscriber", in1, "ret/a", 1, "a-live", 1, false)

	// An MQTT 3.1.1 subscriber to ret/# gets every topic's retained message
	// at min(published QoS, subscription QoS).
	in2 := newInbox()
	s2 := mustV3(t, srv.mqttAddr, "ret-s2", in2, v3Options{clean: true})
	s2.mustSubscribe(t, "ret/#", 2)
	checkNext("v3.1.1 subscriber", in2, "ret/a", 0, "a-2", 1, true)
	checkNext("v3.1.1 subscriber", in2, "ret/b", 0, "b-1", 0, true)
	checkNext("v3.1.1 subscriber", in2, "ret/c", 0, "c-1", 2, true)
	for _, topic := range []string{"ret/a", "ret/b", "ret/c"} {
		srv.publishData(t, topic, "fence")
		checkNext("v3.1.1 subscriber", in2, topic, 1, "fence", 2, false)
	}

	// An empty retained payload clears the topic's retained message; it is
	// delivered to current subscribers as an ordinary (empty) message.
	retain("ret/a", "", 1)
	checkNext("v5 subscriber", in1, "ret/a", 3, "", 1, false) // after a-2, a-live and the fence
	in3 := newInbox()
	s3 := mustV5(t, srv.mqttAddr, "ret-s3", in3, v5Options{clean: true})
	s3.mustSubscribe(t, paho.SubscribeOptions{Topic: "ret/a", QoS: 1})
	srv.publishData(t, "ret/a", "after-clear")
	checkNext("subscriber after the clear", in3, "ret/a", 0, "after-clear", 1, false)

	// Retain handling 2: no retained message on subscribe.
	s3.mustSubscribe(t, paho.SubscribeOptions{Topic: "ret/b", QoS: 1, RetainHandling: 2})
	srv.publishData(t, "ret/b", "b-after-rh2")
	checkNext("retain handling 2", in3, "ret/b", 0, "b-after-rh2", 1, false)

	// Retain handling 1: retained message for a new subscription only;
	// retain handling 0 sends it again on a repeated subscription.
	in4 := newInbox()
	s4 := mustV5(t, srv.mqttAddr, "ret-s4", in4, v5Options{clean: true})
	s4.mustSubscribe(t, paho.SubscribeOptions{Topic: "ret/c", QoS: 2, RetainHandling: 1})
	checkNext("retain handling 1, new", in4, "ret/c", 0, "c-1", 2, true)
	s4.mustSubscribe(t, paho.SubscribeOptions{Topic: "ret/c", QoS: 2, RetainHandling: 1})
	srv.publishData(t, "ret/c", "c-fence-1")
	checkNext("retain handling 1, existing", in4, "ret/c", 1, "c-fence-1", 2, false)
	s4.mustSubscribe(t, paho.SubscribeOptions{Topic: "ret/c", QoS: 2, RetainHandling: 0})
	checkNext("retain handling 0, existing", in4, "ret/c", 2, "c-1", 2, true)
	srv.publishData(t, "ret/c", "c-fence-2")
	checkNext("retain handling 0, existing", in4, "ret/c", 3, "c-fence-2", 2, false)

	// Retain as published keeps RETAIN on a live retained publish; without
	// it the flag is cleared [MQTT-3.3.1-12, -13].
	in5 := newInbox()
	s5 := mustV5(t, srv.mqttAddr, "ret-s5", in5, v5Options{clean: true})
	s5.mustSubscribe(t, paho.SubscribeOptions{Topic: "ret/d", QoS: 1, RetainAsPublished: true})
	s3.mustSubscribe(t, paho.SubscribeOptions{Topic: "ret/d", QoS: 1})
	retain("ret/d", "d-live", 1)
	checkNext("retain as published", in5, "ret/d", 0, "d-live", 1, true)
	checkNext("no retain as published", in3, "ret/d", 0, "d-live", 1, false)
}

// ---------------------------------------------------------------------------
// 3. Will messages

// TestMQTTWill checks the will: published when a connection ends without
// DISCONNECT (MQTT 5 and 3.1.1), not after a normal DISCONNECT, delayed by
// the MQTT 5 will delay interval, and cancelled when the session resumes
// within that delay.
func TestMQTTWill(t *testing.T) {
	srv := startMQTTServer(t)
	in := newInbox()
	watcher := mustV5(t, srv.mqttAddr, "will-watcher", in, v5Options{clean: true})
	watcher.mustSubscribe(t, paho.SubscribeOptions{Topic: "will/#", QoS: 1})
	will := func(topic, payload string) *paho.WillMessage {
		return &paho.WillMessage{Topic: topic, Payload: []byte(payload), QoS: 1}
	}
	// firstOn waits for the first message on topic.
	firstOn := func(topic string) mqttMessage {
		t.Helper()
		msgs := in.wait(t, "a message on "+topic, func(m []mqttMessage) bool { return len(onTopic(m, topic)) > 0 })
		return onTopic(msgs, topic)[0]
	}

	// Two sessions with a will delay lose their connection. will-delayed
	// stays away: its will must come no sooner than the delay.
	// will-resumed reconnects halfway through the delay, which cancels its
	// will [MQTT-3.1.3-9]. The other cases run while the delay passes.
	const delay = 2 * time.Second
	delayedOpts := func(name string) v5Options {
		return v5Options{clean: true, expiry: 60, will: will("will/"+name, name+"-gone"), willDelay: uint32(delay / time.Second)}
	}
	delayed := mustV5(t, srv.mqttAddr, "will-delayed", nil, delayedOpts("delayed"))
	resumed := mustV5(t, srv.mqttAddr, "will-resumed", nil, delayedOpts("resumed"))
	dropped := time.Now()
	delayed.drop()
	resumed.drop()
	time.Sleep(time.Until(dropped.Add(delay / 2)))
	back := mustV5(t, srv.mqttAddr, "will-resumed", nil, v5Options{clean: false, expiry: 60})
	if time.Since(dropped) >= delay {
		t.Fatalf("the test was too slow: will-resumed reconnected %v after dropping, after its will delay", time.Since(dropped))
	}
	if !back.sessionPresent() {
		t.Errorf("will-resumed reconnected within its session expiry without a session")
	}

	// MQTT 5, connection dropped: the will is published at once.
	w5 := mustV5(t, srv.mqttAddr, "will-v5", nil, v5Options{clean: true, will: will("will/v5", "v5-gone")})
	w5.drop()
	if m := firstOn("will/v5"); m.Payload != "v5-gone" {
		t.Errorf("will of a dropped MQTT 5 connection: got %v, want v5-gone", m)
	}

	// MQTT 3.1.1, connection dropped.
	w3 := mustV3(t, srv.mqttAddr, "will-v3", nil, v3Options{clean: true, will: will("will/v3", "v3-gone")})
	w3.drop()
	if m := firstOn("will/v3"); m.Payload != "v3-gone" {
		t.Errorf("will of a dropped MQTT 3.1.1 connection: got %v, want v3-gone", m)
	}

	// A normal DISCONNECT discards the will [MQTT-3.1.2-10], also when the
	// same client id connects again at once, possibly before the server
	// has finished with the old connection. A last connection of that
	// client then drops: the first will/normal message must be its will.
	for i := range 10 {
		n := mustV5(t, srv.mqttAddr, "will-normal", nil, v5Options{clean: true, will: will("will/normal", fmt.Sprintf("normal-%d", i))})
		n.disconnect(t)
	}
	last := mustV5(t, srv.mqttAddr, "will-normal", nil, v5Options{clean: true, will: will("will/normal", "normal-last")})
	last.drop()
	if m := firstOn("will/normal"); m.Payload != "normal-last" {
		t.Errorf("a will was published after a normal DISCONNECT: first will/normal message is %v, want normal-last", m)
	}

	// The delayed will (m.At, when the watcher acknowledged it, is after
	// its publication).
	m := firstOn("will/delayed")
	if elapsed := m.At.Sub(dropped); m.Payload != "delayed-gone" || elapsed < delay {
		t.Errorf("delayed will: got %v %v after the drop, want delayed-gone after at least %v", m, elapsed, delay)
	}

	// Once the will delay has passed with a margin, a fence on
	// will/resumed must be the first message there.
	time.Sleep(time.Until(dropped.Add(delay + time.Second)))
	srv.publishData(t, "will/resumed", "resumed-fence")
	if m := firstOn("will/resumed"); m.Payload != "resumed-fence" {
		t.Errorf("the will of a session resumed within its will delay was published: first will/resumed message is %v", m)
	}
	back.disconnect(t)
}

// ---------------------------------------------------------------------------
// 4 and 5. Persistent sessions

// restartMode says what happens to the server while persistent sessions are
// offline.
type restartMode int

const (
	noRestart restartMode = iota
	gracefulRestart
	kill9Restart
)

// TestMQTTSessionReplaysFromLog: MQTT 3.1.1 (clean session 0) and MQTT 5
// (session expiry) clients subscribe at QoS 1 to persisted:dev/+ and
// disconnect; 60 messages (50 over REST, 10 over MQTT) are published on two
// channels, one of which only becomes active while they are away. On
// reconnecting with the same client id they get Session Present and every
// message exactly once, in order, then nothing but the fences published
// after them.
func TestMQTTSessionReplaysFromLog(t *testing.T) {
	testSessionResume(t, noRestart)
}

// TestMQTTSessionSurvivesGracefulRestart is TestMQTTSessionReplaysFromLog
// with a graceful restart (SIGTERM) of the server, on the same addresses,
// between disconnect and reconnect, and messages published both before and
// after it: exactly once, in order. A third session, connected when the
// server stops, must then get exactly what was published after the stop.
func TestMQTTSessionSurvivesGracefulRestart(t *testing.T) {
	testSessionResume(t, gracefulRestart)
}

// TestMQTTSessionSurvivesKill9 is the same with SIGKILL instead; the third
// session has been idle for more than a checkpoint interval when the server
// dies.
//
// Session positions are stored at DISCONNECT and checkpointed every second
// (checkpointInterval), not on every acknowledgement: after a SIGKILL a
// session may resume from its last checkpoint, so the messages it
// acknowledged during the last interval before the kill may be delivered
// again (MQTT QoS 1 is at-least-once). Those duplicates, and only those,
// are tolerated: they must come first, in order, and be messages the client
// acknowledged less than checkpointInterval (plus half a second for the
// checkpoint's own write) before the kill (see ackedBefore). Here every
// acknowledgement is older than that, so every session must get every
// message exactly once. Nothing may be lost.
func TestMQTTSessionSurvivesKill9(t *testing.T) {
	testSessionResume(t, kill9Restart)
}

// TestMQTTSessionSurvivesKill9WhileReceiving: an MQTT 5 session is
// receiving on a channel that appeared moments before the server is killed
// with SIGKILL, before any checkpoint could store its position there.
// After a restart on the same addresses, what was published while it was
// away must reach it; only the messages it acknowledged within the last
// checkpoint interval may come again, first (see
// TestMQTTSessionSurvivesKill9).
func TestMQTTSessionSurvivesKill9WhileReceiving(t *testing.T) {
	srv := startMQTTServer(t)
	const ch = "persisted:recv/new"
	in := newInbox()
	c := mustV5(t, srv.mqttAddr, "recv-online", in, v5Options{clean: true, expiry: 3600})
	c.mustSubscribe(t, paho.SubscribeOptions{Topic: "persisted:recv/+", QoS: 1})

	before := numbered("before", 5)
	srv.publishData(t, ch, before...)
	in.waitFor(t, 0, ch, before[len(before)-1])
	mark := in.len()
	killedAt := time.Now()
	srv.kill()
	srv.start(t)

	after := numbered("after", 5)
	srv.publishData(t, ch, after...)
	c = mustV5(t, srv.mqttAddr, "recv-online", in, v5Options{clean: false, expiry: 3600})
	if !c.sessionPresent() {
		t.Fatalf("recv-online: no session after the restart")
	}
	if cont := c.continuity(); cont != "" {
		t.Errorf("recv-online: CONNACK reports a continuity gap: %q", cont)
	}
	srv.publishData(t, ch, "fence")
	// A missing fence is reported by checkResumed.
	msgs, _ := in.tryWait(func(msgs []mqttMessage) bool { return has(msgs[mark:], ch, "fence") })
	checkResumed(t, "recv-online", ch, onTopic(msgs[mark:], ch), append(after, "fence"), ackedBefore(msgs[:mark], ch, killedAt))
}

// ackedBefore lists the payloads of the messages of channel ch among msgs
// that the client acknowledged within a checkpoint interval (and half a
// second for the checkpoint's write) before killedAt: the ones a session
// may get again after a SIGKILL.
func ackedBefore(msgs []mqttMessage, ch string, killedAt time.Time) []string {
	var out []string
	for _, m := range onTopic(msgs, ch) {
		if m.At.After(killedAt.Add(-checkpointInterval - 500*time.Millisecond)) {
			out = append(out, m.Payload)
		}
	}
	return out
}

// sessionClient is one persistent-session subscriber of testSessionResume.
type sessionClient struct {
	name string
	v3   bool
	in   *mqttInbox
	v5c  *v5Client
	v3c  *v3Client
	// mark is the inbox length when the session went offline.
	mark int
}

// connect connects the client to its persistent session: clean session 0
// for MQTT 3.1.1; for MQTT 5 a session expiry of an hour, with Clean Start
// the first time only. Session Present must be 0 the first time and 1
// after, and an MQTT 5 CONNACK must not report a continuity gap.
func (c *sessionClient) connect(t *testing.T, addr string, first bool) {
	t.Helper()
	if c.v3 {
		c.v3c = mustV3(t, addr, c.name, c.in, v3Options{clean: false})
		if c.v3c.present == first {
			t.Fatalf("%s: Session Present %t on connecting (first connection: %t)", c.name, c.v3c.present, first)
		}
		return
	}
	c.v5c = mustV5(t, addr, c.name, c.in, v5Options{clean: first, expiry: 3600})
	if c.v5c.sessionPresent() == first {
		t.Fatalf("%s: Session Present %t on connecting (first connection: %t)", c.name, c.v5c.sessionPresent(), first)
	}
	if cont := c.v5c.continuity(); cont != "" {
		t.Errorf("%s: CONNACK reports a continuity gap: %q", c.name, cont)
	}
}

// subscribe subscribes to each filter at QoS 1.
func (c *sessionClient) subscribe(t *testing.T, filters ...string) {
	t.Helper()
	for _, f := range filters {
		if c.v3 {
			c.v3c.mustSubscribe(t, f, 1)
		} else {
			c.v5c.mustSubscribe(t, paho.SubscribeOptions{Topic: f, QoS: 1})
		}
	}
}

// disconnect ends the connection with a normal DISCONNECT; the session
// stays on the server.
func (c *sessionClient) disconnect(t *testing.T) {
	t.Helper()
	if c.v3 {
		c.v3c.disconnect()
	} else {
		c.v5c.disconnect(t)
	}
	c.mark = c.in.len()
}

// testSessionResume runs the persistent-session scenario of
// TestMQTTSessionReplaysFromLog with the given restart between the
// sessions going offline and coming back.
func testSessionResume(t *testing.T, mode restartMode) {
	srv := startMQTTServer(t)
	const (
		filter     = "persisted:dev/+"
		continuity = "$switchboard/continuity"
	)
	chA, chB := "persisted:dev/a", "persisted:dev/b"

	offline := []*sessionClient{
		{name: "dev-v3", v3: true, in: newInbox()},
		{name: "dev-v5", in: newInbox()},
	}
	clients := offline
	// With a restart, a third session is still connected when the server
	// stops.
	var online *sessionClient
	if mode != noRestart {
		online = &sessionClient{name: "dev-online", in: newInbox()}
		clients = append(clients, online)
	}
	for _, c := range clients {
		c.connect(t, srv.mqttAddr, true)
		c.subscribe(t, filter, continuity)
	}

	// Connected: the sessions get messages of persisted:dev/a and
	// acknowledge them.
	pre := numbered("pre", 5)
	srv.publishData(t, chA, pre...)
	for _, c := range clients {
		msgs := c.in.waitFor(t, 0, chA, pre[len(pre)-1])
		if got := payloadsOf(msgs, chA); !slices.Equal(got, pre) {
			t.Fatalf("%s before going offline: got %q, want %q", c.name, got, pre)
		}
	}
	for _, c := range offline {
		c.disconnect(t)
	}

	// Offline: 50 messages over REST and 10 over MQTT, on persisted:dev/a
	// and on persisted:dev/b, which becomes active only now.
	want := map[string][]string{}
	publishOffline := func(prefix string, n int) {
		t.Helper()
		pub := mustV5(t, srv.mqttAddr, "dev-publisher-"+prefix, nil, v5Options{clean: true})
		for i := range n {
			ch := chA
			if i%3 == 2 {
				ch = chB
			}
			p := fmt.Sprintf("%s-%03d", prefix, i)
			if i%6 == 5 {
				pub.publish(t, ch, p, 1)
			} else {
				srv.publishData(t, ch, p)
			}
			want[ch] = append(want[ch], p)
		}
		pub.disconnect(t)
	}
	publishOffline("off", 60)

	if online != nil {
		// The connected session has everything so far.
		for _, ch := range []string{chA, chB} {
			msgs := online.in.waitFor(t, 0, ch, want[ch][len(want[ch])-1])
			live := want[ch]
			if ch == chA {
				live = append(slices.Clone(pre), live...)
			}
			if got := payloadsOf(msgs, ch); !slices.Equal(got, live) {
				t.Errorf("%s, %s while connected: got %q, want %q", online.name, ch, got, live)
			}
		}
		online.mark = online.in.len()
	}
	var killedAt time.Time
	switch mode {
	case gracefulRestart:
		// Subscribing again (to a topic without messages) returns once the
		// server has read all that the connected session sent before: its
		// acknowledgements, without which a message would rightly be
		// delivered again.
		online.subscribe(t, continuity)
		srv.stop(t)
		srv.start(t)
	case kill9Restart:
		// The server stays idle for longer than a checkpoint interval, so
		// that every position of every session is due to be stored when it
		// dies. (Nothing is written in between: a write could make the
		// store persist what a checkpoint left unsynced.)
		time.Sleep(checkpointInterval + 500*time.Millisecond)
		killedAt = time.Now()
		srv.kill()
		srv.start(t)
	}
	// More while the sessions are offline (after the restart, if any).
	publishOffline("post", 12)

	for _, c := range clients {
		c.connect(t, srv.mqttAddr, false)
	}
	fences := map[string]string{chA: "fence-a", chB: "fence-b"}
	for ch, f := range fences {
		srv.publishData(t, ch, f)
	}

	for _, c := range clients {
		// A missing fence is reported by checkResumed below.
		msgs, _ := c.in.tryWait(func(msgs []mqttMessage) bool {
			return has(msgs[c.mark:], chA, fences[chA]) && has(msgs[c.mark:], chB, fences[chB])
		})
		before, after := msgs[:c.mark], msgs[c.mark:]
		for _, ch := range []string{chA, chB} {
			expect := slices.Clone(want[ch])
			if c == online {
				// It got the offline messages live; after the restart it
				// needs only what came since.
				expect = slices.DeleteFunc(expect, func(p string) bool { return strings.HasPrefix(p, "off-") })
			}
			expect = append(expect, fences[ch])
			var tolerated []string
			if mode == kill9Restart {
				tolerated = ackedBefore(before, ch, killedAt)
			}
			checkResumed(t, c.name, ch, onTopic(after, ch), expect, tolerated)
		}
		if notes := onTopic(msgs, continuity); len(notes) > 0 {
			t.Errorf("%s: continuity notices for a complete resume: %v", c.name, notes)
		}
	}
}

// checkResumed checks what a session got on one channel after resuming:
// want, exactly, at QoS 1 without RETAIN, optionally preceded by a suffix
// of tolerated (messages the session had acknowledged just before a
// SIGKILL, see TestMQTTSessionSurvivesKill9).
func checkResumed(t *testing.T, who, ch string, got []mqttMessage, want, tolerated []string) {
	t.Helper()
	payloads := payloadsOf(got, ch)
	replayed := -1
	for k := 0; k <= len(tolerated); k++ {
		if slices.Equal(payloads, append(slices.Clone(tolerated[len(tolerated)-k:]), want...)) {
			replayed = k
			break
		}
	}
	if replayed < 0 {
		t.Errorf("%s, %s after resuming: got %d messages %q,\nwant %q (preceded by at most %d redelivered of %q)",
			who, ch, len(payloads), payloads, want, len(tolerated), tolerated)
		return
	}
	if replayed > 0 {
		t.Logf("%s, %s: %d messages acknowledged within the checkpoint interval before SIGKILL were delivered again: %q",
			who, ch, replayed, tolerated[len(tolerated)-replayed:])
	}
	for _, m := range got {
		if m.QoS != 1 || m.Retain {
			t.Errorf("%s, %s: %v, want QoS 1 without RETAIN", who, ch, m)
		}
	}
}

// ---------------------------------------------------------------------------
// 6. Wildcards

// TestMQTTWildcards checks + and # filters over channels active before the
// subscription and channels that appear after it, that "a/#" also matches
// "a", and that a wildcard in the first level does not match topics
// starting with '$' [MQTT-4.7.2-1].
func TestMQTTWildcards(t *testing.T) {
	srv := startMQTTServer(t)
	inA, inB, inC := newInbox(), newInbox(), newInbox()

	// c subscribes to everything at QoS 2, and to $test/x at QoS 0: a
	// message of $test/x (published over REST, so QoS 2) must come at QoS
	// 0, showing that "#" and "+/x" did not match it.
	c := mustV5(t, srv.mqttAddr, "wild-c", inC, v5Options{clean: true})
	c.mustSubscribe(t,
		paho.SubscribeOptions{Topic: "#", QoS: 2},
		paho.SubscribeOptions{Topic: "+/x", QoS: 2},
		paho.SubscribeOptions{Topic: "$test/x", QoS: 0})

	// Two channels become active before a and b subscribe. Once c, which
	// can only have been attached to them when they opened, has their
	// first messages, the server knows them as active channels.
	early := []string{"wild/x/temp", "wild"}
	for _, topic := range early {
		srv.publishData(t, topic, topic+"#early")
	}
	for _, topic := range early {
		inC.waitFor(t, 0, topic, topic+"#early")
	}

	a := mustV5(t, srv.mqttAddr, "wild-a", inA, v5Options{clean: true})
	a.mustSubscribe(t, paho.SubscribeOptions{Topic: "wild/+/temp", QoS: 1})
	// "wild/#" also matches the channel "wild", active before, and "late/#"
	// the channel "late", which appears after (MQTT 5 section 4.7.1.2).
	b := mustV3(t, srv.mqttAddr, "wild-b", inB, v3Options{clean: true})
	b.mustSubscribe(t, "wild/#", 1)
	b.mustSubscribe(t, "late/#", 1)

	pub := mustV5(t, srv.mqttAddr, "wild-pub", nil, v5Options{clean: true})
	topics := []string{"wild/x/temp", "wild/y/temp", "wild/y/hum", "wild", "late", "wild/z/temp/deep", "other/q", "$test/x"}
	sent := map[string][]string{}
	for i := range 3 {
		for _, topic := range topics {
			p := fmt.Sprintf("%s#%d", topic, i)
			if strings.HasPrefix(topic, "$") {
				srv.publishData(t, topic, p) // MQTT clients may not publish to $ topics
			} else {
				pub.publish(t, topic, p, 1)
			}
			sent[topic] = append(sent[topic], p)
		}
	}
	expect := map[string][]string{
		"wild-a": {"wild/x/temp", "wild/y/temp"},
		"wild-b": {"wild/x/temp", "wild/y/temp", "wild/y/hum", "wild", "late", "wild/z/temp/deep"},
		"wild-c": topics,
	}
	// Fences on every topic: once a subscriber has the fence of each topic
	// it matches, each of those must hold exactly what was sent, and no
	// other topic anything.
	for _, topic := range topics {
		srv.publishData(t, topic, topic+"#fence")
	}
	for _, s := range []struct {
		name string
		in   *mqttInbox
	}{{"wild-a", inA}, {"wild-b", inB}, {"wild-c", inC}} {
		msgs, ok := s.in.tryWait(func(msgs []mqttMessage) bool {
			for _, topic := range expect[s.name] {
				if !has(msgs, topic, topic+"#fence") {
					return false
				}
			}
			return true
		})
		if !ok {
			t.Errorf("%s: timed out waiting for the fences of %v", s.name, expect[s.name])
		}
		seen := map[string]bool{}
		for _, topic := range expect[s.name] {
			seen[topic] = true
			want := append(slices.Clone(sent[topic]), topic+"#fence")
			if s.name == "wild-c" && slices.Contains(early, topic) {
				want = append([]string{topic + "#early"}, want...)
			}
			if got := payloadsOf(msgs, topic); !slices.Equal(got, want) {
				t.Errorf("%s, %s: got %q, want %q", s.name, topic, got, want)
			}
		}
		for _, m := range msgs {
			if !seen[m.Topic] {
				t.Errorf("%s got %v, which its filters do not match", s.name, m)
			}
		}
		if s.name == "wild-c" {
			for _, m := range onTopic(msgs, "$test/x") {
				if m.QoS != 0 {
					t.Errorf("wild-c: %v arrived at QoS %d: a first-level wildcard matched a $ topic", m, m.QoS)
				}
			}
		}
	}
}

// ---------------------------------------------------------------------------
// 7. Shared subscriptions

// TestMQTTSharedSubscription: two MQTT 5 members of $share/g/jobs/# split
// 100 messages over two channels: each message goes to exactly one member,
// both get some, and each member sees each channel in order. An ordinary
// subscriber to jobs/# still gets all of them.
func TestMQTTSharedSubscription(t *testing.T) {
	srv := startMQTTServer(t)
	in1, in2, inAll := newInbox(), newInbox(), newInbox()
	m1 := mustV5(t, srv.mqttAddr, "share-1", in1, v5Options{clean: true})
	m1.mustSubscribe(t, paho.SubscribeOptions{Topic: "$share/g/jobs/#", QoS: 1})
	m2 := mustV5(t, srv.mqttAddr, "share-2", in2, v5Options{clean: true})
	m2.mustSubscribe(t, paho.SubscribeOptions{Topic: "$share/g/jobs/#", QoS: 1})
	all := mustV5(t, srv.mqttAddr, "share-all", inAll, v5Options{clean: true})
	all.mustSubscribe(t, paho.SubscribeOptions{Topic: "jobs/#", QoS: 1})

	pub := mustV5(t, srv.mqttAddr, "share-pub", nil, v5Options{clean: true})
	const n = 100
	order := map[string]int{}
	for i := range n {
		topic := []string{"jobs/a", "jobs/b"}[i%2]
		p := fmt.Sprintf("job-%03d", i)
		pub.publish(t, topic, p, 1)
		order[p] = i
	}
	// Everything has arrived once the members hold n messages between
	// them; fences on both channels then show nothing else follows.
	total := func() int { return in1.len() + in2.len() }
	waitUntil(t, mqttWait, fmt.Sprintf("%d messages across the shared group", n), func() bool { return total() >= n })
	srv.publishData(t, "jobs/a", "fence-a")
	srv.publishData(t, "jobs/b", "fence-b")
	waitUntil(t, mqttWait, "both fences across the shared group", func() bool {
		got := append(in1.all(), in2.all()...)
		return slices.ContainsFunc(got, func(m mqttMessage) bool { return m.Payload == "fence-a" }) &&
			slices.ContainsFunc(got, func(m mqttMessage) bool { return m.Payload == "fence-b" })
	})

	count := map[string]int{}
	for _, member := range []struct {
		name string
		in   *mqttInbox
	}{{"share-1", in1}, {"share-2", in2}} {
		msgs := member.in.all()
		jobs := 0
		for _, topic := range []string{"jobs/a", "jobs/b"} {
			last := -1
			for _, p := range payloadsOf(msgs, topic) {
				count[p]++
				if strings.HasPrefix(p, "fence") {
					continue
				}
				jobs++
				if order[p] < last {
					t.Errorf("%s: %s out of order on %s", member.name, p, topic)
				}
				last = order[p]
			}
		}
		if jobs == 0 {
			t.Errorf("%s got none of the %d messages", member.name, n)
		}
		t.Logf("%s got %d of %d", member.name, jobs, n)
	}
	for p := range order {
		if count[p] != 1 {
			t.Errorf("%s delivered to %d members of the group, want 1", p, count[p])
		}
	}
	if len(count) != n+2 {
		t.Errorf("the group received %d distinct messages, want %d and the two fences", len(count), n)
	}

	inAll.waitFor(t, 0, "jobs/b", "fence-b")
	msgs := inAll.waitFor(t, 0, "jobs/a", "fence-a")
	for i, topic := range []string{"jobs/a", "jobs/b"} {
		var want []string
		for j := i; j < n; j += 2 {
			want = append(want, fmt.Sprintf("job-%03d", j))
		}
		want = append(want, "fence-"+topic[len(topic)-1:])
		if got := payloadsOf(msgs, topic); !slices.Equal(got, want) {
			t.Errorf("ordinary subscriber, %s: got %q, want %q", topic, got, want)
		}
	}
}

// ---------------------------------------------------------------------------
// 8. Cross-protocol

// TestMQTTCrossProtocol: what MQTT clients publish is in the REST history,
// in order, with MQTT 5 user properties as extras ("name" as the message
// name) and the content type as contentType; what REST publishes reaches
// MQTT subscribers of both versions, in order, with extras as MQTT 5 user
// properties.
func TestMQTTCrossProtocol(t *testing.T) {
	srv := startMQTTServer(t)

	t.Run("MQTT to REST", func(t *testing.T) {
		const ch = "xp/mqtt-to-rest"
		p5 := mustV5(t, srv.mqttAddr, "xp-pub5", nil, v5Options{clean: true})
		utf8 := byte(1)
		p5.mustSend(t, &paho.Publish{Topic: ch, QoS: 1, Payload: []byte("hello"), Properties: &paho.PublishProperties{
			ContentType: "text/plain", PayloadFormat: &utf8,
			User: paho.UserProperties{{Key: "name", Value: "reading"}, {Key: "site", Value: "north"}, {Key: "floor", Value: "3"}},
		}})
		p5.mustSend(t, &paho.Publish{Topic: ch, QoS: 0, Payload: []byte(`{"t":21.5}`), Properties: &paho.PublishProperties{
			ContentType: "application/json", User: paho.UserProperties{{Key: "site", Value: "south"}},
		}})
		p5.mustSend(t, &paho.Publish{Topic: ch, QoS: 2, Payload: []byte{0, 1, 2, 0xff}})
		p3 := mustV3(t, srv.mqttAddr, "xp-pub3", nil, v3Options{clean: true})
		p3.publish(t, ch, "from-v3", 1, false)

		type want struct {
			data, encoding, name, contentType string
			extras                            map[string]string
		}
		wants := []want{
			{"hello", "utf-8", "reading", "text/plain", map[string]string{"site": "north", "floor": "3", "mqtt.qos": "1"}},
			{`{"t":21.5}`, "", "", "application/json", map[string]string{"site": "south", "mqtt.qos": "0"}},
			{"AAEC/w==", "base64", "", "", map[string]string{"mqtt.qos": "2"}},
			{"from-v3", "", "", "", map[string]string{"mqtt.qos": "1"}},
		}
		hist := srv.fullHistory(t, ch)
		if len(hist) != len(wants) {
			t.Fatalf("history has %d messages, want %d: %+v", len(hist), len(wants), hist)
		}
		for i, w := range wants {
			h := hist[i]
			if h.text() != w.data || h.Encoding != w.encoding || h.Name != w.name || h.ContentType != w.contentType || !maps.Equal(h.Extras, w.extras) {
				t.Errorf("history message %d: data %q encoding %q name %q contentType %q extras %v,\nwant data %q encoding %q name %q contentType %q extras %v",
					i, h.text(), h.Encoding, h.Name, h.ContentType, h.Extras, w.data, w.encoding, w.name, w.contentType, w.extras)
			}
		}
	})

	t.Run("REST to MQTT", func(t *testing.T) {
		const ch = "xp/rest-to-mqtt"
		in5, in3 := newInbox(), newInbox()
		s5 := mustV5(t, srv.mqttAddr, "xp-sub5", in5, v5Options{clean: true})
		s5.mustSubscribe(t, paho.SubscribeOptions{Topic: ch, QoS: 2})
		s3 := mustV3(t, srv.mqttAddr, "xp-sub3", in3, v3Options{clean: true})
		s3.mustSubscribe(t, ch, 2)

		srv.publish(t, ch, map[string]any{"name": "evt", "data": "r-first", "contentType": "text/plain", "extras": map[string]string{"trace": "abc"}})
		srv.publish(t, ch, map[string]any{"data": map[string]int{"k": 1}})
		want := []string{"r-first", `{"k":1}`}
		// Single publishes, then a batch of ten in one request.
		var batch []map[string]any
		for i, p := range numbered("r", 20) {
			if i < 10 {
				srv.publishData(t, ch, p)
			} else {
				batch = append(batch, map[string]any{"data": p})
			}
			want = append(want, p)
		}
		srv.publish(t, ch, batch...)

		for _, s := range []struct {
			name string
			in   *mqttInbox
		}{{"v5", in5}, {"v3.1.1", in3}} {
			msgs := s.in.waitFor(t, 0, ch, want[len(want)-1])
			if got := payloadsOf(msgs, ch); !slices.Equal(got, want) {
				t.Errorf("%s subscriber: got %q, want %q", s.name, got, want)
			}
			for _, m := range msgs {
				if m.QoS != 2 || m.Retain {
					t.Errorf("%s subscriber: %v, want QoS 2 (REST publishes are durable) without RETAIN", s.name, m)
				}
			}
		}
		msgs := in5.all()
		first, second := msgs[0], msgs[1]
		if wantProps := []string{"name=evt", "trace=abc"}; first.ContentType != "text/plain" || !slices.Equal(sortedCopy(userProps(first.User)), wantProps) {
			t.Errorf("v5 subscriber: first message content type %q, user properties %v; want text/plain and %v",
				first.ContentType, userProps(first.User), wantProps)
		}
		if !second.UTF8 || len(second.User) != 0 {
			t.Errorf("v5 subscriber: JSON message has payload format indicator %t and user properties %v; want UTF-8 and none",
				second.UTF8, userProps(second.User))
		}
	})
}

// TestMQTTOverWebSocket: an MQTT 5 client over WebSocket at /v1/mqtt on the
// HTTP port and one over TCP exchange messages both ways.
func TestMQTTOverWebSocket(t *testing.T) {
	srv := startMQTTServer(t)
	wsDial := func() (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ws, _, err := websocket.Dial(ctx, "ws://"+srv.httpAddr+"/v1/mqtt", &websocket.DialOptions{Subprotocols: []string{"mqtt"}})
		if err != nil {
			return nil, err
		}
		return websocket.NetConn(context.Background(), ws, websocket.MessageBinary), nil
	}
	inWS, inTCP := newInbox(), newInbox()
	overWS := mustV5(t, "", "ws-client", inWS, v5Options{clean: true, dial: wsDial})
	overWS.mustSubscribe(t, paho.SubscribeOptions{Topic: "ws/down", QoS: 1})
	overTCP := mustV5(t, srv.mqttAddr, "tcp-client", inTCP, v5Options{clean: true})
	overTCP.mustSubscribe(t, paho.SubscribeOptions{Topic: "ws/up", QoS: 1})

	want := numbered("m", 10)
	for _, p := range want {
		overWS.publish(t, "ws/up", p, 1)
		overTCP.publish(t, "ws/down", p, 1)
	}
	if got := payloadsOf(inTCP.waitFor(t, 0, "ws/up", want[len(want)-1]), "ws/up"); !slices.Equal(got, want) {
		t.Errorf("TCP client got %q from the WebSocket client, want %q", got, want)
	}
	if got := payloadsOf(inWS.waitFor(t, 0, "ws/down", want[len(want)-1]), "ws/down"); !slices.Equal(got, want) {
		t.Errorf("WebSocket client got %q from the TCP client, want %q", got, want)
	}
}

// ---------------------------------------------------------------------------
// 9. mosquitto clients

// requireMosquitto skips the test when Debian's mosquitto clients are not
// installed, or fails it when SWITCHBOARD_REQUIRE_MOSQUITTO=1 (as in CI).
func requireMosquitto(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"mosquitto_pub", "mosquitto_sub"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("SWITCHBOARD_REQUIRE_MOSQUITTO") == "1" {
				t.Fatalf("%s is not installed and SWITCHBOARD_REQUIRE_MOSQUITTO=1: run conformance/mqtt_install.sh", tool)
			}
			t.Skipf("%s is not installed: run conformance/mqtt_install.sh (SWITCHBOARD_REQUIRE_MOSQUITTO=1 makes this a failure)", tool)
		}
	}
	if _, err := exec.LookPath("stdbuf"); err != nil {
		t.Fatalf("stdbuf (coreutils) is needed to read mosquitto_sub's output as it comes: %v", err)
	}
}

// mosquittoArgs are the connection flags of a mosquitto client.
func (m *mqttServer) mosquittoArgs(version, id string) []string {
	host, port, _ := net.SplitHostPort(m.mqttAddr)
	return []string{"-h", host, "-p", port, "-u", mqttUser, "-P", mqttSecret, "-V", version, "-i", id}
}

// mosquittoPub runs mosquitto_pub with args, stdin as its input, and fails
// the test unless it succeeds.
func (m *mqttServer) mosquittoPub(t *testing.T, version, id, stdin string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "mosquitto_pub", append(m.mosquittoArgs(version, id), args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub %v: %v\n%s", args, err, out)
	}
}

// mosquittoSub is a running mosquitto_sub that prints each message as
// "MSG <qos> <retain> <payload>".
type mosquittoSub struct {
	cmd        *exec.Cmd
	subscribed chan struct{}
	done       chan struct{}
	mu         sync.Mutex
	msgs       []string
	output     strings.Builder
}

// startMosquittoSub runs mosquitto_sub -C count on topic and waits for its
// SUBACK, which it reports in its debug output (-d). stdbuf makes that
// output line-buffered: mosquitto_sub flushes only message lines itself.
func (m *mqttServer) startMosquittoSub(t *testing.T, version, id, topic string, qos, count int) *mosquittoSub {
	t.Helper()
	args := append([]string{"-oL", "mosquitto_sub"}, m.mosquittoArgs(version, id)...)
	args = append(args, "-t", topic, "-q", strconv.Itoa(qos), "-C", strconv.Itoa(count), "-W", "30", "-d", "-F", "MSG %q %r %p")
	s := &mosquittoSub{cmd: exec.Command("stdbuf", args...), subscribed: make(chan struct{}), done: make(chan struct{})}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stderr = s.cmd.Stdout
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("mosquitto_sub: %v", err)
	}
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.done
	})
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.output.WriteString(line + "\n")
			if rest, ok := strings.CutPrefix(line, "MSG "); ok {
				s.msgs = append(s.msgs, rest)
			}
			s.mu.Unlock()
			if strings.Contains(line, "received SUBACK") {
				once.Do(func() { close(s.subscribed) })
			}
		}
		_ = s.cmd.Wait()
	}()
	select {
	case <-s.subscribed:
	case <-s.done:
		t.Fatalf("mosquitto_sub exited before subscribing:\n%s", s.out())
	case <-time.After(mqttWait):
		t.Fatalf("mosquitto_sub did not subscribe within %v:\n%s", mqttWait, s.out())
	}
	return s
}

func (s *mosquittoSub) out() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.output.String()
}

// wait waits for mosquitto_sub to exit after its count of messages and
// returns them as "<qos> <retain> <payload>".
func (s *mosquittoSub) wait(t *testing.T) []string {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("mosquitto_sub did not exit:\n%s", s.out())
	}
	if !s.cmd.ProcessState.Success() {
		t.Fatalf("mosquitto_sub: %v\n%s", s.cmd.ProcessState, s.out())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// TestMQTTMosquittoClients: mosquitto_sub (MQTT 3.1.1 at QoS 2, MQTT 5 at
// QoS 1) receives, in order, what mosquitto_pub publishes at QoS 2, 1 and 0
// and what REST publishes, at min(publish, subscribe) QoS; a message
// retained with mosquitto_pub -r reaches a later mosquitto_sub with RETAIN.
func TestMQTTMosquittoClients(t *testing.T) {
	requireMosquitto(t)
	srv := startMQTTServer(t)
	const topic = "mos/feed"
	const n = 8
	sub3 := srv.startMosquittoSub(t, "mqttv311", "mos-sub3", topic, 2, n)
	sub5 := srv.startMosquittoSub(t, "mqttv5", "mos-sub5", topic, 1, n)

	// One process per QoS, each publishing two lines (-l). The QoS 0
	// process goes last: it does not wait for the server, so a later
	// publisher could overtake it.
	srv.mosquittoPub(t, "mqttv5", "mos-pub-q2", "q2-a\nq2-b\n", "-t", topic, "-q", "2", "-l")
	srv.mosquittoPub(t, "mqttv311", "mos-pub-q1", "q1-a\nq1-b\n", "-t", topic, "-q", "1", "-l")
	srv.publishData(t, topic, "rest-a", "rest-b")
	srv.mosquittoPub(t, "mqttv311", "mos-pub-q0", "q0-a\nq0-b\n", "-t", topic, "-q", "0", "-l")

	published := []struct {
		payload string
		qos     int // REST publishes count as QoS 2
	}{{"q2-a", 2}, {"q2-b", 2}, {"q1-a", 1}, {"q1-b", 1}, {"rest-a", 2}, {"rest-b", 2}, {"q0-a", 0}, {"q0-b", 0}}
	for _, s := range []struct {
		name string
		sub  *mosquittoSub
		qos  int
	}{{"mosquitto_sub MQTT 3.1.1 QoS 2", sub3, 2}, {"mosquitto_sub MQTT 5 QoS 1", sub5, 1}} {
		var want []string
		for _, p := range published {
			want = append(want, fmt.Sprintf("%d 0 %s", min(p.qos, s.qos), p.payload))
		}
		if got := s.sub.wait(t); !slices.Equal(got, want) {
			t.Errorf("%s: got %q, want %q", s.name, got, want)
		}
	}

	// Retained with mosquitto_pub -r, then seen by later subscribers.
	srv.mosquittoPub(t, "mqttv311", "mos-pub-r", "", "-t", "mos/kept", "-q", "1", "-r", "-m", "kept-1")
	srv.mosquittoPub(t, "mqttv5", "mos-pub-r", "", "-t", "mos/kept", "-q", "1", "-r", "-m", "kept-2")
	for _, version := range []string{"mqttv311", "mqttv5"} {
		sub := srv.startMosquittoSub(t, version, "mos-late-"+version, "mos/kept", 2, 2)
		srv.publishData(t, "mos/kept", "kept-live")
		if got, want := sub.wait(t), []string{"1 1 kept-2", "2 0 kept-live"}; !slices.Equal(got, want) {
			t.Errorf("%s mosquitto_sub after mosquitto_pub -r: got %q, want %q", version, got, want)
		}
	}
}

// ---------------------------------------------------------------------------
// 10. Authentication and authorization

// sensorKey is a second key, which may only publish and subscribe under
// "open/".
const sensorKey = `  - name: sensor
    secret: sensor-secret
    capabilities: {"open/*": [publish, subscribe]}
`

// writeRestrictedConfig writes the harness configuration with sensorKey
// added to its keys and returns the file's path.
func writeRestrictedConfig(t *testing.T) string {
	t.Helper()
	config := strings.Replace(testConfig, "\nnamespaces:", "\n"+sensorKey+"namespaces:", 1)
	if config == testConfig {
		t.Fatal("the harness configuration has no namespaces section to put the extra key before")
	}
	path := filepath.Join(t.TempDir(), "switchboard.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestMQTTAuth: a wrong password or unknown key is refused in CONNACK
// (0x86 for MQTT 5, 0x04 or 0x05 for MQTT 3.1.1); a key or token limited
// by its capability gets 0x87 (MQTT 5) or 0x80 (MQTT 3.1.1) for filters
// outside it, and a negative PUBACK for topics outside it.
func TestMQTTAuth(t *testing.T) {
	// A later --config replaces the harness's (the last flag wins).
	srv := startMQTTServer(t, "--config", writeRestrictedConfig(t))

	for _, c := range []struct {
		name  string
		creds credentials
	}{
		{"wrong password", credentials{mqttUser, "wrong"}},
		{"unknown key", credentials{"nobody", "whatever"}},
		{"no credentials", credentials{}},
	} {
		cl, err := connectV5(t, srv.mqttAddr, "auth-v5", nil, v5Options{clean: true, creds: &c.creds})
		if err == nil {
			t.Errorf("MQTT 5 connect with %s was accepted", c.name)
		} else if cl.connack == nil || cl.connack.ReasonCode != 0x86 {
			t.Errorf("MQTT 5 connect with %s: CONNACK %+v (%v), want reason code 0x86", c.name, cl.connack, err)
		}
		v3, err := connectV3(t, srv.mqttAddr, "auth-v3", nil, v3Options{clean: true, creds: &c.creds})
		if err == nil {
			t.Errorf("MQTT 3.1.1 connect with %s was accepted", c.name)
		} else if v3.returnCode != 0x04 && v3.returnCode != 0x05 {
			t.Errorf("MQTT 3.1.1 connect with %s: return code %d (%v), want 4 or 5", c.name, v3.returnCode, err)
		}
	}

	// The restricted key over MQTT 5.
	k5 := mustV5(t, srv.mqttAddr, "sensor-v5", nil, v5Options{clean: true, creds: &credentials{"sensor", "sensor-secret"}})
	got := k5.subscribe(t,
		paho.SubscribeOptions{Topic: "open/a", QoS: 1},
		paho.SubscribeOptions{Topic: "closed/a", QoS: 1},
		paho.SubscribeOptions{Topic: "#", QoS: 0},
		paho.SubscribeOptions{Topic: "open/#", QoS: 2})
	if want := []byte{1, 0x87, 0x87, 2}; !slices.Equal(got, want) {
		t.Errorf("restricted key, MQTT 5 SUBACK: %#v, want %#v", got, want)
	}
	if resp, _ := k5.send(t, &paho.Publish{Topic: "closed/a", QoS: 1, Payload: []byte("x")}); resp == nil || resp.ReasonCode != 0x87 {
		t.Errorf("restricted key, MQTT 5 publish outside its capability: response %+v, want PUBACK 0x87", resp)
	}
	k5.publish(t, "open/a", "allowed", 1)
	if hist := srv.fullHistory(t, "closed/a"); len(hist) != 0 {
		t.Errorf("a refused publish reached the channel: %+v", hist)
	}

	// The restricted key over MQTT 3.1.1.
	k3 := mustV3(t, srv.mqttAddr, "sensor-v3", nil, v3Options{clean: true, creds: &credentials{"sensor", "sensor-secret"}})
	res := k3.subscribe(t, map[string]byte{"open/b": 1, "closed/b": 1})
	if res["open/b"] != 1 || res["closed/b"] != 0x80 {
		t.Errorf("restricted key, MQTT 3.1.1 SUBACK: %v, want open/b:1 closed/b:128", res)
	}

	// A token (username "token", the JWT as password) limited to
	// subscribing under open/ and bound to a client id.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, body, err := srv.do(ctx, http.MethodPost, "/v1/tokens", map[string]any{
		"capability": map[string][]string{"open/*": {"subscribe"}}, "clientId": "tok-client", "ttl": "1h"})
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("token request: %v %s", err, body)
	}
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.Token == "" {
		t.Fatalf("token reply %s: %v", body, err)
	}
	tc := mustV5(t, srv.mqttAddr, "tok-client", nil, v5Options{clean: true, creds: &credentials{"token", tok.Token}})
	if got, want := tc.subscribe(t,
		paho.SubscribeOptions{Topic: "open/t", QoS: 1},
		paho.SubscribeOptions{Topic: "closed/t", QoS: 1}), []byte{1, 0x87}; !slices.Equal(got, want) {
		t.Errorf("token, MQTT 5 SUBACK: %#v, want %#v", got, want)
	}
	if resp, _ := tc.send(t, &paho.Publish{Topic: "open/t", QoS: 1, Payload: []byte("x")}); resp == nil || resp.ReasonCode != 0x87 {
		t.Errorf("token without publish: response %+v, want PUBACK 0x87", resp)
	}
	if cl, err := connectV5(t, srv.mqttAddr, "other-client", nil, v5Options{clean: true, creds: &credentials{"token", tok.Token}}); err == nil {
		t.Errorf("a token bound to tok-client connected as other-client")
	} else if cl.connack == nil || cl.connack.ReasonCode < 0x80 {
		t.Errorf("token used with another client id: CONNACK %+v (%v), want a refusal", cl.connack, err)
	}
	if cl, err := connectV5(t, srv.mqttAddr, "tok-client", nil, v5Options{clean: true, creds: &credentials{"token", tok.Token + "x"}}); err == nil {
		t.Errorf("a forged token was accepted")
	} else if cl.connack == nil || cl.connack.ReasonCode != 0x86 {
		t.Errorf("forged token: CONNACK %+v (%v), want reason code 0x86", cl.connack, err)
	}
}

// sortedCopy returns a sorted copy of s.
func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
