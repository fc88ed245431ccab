package payments

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics count what payments did, for dashboards and drills ("how many
// declines did that decline_rate give?", "did any capture fail?").
type metrics struct {
	operations *prometheus.CounterVec
	declines   *prometheus.CounterVec
	network    *prometheus.HistogramVec
	recovered  prometheus.Counter
}

// The results an operation is counted under.
const (
	resultApproved = "approved" // authorize: hold placed
	resultDeclined = "declined" // authorize: refused by the network
	resultOK       = "ok"       // capture, void, refund done
	resultReplayed = "replayed" // same key, same request: the first response again
	resultRejected = "rejected" // invalid, illegal transition, key reused, in progress
	resultError    = "error"    // no answer from the network, or a fault
)

// newMetrics registers the payments metrics on reg, which may be nil.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		operations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rideshare_payments_operations_total",
			Help: "Payment operations (authorize, capture, void, refund) by result: approved, declined, ok, replayed, rejected, error.",
		}, []string{"operation", "result"}),
		declines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rideshare_payments_declines_total",
			Help: "Authorizations the card network declined, by reason.",
		}, []string{"reason"}),
		network: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rideshare_payments_network_seconds",
			Help:    "Card network call latency by operation, including calls that failed.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}, []string{"operation"}),
		recovered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rideshare_payments_recovered_total",
			Help: "Operations left pending by a crash or a network failure that the recovery worker finished.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.operations, m.declines, m.network, m.recovered)
	}
	return m
}

func (m *metrics) count(op, result string) { m.operations.WithLabelValues(op, result).Inc() }
