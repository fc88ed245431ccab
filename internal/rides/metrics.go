package rides

import "github.com/prometheus/client_golang/prometheus"

// metrics are the saga's own measurements; request counts and latencies come
// from the platform's HTTP metrics.
type metrics struct {
	terminal     *prometheus.CounterVec
	stepDuration *prometheus.HistogramVec
	stepRetries  *prometheus.CounterVec
}

// newMetrics registers with reg when it is not nil (tests pass nil).
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		terminal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rideshare_rides_terminal_total",
			Help: "Rides that reached a terminal status, by status.",
		}, []string{"status"}),
		stepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rideshare_ride_saga_step_duration_seconds",
			Help:    "Time a saga step took, its RPC and its record, by step and result (ok, retry, ended, superseded).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"step", "result"}),
		stepRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rideshare_ride_saga_step_retries_total",
			Help: "Saga steps that failed and were scheduled again with backoff, by step.",
		}, []string{"step"}),
	}
	if reg != nil {
		reg.MustRegister(m.terminal, m.stepDuration, m.stepRetries)
	}
	return m
}
