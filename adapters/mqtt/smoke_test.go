package mqtt

import (
	"slices"
	"testing"
)

func TestPublishSubscribeV3(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	sub := f.v3(t, "sub", true)
	r := newReceived()
	wait(t, sub.Subscribe("sensors/+", 1, r.handler))
	pub := f.v3(t, "pub", true)
	want := seq("m", 20)
	for i, p := range want {
		wait(t, pub.Publish("sensors/"+[]string{"a", "b"}[i%2], byte(i%3), false, p))
	}
	r.wait(t, len(want))
	// Each channel keeps its order; channels are independent.
	byTopic := map[string][]string{}
	r.mu.Lock()
	for _, m := range r.msgs {
		byTopic[m.Topic()] = append(byTopic[m.Topic()], string(m.Payload()))
	}
	r.mu.Unlock()
	for i, topic := range []string{"sensors/a", "sensors/b"} {
		var w []string
		for j := i; j < len(want); j += 2 {
			w = append(w, want[j])
		}
		if !slices.Equal(byTopic[topic], w) {
			t.Errorf("%s: got %q, want %q", topic, byTopic[topic], w)
		}
		if h := f.history(t, topic); !slices.Equal(h, w) {
			t.Errorf("%s history: got %q, want %q", topic, h, w)
		}
	}
}
