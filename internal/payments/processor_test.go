package payments

import (
	"context"
	"errors"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	paymentsv1 "github.com/rideshare-platform/rideshare/api/payments/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// wantErr fails unless err has kind and code.
func wantErr(t *testing.T, what string, err error, kind apperr.Kind, code string) {
	t.Helper()
	if !apperr.Is(err, kind) || (code != "" && apperr.CodeOf(err) != code) {
		t.Fatalf("%s: got %v (code %q), want %s %s", what, err, apperr.CodeOf(err), kind, code)
	}
}

func TestRideLifecycleBooksEveryMovement(t *testing.T) {
	r := newRig(t)
	p := must(t)(r.authorize("ride-1:authorize", "ride-1", 2000, ""))
	if p.GetStatus() != paymentsv1.PaymentStatus_PAYMENT_STATUS_AUTHORIZED || p.GetAuthorized().GetAmount() != 2000 || p.GetRideId() != "ride-1" {
		t.Fatalf("authorize: %v", p)
	}
	p = must(t)(r.capture("ride-1:capture", p.GetId(), 1500))
	if p.GetStatus() != paymentsv1.PaymentStatus_PAYMENT_STATUS_CAPTURED || p.GetCaptured().GetAmount() != 1500 || p.GetCapturedAt() == nil {
		t.Fatalf("capture: %v", p)
	}
	p = must(t)(r.refund("ride-1:refund:1", p.GetId(), 500))
	p = must(t)(r.refund("ride-1:refund:2", p.GetId(), 1000))
	if p.GetStatus() != paymentsv1.PaymentStatus_PAYMENT_STATUS_REFUNDED || p.GetRefunded().GetAmount() != 1500 {
		t.Fatalf("refunds: %v", p)
	}
	_, err := r.refund("ride-1:refund:3", p.GetId(), 1)
	wantErr(t, "refund beyond the capture", err, apperr.Unprocessable, "refund_exceeds_captured")

	rep := r.ledgerOK()
	// hold 2 lines, capture 4 (revenue, payable, released rest, hold), refunds 3 each.
	if rep.Transactions != 4 || rep.Entries != 12 || rep.Debits != 2000+2000+500+1000 {
		t.Fatalf("ledger: %+v", rep)
	}
	for typ, n := range map[string]int{"payment.authorized": 1, "payment.captured": 1, "payment.refunded": 2, "payment.voided": 0} {
		if got := r.events(typ); got != n {
			t.Errorf("%d %s events, want %d", got, typ, n)
		}
	}
	// Everything refunded: platform and driver are back to zero, the rider
	// has been made whole, no hold is left open.
	for acct, want := range map[Account]int64{RiderFunding: 0, RiderHolds: 0, PlatformRevenue: 0, DriverPayable: 0} {
		if got := r.balance(acct); got != want {
			t.Errorf("%s balance %d, want %d", acct, got, want)
		}
	}
}

// balance is an account's debits minus credits.
func (r *rig) balance(a Account) int64 {
	var n int64
	if err := r.db.Reader().QueryRowContext(context.Background(),
		`SELECT COALESCE(SUM(debit - credit), 0) FROM ledger_entries WHERE account = $1`, string(a)).Scan(&n); err != nil {
		r.t.Fatal(err)
	}
	return n
}

func TestIdempotentRetriesHaveOneEffect(t *testing.T) {
	r := newRig(t)
	first := must(t)(r.authorize("k-auth", "ride-1", 1000, ""))
	again := must(t)(r.authorize("k-auth", "ride-1", 1000, ""))
	if !proto.Equal(first, again) {
		t.Fatalf("retry answered differently:\n%v\n%v", first, again)
	}
	c1 := must(t)(r.capture("k-cap", first.GetId(), 800))
	c2 := must(t)(r.capture("k-cap", first.GetId(), 800))
	if !proto.Equal(c1, c2) {
		t.Fatalf("capture retry answered differently:\n%v\n%v", c1, c2)
	}
	// An authorize retried after the capture still answers what it first
	// answered: the response is the first response, not today's state.
	if late := must(t)(r.authorize("k-auth", "ride-1", 1000, "")); !proto.Equal(first, late) {
		t.Fatalf("late retry: %v, want the first response %v", late, first)
	}
	if r.networkOps(opAuthorize) != 1 || r.networkOps(opCapture) != 1 || r.net.count(opAuthorize) != 1 || r.net.count(opCapture) != 1 {
		t.Fatalf("network saw %d/%d authorizations and %d/%d captures, want one call each",
			r.networkOps(opAuthorize), r.net.count(opAuthorize), r.networkOps(opCapture), r.net.count(opCapture))
	}
	if r.events("payment.authorized") != 1 || r.events("payment.captured") != 1 || r.ledgerTxs(first.GetId(), kindCapture) != 1 {
		t.Fatal("a retry emitted a second event or ledger transaction")
	}
	r.ledgerOK()
}

func TestIdempotencyKeyReusedForADifferentRequest(t *testing.T) {
	r := newRig(t)
	p := must(t)(r.authorize("k", "ride-1", 1000, ""))
	cases := []struct {
		name string
		call func() (*paymentsv1.Payment, error)
	}{
		{"other amount", func() (*paymentsv1.Payment, error) { return r.authorize("k", "ride-1", 1001, "") }},
		{"other ride", func() (*paymentsv1.Payment, error) { return r.authorize("k", "ride-2", 1000, "") }},
		{"other method", func() (*paymentsv1.Payment, error) { return r.authorize("k", "ride-1", 1000, "card_declined") }},
	}
	for _, c := range cases {
		_, err := c.call()
		wantErr(t, c.name, err, apperr.Unprocessable, "idempotency_key_reused")
	}
	must(t)(r.capture("c", p.GetId(), 500))
	_, err := r.capture("c", p.GetId(), 600)
	wantErr(t, "capture with another amount", err, apperr.Unprocessable, "idempotency_key_reused")
	if r.count(`SELECT count(*) FROM payments`) != 1 || r.networkOps(opAuthorize) != 1 || r.networkOps(opCapture) != 1 {
		t.Fatal("a reused key had an effect")
	}
}

func TestIdempotencyKeysAreScopedByOperationAndCaller(t *testing.T) {
	r := newRig(t)
	p := must(t)(r.authorize("same", "ride-1", 1000, ""))
	// The same key for another operation is another key.
	if c := must(t)(r.capture("same", p.GetId(), 1000)); c.GetStatus() != paymentsv1.PaymentStatus_PAYMENT_STATUS_CAPTURED {
		t.Fatalf("capture: %v", c)
	}
	// And for another caller: an operator's key "same" is not the saga's.
	admin := &authv1.Caller{UserId: "ops-1", Role: authv1.Role_ROLE_ADMIN}
	res, err := r.h.Refund(context.Background(), connect.NewRequest(&paymentsv1.RefundRequest{Caller: admin, IdempotencyKey: "same", PaymentId: p.GetId(), Amount: usd(100)}))
	if err != nil || res.Msg.GetPayment().GetRefunded().GetAmount() != 100 {
		t.Fatalf("admin refund: %v", err)
	}
	res, err = r.h.Refund(context.Background(), connect.NewRequest(&paymentsv1.RefundRequest{Caller: saga, IdempotencyKey: "same", PaymentId: p.GetId(), Amount: usd(100)}))
	if err != nil || res.Msg.GetPayment().GetRefunded().GetAmount() != 200 {
		t.Fatalf("saga refund under the same key: %v %v", err, res)
	}
	r.ledgerOK()
}

func TestDeclineIsAResultNotAnError(t *testing.T) {
	cases := []struct {
		name        string
		method      string
		declineRate float64
		reason      string
	}{
		{"test card declined", "card_declined", 0, "card_declined"},
		{"test card insufficient funds", "card_insufficient_funds", 0, "insufficient_funds"},
		{"contract's pm_ spelling", "pm_card_declined", 0, "card_declined"},
		{"decline_rate=1 declines a good card", "", 1, "generic_decline"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			r.card.DeclineRate = c.declineRate
			p, err := r.authorize("ride-1:authorize", "ride-1", 1000, c.method)
			if err != nil {
				t.Fatalf("a decline must not be an error: %v", err)
			}
			if p.GetStatus() != paymentsv1.PaymentStatus_PAYMENT_STATUS_DECLINED || p.GetDeclineReason() != c.reason {
				t.Fatalf("got %v %q, want DECLINED %q", p.GetStatus(), p.GetDeclineReason(), c.reason)
			}
			if r.events("payment.declined") != 1 || r.events("payment.authorized") != 0 {
				t.Fatal("want one PaymentDeclined and no PaymentAuthorized")
			}
			if r.count(`SELECT count(*) FROM ledger_transactions`) != 0 {
				t.Fatal("a decline moved money in the ledger")
			}
			// Retried, the decline is the same answer (even with random
			// declines), and a declined payment cannot be captured.
			if again := must(t)(r.authorize("ride-1:authorize", "ride-1", 1000, c.method)); !proto.Equal(p, again) {
				t.Fatalf("retry: %v", again)
			}
			_, err = r.capture("ride-1:capture", p.GetId(), 1000)
			wantErr(t, "capture of a declined payment", err, apperr.Conflict, "payment_declined")
			r.ledgerOK()
		})
	}
	t.Run("good card with decline_rate=0", func(t *testing.T) {
		r := newRig(t)
		for _, m := range []string{"", "pm_visa", "anything"} {
			if p := must(t)(r.authorize("key-"+m, "ride-"+m, 1000, m)); p.GetStatus() != paymentsv1.PaymentStatus_PAYMENT_STATUS_AUTHORIZED {
				t.Errorf("method %q: %v", m, p.GetStatus())
			}
		}
	})
}

