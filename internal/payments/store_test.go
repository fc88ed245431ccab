package payments

import (
	"context"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	paymentsv1 "github.com/rideshare-platform/rideshare/api/payments/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestStoreContract runs the store's queries on every engine: the same
// SQL, the same answers, and the same guarantees under concurrency (which
// PostgreSQL really exercises: SQLite has one writer).
func TestStoreContract(t *testing.T) {
	for _, e := range testenv.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			t.Run("lifecycle", func(t *testing.T) {
				r := rigOn(t, testenv.Migrate(t, e.Open(t), Service.Migrations))
				p := must(t)(r.authorize("a", "ride-1", 2500, ""))
				p = must(t)(r.capture("c", p.GetId(), 2000))
				p = must(t)(r.refund("r1", p.GetId(), 700))
				p = must(t)(r.refund("r2", p.GetId(), 1))
				if again := must(t)(r.refund("r1", p.GetId(), 700)); again.GetRefunded().GetAmount() != 700 {
					t.Fatalf("replay of the first refund: %v", again)
				}
				d := must(t)(r.authorize("b", "ride-2", 900, ""))
				must(t)(r.void("v", d.GetId()))
				must(t)(r.authorize("x", "ride-3", 900, "card_declined"))

				rep := r.ledgerOK()
				// hold 2 + capture 4 + refunds 3 and 2 (a 1-cent refund carries no
				// commission) + hold 2 + release 2
				if rep.Transactions != 6 || rep.Entries != 15 || rep.Debits != 2500+2500+700+1+900+900 {
					t.Fatalf("report %+v", rep)
				}
				got, err := r.pr.store.paymentByRide(context.Background(), r.db.Reader(), "ride-1")
				if err != nil || got.Captured != 2000 || got.Refunded != 701 || got.Status != Refunded || got.CapturedAt.IsZero() || got.AuthRef == "" {
					t.Fatalf("stored payment %+v %v", got, err)
				}
				if _, err := r.pr.store.paymentByRide(context.Background(), r.db.Reader(), "ride-9"); !apperr.Is(err, apperr.NotFound) {
					t.Fatalf("missing ride: %v", err)
				}
			})

			t.Run("concurrent retries of one key", func(t *testing.T) {
				r := rigOn(t, testenv.Migrate(t, e.Open(t), Service.Migrations))
				results := race(8, func() (*paymentsv1.Payment, error) { return r.authorize("ride-1:authorize", "ride-1", 1000, "") })
				var id string
				for _, res := range results {
					switch {
					case res.err == nil:
						if id != "" && res.p.GetId() != id {
							t.Fatalf("two payments for one key: %s and %s", id, res.p.GetId())
						}
						id = res.p.GetId()
					case apperr.CodeOf(res.err) != "request_in_progress":
						t.Fatalf("concurrent retry: %v, want success or request_in_progress", res.err)
					}
				}
				if id == "" {
					t.Fatal("no attempt succeeded")
				}
				if r.networkOps(opAuthorize) != 1 || r.count(`SELECT count(*) FROM payments`) != 1 || r.events("payment.authorized") != 1 {
					t.Fatal("one key, several holds")
				}
				// The same for a capture: a racing retry must never be told
				// "already captured" about its own capture.
				var first *paymentsv1.Payment
				for _, res := range race(8, func() (*paymentsv1.Payment, error) { return r.capture("ride-1:capture", id, 700) }) {
					switch {
					case res.err == nil && first == nil:
						first = res.p
					case res.err == nil:
						if !proto.Equal(first, res.p) {
							t.Fatalf("racing retries answered differently: %v %v", first, res.p)
						}
					case apperr.CodeOf(res.err) != "request_in_progress":
						t.Fatalf("concurrent capture retry: %v, want success or request_in_progress", res.err)
					}
				}
				if first == nil || r.networkOps(opCapture) != 1 || r.events("payment.captured") != 1 {
					t.Fatal("one capture key: no success, or several captures")
				}
				r.ledgerOK()
			})

			t.Run("concurrent captures under different keys", func(t *testing.T) {
				r := rigOn(t, testenv.Migrate(t, e.Open(t), Service.Migrations))
				p := must(t)(r.authorize("a", "ride-1", 1000, ""))
				var mu sync.Mutex
				n := 0
				results := race(6, func() (*paymentsv1.Payment, error) {
					mu.Lock()
					n++
					key := "capture-" + string(rune('a'+n))
					mu.Unlock()
					return r.capture(key, p.GetId(), 1000)
				})
				won := 0
				for _, res := range results {
					switch {
					case res.err == nil:
						won++
					case !apperr.Is(res.err, apperr.Conflict):
						t.Fatalf("losing capture: %v, want a conflict", res.err)
					}
				}
				if won != 1 || r.networkOps(opCapture) != 1 || r.ledgerTxs(p.GetId(), kindCapture) != 1 {
					t.Fatalf("%d captures succeeded, network captured %d times; want 1 and 1", won, r.networkOps(opCapture))
				}
				r.ledgerOK()
			})

			t.Run("concurrent authorizations of one ride", func(t *testing.T) {
				r := rigOn(t, testenv.Migrate(t, e.Open(t), Service.Migrations))
				var mu sync.Mutex
				n := 0
				results := race(6, func() (*paymentsv1.Payment, error) {
					mu.Lock()
					n++
					key := "auth-" + string(rune('a'+n))
					mu.Unlock()
					return r.authorize(key, "ride-1", 1000, "")
				})
				won := 0
				for _, res := range results {
					switch {
					case res.err == nil:
						won++
					case apperr.CodeOf(res.err) != "payment_exists":
						t.Fatalf("losing authorization: %v, want payment_exists", res.err)
					}
				}
				if won != 1 || r.networkOps(opAuthorize) != 1 {
					t.Fatalf("%d authorizations of one ride succeeded, %d holds", won, r.networkOps(opAuthorize))
				}
			})

			t.Run("check detects a broken ledger", func(t *testing.T) {
				ctx := context.Background()
				r := rigOn(t, testenv.Migrate(t, e.Open(t), Service.Migrations))
				p := must(t)(r.authorize("a", "ride-1", 1000, ""))
				must(t)(r.capture("c", p.GetId(), 1000))
				r.ledgerOK()

				var txID string
				if err := r.db.Reader().QueryRowContext(ctx, `SELECT id FROM ledger_transactions WHERE kind = 'capture'`).Scan(&txID); err != nil {
					t.Fatal(err)
				}
				// A forged second capture, balanced in itself.
				if err := r.exec(`INSERT INTO ledger_transactions (id, payment_id, kind, ref, currency, network_ref, created_at)
					VALUES ('forged', $1, 'capture', 'again', 'USD', '', 0)`, p.GetId()); err != nil {
					t.Fatal(err)
				}
				if err := r.exec(`INSERT INTO ledger_entries (transaction_id, line, account, debit, credit)
					VALUES ('forged', 1, 'driver_payable', 10, 0), ('forged', 2, 'rider_funding', 0, 10)`); err != nil {
					t.Fatal(err)
				}
				rep, err := r.pr.store.checkLedger(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if !rep.Balanced() || rep.OK() || !strings.Contains(strings.Join(rep.Violations, ";"), "captured 2 times") {
					t.Fatalf("a double capture went unnoticed: %+v", rep)
				}
				// And an entry that unbalances the real capture.
				if err := r.exec(`INSERT INTO ledger_entries (transaction_id, line, account, debit, credit) VALUES ($1, 99, 'platform_revenue', 1, 0)`, txID); err != nil {
					t.Fatal(err)
				}
				if rep, err = r.pr.store.checkLedger(ctx); err != nil {
					t.Fatal(err)
				}
				if rep.Balanced() || len(rep.Unbalanced) != 1 || rep.Unbalanced[0] != txID || rep.Debits != rep.Credits+1 {
					t.Fatalf("an unbalanced transaction went unnoticed: %+v", rep)
				}
			})
		})
	}
}

// exec writes directly, as a bug or a hand-edit would.
func (r *rig) exec(query string, args ...any) error {
	return r.db.InTx(context.Background(), func(tx *sqldb.Tx) error {
		_, err := tx.ExecContext(context.Background(), query, args...)
		return err
	})
}

type raceResult struct {
	p   *paymentsv1.Payment
	err error
}

// race runs f n times at once and collects the results.
func race(n int, f func() (*paymentsv1.Payment, error)) []raceResult {
	out := make([]raceResult, n)
	var start, done sync.WaitGroup
	start.Add(1)
	for i := range n {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			out[i].p, out[i].err = f()
		}()
	}
	start.Done()
	done.Wait()
	return out
}
