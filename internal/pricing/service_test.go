package pricing

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	"github.com/rideshare-platform/rideshare/api/dispatch/v1/dispatchv1connect"
	pricingv1 "github.com/rideshare-platform/rideshare/api/pricing/v1"
	"github.com/rideshare-platform/rideshare/api/pricing/v1/pricingv1connect"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/broker"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// dispatchServer is a hand-written dispatch over RPC: a fixed route and
// zone, or (hang) no answer until the caller gives up.
type dispatchServer struct {
	dispatchv1connect.UnimplementedDispatchServiceHandler
	mu      sync.Mutex
	meters  int32
	hang    bool
	callers []*authv1.Caller
}

func (s *dispatchServer) enter(ctx context.Context, c *authv1.Caller) error {
	s.mu.Lock()
	s.callers = append(s.callers, c)
	hang := s.hang
	s.mu.Unlock()
	if hang {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (s *dispatchServer) EstimateRoute(ctx context.Context, req *connect.Request[dispatchv1.EstimateRouteRequest]) (*connect.Response[dispatchv1.EstimateRouteResponse], error) {
	if err := s.enter(ctx, req.Msg.GetCaller()); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return connect.NewResponse(&dispatchv1.EstimateRouteResponse{DistanceMeters: s.meters, DurationSeconds: 1200}), nil
}

func (s *dispatchServer) GetSupply(ctx context.Context, req *connect.Request[dispatchv1.GetSupplyRequest]) (*connect.Response[dispatchv1.GetSupplyResponse], error) {
	if err := s.enter(ctx, req.Msg.GetCaller()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&dispatchv1.GetSupplyResponse{Zone: "z-1", AvailableDrivers: 99}), nil
}

// startDispatch serves s until t ends and returns its URL.
func startDispatch(t *testing.T, s *dispatchServer) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(dispatchv1connect.NewDispatchServiceHandler(s))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// deps are what platform.Run would give pricing, with dispatch at peer.
func deps(peer string, db *sqldb.DB, js jetstream.JetStream, settings map[string]string) (platform.Deps, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	d := platform.Deps{
		Config: platform.Config{Peers: map[string]string{"dispatch": peer}, Settings: settings},
		DB:     db, Outbox: outbox.New(db, "pricing", outbox.Options{}),
		HTTP: platform.NewHTTPClient(), Log: slog.New(slog.DiscardHandler), Metrics: reg, JS: js,
	}
	if js != nil {
		d.Events = outbox.NewConsumer(db, js, nil, reg)
	}
	return d, reg
}

// serve builds pricing from d, runs its workers and serves its RPC until t
// ends, and returns a client.
func serve(t *testing.T, d platform.Deps) pricingv1connect.PricingServiceClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	comp, err := newService(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, w := range comp.Workers {
		wg.Go(func() { _ = w.Run(ctx) })
	}
	srv := httptest.NewServer(comp.Handler)
	t.Cleanup(func() { srv.Close(); cancel(); wg.Wait() })
	return pricingv1connect.NewPricingServiceClient(http.DefaultClient, srv.URL, connect.WithInterceptors(apperr.Interceptor()))
}

func consumed(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "rideshare_events_consumed_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["consumer"] == "pricing-supply" && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestServiceSurgeFromDispatchEvents runs pricing as platform.Run would, with
// a real broker: dispatch's supply events (one delivered twice under a new
// message id, as after the broker's duplicate window) become the surge that
// GetSurge reports and Estimate charges.
func TestServiceSurgeFromDispatchEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dispatch := &dispatchServer{meters: 10_000}
	peer := startDispatch(t, dispatch)
	srv := testenv.Broker(t)
	_, js := testenv.Connect(t, srv)
	if err := broker.EnsureStreams(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	db := testenv.DB(t, Service.Migrations)
	// The default dispatch budget (300ms) is shorter than a loopback call can
	// take on a busy machine, and a missed budget makes GetSurge unavailable
	// and Estimate degraded: this test is about the events, not the budget.
	d, reg := deps(peer, db, js, map[string]string{"pricing.dispatch_timeout": "10s"})
	client := serve(t, d)

	publish := func(id, msgID string, drivers, requests int32, at time.Time) {
		t.Helper()
		data, err := proto.Marshal(supplyEvent(t, id, "z-1", drivers, requests, at))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, "dispatch.supply.changed", data, jetstream.WithMsgID(msgID)); err != nil {
			t.Fatal(err)
		}
	}
	surge := func() float64 {
		res, err := client.GetSurge(ctx, connect.NewRequest(&pricingv1.GetSurgeRequest{Caller: rider, Location: ferry}))
		if err != nil {
			t.Fatal(err)
		}
		if res.Msg.GetZone() != "z-1" {
			t.Fatalf("zone %q, want dispatch's z-1", res.Msg.GetZone())
		}
		return res.Msg.GetMultiplier()
	}

	now := time.Now()
	publish("e1", "e1", 2, 4, now)
	testenv.Eventually(t, 10*time.Second, func() bool { return surge() == 1.5 }, "surge never reached 1.5")
	publish("e1", "e1-again", 2, 4, now)
	publish("e2", "e2", 1, 5, now.Add(time.Millisecond))
	testenv.Eventually(t, 10*time.Second, func() bool { return surge() == 3 }, "surge never reached 3.0")
	testenv.Eventually(t, 10*time.Second, func() bool { return consumed(t, reg, "duplicate") == 1 }, "the redelivered event was not seen as a duplicate")
	testenv.Eventually(t, 10*time.Second, func() bool { return consumed(t, reg, "applied") == 2 }, "want 2 events applied (e1 once, e2)")

	res, err := client.Estimate(ctx, connect.NewRequest(&pricingv1.EstimateRequest{Caller: rider, Pickup: ferry, Dropoff: mission}))
	if err != nil {
		t.Fatal(err)
	}
	if e := res.Msg.GetEstimate(); e.GetFare().GetAmount() != 6150 || e.GetSurgeMultiplier() != 3 || e.GetDegraded() {
		t.Fatalf("estimate %v, want 6150 at ×3.0", e)
	}
	dispatch.mu.Lock()
	defer dispatch.mu.Unlock()
	for _, c := range dispatch.callers {
		if c.GetUserId() != "pricing" || c.GetRole() != authv1.Role_ROLE_SERVICE {
			t.Fatalf("pricing called dispatch as %v", c)
		}
	}
}

// TestServiceDispatchHangs: a dispatch that never answers costs an estimate
// the budget, not the caller's whole deadline, and the answer is degraded.
func TestServiceDispatchHangs(t *testing.T) {
	peer := startDispatch(t, &dispatchServer{hang: true})
	d, _ := deps(peer, testenv.DB(t, Service.Migrations), nil, map[string]string{"pricing.dispatch_timeout": "50ms"})
	client := serve(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := client.Estimate(ctx, connect.NewRequest(&pricingv1.EstimateRequest{Caller: rider, Pickup: ferry, Dropoff: mission}))
	if err != nil {
		t.Fatal(err)
	}
	e := res.Msg.GetEstimate()
	straight := fallbackRoute(geo.FromProto(ferry), geo.FromProto(mission))
	if !e.GetDegraded() || int64(e.GetDistanceMeters()) != straight.Meters || e.GetSurgeMultiplier() != 1 {
		t.Fatalf("estimate %v, want degraded on the straight-line route", e)
	}
	_, err = client.GetSurge(ctx, connect.NewRequest(&pricingv1.GetSurgeRequest{Caller: rider, Location: ferry}))
	if !apperr.Is(err, apperr.Unavailable) {
		t.Fatalf("GetSurge without dispatch: %v", err)
	}
}

// TestQuoteSurvivesRestart: a quote from one process is honoured by the
// next on the same database (the secret is kept there), and by any process
// given the same pricing.quote_key; not by one with another key.
func TestQuoteSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dispatch := &dispatchServer{meters: 10_000}
	peer := startDispatch(t, dispatch)
	estimate := func(c pricingv1connect.PricingServiceClient, quoteID string) *pricingv1.Estimate {
		t.Helper()
		res, err := c.Estimate(ctx, connect.NewRequest(&pricingv1.EstimateRequest{Caller: rider, Pickup: ferry, Dropoff: mission, QuoteId: quoteID}))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg.GetEstimate()
	}
	db := testenv.DB(t, Service.Migrations)
	d1, _ := deps(peer, db, nil, nil)
	shown := estimate(serve(t, d1), "")
	dispatch.mu.Lock()
	dispatch.meters = 20_000 // the route changes: fresh estimates cost more
	dispatch.mu.Unlock()

	d2, _ := deps(peer, db, nil, nil)
	if e := estimate(serve(t, d2), shown.GetQuoteId()); e.GetFare().GetAmount() != shown.GetFare().GetAmount() {
		t.Fatalf("after a restart the quote of %d became %d", shown.GetFare().GetAmount(), e.GetFare().GetAmount())
	}

	keyed := map[string]string{"pricing.quote_key": "shared secret"}
	k1, _ := deps(peer, testenv.DB(t, Service.Migrations), nil, keyed)
	k2, _ := deps(peer, testenv.DB(t, Service.Migrations), nil, keyed)
	quote := estimate(serve(t, k1), "")
	if e := estimate(serve(t, k2), quote.GetQuoteId()); e.GetQuoteId() != quote.GetQuoteId() {
		t.Fatal("a replica with the same quote key refused the quote")
	}
	d3, _ := deps(peer, db, nil, nil)
	if e := estimate(serve(t, d3), quote.GetQuoteId()); e.GetQuoteId() == quote.GetQuoteId() {
		t.Fatal("a service with another key honoured the quote")
	}
}

func TestSettingsRefused(t *testing.T) {
	peer := startDispatch(t, &dispatchServer{meters: 10_000})
	for _, s := range []map[string]string{
		{"pricing.quote_ttl": "soon"},
		{"pricing.dispatch_timeout": "-1s"},
		{"pricing.surge_cap": "0.5"},
		{"pricing.surge_k": "NaN"},
	} {
		d, _ := deps(peer, testenv.DB(t, Service.Migrations), nil, s)
		if _, err := newService(context.Background(), d); err == nil {
			t.Errorf("settings %v accepted", s)
		}
	}
	d, _ := deps(peer, testenv.DB(t, Service.Migrations), nil, nil)
	d.Config.Peers = nil
	if _, err := newService(context.Background(), d); err == nil {
		t.Error("started without dispatch's address")
	}
}
