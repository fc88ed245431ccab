package payments

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	paymentsv1 "github.com/rideshare-platform/rideshare/api/payments/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestLedgerUnderRandomOperations is the property test: random sequences
// of authorize, capture, void and refund over a few rides, with random
// retries of earlier requests, keys reused for other requests, crashes
// after the network call and network failures. After every step the ledger
// balances and agrees with every payment; every decision matches a model of
// the rules; at the end the card network agrees with the books (one capture
// at most per payment, refunds within it).
func TestLedgerUnderRandomOperations(t *testing.T) {
	seeds := []uint64{1, 2, 3, uint64(time.Now().UnixNano())}
	for _, e := range testenv.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			for _, seed := range seeds {
				t.Run(fmt.Sprint(seed), func(t *testing.T) {
					runRandomOperations(t, rigOn(t, testenv.Migrate(t, e.Open(t), Service.Migrations)), seed, 150)
				})
			}
		})
	}
}

// rideModel is what the rules say a ride's payment should be.
type rideModel struct {
	id                             string
	status                         Status
	authorized, captured, refunded int64
}

// sentRequest is a request that succeeded, kept to retry it later.
type sentRequest struct {
	what   string
	call   func() (*paymentsv1.Payment, error) // the same request again
	mutate func() (*paymentsv1.Payment, error) // same key, another request
	resp   *paymentsv1.Payment
}

