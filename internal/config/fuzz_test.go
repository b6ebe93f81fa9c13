package config

import (
	"io"
	"log/slog"
	"os"
	"testing"
)

func FuzzParse(f *testing.F) {
	example, err := os.ReadFile("example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	for _, seed := range []string{
		"",
		"region: eu-1\ndurability: memory\n",
		"region: [\n",
		"- a\n- b\n",
		"a: 1\n---\nb: 2\n",
		"resumeWindow: 5\nmaxMessageSize: 1.5MiB\n",
		"maxMessageSize: 99999999999999999999GiB\n",
		"http: off\nmqtt: \"[::1]:0\"\nstomp: localhost\n",
		"keys:\n  - name: a:b\n    secret: ''\n    capabilities: {'x*y': [pub], '': []}\n",
		"keys:\n  - {name: a, secret: s}\n  - {name: a, secret: s}\n",
		"namespaces:\n  - name: chat\n    retention: forever\n  - name: chat\n    persisted: true\ndurability: memory\n",
		"queues:\n  - name: q\n    channels: '*'\n    sources: [message, message, x]\n    bogus: 1\n    ackDeadline: [1]\n",
		"queues:\n  - &q {name: q, channels: x}\n  - *q\n  - <<: *q\n    name: r\n",
		"a: &a [1, 2]\nb: &b [*a, *a]\nc: [*b, *b]\n",
		"resumeWindow: !!binary aGVsbG8=\n",
		"? [complex, key]\n: value\n",
		"cors: {allowedOrigins: ~, allowCredentials: true}\nlog: ~\ntls:\n",
		"\t\x00\xff: \"\\u0000\"\n",
	} {
		f.Add([]byte(seed))
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, doc []byte) {
		c, err := Parse(doc)
		if err != nil {
			_ = err.Error()
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that Validate rejects: %v", err)
		}
		logger.Info("config", "config", c)
		for _, ch := range []string{"", "a", "a:b", ":", "chat:room"} {
			c.NamespaceFor(ch)
			c.MessageSizeLimit(ch)
		}
		for _, q := range c.Queues {
			q.Matches("jobs:1")
		}
		checkRoundTrip(t, c)
	})
}
