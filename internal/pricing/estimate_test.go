package pricing

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	eventsv1 "github.com/rideshare-platform/rideshare/api/events/v1"
	geov1 "github.com/rideshare-platform/rideshare/api/geo/v1"
	pricingv1 "github.com/rideshare-platform/rideshare/api/pricing/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// fakeDispatch is router and zoner with behaviour set by the test. hang
// makes a call wait for its context, as a dispatch that does not answer.
type fakeDispatch struct {
	mu        sync.Mutex
	route     Route
	routeErr  error
	zone      string
	zoneErr   error
	hang      bool
	calls     int
	deadlines []time.Duration // time left on each call's context
}

func (f *fakeDispatch) enter(ctx context.Context) (hang bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if d, ok := ctx.Deadline(); ok {
		f.deadlines = append(f.deadlines, time.Until(d))
	}
	return f.hang
}

func (f *fakeDispatch) Route(ctx context.Context, _, _ geo.Point) (Route, error) {
	if f.enter(ctx) {
		<-ctx.Done()
		return Route{}, ctx.Err()
	}
	return f.route, f.routeErr
}

func (f *fakeDispatch) Zone(ctx context.Context, _ geo.Point) (string, error) {
	if f.enter(ctx) {
		<-ctx.Done()
		return "", ctx.Err()
	}
	return f.zone, f.zoneErr
}

func (f *fakeDispatch) set(fn func(f *fakeDispatch)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeDispatch) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

const testBudget = 50 * time.Millisecond

// newTestHandler is the handler over a fresh database, with the migration's
// default fare rules, a fake dispatch answering 10 km / 20 min in zone z1,
// and a clock the test moves.
func newTestHandler(t *testing.T) (*handler, *sqldb.DB, *testenv.Clock, *fakeDispatch) {
	t.Helper()
	db := testenv.DB(t, Service.Migrations)
	st := &store{db: db}
	rules, err := st.fareRules(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	book, err := newRulebook(serviceAreas, rules)
	if err != nil {
		t.Fatal(err)
	}
	clk := testenv.NewClock(time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC))
	fd := &fakeDispatch{route: Route{Meters: 10_000, Seconds: 1200}, zone: "z1"}
	h := &handler{
		store: st, rules: book, routes: fd, zones: fd, surge: DefaultSurgePolicy,
		quotes: newQuoteSigner([]byte("test secret")), quoteTTL: 2 * time.Minute, budget: testBudget,
		now: clk.Now, log: slog.New(slog.DiscardHandler), fallbacks: newFallbackCounter(nil),
	}
	return h, db, clk, fd
}

var (
	rider   = &authv1.Caller{UserId: "r1", Role: authv1.Role_ROLE_RIDER}
	ferry   = &geov1.Point{Lat: 37.7955, Lng: -122.3937} // Ferry Building
	mission = &geov1.Point{Lat: 37.7599, Lng: -122.4148} // Mission District
)

func estimate(t *testing.T, h *handler, req *pricingv1.EstimateRequest) *pricingv1.Estimate {
	t.Helper()
	// A caller's deadline far beyond the budget, as the gateway's would be.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := rpcServer{h: h}.Estimate(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	return res.Msg.GetEstimate()
}

func applyEvent(t *testing.T, h *handler, db *sqldb.DB, env *eventsv1.Envelope) {
	t.Helper()
	ctx := context.Background()
	if err := db.InTx(ctx, func(tx *sqldb.Tx) error { return h.onSupplyChanged(ctx, tx, env) }); err != nil {
		t.Fatal(err)
	}
}

