package mqtt

import (
	"bufio"
	"bytes"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/channel"
)

// Fuzz targets for the adapter's pure functions: subscription filters,
// topic matching and the PUBLISH ⇔ channel message mapping. Run one with
//
//	go test -run='^$' -fuzz=^FuzzParseSubscriptionFilter$ -fuzztime=20s ./adapters/mqtt/
//
// The seeds added here pass; inputs that failed are kept under
// testdata/fuzz/<Target>/ and run with the ordinary tests (move them aside
// to fuzz further while they still fail: a failing seed stops fuzzing).

// FuzzParseSubscriptionFilter checks that parseSubscriptionFilter never
// panics and that what it accepts is a valid filter that survives the trip
// through its Key, the form sessions are stored and looked up under.
func FuzzParseSubscriptionFilter(f *testing.F) {
	for _, s := range []string{
		"a", "a/b/c", "sensors/+", "sensors/#", "#", "+", "+/+/#", "a//b", "/", "a/",
		"$SYS/#", "$switchboard/continuity", "chat:room-1", "ünïcode/ключ",
		"$share/g/a/b", "$share/group/sensors/#", "$share/g/#", "$share//a", "$share/g", "$share/g+/a", "$share/g/",
		"[?rewind=10]sensors/+", "[?rewind=30s]chat:room-1", "[?rewind=0]a", "[?rewind=x]a", "[?rewind=1&rewind=2]a",
		"[?other=1]a", "[?rewind=1]", "[rewind=1]a", "[?rewind=1", "$share/g/[?rewind=1]a",
		"a/#/b", "a+", "a/b#", "", strings.Repeat("x", channel.MaxNameLen+1), "a\x00b", "\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		sf, err := parseSubscriptionFilter(raw)
		if err != nil {
			return
		}
		if err := validateFilter(sf.Filter); err != nil {
			t.Fatalf("parse(%q) accepted filter %q, which validateFilter refuses: %v", raw, sf.Filter, err)
		}
		if sf.Wildcard() != strings.ContainsAny(sf.Filter, "+#") {
			t.Fatalf("parse(%q): Wildcard() = %v for filter %q", raw, sf.Wildcard(), sf.Filter)
		}
		if !sf.HasRewind && !sf.Rewind.IsZero() {
			t.Fatalf("parse(%q): a rewind %v without HasRewind", raw, sf.Rewind)
		}
		if sf.Group != "" {
			// [MQTT-4.8.2-1] [MQTT-4.8.2-2]
			if strings.ContainsAny(sf.Group, "/+#") {
				t.Fatalf("parse(%q): share name %q contains '/', '+' or '#'", raw, sf.Group)
			}
			if sf.HasRewind {
				t.Fatalf("parse(%q): a shared subscription with a rewind", raw)
			}
		}
		key := sf.Key()
		if !sf.HasRewind && key != raw {
			t.Fatalf("parse(%q): Key() = %q; without a qualifier the key is the filter as written", raw, key)
		}
		again, err := parseSubscriptionFilter(key)
		if err != nil {
			t.Fatalf("parse(%q) = %+v, but its key %q does not parse: %v", raw, sf, key, err)
		}
		if again.Filter != sf.Filter || again.Group != sf.Group || again.HasRewind {
			t.Fatalf("parse(%q) = filter %q group %q; its key %q parses to filter %q group %q rewind %v",
				raw, sf.Filter, sf.Group, key, again.Filter, again.Group, again.HasRewind)
		}
		if again.Key() != key {
			t.Fatalf("key %q re-parses to key %q", key, again.Key())
		}
	})
}

// referenceMatch is MQTT topic matching written from the specification,
// level by level: '+' matches exactly one level, '#' the parent level and
// any number of child levels ("a/#" matches "a", section 4.7.1.2), and a
// filter starting with a wildcard does not match a topic starting with '$'
// [MQTT-4.7.2-1].
func referenceMatch(filter, topic string) bool {
	fl := strings.Split(filter, "/")
	tl := strings.Split(topic, "/")
	if strings.HasPrefix(topic, "$") && (fl[0] == "+" || fl[0] == "#") {
		return false
	}
	for i, level := range fl {
		switch {
		case level == "#":
			return true
		case i >= len(tl):
			return false
		case level != "+" && level != tl[i]:
			return false
		}
	}
	return len(fl) == len(tl)
}

