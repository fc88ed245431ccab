package gateway

import (
	"context"
	"errors"
	"math"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	geov1 "github.com/rideshare-platform/rideshare/api/geo/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/pricing"
)

// The routes that have a degraded answer when the service behind them is
// down (DESIGN.md section 4), as the fallback counter labels them.
const (
	routeEstimate = "/v1/fares/estimate"
	routeMe       = "/v1/me"
)

// dependencyDown reports whether err says the service behind a call did not
// answer: it is down or shedding load (Unavailable, which includes this
// process's own circuit_open and bulkhead_full refusals) or out of time
// (Timeout). Any other error is an answer, such as the caller's mistake or
// a missing object, and must reach the caller unchanged. A caller who went
// away is owed no answer at all.
func dependencyDown(ctx context.Context, err error) bool {
	if errors.Is(ctx.Err(), context.Canceled) {
		return false
	}
	switch apperr.KindOf(err) {
	case apperr.Unavailable, apperr.Timeout:
		return true
	}
	return false
}

func newFallbackCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rideshare_gateway_fallbacks_total",
		Help: "Requests answered in degraded form because the service behind the route was down, by route.",
	}, []string{"route"})
}

// fellBack records an answer given without the service behind route, and
// why: a fallback hides an outage from callers, so it must not hide it from
// the operator.
func (g *Gateway) fellBack(ctx context.Context, route string, cause error) {
	g.fallbacks.WithLabelValues(route).Inc()
	g.deps.Log.WarnContext(ctx, "answering in degraded form", "route", route, "reason", apperr.CodeOf(cause), "err", cause)
}

// estimateWithoutPricing answers an estimate while pricing is down with
// what pricing itself answers when it cannot route: the straight-line
// route, no surge, marked degraded. It carries no quote: only pricing signs
// quotes, so a ride requested now is priced by pricing when it is back.
func (g *Gateway) estimateWithoutPricing(w http.ResponseWriter, r *http.Request, pickup, dropoff *geov1.Point, cause error) error {
	q, err := pricing.Fallback(geo.FromProto(pickup), geo.FromProto(dropoff))
	if err != nil {
		return err // points pricing would refuse, refused the same way
	}
	g.fellBack(r.Context(), routeEstimate, cause)
	return writeJSON(w, http.StatusOK, estimateJSON{
		Fare:            &moneyJSON{Amount: q.Fare, Currency: q.Currency},
		DistanceMeters:  int32(min(q.Route.Meters, math.MaxInt32)),
		DurationSeconds: int32(min(q.Route.Seconds, math.MaxInt32)),
		Surge:           q.Surge.Float(),
		Degraded:        true,
	})
}
