package dispatch

import (
	"context"
	"errors"
	"testing"
	"time"

	"connectrpc.com/connect"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	geov1 "github.com/rideshare-platform/rideshare/api/geo/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestCallersAndInputs: each RPC admits only its callers and refuses bad
// points the public way (400 not a coordinate, 422 outside the area).
func TestCallersAndInputs(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	rider := &authv1.Caller{UserId: "r", Role: authv1.Role_ROLE_RIDER}
	driver := driverCaller("d")
	oakland := &geov1.Point{Lat: 37.8044, Lng: -122.2712}
	nowhere := &geov1.Point{Lat: 95, Lng: 0}
	ok := center.Proto()
	search := func(c *authv1.Caller, pickup *geov1.Point) error {
		req := e.searchReq("x", 1)
		req.Caller, req.Pickup = c, pickup
		_, err := e.h.StartSearch(ctx, connect.NewRequest(req))
		return err
	}
	cases := []struct {
		name string
		call func() error
		kind apperr.Kind
		code string
	}{
		{"rider going online", func() error {
			_, err := e.h.SetAvailability(ctx, connect.NewRequest(&dispatchv1.SetAvailabilityRequest{Caller: rider, Online: true}))
			return err
		}, apperr.Forbidden, ""},
		{"no caller pinging", func() error {
			_, err := e.h.UpdateLocation(ctx, connect.NewRequest(&dispatchv1.UpdateLocationRequest{Location: ok}))
			return err
		}, apperr.Unauthenticated, ""},
		{"ping outside the area", func() error {
			_, err := e.h.UpdateLocation(ctx, connect.NewRequest(&dispatchv1.UpdateLocationRequest{Caller: driver, Location: oakland}))
			return err
		}, apperr.Unprocessable, "outside_service_area"},
		{"ping off the globe", func() error {
			_, err := e.h.UpdateLocation(ctx, connect.NewRequest(&dispatchv1.UpdateLocationRequest{Caller: driver, Location: nowhere}))
			return err
		}, apperr.Invalid, ""},
		{"ping without a location", func() error {
			_, err := e.h.UpdateLocation(ctx, connect.NewRequest(&dispatchv1.UpdateLocationRequest{Caller: driver}))
			return err
		}, apperr.Invalid, ""},
		{"online outside the area", func() error {
			_, err := e.h.SetAvailability(ctx, connect.NewRequest(&dispatchv1.SetAvailabilityRequest{Caller: driver, Online: true, Location: oakland}))
			return err
		}, apperr.Unprocessable, "outside_service_area"},
		{"driver starting a search", func() error { return search(driver, ok) }, apperr.Forbidden, ""},
		{"search from Oakland", func() error { return search(rides, oakland) }, apperr.Unprocessable, "outside_service_area"},
		{"search without pickup", func() error { return search(rides, nil) }, apperr.Invalid, ""},
		{"search without ride", func() error {
			req := e.searchReq("", 1)
			_, err := e.h.StartSearch(ctx, connect.NewRequest(req))
			return err
		}, apperr.Invalid, ""},
		{"rider accepting", func() error {
			_, err := e.h.RespondToOffer(ctx, connect.NewRequest(&dispatchv1.RespondToOfferRequest{Caller: rider, RideId: "x", Accept: true}))
			return err
		}, apperr.Forbidden, ""},
		{"accepting an unknown ride", func() error {
			_, err := e.h.RespondToOffer(ctx, connect.NewRequest(&dispatchv1.RespondToOfferRequest{Caller: driver, RideId: "nope", Accept: true}))
			return err
		}, apperr.NotFound, ""},
		{"rider releasing a driver", func() error {
			_, err := e.h.ReleaseDriver(ctx, connect.NewRequest(&dispatchv1.ReleaseDriverRequest{Caller: rider, RideId: "x"}))
			return err
		}, apperr.Forbidden, ""},
		{"driver cancelling a search", func() error {
			_, err := e.h.CancelSearch(ctx, connect.NewRequest(&dispatchv1.CancelSearchRequest{Caller: driver, RideId: "x"}))
			return err
		}, apperr.Forbidden, ""},
		{"anonymous route", func() error {
			_, err := e.h.EstimateRoute(ctx, connect.NewRequest(&dispatchv1.EstimateRouteRequest{From: ok, To: ok}))
			return err
		}, apperr.Unauthenticated, ""},
		{"route to Oakland", func() error {
			_, err := e.h.EstimateRoute(ctx, connect.NewRequest(&dispatchv1.EstimateRouteRequest{Caller: rider, From: ok, To: oakland}))
			return err
		}, apperr.Unprocessable, "outside_service_area"},
		{"supply off the globe", func() error {
			_, err := e.h.GetSupply(ctx, connect.NewRequest(&dispatchv1.GetSupplyRequest{Caller: rider, Location: nowhere}))
			return err
		}, apperr.Invalid, ""},
	}
	for _, c := range cases {
		err := c.call()
		if !apperr.Is(err, c.kind) || (c.code != "" && apperr.CodeOf(err) != c.code) {
			t.Errorf("%s: %v, want %s %s", c.name, err, c.kind, c.code)
		}
	}
	if got := e.holder("x"); got != "" {
		t.Fatal("a refused search made an offer")
	}
}

// TestEstimateRoute: the built-in estimator through the RPC.
func TestEstimateRoute(t *testing.T) {
	e := newEnv(t)
	res, err := e.h.EstimateRoute(context.Background(), connect.NewRequest(&dispatchv1.EstimateRouteRequest{
		Caller: rides, From: center.Proto(), To: north(1000).Proto(),
	}))
	if err != nil {
		t.Fatal(err)
	}
	// 1000 m straight × 1.3 = 1300 m; at 25 km/h (6.94 m/s) 187.2 s, rounded up.
	if res.Msg.GetDistanceMeters() != 1300 || res.Msg.GetDurationSeconds() != 188 {
		t.Fatalf("route = %v, want 1300 m in 188 s", res.Msg)
	}
}

func TestEstimator(t *testing.T) {
	cases := []struct {
		est         Estimator
		from, to    geo.Point
		meters, sec int
	}{
		{DefaultEstimator, center, center, 0, 0},
		{DefaultEstimator, center, north(1000), 1300, 188},
		{Estimator{DetourFactor: 1, SpeedKMH: 36}, center, north(1000), 1000, 100},
	}
	for _, c := range cases {
		m, s, err := c.est.Route(context.Background(), c.from, c.to)
		if err != nil || m != c.meters || s != c.sec {
			t.Errorf("%+v %v→%v = %d m, %d s, %v; want %d m, %d s", c.est, c.from, c.to, m, s, err, c.meters, c.sec)
		}
	}
}

// brokenRouter is a routing engine that is down.
type brokenRouter struct{}

func (brokenRouter) Route(context.Context, geo.Point, geo.Point) (int, int, error) {
	return 0, 0, errors.New("routing engine down")
}

// TestAcceptSurvivesRouterFailure: an assignment never fails for want of an
// ETA; the built-in estimate stands in.
func TestAcceptSurvivesRouterFailure(t *testing.T) {
	e := newEnv(t)
	e.d.router = brokenRouter{}
	e.online("a", north(1000))
	e.search(e.searchReq("r1", 1))
	res, err := e.respond("a", "r1", true)
	if err != nil || !res.GetAssigned() || res.GetEtaSeconds() != 188 {
		t.Fatalf("accept with the router down: %v %v, want assigned with the built-in 188 s", res, err)
	}
	if _, err := e.h.EstimateRoute(context.Background(), connect.NewRequest(&dispatchv1.EstimateRouteRequest{
		Caller: rides, From: center.Proto(), To: north(1000).Proto(),
	})); !apperr.Is(err, apperr.Unavailable) {
		t.Fatalf("EstimateRoute with the router down: %v, want Unavailable", err)
	}
}

func TestSettings(t *testing.T) {
	get := func(m map[string]string) func(string, string) string {
		return func(k, def string) string {
			if v, ok := m[k]; ok {
				return v
			}
			return def
		}
	}
	cfg, est, err := settings(get(nil))
	if err != nil || cfg != defaultConfig || est != DefaultEstimator {
		t.Fatalf("defaults: %+v %+v %v", cfg, est, err)
	}
	cfg, est, err = settings(get(map[string]string{"dispatch.offer_ttl": "3s", "dispatch.city_speed_kmh": "40"}))
	if err != nil || cfg.offerTTL != 3*time.Second || est.SpeedKMH != 40 {
		t.Fatalf("set: %+v %+v %v", cfg, est, err)
	}
	for _, bad := range []map[string]string{
		{"dispatch.offer_ttl": "soon"},
		{"dispatch.search_retry": "-1s"},
		{"dispatch.detour_factor": "0.5"},
		{"dispatch.fleet_broadcast": "0s"},
	} {
		if _, _, err := settings(get(bad)); err == nil {
			t.Errorf("settings %v accepted", bad)
		}
	}
}

// TestTimerWorker: the real worker with the real clock: woken by a new
// search, it expires the offer after its (short) TTL and passes the ride
// on, with nobody calling tick.
func TestTimerWorker(t *testing.T) {
	e := newEnv(t)
	e.d.now = time.Now
	e.d.cfg.offerTTL = 100 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.d.runTimers(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	e.online("a", north(100))
	e.online("b", north(200))
	req := e.searchReq("r1", 1)
	req.Deadline = nil // dispatch.search_timeout from now, on the real clock
	e.search(req)
	// b holds the offer for one TTL only, less than a poll of a busy
	// machine can oversleep, so the hand-over is read from the expiries
	// the worker recorded, once both offers are over.
	testenv.Eventually(t, 10*time.Second, func() bool { return e.holder("r1") == "" && len(declinedEvents(e)) == 2 },
		"the worker did not expire a's offer and then b's")
	if ev := declinedEvents(e); len(ev) != 2 || ev[0].GetDriverId() != "a" || ev[1].GetDriverId() != "b" ||
		ev[0].GetReason() != "expired" || ev[1].GetReason() != "expired" {
		t.Fatalf("OfferDeclined = %v, want a's offer and then b's expired", ev)
	}
}
