package mqtt

import "github.com/prometheus/client_golang/prometheus"

// metrics are the MQTT adapter's Prometheus metrics.
type metrics struct {
	connections   prometheus.Gauge
	sessions      prometheus.Gauge
	published     *prometheus.CounterVec
	delivered     prometheus.Counter
	subscribes    prometheus.Counter
	refused       *prometheus.CounterVec
	continuity    *prometheus.CounterVec
	slowConsumer  prometheus.Counter
	oversize      prometheus.Counter
	takeovers     prometheus.Counter
	wills         prometheus.Counter
	eventsDropped prometheus.Counter
	reg           prometheus.Registerer
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reg: reg,
		connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "switchboard_mqtt_connections",
			Help: "Connected MQTT clients."}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "switchboard_mqtt_sessions",
			Help: "MQTT sessions, connected or kept for a disconnected client."}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchboard_mqtt_published_total",
			Help: "Messages MQTT clients published that the engine accepted, by QoS."}, []string{"qos"}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchboard_mqtt_delivered_total",
			Help: "PUBLISH packets written to MQTT clients."}),
		subscribes: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchboard_mqtt_subscriptions_total",
			Help: "Subscriptions granted."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchboard_mqtt_refused_total",
			Help: "Refusals, by what was refused (auth, client-id, will, publish, filter, engine, protocol)."}, []string{"what"}),
		continuity: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchboard_mqtt_continuity_total",
			Help: "Resumes that could not be complete, by reason."}, []string{"reason"}),
		slowConsumer: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchboard_mqtt_slow_consumer_resumes_total",
			Help: "Channels a slow MQTT client fell behind on and picked up again from the log."}),
		oversize: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchboard_mqtt_oversize_skipped_total",
			Help: "Messages not sent because they exceed the client's maximum packet size."}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchboard_mqtt_session_takeovers_total",
			Help: "Sessions taken over by a new connection of the same client id."}),
		wills: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchboard_mqtt_wills_published_total",
			Help: "Will messages published."}),
		eventsDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchboard_mqtt_channel_events_dropped_total",
			Help: "Channel-opened events dropped because the queue was full."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.connections, m.sessions, m.published, m.delivered, m.subscribes, m.refused,
			m.continuity, m.slowConsumer, m.oversize, m.takeovers, m.wills, m.eventsDropped} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// retained exposes the number of retained messages.
func (m *metrics) retained(count func() int) error {
	if m.reg == nil {
		return nil
	}
	return m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "switchboard_mqtt_retained_messages",
		Help: "Channels with a retained message."}, func() float64 { return float64(count()) }))
}