func TestIllegalTransitionsMoveNoMoney(t *testing.T) {
	type step struct {
		op     string // capture, void, refund
		amount int64
		kind   apperr.Kind // 0: must succeed
		code   string
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"capture after void", []step{{opVoid, 0, 0, ""}, {opCapture, 1000, apperr.Conflict, "payment_voided"}}},
		{"void after capture", []step{{opCapture, 1000, 0, ""}, {opVoid, 0, apperr.Conflict, "payment_captured"}}},
		{"capture twice", []step{{opCapture, 400, 0, ""}, {opCapture, 400, apperr.Conflict, "already_captured"}}},
		{"void twice", []step{{opVoid, 0, 0, ""}, {opVoid, 0, apperr.Conflict, "already_voided"}}},
		{"refund before capture", []step{{opRefund, 100, apperr.Conflict, "payment_not_captured"}}},
		{"refund after void", []step{{opVoid, 0, 0, ""}, {opRefund, 100, apperr.Conflict, "payment_voided"}}},
		{"capture more than held", []step{{opCapture, 1001, apperr.Unprocessable, "amount_exceeds_authorized"}, {opCapture, 1000, 0, ""}}},
		{"refund more than captured", []step{{opCapture, 600, 0, ""}, {opRefund, 601, apperr.Unprocessable, "refund_exceeds_captured"}, {opRefund, 600, 0, ""}}},
		{"refunds in parts, never beyond", []step{{opCapture, 600, 0, ""}, {opRefund, 400, 0, ""}, {opRefund, 201, apperr.Unprocessable, "refund_exceeds_captured"}, {opRefund, 200, 0, ""}, {opRefund, 1, apperr.Unprocessable, "refund_exceeds_captured"}}},
		{"capture after refund", []step{{opCapture, 600, 0, ""}, {opRefund, 600, 0, ""}, {opCapture, 100, apperr.Conflict, "already_captured"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			p := must(t)(r.authorize("a", "ride-1", 1000, ""))
			for i, s := range c.steps {
				key := s.op + string(rune('a'+i))
				var err error
				switch s.op {
				case opCapture:
					_, err = r.capture(key, p.GetId(), s.amount)
				case opVoid:
					_, err = r.void(key, p.GetId())
				case opRefund:
					_, err = r.refund(key, p.GetId(), s.amount)
				}
				if s.kind == 0 && err != nil {
					t.Fatalf("step %d %s: %v", i, s.op, err)
				}
				if s.kind != 0 {
					wantErr(t, s.op, err, s.kind, s.code)
				}
			}
			if r.networkOps(opCapture)+r.networkOps(opVoid) > 1 {
				t.Fatal("the hold was settled twice at the network")
			}
			r.ledgerOK()
		})
	}
}

