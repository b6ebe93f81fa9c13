package config

import "testing"

// The logged configuration names every top-level setting once, the MQTT
// broker's included.
func TestLogValueNamesEachSettingOnce(t *testing.T) {
	seen := map[string]int{}
	for _, a := range Default().LogValue().Group() {
		seen[a.Key]++
	}
	for key, n := range seen {
		if n != 1 {
			t.Errorf("%q logged %d times", key, n)
		}
	}
	for _, key := range []string{"http", "mqtt", "sse", "realtime", "mqttBroker", "cors", "log"} {
		if seen[key] != 1 {
			t.Errorf("%q not logged", key)
		}
	}
}
