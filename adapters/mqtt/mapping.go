package mqtt

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/switchboardhq/switchboard/core"
)

// How a channel message and an MQTT PUBLISH map onto each other (see
// docs/mqtt.md):
//
//   - topic ⇔ channel name; payload ⇔ data (bytes as they are);
//   - content type ⇔ contentType; payload format indicator 1 ⇔ encoding
//     "utf-8" (and "json" is sent with indicator 1 too);
//   - the user property "name" ⇔ the message name; every other user
//     property ⇔ an extras entry (the first of repeated keys wins);
//   - MQTT-only attributes travel in extras under the "mqtt." prefix so that
//     they survive the round trip through other protocols and the log:
//     mqtt.qos, mqtt.retain, mqtt.responseTopic, mqtt.correlationData
//     (base64) and mqtt.messageExpiry (seconds).
const (
	nameProperty       = "name"
	extraPrefix        = "mqtt."
	extraQoS           = extraPrefix + "qos"
	extraRetain        = extraPrefix + "retain"
	extraResponseTopic = extraPrefix + "responseTopic"
	extraCorrelation   = extraPrefix + "correlationData"
	extraExpiry        = extraPrefix + "messageExpiry"
)

// messageFromPublish converts an inbound PUBLISH (topic aliases already
// resolved) into a channel message.
func messageFromPublish(pk *packets.Packet) (*core.Message, error) {
	m := &core.Message{Data: pk.Payload}
	p := &pk.Properties
	if p.PayloadFormatFlag && p.PayloadFormat == 1 {
		if !utf8.Valid(pk.Payload) {
			return nil, packets.ErrPayloadFormatInvalid
		}
		m.Encoding = "utf-8"
	}
	m.ContentType = p.ContentType
	extras := map[string]string{}
	named := false
	for _, u := range p.User {
		if u.Key == nameProperty {
			if !named {
				m.Name, named = u.Val, true
			}
			continue
		}
		if u.Key == "" || strings.HasPrefix(u.Key, extraPrefix) {
			continue // reserved for the adapter
		}
		if _, ok := extras[u.Key]; !ok {
			extras[u.Key] = u.Val
		}
	}
	extras[extraQoS] = strconv.Itoa(int(pk.FixedHeader.Qos))
	if pk.FixedHeader.Retain {
		extras[extraRetain] = "1"
	}
	if p.ResponseTopic != "" {
		extras[extraResponseTopic] = p.ResponseTopic
	}
	if len(p.CorrelationData) > 0 {
		extras[extraCorrelation] = base64.StdEncoding.EncodeToString(p.CorrelationData)
	}
	if p.MessageExpiryInterval > 0 {
		extras[extraExpiry] = strconv.FormatUint(uint64(p.MessageExpiryInterval), 10)
	}
	m.Extras = extras
	return m, nil
}

// publishOf renders a channel message as an outbound PUBLISH for a client
// of the given protocol version, before QoS, packet id and topic alias are
// decided. It reports false when the message expired (MQTT 5 message
// expiry) and must not be delivered.
func publishOf(m *core.Message, version byte, now time.Time) (packets.Packet, bool) {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   m.Channel,
		Payload:     m.Data,
		Created:     now.Unix(),
	}
	if pk.Payload == nil {
		pk.Payload = []byte{}
	}
	if exp := m.Extras[extraExpiry]; exp != "" {
		secs, err := strconv.ParseInt(exp, 10, 64)
		if err == nil && secs > 0 {
			expiresAt := m.Timestamp/1000 + secs
			if expiresAt <= now.Unix() {
				return pk, false
			}
			pk.Expiry = expiresAt
		}
	}
	if version < 5 {
		return pk, true
	}
	p := &pk.Properties
	p.ContentType = m.ContentType
	if (m.Encoding == "utf-8" || m.Encoding == "json") && utf8.Valid(m.Data) {
		p.PayloadFormat, p.PayloadFormatFlag = 1, true
	}
	if m.Name != "" {
		p.User = append(p.User, packets.UserProperty{Key: nameProperty, Val: m.Name})
	}
	for k, v := range m.Extras {
		switch k {
		case extraResponseTopic:
			p.ResponseTopic = v
		case extraCorrelation:
			if b, err := base64.StdEncoding.DecodeString(v); err == nil {
				p.CorrelationData = b
			}
		default:
			if !strings.HasPrefix(k, extraPrefix) {
				p.User = append(p.User, packets.UserProperty{Key: k, Val: v})
			}
		}
	}
	return pk, true
}

// publishedQoS is the QoS the message was published with: MQTT publishes
// record it; messages from other protocols were acknowledged durably and
// count as QoS 2, so the subscription's QoS decides.
func publishedQoS(m *core.Message) byte {
	switch m.Extras[extraQoS] {
	case "0":
		return 0
	case "1":
		return 1
	}
	return 2
}

// publishedRetained reports whether the message was published with RETAIN.
func publishedRetained(m *core.Message) bool { return m.Extras[extraRetain] == "1" }

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
