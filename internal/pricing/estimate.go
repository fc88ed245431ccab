package pricing

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/geo"
)

// handler prices trips: the domain of the pricing service, with its store
// and its view of dispatch. rpc.go serves it.
type handler struct {
	store  *store
	rules  rulebook
	routes router
	zones  zoner
	surge  SurgePolicy
	quotes *quoteSigner
	// quoteTTL is how long a quote is honoured.
	quoteTTL time.Duration
	// budget bounds the calls to dispatch in one request. A fare estimate
	// sits on a rider's screen path and on the ride saga's, so a slow
	// dispatch costs at most this before the fallback answers.
	budget    time.Duration
	now       func() time.Time
	log       *slog.Logger
	fallbacks *prometheus.CounterVec
}

func newFallbackCounter(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rideshare_pricing_fallbacks_total",
		Help: "Estimates answered with a fallback, by what was missing: route (straight-line estimate) or surge (priced without surge).",
	}, []string{"missing"})
	if reg != nil {
		reg.MustRegister(c)
	}
	return c
}

// estimate prices the trip pickup → dropoff and returns the quote with its
// id. A valid quote id for the same points returns that quote unchanged: the
// rider pays what they were shown.
func (h *handler) estimate(ctx context.Context, pickup, dropoff geo.Point, quoteID string) (Quote, string, error) {
	rule, err := h.rules.trip(pickup, dropoff)
	if err != nil {
		return Quote{}, "", err
	}
	now := h.now()
	if quoteID != "" {
		if q, ok := h.quotes.redeem(quoteID, pickup, dropoff, now); ok {
			return q, quoteID, nil
		}
	}

	route, zone, routeErr, zoneErr := h.askDispatch(ctx, pickup, dropoff)
	q := Quote{Pickup: pickup, Dropoff: dropoff, Currency: rule.Currency, Route: route, Surge: NoSurge}
	if routeErr != nil {
		h.fallback(ctx, "route", routeErr)
		q = rule.fallback(pickup, dropoff) // what Fallback, the gateway's answer when pricing is down, gives too
	}
	if zoneErr != nil {
		h.fallback(ctx, "surge", zoneErr)
		q.Degraded = true
	}
	// The contract fixes surge at 1.0 on any degraded estimate: a rider is
	// never surged on a guessed route, and never charged a surge that could
	// not be checked.
	if !q.Degraded {
		sup, err := h.store.supply(ctx, zone)
		if err != nil {
			h.fallback(ctx, "surge", err)
			q.Degraded = true
		} else {
			q.Surge = h.surge.Multiplier(sup, now)
		}
	}
	q.Fare = rule.Fare(q.Route.Meters, q.Route.Seconds, q.Surge)
	q.Expires = now.Add(h.quoteTTL).Truncate(time.Millisecond)
	return q, h.quotes.sign(q), nil
}

// trip checks the points of a trip and finds the rule that prices it: the
// pickup's area's, with the dropoff in the same area.
func (b rulebook) trip(pickup, dropoff geo.Point) (FareRule, error) {
	area, rule, err := b.locate("pickup", pickup)
	if err != nil {
		return FareRule{}, err
	}
	if err := geo.Check("dropoff", dropoff, area); err != nil {
		return FareRule{}, err
	}
	return rule, nil
}

// askDispatch asks dispatch for the route and the pickup's zone at once,
// within the budget (and within the caller's deadline, if that is sooner).
func (h *handler) askDispatch(ctx context.Context, from, to geo.Point) (r Route, zone string, routeErr, zoneErr error) {
	ctx, cancel := context.WithTimeout(ctx, h.budget)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { r, routeErr = h.routes.Route(ctx, from, to) })
	zone, zoneErr = h.zones.Zone(ctx, from)
	wg.Wait()
	return r, zone, routeErr, zoneErr
}

func (h *handler) fallback(ctx context.Context, missing string, err error) {
	h.fallbacks.WithLabelValues(missing).Inc()
	h.log.WarnContext(ctx, "estimating with a fallback", "missing", missing, "err", err)
}

// surgeAt is the multiplier in force at p and the zone it applies to.
func (h *handler) surgeAt(ctx context.Context, p geo.Point) (Surge, string, error) {
	if _, _, err := h.rules.locate("location", p); err != nil {
		return 0, "", err
	}
	zctx, cancel := context.WithTimeout(ctx, h.budget)
	zone, err := h.zones.Zone(zctx, p)
	cancel()
	if err != nil {
		// Not apperr.Wrap: the cause is dispatch's RPC error, which the RPC
		// edge would forward as it is (a timeout, say) instead of this one.
		h.log.WarnContext(ctx, "surge zone unknown", "err", err)
		return 0, "", apperr.E(apperr.Unavailable, "surge_unavailable", "the surge zone could not be determined")
	}
	sup, err := h.store.supply(ctx, zone)
	if err != nil {
		return 0, "", err
	}
	return h.surge.Multiplier(sup, h.now()), zone, nil
}