// FuzzMatchTopic checks matchTopic against referenceMatch for valid
// filters and channel names (it must not panic on anything), and that
// every channel a filter matches starts with the filter's literalPrefix,
// which is how the broker looks up the existing channels of a wildcard
// subscription.
func FuzzMatchTopic(f *testing.F) {
	for _, s := range [][2]string{
		{"a/b/c", "a/b/c"}, {"a/b/c", "a/b"}, {"a/+/c", "a/b/c"}, {"a/+/c", "a//c"}, {"a/+", "a"},
		{"a/#", "a/b/c"}, {"a/#", "ab"}, {"#", "a"}, {"#", "/"}, {"+", "/"}, {"+/+", "/"}, {"/#", "/a"},
		{"+/#", "a"}, {"#", "$SYS/x"}, {"+/x", "$SYS/x"}, {"$SYS/+", "$SYS/x"}, {"sensors/+/temp", "sensors/1/temp"},
		{"a/+/#", "a"}, {"a", "a/"}, {"a/", "a"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, filter, topic string) {
		got := matchTopic(filter, topic)
		_ = literalPrefix(filter)
		if validateFilter(filter) != nil || channel.ValidateName(topic) != nil || strings.ContainsAny(topic, "+#") {
			return
		}
		if want := referenceMatch(filter, topic); got != want {
			t.Fatalf("matchTopic(%q, %q) = %v, want %v", filter, topic, got, want)
		}
		if got && !strings.HasPrefix(topic, literalPrefix(filter)) {
			t.Fatalf("%q matches %q, which does not start with its literal prefix %q: a wildcard subscription misses that channel when it already exists",
				filter, topic, literalPrefix(filter))
		}
	})
}

// TestWildcardHashAttachesParentChannel is the end-to-end form of the
// literal prefix property: "parent/#" matches the channel "parent" itself,
// so subscribing to it while "parent" is active must deliver what is
// published there next.
func TestWildcardHashAttachesParentChannel(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	pub := f.v3(t, "parent-pub", true)
	wait(t, pub.Publish("parent", 1, false, "before"))
	// The subscription must find the channel among the active ones: no
	// channel-opened event will announce it again.
	if !slices.ContainsFunc(f.e.ActiveChannels("parent", "", 10), func(ci core.ChannelInfo) bool { return ci.Name == "parent" }) {
		t.Fatal("the channel parent is not active after a publish")
	}
	sub := f.v3(t, "parent-sub", true)
	r := newReceived()
	wait(t, sub.Subscribe("parent/#", 1, r.handler))
	wait(t, pub.Publish("parent", 1, false, "after"))
	wait(t, pub.Publish("parent/child", 1, false, "child"))
	got := r.wait(t, 2)
	if !strings.Contains(strings.Join(got, ","), "after") {
		t.Errorf("the subscriber of parent/# got %q, without the message published on parent", got)
	}
}

// mappingNow is the clock of FuzzMessageMapping.
var mappingNow = time.Unix(1_700_000_000, 0)

// encodedProperties renders PUBLISH properties as on the wire (property
// length first).
func encodedProperties(p packets.Properties) []byte {
	var b bytes.Buffer
	p.Encode(packets.Publish, packets.Mods{AllowResponseInfo: true}, &b, 0)
	return b.Bytes()
}