func TestOnePaymentPerRide(t *testing.T) {
	r := newRig(t)
	p := must(t)(r.authorize("first", "ride-1", 1000, ""))
	_, err := r.authorize("second", "ride-1", 1000, "")
	wantErr(t, "second authorization of a ride", err, apperr.Conflict, "payment_exists")
	if r.networkOps(opAuthorize) != 1 {
		t.Fatal("a second hold was placed")
	}
	got, err := r.h.GetPayment(context.Background(), connect.NewRequest(&paymentsv1.GetPaymentRequest{Caller: saga, Lookup: &paymentsv1.GetPaymentRequest_RideId{RideId: "ride-1"}}))
	if err != nil || got.Msg.GetPayment().GetId() != p.GetId() {
		t.Fatalf("by ride: %v %v", got, err)
	}
}

// TestCrashAfterTheNetworkCall is the worst moment to die: the network
// moved money and nothing was recorded. A retry with the same key, after
// the dead attempt's lease, completes the operation exactly once.
func TestCrashAfterTheNetworkCall(t *testing.T) {
	died := errors.New("process died")
	r := newRig(t)

	r.pr.afterNetwork = func(string) error { return died }
	if _, err := r.authorize("ride-1:authorize", "ride-1", 1000, ""); !errors.Is(err, died) {
		t.Fatalf("want the crash, got %v", err)
	}
	if r.networkOps(opAuthorize) != 1 || r.events("payment.authorized") != 0 || r.count(`SELECT count(*) FROM ledger_transactions`) != 0 {
		t.Fatal("before the retry: the hold should exist at the network only")
	}
	r.restart()
	// While the dead attempt's lease runs, the key is "in progress".
	_, err := r.authorize("ride-1:authorize", "ride-1", 1000, "")
	wantErr(t, "retry within the lease", err, apperr.Conflict, "request_in_progress")
	r.clock.Advance(r.pr.lease + time.Second)
	p := must(t)(r.authorize("ride-1:authorize", "ride-1", 1000, ""))
	if p.GetStatus() != paymentsv1.PaymentStatus_PAYMENT_STATUS_AUTHORIZED {
		t.Fatalf("after the retry: %v", p)
	}
	if again := must(t)(r.authorize("ride-1:authorize", "ride-1", 1000, "")); !proto.Equal(p, again) {
		t.Fatal("a later retry answered differently")
	}
	if r.networkOps(opAuthorize) != 1 || r.events("payment.authorized") != 1 || r.ledgerTxs(p.GetId(), kindHold) != 1 {
		t.Fatalf("want one hold everywhere: network %d, events %d, ledger %d",
			r.networkOps(opAuthorize), r.events("payment.authorized"), r.ledgerTxs(p.GetId(), kindHold))
	}

	// The same for a capture and a refund.
	for _, op := range []string{opCapture, opRefund} {
		r.pr.afterNetwork = func(string) error { return died }
		call := func() (*paymentsv1.Payment, error) {
			if op == opCapture {
				return r.capture("ride-1:capture", p.GetId(), 900)
			}
			return r.refund("ride-1:refund", p.GetId(), 300)
		}
		if _, err := call(); !errors.Is(err, died) {
			t.Fatalf("%s: want the crash, got %v", op, err)
		}
		r.restart()
		r.clock.Advance(r.pr.lease + time.Second)
		first := must(t)(call())
		if second := must(t)(call()); !proto.Equal(first, second) {
			t.Fatalf("%s: retries answered differently", op)
		}
	}
	if r.networkOps(opCapture) != 1 || r.networkOps(opRefund) != 1 || r.events("payment.captured") != 1 || r.events("payment.refunded") != 1 ||
		r.ledgerTxs(p.GetId(), kindCapture) != 1 || r.ledgerTxs(p.GetId(), kindRefund) != 1 {
		t.Fatal("a retried capture or refund happened twice")
	}
	r.ledgerOK()
}

