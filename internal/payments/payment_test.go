package payments

import (
	"testing"

	moneyv1 "github.com/rideshare-platform/rideshare/api/money/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// TestTransitions is the state machine as a table: which operation each
// state allows, and the code of each refusal.
func TestTransitions(t *testing.T) {
	base := Payment{ID: "p", Currency: "USD", Authorized: 1000}
	with := func(s Status, captured, refunded int64, pending string) Payment {
		p := base
		p.Status, p.Captured, p.Refunded, p.Pending.Op = s, captured, refunded, pending
		return p
	}
	cases := []struct {
		name                     string
		p                        Payment
		capture, void, refund100 string // "" allowed, else the refusal's code
	}{
		{"authorizing", with(Authorizing, 0, 0, opAuthorize), "authorization_pending", "authorization_pending", "authorization_pending"},
		{"authorized", with(Authorized, 0, 0, ""), "", "", "payment_not_captured"},
		{"authorized, capture in flight", with(Authorized, 0, 0, opCapture), "operation_in_progress", "operation_in_progress", "operation_in_progress"},
		{"declined", with(Declined, 0, 0, ""), "payment_declined", "payment_declined", "payment_declined"},
		{"voided", with(Voided, 0, 0, ""), "payment_voided", "already_voided", "payment_voided"},
		{"captured", with(Captured, 500, 0, ""), "already_captured", "payment_captured", ""},
		{"captured, refund in flight", with(Captured, 500, 0, opRefund), "operation_in_progress", "operation_in_progress", "operation_in_progress"},
		{"partly refunded", with(Refunded, 500, 400, ""), "already_captured", "payment_captured", ""},
		{"fully refunded", with(Refunded, 500, 500, ""), "already_captured", "payment_captured", "refund_exceeds_captured"},
	}
	for _, c := range cases {
		for _, check := range []struct {
			op   string
			err  error
			want string
		}{
			{opCapture, c.p.checkCapture(usd(500)), c.capture},
			{opVoid, c.p.checkVoid(), c.void},
			{opRefund, c.p.checkRefund(usd(100)), c.refund100},
		} {
			switch {
			case check.want == "" && check.err != nil:
				t.Errorf("%s: %s refused: %v", c.name, check.op, check.err)
			case check.want != "" && apperr.CodeOf(check.err) != check.want:
				t.Errorf("%s: %s: got %v (code %q), want %q", c.name, check.op, check.err, apperr.CodeOf(check.err), check.want)
			}
		}
	}
}

func TestAmountsMustFit(t *testing.T) {
	p := Payment{Status: Authorized, Currency: "USD", Authorized: 1000}
	if err := p.checkCapture(&moneyv1.Money{Amount: 100, Currency: "EUR"}); apperr.CodeOf(err) != "currency_mismatch" {
		t.Errorf("capture in another currency: %v", err)
	}
	for _, m := range []*moneyv1.Money{nil, {Amount: 0, Currency: "USD"}, {Amount: -1, Currency: "USD"}, {Amount: 1, Currency: "usd"}, {Amount: 1}, {Amount: maxAmount + 1, Currency: "USD"}} {
		if err := checkMoney("amount", m); !apperr.Is(err, apperr.Invalid) {
			t.Errorf("%v accepted: %v", m, err)
		}
	}
}