// FuzzMessageMapping converts a PUBLISH to a channel message and back for
// an MQTT 5 subscriber. The payload, content type, payload format, user
// properties (the first of repeated keys; keys under the adapter's "mqtt."
// prefix and the empty key are reserved), response topic, correlation data
// and message expiry must survive; an MQTT 3.1.1 subscriber gets the
// payload and no properties. Properties come either from the wire (the
// props argument, decoded by mochi; the converted PUBLISH must then also
// survive mochi's encoder) or, when props does not decode, from the other
// arguments, which may hold values no decoder produces. Nothing may panic.
func FuzzMessageMapping(f *testing.F) {
	wire := []packets.Properties{
		{ContentType: "application/json", PayloadFormat: 1, PayloadFormatFlag: true},
		{ResponseTopic: "reply/to", CorrelationData: []byte{0, 1, 2, 0xff}, MessageExpiryInterval: 60},
		{User: []packets.UserProperty{{Key: "k", Val: "1"}, {Key: "k", Val: "2"}, {Key: "name", Val: "greeting"}, {Key: "mqtt.qos", Val: "2"}}},
		{User: []packets.UserProperty{{Key: "hello", Val: "世界"}}, ContentType: "text/plain", TopicAlias: 3, TopicAliasFlag: true},
	}
	for _, p := range wire {
		f.Add([]byte("payload"), encodedProperties(p), "", "", []byte(nil), "", byte(0), uint32(0), byte(1), false)
	}
	f.Add([]byte(`{"a":1}`), []byte(nil), "application/json", "reply/+", []byte("corr"), "name\x00n\x00x\x00y\x00x\x00z", byte(2), uint32(5), byte(2), true)
	f.Add([]byte{0xff, 0xfe}, []byte(nil), "", "", []byte(nil), "\x00empty key\x00mqtt.retain\x001", byte(2), uint32(0), byte(0), false)
	f.Add([]byte(nil), []byte(nil), "c", "r", []byte{}, "name\x00first\x00name\x00second", byte(1), uint32(1<<32-1), byte(7), true)

	f.Fuzz(func(t *testing.T, payload, props []byte, contentType, responseTopic string, correlation []byte,
		userKV string, format byte, expiry uint32, qos byte, retain bool) {
		var p packets.Properties
		fromWire := len(props) > 0
		if fromWire {
			if _, err := p.Decode(packets.Publish, bytes.NewBuffer(props)); err != nil {
				fromWire, p = false, packets.Properties{}
			}
		}
		if !fromWire {
			p.ContentType, p.ResponseTopic, p.CorrelationData, p.MessageExpiryInterval = contentType, responseTopic, correlation, expiry
			if format > 0 {
				p.PayloadFormat, p.PayloadFormatFlag = format-1, true
			}
			kv := strings.Split(userKV, "\x00")
			for i := 0; i+1 < len(kv); i += 2 {
				p.User = append(p.User, packets.UserProperty{Key: kv[i], Val: kv[i+1]})
			}
		}
		const topic = "fuzz/topic"
		in := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos % 3, Retain: retain},
			TopicName:   topic, Payload: payload, Properties: p,
		}

		utf8Declared := p.PayloadFormatFlag && p.PayloadFormat == 1
		m, err := messageFromPublish(&in)
		if utf8Declared && !utf8.Valid(payload) {
			if err == nil {
				t.Fatal("a payload declared UTF-8 that is not was accepted")
			}
			return
		}
		if err != nil {
			t.Fatalf("messageFromPublish: %v", err)
		}
		if publishedQoS(m) != qos%3 || publishedRetained(m) != retain {
			t.Fatalf("recorded QoS %d retain %v, want %d %v", publishedQoS(m), publishedRetained(m), qos%3, retain)
		}
		// What the engine sets when it accepts the message.
		m.Channel, m.Timestamp = topic, mappingNow.UnixMilli()

		out, live := publishOf(m, 5, mappingNow)
		if !live {
			t.Fatalf("a message published now with expiry %d s counts as expired", p.MessageExpiryInterval)
		}
		checkMapped(t, "publishOf", p, payload, out)
		if p.MessageExpiryInterval > 0 && out.Expiry != mappingNow.Unix()+int64(p.MessageExpiryInterval) {
			t.Errorf("expiry at %d, want %d", out.Expiry, mappingNow.Unix()+int64(p.MessageExpiryInterval))
		}
		if p.MessageExpiryInterval == 0 && out.Expiry != 0 {
			t.Errorf("expiry at %d for a message without expiry", out.Expiry)
		}

		v3, live := publishOf(m, 4, mappingNow)
		if !live || !bytes.Equal(v3.Payload, payload) || !reflect.DeepEqual(v3.Properties, packets.Properties{}) {
			t.Errorf("MQTT 3.1.1 rendering: live %v payload %q properties %+v", live, v3.Payload, v3.Properties)
		}

		if !fromWire || strings.ContainsAny(p.ResponseTopic, "+#") {
			// A Response Topic with wildcards is a protocol error the
			// broker refuses before mapping (TestPublishToWildcardTopic);
			// mochi's encoder leaves it out.
			return
		}
		// Values that came off the wire must go back onto it.
		out.ProtocolVersion, out.Mods.AllowResponseInfo = 5, true
		var buf bytes.Buffer
		if err := out.PublishEncode(&buf); err != nil {
			t.Fatalf("encoding the outbound PUBLISH: %v", err)
		}
		raw, err := readRawPacket(bufio.NewReader(&buf))
		if err != nil {
			t.Fatalf("reading the outbound PUBLISH back: %v", err)
		}
		sent := packets.Packet{ProtocolVersion: 5, FixedHeader: packets.FixedHeader{Type: packets.Publish, Remaining: len(raw.body)}}
		if err := sent.PublishDecode(raw.body); err != nil {
			t.Fatalf("decoding the outbound PUBLISH: %v", err)
		}
		checkMapped(t, "on the wire", p, payload, sent)
	})
}

