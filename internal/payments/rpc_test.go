package payments

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	moneyv1 "github.com/rideshare-platform/rideshare/api/money/v1"
	paymentsv1 "github.com/rideshare-platform/rideshare/api/payments/v1"
	"github.com/rideshare-platform/rideshare/api/payments/v1/paymentsv1connect"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

func TestOnlyThePlatformMovesMoney(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	p := must(t)(r.authorize("a", "ride-1", 1000, ""))
	rider := &authv1.Caller{UserId: "rider-ride-1", Role: authv1.Role_ROLE_RIDER}
	driver := &authv1.Caller{UserId: "d", Role: authv1.Role_ROLE_DRIVER}
	for _, c := range []*authv1.Caller{rider, driver, nil} {
		_, err := r.h.Authorize(ctx, connect.NewRequest(&paymentsv1.AuthorizeRequest{Caller: c, IdempotencyKey: "x", RideId: "ride-2", RiderId: "r", Amount: usd(1)}))
		wantErr(t, "authorize", err, apperr.Forbidden, "")
		_, err = r.h.Capture(ctx, connect.NewRequest(&paymentsv1.CaptureRequest{Caller: c, IdempotencyKey: "x", PaymentId: p.GetId(), Amount: usd(1)}))
		wantErr(t, "capture", err, apperr.Forbidden, "")
		_, err = r.h.Void(ctx, connect.NewRequest(&paymentsv1.VoidRequest{Caller: c, IdempotencyKey: "x", PaymentId: p.GetId()}))
		wantErr(t, "void", err, apperr.Forbidden, "")
		_, err = r.h.Refund(ctx, connect.NewRequest(&paymentsv1.RefundRequest{Caller: c, IdempotencyKey: "x", PaymentId: p.GetId(), Amount: usd(1)}))
		wantErr(t, "refund", err, apperr.Forbidden, "")
		// Even the rider whose payment it is: receipts come through rides.
		_, err = r.h.GetPayment(ctx, connect.NewRequest(&paymentsv1.GetPaymentRequest{Caller: c, Lookup: &paymentsv1.GetPaymentRequest_PaymentId{PaymentId: p.GetId()}}))
		wantErr(t, "get", err, apperr.NotFound, "")
		_, err = r.h.CheckLedger(ctx, connect.NewRequest(&paymentsv1.CheckLedgerRequest{Caller: c}))
		wantErr(t, "check ledger", err, apperr.Forbidden, "")
	}
	if r.networkOps(opCapture)+r.networkOps(opVoid)+r.networkOps(opRefund) != 0 || r.count(`SELECT count(*) FROM payments`) != 1 {
		t.Fatal("a refused caller moved money")
	}
	admin := &authv1.Caller{UserId: "ops", Role: authv1.Role_ROLE_ADMIN}
	got, err := r.h.GetPayment(ctx, connect.NewRequest(&paymentsv1.GetPaymentRequest{Caller: admin, Lookup: &paymentsv1.GetPaymentRequest_PaymentId{PaymentId: p.GetId()}}))
	if err != nil || got.Msg.GetPayment().GetRideId() != "ride-1" {
		t.Fatalf("admin read: %v", err)
	}
}

func TestRequestValidation(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	cases := []struct {
		name string
		req  *paymentsv1.AuthorizeRequest
		code string
	}{
		{"no key", &paymentsv1.AuthorizeRequest{Caller: saga, RideId: "r", RiderId: "u", Amount: usd(1)}, "idempotency_key_required"},
		{"no ride", &paymentsv1.AuthorizeRequest{Caller: saga, IdempotencyKey: "k", RiderId: "u", Amount: usd(1)}, "invalid_argument"},
		{"no rider", &paymentsv1.AuthorizeRequest{Caller: saga, IdempotencyKey: "k", RideId: "r", Amount: usd(1)}, "invalid_argument"},
		{"no amount", &paymentsv1.AuthorizeRequest{Caller: saga, IdempotencyKey: "k", RideId: "r", RiderId: "u"}, "invalid_argument"},
		{"zero amount", &paymentsv1.AuthorizeRequest{Caller: saga, IdempotencyKey: "k", RideId: "r", RiderId: "u", Amount: usd(0)}, "invalid_argument"},
		{"bad currency", &paymentsv1.AuthorizeRequest{Caller: saga, IdempotencyKey: "k", RideId: "r", RiderId: "u", Amount: &moneyv1.Money{Amount: 1, Currency: "dollars"}}, "invalid_argument"},
	}
	for _, c := range cases {
		_, err := r.h.Authorize(ctx, connect.NewRequest(c.req))
		wantErr(t, c.name, err, apperr.Invalid, c.code)
	}
	_, err := r.capture("k", "no-such-payment", 10)
	wantErr(t, "capture of an unknown payment", err, apperr.NotFound, "")
	_, err = r.h.GetPayment(ctx, connect.NewRequest(&paymentsv1.GetPaymentRequest{Caller: saga}))
	wantErr(t, "get without a lookup", err, apperr.Invalid, "")
	if r.count(`SELECT count(*) FROM idempotency_keys`) != 0 {
		t.Fatal("a refused request left an idempotency key behind")
	}
}

