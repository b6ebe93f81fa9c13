package config

import (
	"log/slog"
	"strconv"
	"strings"
)

// LogValue implements slog.LogValuer. It renders every setting; key secrets
// are rendered as "***".
func (c Config) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("region", c.Region),
		slog.String("durability", string(c.Durability)),
		slog.String("flushInterval", c.FlushInterval.String()),
		slog.String("data", c.Data),
		slog.String("http", c.HTTP),
		slog.String("mqtt", c.MQTT),
		slog.String("mqttTLS", c.MQTTTLS),
		slog.String("stomp", c.STOMP),
		slog.String("amqp", c.AMQP),
		slog.Group("tls", slog.String("certFile", c.TLS.CertFile), slog.String("keyFile", c.TLS.KeyFile)),
		slog.Bool("dev", c.Dev),
		slog.String("resumeWindow", c.ResumeWindow.String()),
		slog.String("dedupWindow", c.DedupWindow.String()),
		slog.String("presenceGrace", c.PresenceGrace.String()),
		slog.String("connectionStateTTL", c.ConnectionStateTTL.String()),
		slog.String("maxMessageSize", c.MaxMessageSize.String()),
		slog.String("maxRequestBody", c.MaxRequestBody.String()),
		slog.Int("subscriberBuffer", c.SubscriberBuffer),
		slog.Int("channelMemoryLimit", c.ChannelMemoryLimit),
		slog.Group("cors",
			slog.String("allowedOrigins", strings.Join(c.CORS.AllowedOrigins, ",")),
			slog.Bool("allowCredentials", c.CORS.AllowCredentials)),
		slog.Group("realtime",
			slog.String("heartbeat", c.Realtime.Heartbeat.String()),
			slog.Int("frameRate", c.Realtime.FrameRate),
			slog.Int("frameBurst", c.Realtime.FrameBurst),
			slog.Int("maxPendingAttaches", c.Realtime.MaxPendingAttaches)),
		slog.Group("sse",
			slog.String("heartbeat", c.SSE.Heartbeat.String()),
			slog.String("retry", c.SSE.Retry.String()),
			slog.Int("maxChannels", c.SSE.MaxChannels),
			slog.Int("maxStreamsPerKey", c.SSE.MaxStreamsPerKey),
			slog.Int("buffer", c.SSE.Buffer),
			slog.String("writeTimeout", c.SSE.WriteTimeout.String())),
		slog.Group("mqttBroker",
			slog.String("maxSessionExpiry", c.MQTTBroker.MaxSessionExpiry.String()),
			slog.Int("maxInflight", c.MQTTBroker.MaxInflight),
			slog.Int("receiveMaximum", c.MQTTBroker.ReceiveMaximum),
			slog.String("maxPacketSize", c.MQTTBroker.MaxPacketSize.String()),
			slog.Bool("allowAnonymous", c.MQTTBroker.AllowAnonymous)),
		slog.Group("log", slog.String("level", c.Log.Level), slog.String("format", c.Log.Format)),
		slog.String("shutdownTimeout", c.ShutdownTimeout.String()),
	}
	attrs = append(attrs, listAttr("keys", c.Keys), listAttr("namespaces", c.Namespaces), listAttr("queues", c.Queues))
	return slog.GroupValue(attrs...)
}

// listAttr renders a list as a group keyed by index ("keys.0.name=app").
func listAttr[T slog.LogValuer](name string, items []T) slog.Attr {
	attrs := make([]slog.Attr, len(items))
	for i, it := range items {
		attrs[i] = slog.Any(strconv.Itoa(i), it)
	}
	return slog.Attr{Key: name, Value: slog.GroupValue(attrs...)}
}

// LogValue implements slog.LogValuer; the secret is rendered as "***".
func (k Key) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("name", k.Name),
		slog.String("secret", redacted),
		slog.String("capabilities", formatCapabilities(k.Capabilities)),
	)
}

func formatCapabilities(caps map[string][]Operation) string {
	var b strings.Builder
	for i, pattern := range sortedKeys(caps) {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Quote(pattern))
		b.WriteString(":[")
		for j, op := range caps[pattern] {
			if j > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(string(op))
		}
		b.WriteByte(']')
	}
	return b.String()
}

// LogValue implements slog.LogValuer.
func (n Namespace) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("name", n.Name), slog.Bool("persisted", n.Persisted)}
	if n.Retention != nil {
		attrs = append(attrs, slog.String("retention", n.Retention.String()))
	}
	if n.MaxMessageSize != 0 {
		attrs = append(attrs, slog.String("maxMessageSize", n.MaxMessageSize.String()))
	}
	if len(n.Anonymous) > 0 {
		attrs = append(attrs, slog.String("anonymous", joinOps(n.Anonymous)))
	}
	return slog.GroupValue(attrs...)
}

func joinOps(ops []Operation) string {
	s := make([]string, len(ops))
	for i, op := range ops {
		s[i] = string(op)
	}
	return strings.Join(s, ",")
}

// LogValue implements slog.LogValuer.
func (q Queue) LogValue() slog.Value {
	sources := make([]string, len(q.Sources))
	for i, s := range q.Sources {
		sources[i] = string(s)
	}
	return slog.GroupValue(
		slog.String("name", q.Name),
		slog.String("channels", q.Channels),
		slog.String("sources", strings.Join(sources, ",")),
		slog.Int("maxDeliveries", q.MaxDeliveries),
		slog.String("ackDeadline", q.AckDeadline.String()),
		slog.Int("maxLength", q.MaxLength),
		slog.String("ttl", q.TTL.String()),
		slog.String("overflow", string(q.Overflow)),
		slog.String("deadLetter", q.DeadLetterQueue()),
	)
}