func runRandomOperations(t *testing.T, r *rig, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d: "+format, append([]any{seed}, args...)...)
	}
	rides := make([]rideModel, 4)
	var sent []sentRequest
	died := errors.New("process died")

	for step := range steps {
		// Retry an earlier request, or reuse its key for another one.
		if len(sent) > 0 && rng.IntN(4) == 0 {
			s := sent[rng.IntN(len(sent))]
			if rng.IntN(3) == 0 {
				if _, err := s.mutate(); apperr.CodeOf(err) != "idempotency_key_reused" {
					fail("step %d: %s with its key reused for another request: %v", step, s.what, err)
				}
			} else if got, err := s.call(); err != nil || !proto.Equal(got, s.resp) {
				fail("step %d: retry of %s answered %v, %v; first answer %v", step, s.what, got, err, s.resp)
			}
			continue
		}

		i := rng.IntN(len(rides))
		m := &rides[i]
		ride, key := fmt.Sprintf("ride-%d", i), fmt.Sprintf("ride-%d:%d", i, step)
		var s sentRequest
		var ok bool      // the rules allow it
		var amount int64 // what it moves
		op := rng.IntN(4)
		if m.id == "" {
			op = 0
		}
		switch op {
		case 0:
			amount = 100 + rng.Int64N(5000)
			method := ""
			if rng.IntN(6) == 0 {
				method = "card_insufficient_funds"
			}
			s.what = "authorize " + key
			s.call = func() (*paymentsv1.Payment, error) { return r.authorize(key, ride, amount, method) }
			s.mutate = func() (*paymentsv1.Payment, error) { return r.authorize(key, ride, amount+1, method) }
			ok = m.id == ""
		case 1:
			amount = 1 + rng.Int64N(m.authorized+200)
			id := m.id
			s.what = fmt.Sprintf("capture %d %s", amount, key)
			s.call = func() (*paymentsv1.Payment, error) { return r.capture(key, id, amount) }
			s.mutate = func() (*paymentsv1.Payment, error) { return r.capture(key, id, amount+1) }
			ok = m.status == Authorized && amount <= m.authorized
		case 2:
			id := m.id
			s.what = "void " + key
			s.call = func() (*paymentsv1.Payment, error) { return r.void(key, id) }
			s.mutate = func() (*paymentsv1.Payment, error) { return r.void(key, "other-"+id) }
			ok = m.status == Authorized
		case 3:
			left := m.captured - m.refunded
			amount = 1 + rng.Int64N(max(left, 1)+100)
			id := m.id
			s.what = fmt.Sprintf("refund %d %s", amount, key)
			s.call = func() (*paymentsv1.Payment, error) { return r.refund(key, id, amount) }
			s.mutate = func() (*paymentsv1.Payment, error) { return r.refund(key, id, amount+1) }
			ok = (m.status == Captured || m.status == Refunded) && amount <= left
		}

		// Faults, which only bite if the request reaches the network.
		fault := rng.IntN(8)
		switch fault {
		case 0:
			r.pr.afterNetwork = func(string) error { return died }
		case 1:
			r.net.fail(1, 0)
		case 2:
			r.net.fail(0, 1)
		}
		p, err := s.call()
		if ok && fault <= 2 {
			if err == nil {
				fail("step %d: %s succeeded through fault %d", step, s.what, fault)
			}
			if fault == 0 {
				r.restart()
				r.clock.Advance(r.pr.lease + time.Second)
				if rng.IntN(2) == 0 { // the worker finishes it before the caller retries
					if n, err := r.pr.recoverPending(context.Background()); err != nil || n != 1 {
						fail("step %d: recovery of %s: %d, %v", step, s.what, n, err)
					}
				}
			}
			p, err = s.call()
		}
		r.pr.afterNetwork = nil
		r.net.fail(0, 0)

		switch {
		case ok && err != nil:
			fail("step %d: %s refused: %v (model %+v)", step, s.what, err, *m)
		case !ok && err == nil:
			fail("step %d: %s allowed: %v (model %+v)", step, s.what, p, *m)
		case err != nil:
			if k := apperr.KindOf(err); k != apperr.Conflict && k != apperr.Unprocessable {
				fail("step %d: %s refused with %v, want a conflict or unprocessable", step, s.what, err)
			}
		default:
			want := *m
			switch op {
			case 0:
				want.id, want.authorized, want.status = p.GetId(), amount, Authorized
				if p.GetStatus() == paymentsv1.PaymentStatus_PAYMENT_STATUS_DECLINED {
					want.status = Declined
				}
			case 1:
				want.status, want.captured = Captured, amount
			case 2:
				want.status = Voided
			case 3:
				want.status, want.refunded = Refunded, m.refunded+amount
			}
			got := rideModel{id: p.GetId(), status: statusOf(p.GetStatus()), authorized: p.GetAuthorized().GetAmount(),
				captured: p.GetCaptured().GetAmount(), refunded: p.GetRefunded().GetAmount()}
			if got != want {
				fail("step %d: %s gave %+v, want %+v", step, s.what, got, want)
			}
			*m = want
			s.resp = p
			sent = append(sent, s)
		}
		r.ledgerOK()
	}

	// The network moved exactly what the books say.
	for _, m := range rides {
		if m.id == "" {
			continue
		}
		var settlements int
		var captured, refunded int64
		err := r.db.Reader().QueryRowContext(context.Background(), `SELECT
				count(CASE WHEN c.operation IN ('capture', 'void') THEN 1 END),
				COALESCE(SUM(CASE WHEN c.operation = 'capture' THEN c.amount ELSE 0 END), 0),
				COALESCE(SUM(CASE WHEN c.operation = 'refund' THEN c.amount ELSE 0 END), 0)
			FROM payments p JOIN cardnet_operations c ON c.auth_ref = p.auth_ref WHERE p.id = $1`, m.id).Scan(&settlements, &captured, &refunded)
		if err != nil {
			t.Fatal(err)
		}
		if settlements > 1 || captured != m.captured || refunded != m.refunded {
			fail("payment %s: network settled %d times, captured %d, refunded %d; books say %+v", m.id, settlements, captured, refunded, m)
		}
	}
}

func statusOf(s paymentsv1.PaymentStatus) Status {
	for _, st := range []Status{Authorized, Declined, Captured, Voided, Refunded} {
		if statusProto(st) == s {
			return st
		}
	}
	return ""
}