func TestEstimate(t *testing.T) {
	h, db, clk, _ := newTestHandler(t)
	e := estimate(t, h, &pricingv1.EstimateRequest{Caller: rider, Pickup: ferry, Dropoff: mission})
	if e.GetFare().GetAmount() != 2050 || e.GetFare().GetCurrency() != "USD" || e.GetSurgeMultiplier() != 1 || e.GetDegraded() {
		t.Fatalf("estimate = %v, want USD 2050 at ×1.0, not degraded", e)
	}
	if e.GetDistanceMeters() != 10_000 || e.GetDurationSeconds() != 1200 {
		t.Fatalf("route = %d m, %d s: not dispatch's", e.GetDistanceMeters(), e.GetDurationSeconds())
	}
	if e.GetQuoteId() == "" || !e.GetExpiresAt().AsTime().Equal(clk.Now().Add(2*time.Minute)) {
		t.Fatalf("quote %q expires %v, want 2 minutes from now", e.GetQuoteId(), e.GetExpiresAt().AsTime())
	}

	applyEvent(t, h, db, supplyEvent(t, "e1", "z1", 2, 4, clk.Now()))
	e = estimate(t, h, &pricingv1.EstimateRequest{Caller: rider, Pickup: ferry, Dropoff: mission})
	if e.GetFare().GetAmount() != 3075 || e.GetSurgeMultiplier() != 1.5 || e.GetDegraded() {
		t.Fatalf("surged estimate = %v, want 3075 at ×1.5", e)
	}
}

// TestEstimateFallbacks: whatever dispatch or the surge state does, the
// rider gets a fare, marked degraded, without surge.
func TestEstimateFallbacks(t *testing.T) {
	straight := fallbackRoute(geo.FromProto(ferry), geo.FromProto(mission))
	cases := []struct {
		name  string
		setup func(f *fakeDispatch, db *sqldb.DB)
		route Route
	}{
		{"route fails", func(f *fakeDispatch, _ *sqldb.DB) { f.routeErr = apperr.E(apperr.Unavailable, "", "down") }, straight},
		{"dispatch hangs past the budget", func(f *fakeDispatch, _ *sqldb.DB) { f.hang = true }, straight},
		{"zone unknown", func(f *fakeDispatch, _ *sqldb.DB) { f.zoneErr = errors.New("connection refused") }, Route{10_000, 1200}},
		{"surge state unreadable", func(_ *fakeDispatch, db *sqldb.DB) { db.Close() }, Route{10_000, 1200}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, db, clk, fd := newTestHandler(t)
			applyEvent(t, h, db, supplyEvent(t, "e1", "z1", 1, 5, clk.Now())) // ×3.0 if it applied
			fd.set(func(f *fakeDispatch) { c.setup(f, db) })
			e := estimate(t, h, &pricingv1.EstimateRequest{Caller: rider, Pickup: ferry, Dropoff: mission})
			if !e.GetDegraded() || e.GetSurgeMultiplier() != 1 {
				t.Fatalf("estimate = %v, want degraded at ×1.0", e)
			}
			if got := (Route{int64(e.GetDistanceMeters()), int64(e.GetDurationSeconds())}); got != c.route {
				t.Fatalf("route %+v, want %+v", got, c.route)
			}
			if want := sf.Fare(c.route.Meters, c.route.Seconds, NoSurge); e.GetFare().GetAmount() != want {
				t.Fatalf("fare %d, want %d", e.GetFare().GetAmount(), want)
			}
			if e.GetQuoteId() == "" {
				t.Fatal("a degraded estimate has no quote")
			}
			fd.mu.Lock()
			defer fd.mu.Unlock()
			if len(fd.deadlines) != fd.calls {
				t.Fatalf("%d of %d dispatch calls had a deadline", len(fd.deadlines), fd.calls)
			}
			for _, left := range fd.deadlines {
				if left > testBudget {
					t.Fatalf("dispatch was given %s, more than the %s budget", left, testBudget)
				}
			}
		})
	}
}

