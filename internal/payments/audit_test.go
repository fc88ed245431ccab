package payments

import (
	"context"
	"testing"

	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestAudit pages per-ride payment facts in ride order on every engine: a
// capture, a partial capture (a fee), a void and a decline each show as
// settled, with the ledger's count of captures; the first page carries the
// ledger check, and a payment that disagrees with the ledger shows there.
func TestAudit(t *testing.T) {
	for _, e := range testenv.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			ctx := context.Background()
			r := rigOn(t, testenv.Migrate(t, e.Open(t), Service.Migrations))
			p1 := must(t)(r.authorize("a1", "ride-1", 1200, ""))
			must(t)(r.capture("c1", p1.GetId(), 1200))
			p2 := must(t)(r.authorize("a2", "ride-2", 900, ""))
			must(t)(r.void("v2", p2.GetId()))
			must(t)(r.authorize("a3", "ride-3", 700, "card_declined"))
			p4 := must(t)(r.authorize("a4", "ride-4", 1000, ""))
			must(t)(r.capture("c4", p4.GetId(), 500))
			must(t)(r.authorize("a5", "ride-5", 400, ""))

			var all []PaymentFacts
			after, pages := "", 0
			for {
				page, err := r.pr.store.audit(ctx, after, 2)
				if err != nil {
					t.Fatal(err)
				}
				if (after == "") != (page.Ledger != nil) {
					t.Fatalf("page after %q: ledger %+v; want it on the first page only", after, page.Ledger)
				}
				if page.Ledger != nil && (!page.Ledger.Balanced || page.Ledger.Debits == 0 || page.Ledger.ViolationCount != 0) {
					t.Fatalf("ledger %+v", page.Ledger)
				}
				all = append(all, page.Payments...)
				pages++
				if page.Next == "" {
					break
				}
				after = page.Next
			}
			if pages != 3 || len(all) != 5 {
				t.Fatalf("%d payments in %d pages, want 5 in 3", len(all), pages)
			}
			want := []struct {
				ride               string
				status             Status
				captured, captures int64
			}{
				{"ride-1", Captured, 1200, 1}, {"ride-2", Voided, 0, 0}, {"ride-3", Declined, 0, 0},
				{"ride-4", Captured, 500, 1}, {"ride-5", Authorized, 0, 0},
			}
			for i, w := range want {
				f := all[i]
				if f.RideID != w.ride || f.Status != w.status || f.Captured != w.captured || f.Captures != w.captures ||
					f.Currency != "USD" || f.ID == "" || f.CreatedAt.IsZero() || f.Pending != "" {
					t.Errorf("payment %d: %+v, want %+v", i, f, w)
				}
			}

			// A second capture in the ledger, balanced, as a bug would write it.
			if err := r.exec(`INSERT INTO ledger_transactions (id, payment_id, kind, ref, currency, network_ref, created_at)
				VALUES ('tx-dup', $1, 'capture', 'again', 'USD', 'n', 0)`, p1.GetId()); err != nil {
				t.Fatal(err)
			}
			if err := r.exec(`INSERT INTO ledger_entries (transaction_id, line, account, debit, credit)
				VALUES ('tx-dup', 1, 'platform_revenue', 240, 0), ('tx-dup', 2, 'rider_holds', 0, 240)`); err != nil {
				t.Fatal(err)
			}
			page, err := r.pr.store.audit(ctx, "", 10)
			if err != nil {
				t.Fatal(err)
			}
			if page.Payments[0].Captures != 2 || page.Ledger.ViolationCount == 0 || !page.Ledger.Balanced ||
				len(page.Ledger.Violations) != page.Ledger.ViolationCount {
				t.Fatalf("after a duplicate capture: %+v, ledger %+v", page.Payments[0], page.Ledger)
			}
		})
	}
}
