package sse

import "github.com/prometheus/client_golang/prometheus"

// metrics are the SSE endpoint's Prometheus metrics.
type metrics struct {
	streams    prometheus.Gauge
	events     *prometheus.CounterVec
	streamEnds *prometheus.CounterVec
	refused    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "switchboard_sse_streams",
			Help: "Open SSE streams."}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchboard_sse_events_total",
			Help: "SSE events written, by event type (heartbeat comments included)."}, []string{"event"}),
		streamEnds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchboard_sse_stream_ends_total",
			Help: "SSE streams ended, by reason (client-closed, draining, slow-consumer, write-failed, token-expired, attach-failed)."}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchboard_sse_refused_total",
			Help: "SSE requests refused before a stream opened, by HTTP status."}, []string{"status"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.streams, m.events, m.streamEnds, m.refused} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
