package core

import (
	"math"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Stats is a point-in-time snapshot of the engine's activity. Gauges
// describe the current state; totals count since the engine started.
type Stats struct {
	Region     string `json:"region"`
	Durability string `json:"durability"`

	// ActiveChannels is the number of channels currently open in memory.
	ActiveChannels int64 `json:"activeChannels"`
	// Connections is the number of open client connections on every
	// protocol.
	Connections int64 `json:"connections"`
	// Subscriptions is the number of live channel attachments.
	Subscriptions int64 `json:"subscriptions"`
	// PresenceMembers is the number of presence members across channels.
	PresenceMembers int64 `json:"presenceMembers"`

	// PublishRequests counts publish requests accepted for sequencing.
	PublishRequests uint64 `json:"publishRequests"`
	// MessagesPublished counts messages accepted into channel logs.
	MessagesPublished uint64 `json:"messagesPublished"`
	// MessagesDelivered counts live deliveries queued to subscribers.
	MessagesDelivered uint64 `json:"messagesDelivered"`
	// Duplicates counts published messages recognised as duplicates by id.
	Duplicates uint64 `json:"duplicates"`
	// SlowConsumerDrops counts attachments that lost continuity because
	// their connection did not keep up.
	SlowConsumerDrops uint64 `json:"slowConsumerDrops"`
	// StoreErrors counts store writes that failed.
	StoreErrors uint64 `json:"storeErrors"`
	// RetentionDeleted counts messages deleted from the store by retention.
	RetentionDeleted uint64 `json:"retentionDeleted"`
}

// Stats returns a snapshot of the engine's activity. It only reads
// existing state and metrics, and is cheap enough to serve on request.
func (e *Engine) Stats() Stats {
	m := e.metrics
	return Stats{
		Region:            e.opts.Region,
		Durability:        e.opts.Durability.String(),
		ActiveChannels:    e.active.Load(),
		Connections:       int64(metricValue(m.connections)),
		Subscriptions:     int64(metricValue(m.subscriptions)),
		PresenceMembers:   int64(metricValue(m.presenceMembers)),
		PublishRequests:   counterValue(m.publishRequests),
		MessagesPublished: counterValue(m.publishes),
		MessagesDelivered: counterValue(m.deliveries),
		Duplicates:        counterValue(m.duplicates),
		SlowConsumerDrops: counterValue(m.slowConsumerDrops),
		StoreErrors:       counterValue(m.storeErrors),
		RetentionDeleted:  counterValue(m.retentionDeleted),
	}
}

// metricValue reads the current value of a counter or gauge; 0 when it
// cannot be read.
func metricValue(c prometheus.Metric) float64 {
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		return 0
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	return 0
}

// counterValue reads a counter as a whole number.
func counterValue(c prometheus.Counter) uint64 {
	v := metricValue(c)
	if v <= 0 || math.IsNaN(v) {
		return 0
	}
	if v >= math.MaxUint64 {
		return math.MaxUint64
	}
	return uint64(v)
}