func TestBadPoints(t *testing.T) {
	h, _, _, _ := newTestHandler(t)
	nyc := &geov1.Point{Lat: 40.7128, Lng: -74.0060}
	cases := []struct {
		name             string
		pickup, dropoff  *geov1.Point
		kind             apperr.Kind
		code, mentioning string
	}{
		{"pickup latitude out of range", &geov1.Point{Lat: 91, Lng: -122.4}, mission, apperr.Invalid, "invalid_argument", "pickup"},
		{"pickup not a number", &geov1.Point{Lat: math.NaN(), Lng: -122.4}, mission, apperr.Invalid, "invalid_argument", "pickup"},
		{"pickup missing (0,0)", nil, mission, apperr.Unprocessable, "outside_service_area", "pickup"},
		{"pickup in New York", nyc, mission, apperr.Unprocessable, "outside_service_area", "pickup"},
		{"dropoff longitude out of range", ferry, &geov1.Point{Lat: 37.7, Lng: -190}, apperr.Invalid, "invalid_argument", "dropoff"},
		{"dropoff in New York", ferry, nyc, apperr.Unprocessable, "outside_service_area", "dropoff"},
	}
	for _, c := range cases {
		_, err := rpcServer{h: h}.Estimate(context.Background(), connect.NewRequest(&pricingv1.EstimateRequest{Caller: rider, Pickup: c.pickup, Dropoff: c.dropoff}))
		if !apperr.Is(err, c.kind) || apperr.CodeOf(err) != c.code || !strings.Contains(err.Error(), c.mentioning) {
			t.Errorf("%s: %v (want %s %s naming %s)", c.name, err, c.kind, c.code, c.mentioning)
		}
		if c.dropoff != mission {
			continue
		}
		_, err = rpcServer{h: h}.GetSurge(context.Background(), connect.NewRequest(&pricingv1.GetSurgeRequest{Caller: rider, Location: c.pickup}))
		if !apperr.Is(err, c.kind) || apperr.CodeOf(err) != c.code {
			t.Errorf("GetSurge, %s: %v (want %s %s)", c.name, err, c.kind, c.code)
		}
	}
	_, err := rpcServer{h: h}.Estimate(context.Background(), connect.NewRequest(&pricingv1.EstimateRequest{Pickup: ferry, Dropoff: mission}))
	if !apperr.Is(err, apperr.Unauthenticated) {
		t.Errorf("no caller: %v", err)
	}
}

