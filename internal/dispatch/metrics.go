package dispatch

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are dispatch's own figures; the platform adds RPC and outbox ones.
type metrics struct {
	searchesStarted prometheus.Counter
	// searches counts ended searches by outcome: assigned, failed (no
	// driver in time), cancelled, superseded, released (an assigned driver
	// freed).
	searches *prometheus.CounterVec
	// offers counts offers made and how they ended.
	offers *prometheus.CounterVec
	// pings counts location pings, applied or stale (older than the
	// position held).
	pings *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, f *fleet, s *store) *metrics {
	m := &metrics{
		searchesStarted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rideshare_dispatch_searches_started_total",
			Help: "Searches for a driver started (one per ride and attempt).",
		}),
		searches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rideshare_dispatch_search_outcomes_total",
			Help: "Search outcomes: assigned, failed (no driver in time), cancelled, superseded (a new attempt), released (the assigned driver freed).",
		}, []string{"outcome"}),
		offers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rideshare_dispatch_offers_total",
			Help: "Offers to drivers: offered, and how they ended (accepted, declined, expired, withdrawn).",
		}, []string{"outcome"}),
		pings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rideshare_dispatch_location_pings_total",
			Help: "Driver location pings: applied, or stale (older than the position held, ignored).",
		}, []string{"result"}),
	}
	if reg == nil {
		return m
	}
	online := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rideshare_dispatch_online_drivers",
		Help: "Drivers online, as this replica sees them.",
	}, func() float64 { return float64(f.onlineCount()) })
	openOffers := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rideshare_dispatch_open_offers",
		Help: "Offers waiting for a driver's answer, counted in the database at scrape time.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, err := s.openOfferCount(ctx)
		if err != nil {
			return -1
		}
		return float64(n)
	})
	reg.MustRegister(m.searchesStarted, m.searches, m.offers, m.pings, online, openOffers)
	return m
}
