package resilience

import (
	"github.com/prometheus/client_golang/prometheus"
)

// result is how a call to a dependency ended, as the metrics count it.
type result int

const (
	resultSuccess      result = iota // answered
	resultError                      // answered with an error that is the peer working (NotFound, Invalid, …)
	resultFailure                    // failed: down, timed out, internal error (after any retries)
	resultCircuitOpen                // refused at once: the breaker is open
	resultBulkheadFull               // refused at once: too many calls in flight
	resultCanceled                   // the caller's context ended first
	numResults
)

var resultNames = [numResults]string{"success", "error", "failure", "circuit_open", "bulkhead_full", "canceled"}

// metrics are the per-dependency series, registered once per process.
type metrics struct {
	calls           *prometheus.CounterVec
	retries         *prometheus.CounterVec
	budgetExhausted *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, t *Table) (*metrics, error) {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rideshare_dependency_calls_total",
			Help: "RPCs to a dependency by how they ended: success, error (the peer answered with a domain error), failure (after any retries), circuit_open and bulkhead_full (refused at once), canceled.",
		}, []string{"peer", "result"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rideshare_dependency_retries_total",
			Help: "Retried attempts of idempotent RPCs to a dependency.",
		}, []string{"peer"}),
		budgetExhausted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rideshare_dependency_retry_budget_exhausted_total",
			Help: "Retries not made because the dependency's retry budget was spent.",
		}, []string{"peer"}),
	}
	for _, c := range []prometheus.Collector{m.calls, m.retries, m.budgetExhausted, stateCollector{t}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// peerMetrics are one dependency's counters, resolved once.
type peerMetrics struct {
	calls           [numResults]prometheus.Counter
	retries         prometheus.Counter
	budgetExhausted prometheus.Counter
}

func (m *metrics) forPeer(peer string) peerMetrics {
	var pm peerMetrics
	for r, name := range resultNames {
		pm.calls[r] = m.calls.WithLabelValues(peer, name)
	}
	pm.retries = m.retries.WithLabelValues(peer)
	pm.budgetExhausted = m.budgetExhausted.WithLabelValues(peer)
	return pm
}

func (pm peerMetrics) result(r result) { pm.calls[r].Inc() }

// stateCollector reports the policies' live state at scrape time, read
// from the policies themselves rather than mirrored into gauges that could
// drift (a breaker half-opens when a call finds its delay over, not on a
// timer).
type stateCollector struct{ t *Table }

var (
	breakerStateDesc = prometheus.NewDesc("rideshare_dependency_breaker_state",
		"Circuit breaker state per dependency: 0 closed, 1 open, 2 half-open.", []string{"peer"}, nil)
	bulkheadInUseDesc = prometheus.NewDesc("rideshare_dependency_bulkhead_in_use",
		"Calls to a dependency holding a bulkhead slot now.", []string{"peer"}, nil)
	bulkheadLimitDesc = prometheus.NewDesc("rideshare_dependency_bulkhead_limit",
		"Bulkhead slots per dependency.", []string{"peer"}, nil)
	budgetLeftDesc = prometheus.NewDesc("rideshare_dependency_retry_budget_left",
		"Retries the dependency's retry budget allows now.", []string{"peer"}, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- breakerStateDesc
	ch <- bulkheadInUseDesc
	ch <- bulkheadLimitDesc
	ch <- budgetLeftDesc
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.t.Snapshot() {
		ch <- prometheus.MustNewConstMetric(breakerStateDesc, prometheus.GaugeValue, float64(s.Breaker.stateValue), s.Peer)
		ch <- prometheus.MustNewConstMetric(bulkheadInUseDesc, prometheus.GaugeValue, float64(s.Bulkhead.InUse), s.Peer)
		ch <- prometheus.MustNewConstMetric(bulkheadLimitDesc, prometheus.GaugeValue, float64(s.Bulkhead.Limit), s.Peer)
		ch <- prometheus.MustNewConstMetric(budgetLeftDesc, prometheus.GaugeValue, float64(s.RetryBudget.Left), s.Peer)
	}
}