// TestQuoteRedeemed: the rider pays what they were shown while the quote
// lasts, for the trip it was made for; anything else is priced afresh.
func TestQuoteRedeemed(t *testing.T) {
	h, db, clk, fd := newTestHandler(t)
	applyEvent(t, h, db, supplyEvent(t, "e1", "z1", 2, 4, clk.Now()))
	shown := estimate(t, h, &pricingv1.EstimateRequest{Caller: rider, Pickup: ferry, Dropoff: mission})
	if shown.GetFare().GetAmount() != 3075 {
		t.Fatalf("shown %v", shown)
	}
	// Demand eases and the route gets longer: a fresh estimate changes...
	clk.Advance(time.Minute)
	applyEvent(t, h, db, supplyEvent(t, "e2", "z1", 5, 1, clk.Now()))
	fd.set(func(f *fakeDispatch) { f.route = Route{12_000, 1500} })
	fresh := estimate(t, h, &pricingv1.EstimateRequest{Caller: rider, Pickup: ferry, Dropoff: mission})
	if fresh.GetFare().GetAmount() != 250+1440+750 {
		t.Fatalf("fresh %v", fresh)
	}
	// ...but the quote holds, and needs no dispatch call to be honoured.
	calls := fd.callCount()
	fd.set(func(f *fakeDispatch) { f.hang = true })
	held := estimate(t, h, &pricingv1.EstimateRequest{Caller: &authv1.Caller{UserId: "rides", Role: authv1.Role_ROLE_SERVICE},
		Pickup: ferry, Dropoff: mission, QuoteId: shown.GetQuoteId()})
	if held.GetFare().GetAmount() != 3075 || held.GetSurgeMultiplier() != 1.5 || held.GetDistanceMeters() != 10_000 ||
		held.GetQuoteId() != shown.GetQuoteId() || !held.GetExpiresAt().AsTime().Equal(shown.GetExpiresAt().AsTime()) || held.GetDegraded() {
		t.Fatalf("redeemed %v, want the shown %v", held, shown)
	}
	if fd.callCount() != calls {
		t.Fatal("redeeming a quote called dispatch")
	}
	fd.set(func(f *fakeDispatch) { f.hang = false })

	freshFare := int64(250 + 1440 + 750)
	tampered := []byte(shown.GetQuoteId())
	tampered[5] ^= 1
	elsewhere := &geov1.Point{Lat: 37.7599, Lng: -122.4149}
	cases := []struct {
		name            string
		pickup, dropoff *geov1.Point
		quoteID         string
		advance         time.Duration
		wantFare        int64
		wantSameQuote   bool
	}{
		{"same points, same quote", ferry, mission, shown.GetQuoteId(), 0, 3075, true},
		{"another dropoff", ferry, elsewhere, shown.GetQuoteId(), 0, freshFare, false},
		{"points swapped", mission, ferry, shown.GetQuoteId(), 0, freshFare, false},
		{"tampered", ferry, mission, string(tampered), 0, freshFare, false},
		{"garbage", ferry, mission, "not-a-quote", 0, freshFare, false},
		{"last moment", ferry, mission, shown.GetQuoteId(), time.Minute - time.Millisecond, 3075, true},
		{"expired", ferry, mission, shown.GetQuoteId(), time.Millisecond, freshFare, false},
	}
	for _, c := range cases {
		clk.Advance(c.advance)
		applyEvent(t, h, db, supplyEvent(t, "keep-"+c.name, "z1", 5, 1, clk.Now())) // keep the zone fresh
		e := estimate(t, h, &pricingv1.EstimateRequest{Caller: rider, Pickup: c.pickup, Dropoff: c.dropoff, QuoteId: c.quoteID})
		if e.GetFare().GetAmount() != c.wantFare || (e.GetQuoteId() == shown.GetQuoteId()) != c.wantSameQuote {
			t.Errorf("%s: fare %d with quote %.12s…, want %d (same quote %v)", c.name, e.GetFare().GetAmount(), e.GetQuoteId(), c.wantFare, c.wantSameQuote)
		}
	}
}

func TestGetSurge(t *testing.T) {
	h, db, clk, fd := newTestHandler(t)
	applyEvent(t, h, db, supplyEvent(t, "e1", "z1", 1, 4, clk.Now()))
	res, err := rpcServer{h: h}.GetSurge(context.Background(), connect.NewRequest(&pricingv1.GetSurgeRequest{Caller: rider, Location: ferry}))
	if err != nil || res.Msg.GetMultiplier() != 2.5 || res.Msg.GetZone() != "z1" {
		t.Fatalf("GetSurge = %v, %v; want ×2.5 in z1", res, err)
	}
	fd.set(func(f *fakeDispatch) { f.zone = "z9" })
	res, err = rpcServer{h: h}.GetSurge(context.Background(), connect.NewRequest(&pricingv1.GetSurgeRequest{Caller: rider, Location: ferry}))
	if err != nil || res.Msg.GetMultiplier() != 1 || res.Msg.GetZone() != "z9" {
		t.Fatalf("GetSurge in an unreported zone = %v, %v; want ×1.0", res, err)
	}
	fd.set(func(f *fakeDispatch) { f.hang = true })
	_, err = rpcServer{h: h}.GetSurge(context.Background(), connect.NewRequest(&pricingv1.GetSurgeRequest{Caller: rider, Location: ferry}))
	if !apperr.Is(err, apperr.Unavailable) || apperr.CodeOf(err) != "surge_unavailable" {
		t.Fatalf("GetSurge without dispatch: %v, want unavailable", err)
	}
}
