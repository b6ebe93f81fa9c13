package mqtt

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/switchboardhq/switchboard/core"
)

// A session offline for longer than the channel keeps history is told so:
// a user property on the MQTT 5 CONNACK and a notice on
// $switchboard/continuity; it then continues live.
func TestContinuityWhenTheGapExceedsRetention(t *testing.T) {
	f := newFixture(t, fixtureOptions{
		dir: t.TempDir(),
		engine: core.Options{
			ResumeWindow:    50 * time.Millisecond,
			DedupWindow:     50 * time.Millisecond,
			JanitorInterval: 20 * time.Millisecond,
			Namespace: func(ns string) core.NamespaceRules {
				return core.NamespaceRules{Persisted: true, Retention: 100 * time.Millisecond}
			},
		},
	})
	c := f.v5(t, "dev", v5opts{expiry: 600})
	c.subscribe(t, paho.SubscribeOptions{Topic: "short:t", QoS: 1}, paho.SubscribeOptions{Topic: "$switchboard/continuity", QoS: 1})
	pub := f.v5(t, "pub", v5opts{clean: true})
	pub.publish(t, &paho.Publish{Topic: "short:t", QoS: 1, Payload: []byte("seen")})
	c.wait(t, 1)
	f.waitAcked(t, "dev")
	_ = c.c.Disconnect(&paho.Disconnect{})

	pub.publish(t, &paho.Publish{Topic: "short:t", QoS: 1, Payload: []byte("missed")})
	// Wait until retention dropped what the session missed.
	deadline := time.Now().Add(10 * time.Second)
	for len(f.history(t, "short:t")) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("retention never trimmed the channel")
		}
		time.Sleep(20 * time.Millisecond)
	}

	c2 := f.v5(t, "dev", v5opts{expiry: 600})
	if !c2.connack.SessionPresent {
		t.Fatal("session not present")
	}
	var notice string
	if c2.connack.Properties != nil {
		notice = c2.connack.Properties.User.Get("switchboard-continuity")
	}
	if !strings.Contains(notice, "short:t expired") {
		t.Errorf("CONNACK continuity property = %q", notice)
	}
	m := c2.wait(t, 1)[0]
	if m.Topic != "$switchboard/continuity" {
		t.Fatalf("first message on %q: %q", m.Topic, m.Payload)
	}
	var body map[string]string
	if err := json.Unmarshal(m.Payload, &body); err != nil || body["channel"] != "short:t" || body["reason"] != "expired" || body["position"] == "" {
		t.Fatalf("continuity notice %q: %v", m.Payload, err)
	}
	// Live delivery continues.
	pub.publish(t, &paho.Publish{Topic: "short:t", QoS: 1, Payload: []byte("after")})
	if m := c2.wait(t, 2)[1]; string(m.Payload) != "after" {
		t.Fatalf("after the gap: %q", m.Payload)
	}
}
