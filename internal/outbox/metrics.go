package outbox

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	published   prometheus.Counter
	relayErrors prometheus.Counter
}

func newMetrics(o *Outbox, reg prometheus.Registerer) *metrics {
	m := &metrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rideshare_outbox_published_total",
			Help: "Events the broker acknowledged from this service's outbox.",
		}),
		relayErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rideshare_outbox_relay_errors_total",
			Help: "Relay rounds that failed (broker down or refusing); the events wait and are retried.",
		}),
	}
	if reg == nil {
		return m
	}
	backlog := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rideshare_outbox_backlog",
		Help: "Events written but not yet acknowledged by the broker.",
	}, func() float64 {
		// Counted at scrape time from the table itself, so the figure is true
		// even across restarts and for rows written by other replicas.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, err := o.Backlog(ctx)
		if err != nil {
			return -1
		}
		return float64(n)
	})
	reg.MustRegister(m.published, m.relayErrors, backlog)
	return m
}