func TestReadSettings(t *testing.T) {
	cases := []struct {
		set  map[string]string
		ok   bool
		want Settings
	}{
		{nil, true, Settings{}},
		{map[string]string{"payments.latency": "250ms", "payments.decline_rate": "0.2"}, true, Settings{Latency: 250e6, DeclineRate: 0.2}},
		{map[string]string{"payments.latency": "fast"}, false, Settings{}},
		{map[string]string{"payments.latency": "-1s"}, false, Settings{}},
		{map[string]string{"payments.decline_rate": "1.5"}, false, Settings{}},
		{map[string]string{"payments.decline_rate": "often"}, false, Settings{}},
	}
	for _, c := range cases {
		got, err := readSettings(platform.Deps{Config: platform.Config{Settings: c.set}})
		if c.ok != (err == nil) || (c.ok && got != c.want) {
			t.Errorf("%v: got %+v, %v", c.set, got, err)
		}
	}
}

// TestOverTheWire runs the service as the platform wires it and calls it as
// the saga would: a decline arrives as a result, refusals keep their kind
// and code across the hop, and the operations are counted.
func TestOverTheWire(t *testing.T) {
	ctx := context.Background()
	db := testenv.DB(t, Service.Migrations)
	reg := prometheus.NewRegistry()
	d := platform.Deps{
		Config:  platform.Config{Settings: map[string]string{"payments.decline_rate": "1"}},
		DB:      db,
		Outbox:  outbox.New(db, "payments", outbox.Options{}),
		Metrics: reg,
		Log:     slog.New(slog.DiscardHandler),
	}
	comp, err := newService(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(comp.Handler)
	t.Cleanup(srv.Close)
	client := paymentsv1connect.NewPaymentsServiceClient(srv.Client(), srv.URL, d.ClientOptions()...)

	res, err := client.Authorize(ctx, connect.NewRequest(&paymentsv1.AuthorizeRequest{Caller: saga, IdempotencyKey: "ride-1:authorize", RideId: "ride-1", RiderId: "u", Amount: usd(900)}))
	if err != nil || res.Msg.GetPayment().GetStatus() != paymentsv1.PaymentStatus_PAYMENT_STATUS_DECLINED {
		t.Fatalf("authorize with decline_rate=1: %v %v", res, err)
	}
	_, err = client.Authorize(ctx, connect.NewRequest(&paymentsv1.AuthorizeRequest{Caller: saga, IdempotencyKey: "ride-1:authorize", RideId: "ride-1", RiderId: "u", Amount: usd(901)}))
	wantErr(t, "reused key over the wire", err, apperr.Unprocessable, "idempotency_key_reused")
	_, err = client.Capture(ctx, connect.NewRequest(&paymentsv1.CaptureRequest{Caller: saga, IdempotencyKey: "c", PaymentId: res.Msg.GetPayment().GetId(), Amount: usd(900)}))
	wantErr(t, "capture of a declined payment over the wire", err, apperr.Conflict, "payment_declined")
	check, err := client.CheckLedger(ctx, connect.NewRequest(&paymentsv1.CheckLedgerRequest{Caller: saga}))
	if err != nil || !check.Msg.GetBalanced() {
		t.Fatalf("check ledger: %v %v", check, err)
	}

	counts := map[string]float64{}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "rideshare_payments_operations_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				key += l.GetValue() + "/"
			}
			counts[key] = m.GetCounter().GetValue()
		}
	}
	for key, want := range map[string]float64{"authorize/declined/": 1, "authorize/rejected/": 1, "capture/rejected/": 1} {
		if counts[key] != want {
			t.Errorf("operations{%s} = %v, want %v (all: %v)", key, counts[key], want, counts)
		}
	}
}