// TestRecoveryWorkerFinishesAbandonedOperations: a caller that crashed and
// never retried still gets its hold recorded, so it can be voided.
func TestRecoveryWorkerFinishesAbandonedOperations(t *testing.T) {
	r := newRig(t)
	r.pr.afterNetwork = func(string) error { return errors.New("process died") }
	if _, err := r.authorize("ride-1:authorize", "ride-1", 1000, ""); err == nil {
		t.Fatal("want the crash")
	}
	r.restart()
	// A void under another key cannot run before the hold is known.
	var pid string
	if err := r.db.Reader().QueryRow(`SELECT id FROM payments WHERE ride_id = 'ride-1'`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	_, err := r.void("ride-1:void", pid)
	wantErr(t, "void of a hold in flight", err, apperr.Conflict, "authorization_pending")
	_, err = r.h.GetPayment(context.Background(), connect.NewRequest(&paymentsv1.GetPaymentRequest{Caller: saga, Lookup: &paymentsv1.GetPaymentRequest_PaymentId{PaymentId: pid}}))
	wantErr(t, "reading a payment in flight", err, apperr.NotFound, "payment_pending")

	if n, err := r.pr.recoverPending(context.Background()); err != nil || n != 0 {
		t.Fatalf("recovered %d (%v) while the lease still runs", n, err)
	}
	r.clock.Advance(r.pr.lease + time.Second)
	if n, err := r.pr.recoverPending(context.Background()); err != nil || n != 1 {
		t.Fatalf("recovered %d, err %v; want 1", n, err)
	}
	if v := must(t)(r.void("ride-1:void", pid)); v.GetStatus() != paymentsv1.PaymentStatus_PAYMENT_STATUS_VOIDED {
		t.Fatalf("void: %v", v)
	}
	// The abandoned caller's retry gets the recorded authorization.
	if p := must(t)(r.authorize("ride-1:authorize", "ride-1", 1000, "")); p.GetStatus() != paymentsv1.PaymentStatus_PAYMENT_STATUS_AUTHORIZED {
		t.Fatalf("late retry: %v", p)
	}
	if r.networkOps(opAuthorize) != 1 || r.events("payment.authorized") != 1 || r.events("payment.voided") != 1 {
		t.Fatal("recovery duplicated an effect")
	}
	r.ledgerOK()
}

func TestNetworkFailureIsUnavailableAndRetryable(t *testing.T) {
	r := newRig(t)
	// Down before the network acted.
	r.net.fail(1, 0)
	_, err := r.authorize("a", "ride-1", 1000, "")
	wantErr(t, "network down", err, apperr.Unavailable, "network_unavailable")
	p := must(t)(r.authorize("a", "ride-1", 1000, "")) // at once: the failed attempt released its lease
	// The network acted but the answer was lost.
	r.net.fail(0, 1)
	_, err = r.capture("c", p.GetId(), 1000)
	wantErr(t, "answer lost", err, apperr.Unavailable, "network_unavailable")
	if c := must(t)(r.capture("c", p.GetId(), 1000)); c.GetCaptured().GetAmount() != 1000 {
		t.Fatalf("capture: %v", c)
	}
	if r.networkOps(opAuthorize) != 1 || r.networkOps(opCapture) != 1 || r.net.count(opCapture) != 2 {
		t.Fatalf("network: %d holds, %d captures from %d calls; want 1, 1, 2",
			r.networkOps(opAuthorize), r.networkOps(opCapture), r.net.count(opCapture))
	}
	r.ledgerOK()
}

func TestKeyRetention(t *testing.T) {
	r := newRig(t)
	must(t)(r.authorize("old", "ride-1", 1000, ""))
	r.pr.afterNetwork = func(string) error { return errors.New("died") }
	_, _ = r.authorize("pending", "ride-2", 1000, "")
	r.pr.afterNetwork = nil
	r.clock.Advance(keyRetention + time.Second)
	if n, err := r.pr.purge(context.Background()); err != nil || n != 1 {
		t.Fatalf("purged %d (%v), want the one finished key", n, err)
	}
	if r.count(`SELECT count(*) FROM idempotency_keys WHERE idem_key = 'pending'`) != 1 {
		t.Fatal("a pending key was purged: its operation could never finish")
	}
}
