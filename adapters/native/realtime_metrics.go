package native

import "github.com/prometheus/client_golang/prometheus"

// realtimeMetrics are the realtime protocol's Prometheus metrics.
type realtimeMetrics struct {
	connections prometheus.Gauge
	resumes     prometheus.Counter
	refused     prometheus.Counter
}

func newRealtimeMetrics(reg prometheus.Registerer) (*realtimeMetrics, error) {
	m := &realtimeMetrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "switchboard_realtime_connections",
			Help: "Open native realtime (WebSocket) connections."}),
		resumes: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchboard_realtime_resumes_total",
			Help: "Realtime connections that resumed a dropped connection's state with its connection key."}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchboard_realtime_refused_total",
			Help: "Realtime connections refused at connect (bad parameters or credentials)."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.connections, m.resumes, m.refused} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
