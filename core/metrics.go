package core

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the engine's Prometheus metrics.
type metrics struct {
	reg               prometheus.Registerer
	collectors        []prometheus.Collector
	publishRequests   prometheus.Counter
	publishes         prometheus.Counter
	duplicates        prometheus.Counter
	deliveries        prometheus.Counter
	slowConsumerDrops prometheus.Counter
	subscriptions     prometheus.Gauge
	connections       prometheus.Gauge
	presenceMembers   prometheus.Gauge
	storeCommit       prometheus.Histogram
	batchSize         prometheus.Histogram
	storeErrors       prometheus.Counter
	retentionDeleted  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, e *Engine) (*metrics, error) {
	m := &metrics{
		reg: reg,
		publishRequests: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchboard_publish_requests_total",
			Help: "Publish requests accepted for sequencing."}),
		publishes: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchboard_messages_published_total",
			Help: "Messages accepted into channel logs."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchboard_messages_duplicate_total",
			Help: "Published messages recognised as duplicates by id and not delivered again."}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchboard_messages_delivered_total",
			Help: "Live message deliveries queued to subscribers."}),
		slowConsumerDrops: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchboard_slow_consumer_drops_total",
			Help: "Attachments that lost continuity because their connection did not keep up."}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "switchboard_subscriptions",
			Help: "Live channel attachments."}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "switchboard_connections",
			Help: "Open client connections (all protocols)."}),
		presenceMembers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "switchboard_presence_members",
			Help: "Presence members across channels."}),
		storeCommit: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "switchboard_store_commit_seconds",
			Help: "Time to write (and in fsync mode sync) one batch.", Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16)}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "switchboard_store_batch_messages",
			Help: "Messages per store batch (group commit).", Buckets: prometheus.ExponentialBuckets(1, 2, 12)}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchboard_store_errors_total",
			Help: "Store writes that failed (their publishes were refused)."}),
		retentionDeleted: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchboard_retention_deleted_total",
			Help: "Messages deleted from the store by retention."}),
	}
	active := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "switchboard_active_channels",
		Help: "Channels currently active (open in memory)."}, func() float64 { return float64(e.active.Load()) })
	m.collectors = []prometheus.Collector{m.publishRequests, m.publishes, m.duplicates, m.deliveries, m.slowConsumerDrops,
		m.subscriptions, m.connections, m.presenceMembers, m.storeCommit, m.batchSize, m.storeErrors, m.retentionDeleted, active}
	if reg != nil {
		for _, c := range m.collectors {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}