// checkMapped compares an outbound MQTT 5 PUBLISH with the properties and
// payload the message was published with.
func checkMapped(t *testing.T, stage string, in packets.Properties, payload []byte, out packets.Packet) {
	t.Helper()
	got := out.Properties
	if !bytes.Equal(out.Payload, payload) {
		t.Errorf("%s: payload %q, want %q", stage, out.Payload, payload)
	}
	if got.ContentType != in.ContentType {
		t.Errorf("%s: content type %q, want %q", stage, got.ContentType, in.ContentType)
	}
	if got.ResponseTopic != in.ResponseTopic {
		t.Errorf("%s: response topic %q, want %q", stage, got.ResponseTopic, in.ResponseTopic)
	}
	if !bytes.Equal(got.CorrelationData, in.CorrelationData) {
		t.Errorf("%s: correlation data %q, want %q", stage, got.CorrelationData, in.CorrelationData)
	}
	wantUTF8 := in.PayloadFormatFlag && in.PayloadFormat == 1
	if gotUTF8 := got.PayloadFormatFlag && got.PayloadFormat == 1; gotUTF8 != wantUTF8 || got.PayloadFormatFlag != wantUTF8 {
		t.Errorf("%s: payload format %v/%d, want UTF-8 %v", stage, got.PayloadFormatFlag, got.PayloadFormat, wantUTF8)
	}
	want := map[string]string{}
	for _, u := range in.User {
		if _, seen := want[u.Key]; !seen && u.Key != "" && !strings.HasPrefix(u.Key, extraPrefix) {
			want[u.Key] = u.Val
		}
	}
	// A message has a name or none: an empty "name" property maps to no
	// name, and so to no property on the way out.
	if want[nameProperty] == "" {
		delete(want, nameProperty)
	}
	have := map[string]string{}
	for _, u := range got.User {
		if _, dup := have[u.Key]; dup {
			t.Errorf("%s: user property %q sent twice", stage, u.Key)
		}
		have[u.Key] = u.Val
	}
	if !maps.Equal(have, want) {
		t.Errorf("%s: user properties %s, want %s (from %s)", stage, userProps(have), userProps(want), userList(in.User))
	}
}

func userProps(m map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		b.WriteString(strconv.Quote(k) + ":" + strconv.Quote(m[k]) + " ")
	}
	return "{" + strings.TrimSpace(b.String()) + "}"
}

func userList(us []packets.UserProperty) string {
	parts := make([]string, len(us))
	for i, u := range us {
		parts[i] = strconv.Quote(u.Key) + ":" + strconv.Quote(u.Val)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
