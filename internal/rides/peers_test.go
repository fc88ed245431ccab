package rides

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	"github.com/rideshare-platform/rideshare/api/dispatch/v1/dispatchv1connect"
	paymentsv1 "github.com/rideshare-platform/rideshare/api/payments/v1"
	"github.com/rideshare-platform/rideshare/api/payments/v1/paymentsv1connect"
	ridesv1 "github.com/rideshare-platform/rideshare/api/rides/v1"
	"github.com/rideshare-platform/rideshare/api/rides/v1/ridesv1connect"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// stubPayments answers over real Connect, to check the adapters: what the
// saga sends arrives, and errors keep their kind and code across the hop,
// which is what transient() decides retries by.
type stubPayments struct {
	paymentsv1connect.UnimplementedPaymentsServiceHandler
	got *paymentsv1.AuthorizeRequest
}

func (s *stubPayments) Authorize(_ context.Context, req *connect.Request[paymentsv1.AuthorizeRequest]) (*connect.Response[paymentsv1.AuthorizeResponse], error) {
	s.got = req.Msg
	switch req.Msg.GetRideId() {
	case "down":
		return nil, apperr.E(apperr.Unavailable, "", "provider unreachable")
	case "in-flight":
		return nil, apperr.E(apperr.Conflict, "request_in_progress", "a authorize with this idempotency_key is still in progress; retry later")
	}
	return connect.NewResponse(&paymentsv1.AuthorizeResponse{Payment: &paymentsv1.Payment{Id: "p1", Status: paymentsv1.PaymentStatus_PAYMENT_STATUS_AUTHORIZED}}), nil
}

type stubDispatch struct {
	dispatchv1connect.UnimplementedDispatchServiceHandler
}

func (stubDispatch) RespondToOffer(context.Context, *connect.Request[dispatchv1.RespondToOfferRequest]) (*connect.Response[dispatchv1.RespondToOfferResponse], error) {
	return nil, apperr.E(apperr.Conflict, "offer_expired", "gone")
}

func TestAdaptersOverConnect(t *testing.T) {
	var d platform.Deps
	mux := http.NewServeMux()
	pay := &stubPayments{}
	mux.Handle(paymentsv1connect.NewPaymentsServiceHandler(pay, d.HandlerOptions()...))
	mux.Handle(dispatchv1connect.NewDispatchServiceHandler(stubDispatch{}, d.HandlerOptions()...))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx := context.Background()

	p := paymentsRPC{paymentsv1connect.NewPaymentsServiceClient(srv.Client(), srv.URL, d.ClientOptions()...)}
	got, err := p.Authorize(ctx, &paymentsv1.AuthorizeRequest{Caller: sagaCaller, IdempotencyKey: "r1:authorize", RideId: "r1"})
	if err != nil || got.GetId() != "p1" || pay.got.GetIdempotencyKey() != "r1:authorize" || pay.got.GetCaller().GetUserId() != "rides" {
		t.Fatalf("authorize: %v %v; sent %v", got, err, pay.got)
	}
	_, err = p.Authorize(ctx, &paymentsv1.AuthorizeRequest{RideId: "down"})
	if !apperr.Is(err, apperr.Unavailable) || !transient(err) {
		t.Fatalf("payments down: %v, want a transient Unavailable", err)
	}
	// A retry that meets the first attempt still holding the key must wait
	// for its outcome, not take it for a refusal: that attempt may yet
	// place the hold.
	_, err = p.Authorize(ctx, &paymentsv1.AuthorizeRequest{RideId: "in-flight"})
	if apperr.CodeOf(err) != "request_in_progress" || !transient(err) {
		t.Fatalf("authorize in flight: %v (%s), want a transient request_in_progress", err, apperr.CodeOf(err))
	}
	if _, err := p.Void(ctx, &paymentsv1.VoidRequest{}); !transient(err) {
		t.Fatalf("an RPC the peer does not implement yet: %v, want transient (it may be deployed later)", err)
	}

	disp := dispatchRPC{dispatchv1connect.NewDispatchServiceClient(srv.Client(), srv.URL, d.ClientOptions()...)}
	_, err = disp.RespondToOffer(ctx, &dispatchv1.RespondToOfferRequest{RideId: "r1"})
	if apperr.KindOf(err) != apperr.Conflict || apperr.CodeOf(err) != "offer_expired" || transient(err) {
		t.Fatalf("offer expired: %v (%s), want Conflict offer_expired", err, apperr.CodeOf(err))
	}
}

func TestPolicySettings(t *testing.T) {
	set := func(kv map[string]string) func(string, string) string {
		return func(k, def string) string {
			if v, ok := kv[k]; ok {
				return v
			}
			return def
		}
	}
	pol, err := policyFrom(set(nil))
	if err != nil || pol != defaultPolicy {
		t.Fatalf("defaults: %+v %v", pol, err)
	}
	pol, err = policyFrom(set(map[string]string{"rides.search_timeout": "90s", "rides.cancel_grace": "5m", "rides.cancel_fee": "0", "rides.hold_timeout": "12s"}))
	if err != nil || pol.searchTimeout.Seconds() != 90 || pol.cancelGrace.Minutes() != 5 || pol.cancelFee != 0 || pol.holdTimeout.Seconds() != 12 {
		t.Fatalf("settings: %+v %v", pol, err)
	}
	for _, bad := range []map[string]string{{"rides.search_timeout": "soon"}, {"rides.cancel_grace": "-1s"}, {"rides.cancel_fee": "-5"}, {"rides.hold_timeout": "0s"}} {
		if _, err := policyFrom(set(bad)); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// TestServiceWiring builds the service as platform.Run does and calls it
// over Connect.
func TestServiceWiring(t *testing.T) {
	db := testenv.DB(t, Service.Migrations)
	d := platform.Deps{
		Config: platform.Config{Peers: map[string]string{"pricing": "http://127.0.0.1:1", "payments": "http://127.0.0.1:1", "dispatch": "http://127.0.0.1:1"}},
		DB:     db, Outbox: outbox.New(db, "rides", outbox.Options{}), HTTP: http.DefaultClient,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: prometheus.NewRegistry(),
	}
	comp, err := Service.New(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	if len(comp.Workers) != 2 {
		t.Fatalf("%d workers without a broker, want the saga and the key janitor", len(comp.Workers))
	}
	srv := httptest.NewServer(comp.Handler)
	defer srv.Close()
	c := ridesv1connect.NewRidesServiceClient(srv.Client(), srv.URL, d.ClientOptions()...)
	res, err := c.RequestRide(context.Background(), connect.NewRequest(&ridesv1.RequestRideRequest{
		Caller: rider("alice"), IdempotencyKey: "k", Pickup: pickup, Dropoff: dropoff,
	}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetRide(context.Background(), connect.NewRequest(&ridesv1.GetRideRequest{Caller: rider("bob"), RideId: res.Msg.GetRide().GetId()}))
	if !apperr.Is(err, apperr.NotFound) {
		t.Fatalf("another rider over RPC: %v, want NotFound", err)
	}

	delete(d.Config.Peers, "payments")
	if _, err := Service.New(context.Background(), d); err == nil {
		t.Fatal("built without an address for payments")
	}
}
