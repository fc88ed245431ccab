package pricing

import (
	"context"
	"maps"
	"math"
	"testing"

	"connectrpc.com/connect"

	geov1 "github.com/rideshare-platform/rideshare/api/geo/v1"
	pricingv1 "github.com/rideshare-platform/rideshare/api/pricing/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestDefaultFareRules: the rules Fallback prices with are the rules the
// database is seeded with, so a degraded estimate made without pricing
// prices as pricing does.
func TestDefaultFareRules(t *testing.T) {
	st := &store{db: testenv.DB(t, Service.Migrations)}
	seeded, err := st.fareRules(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(seeded, defaultFareRules) {
		t.Fatalf("the migration seeds %+v, Fallback prices with %+v", seeded, defaultFareRules)
	}
	if _, err := newRulebook(serviceAreas, defaultFareRules); err != nil {
		t.Fatal(err)
	}
}

// TestFallbackIsPricingsOwn: Fallback answers exactly the fare, route and
// surge pricing answers when dispatch's route is missing, even where surge
// is in force, and refuses the points pricing refuses, with the same error.
func TestFallbackIsPricingsOwn(t *testing.T) {
	h, db, clk, fd := newTestHandler(t)
	applyEvent(t, h, db, supplyEvent(t, "e1", "z1", 1, 5, clk.Now())) // ×3.0 where a route is known
	fd.set(func(f *fakeDispatch) { f.routeErr = apperr.E(apperr.Unavailable, "", "routing down") })
	nyc := &geov1.Point{Lat: 40.7128, Lng: -74.0060}
	cases := []struct {
		name            string
		pickup, dropoff *geov1.Point
	}{
		{"ferry to mission", ferry, mission},
		{"mission to ferry", mission, ferry},
		{"across the city", &geov1.Point{Lat: 37.7120, Lng: -122.5100}, &geov1.Point{Lat: 37.8100, Lng: -122.3600}},
		{"same point (the minimum fare)", ferry, ferry},
		{"pickup not a coordinate", &geov1.Point{Lat: math.NaN(), Lng: -122.4}, mission},
		{"pickup in New York", nyc, mission},
		{"dropoff in New York", ferry, nyc},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q, err := Fallback(geo.FromProto(c.pickup), geo.FromProto(c.dropoff))
			res, perr := rpcServer{h: h}.Estimate(context.Background(), connect.NewRequest(&pricingv1.EstimateRequest{Caller: rider, Pickup: c.pickup, Dropoff: c.dropoff}))
			if perr != nil {
				if err == nil || apperr.KindOf(err) != apperr.KindOf(perr) || apperr.CodeOf(err) != apperr.CodeOf(perr) {
					t.Fatalf("pricing refuses with %v; Fallback: %v", perr, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("pricing priced the trip; Fallback refused: %v", err)
			}
			e := res.Msg.GetEstimate()
			if !e.GetDegraded() || !q.Degraded {
				t.Fatalf("degraded: pricing %v, Fallback %v", e.GetDegraded(), q.Degraded)
			}
			if q.Fare != e.GetFare().GetAmount() || q.Currency != e.GetFare().GetCurrency() ||
				q.Route.Meters != int64(e.GetDistanceMeters()) || q.Route.Seconds != int64(e.GetDurationSeconds()) ||
				q.Surge.Float() != e.GetSurgeMultiplier() {
				t.Fatalf("Fallback = %d %s, %+v, ×%v; pricing = %v", q.Fare, q.Currency, q.Route, q.Surge.Float(), e)
			}
			if !q.Expires.IsZero() {
				t.Fatalf("Fallback's quote expires %v: it cannot be booked, so it has no expiry", q.Expires)
			}
		})
	}
}
