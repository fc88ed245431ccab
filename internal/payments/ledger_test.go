package payments

import (
	"strings"
	"testing"
	"time"
)

// book applies postings to account balances, as the ledger tables would.
type book map[Account]int64

func (b book) apply(t *testing.T, ps Posting) {
	t.Helper()
	if err := ps.check(); err != nil {
		t.Fatal(err)
	}
	for _, e := range ps.Entries {
		b[e.Account] += e.Debit - e.Credit
	}
}

func (b book) sum() (n int64) {
	for _, v := range b {
		n += v
	}
	return n
}

// move is one operation in a unit-level sequence.
type move struct {
	op     string
	amount int64
}

// TestPostingSequencesBalance drives the pure domain (settle and the
// postings) through operation sequences: every posting balances, and the
// accounts end where the money really is.
func TestPostingSequencesBalance(t *testing.T) {
	cases := []struct {
		name       string
		authorized int64
		moves      []move
		want       book // final balances; accounts not named are zero
	}{
		{"hold only", 1000, nil, book{RiderHolds: 1000, RiderFunding: -1000}},
		{"void", 1000, []move{{opVoid, 0}}, book{}},
		{"full capture", 1000, []move{{opCapture, 1000}}, book{RiderFunding: -1000, PlatformRevenue: 200, DriverPayable: 800}},
		{"cancellation fee", 1000, []move{{opCapture, 300}}, book{RiderFunding: -300, PlatformRevenue: 60, DriverPayable: 240}},
		{"odd unit goes to the driver", 999, []move{{opCapture, 7}}, book{RiderFunding: -7, PlatformRevenue: 1, DriverPayable: 6}},
		{"one unit fare", 5, []move{{opCapture, 1}}, book{RiderFunding: -1, DriverPayable: 1}},
		{"full refund in one", 1000, []move{{opCapture, 1000}, {opRefund, 1000}}, book{}},
		{"refund in odd parts returns exactly the split", 1000, []move{{opCapture, 997}, {opRefund, 3}, {opRefund, 7}, {opRefund, 987}}, book{}},
		{"partial refund", 1000, []move{{opCapture, 1000}, {opRefund, 250}}, book{RiderFunding: -750, PlatformRevenue: 150, DriverPayable: 600}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			now := time.Unix(0, 0)
			p := Payment{ID: "p", RideID: "r", Currency: "USD", Authorized: c.authorized, Status: Authorizing, Pending: Pending{Op: opAuthorize, RequestID: "q0"}}
			b := book{}
			var totals ledgerTotals
			record := func(ps *Posting) {
				if ps == nil {
					return
				}
				b.apply(t, *ps)
				for _, e := range ps.Entries {
					switch {
					case e.Account == RiderHolds:
						totals.Holds += e.Debit - e.Credit
					case ps.Kind == kindCapture && (e.Account == PlatformRevenue || e.Account == DriverPayable):
						totals.Captured += e.Debit
					case ps.Kind == kindRefund && e.Account == RiderFunding:
						totals.Refunded += e.Debit
					}
				}
				if ps.Kind == kindCapture {
					totals.Captures++
				}
			}
			next, ps, ev := p.settle(netResult{auth: Authorization{Approved: true, Ref: "auth_1"}}, now)
			if ev.Type != "payment.authorized" {
				t.Fatalf("event %q", ev.Type)
			}
			p = next
			record(ps)
			for i, m := range c.moves {
				var err error
				switch m.op {
				case opCapture:
					err = p.checkCapture(usd(m.amount))
				case opVoid:
					err = p.checkVoid()
				case opRefund:
					err = p.checkRefund(usd(m.amount))
				}
				if err != nil {
					t.Fatalf("move %d %s: %v", i, m.op, err)
				}
				p.Pending = Pending{Op: m.op, RequestID: "q" + string(rune('1'+i)), Amount: m.amount}
				next, ps, _ := p.settle(netResult{ref: "x"}, now)
				p = next
				record(ps)
				if b.sum() != 0 {
					t.Fatalf("after %s the accounts sum to %d", m.op, b.sum())
				}
			}
			for _, a := range []Account{RiderFunding, RiderHolds, PlatformRevenue, DriverPayable} {
				if b[a] != c.want[a] {
					t.Errorf("%s = %d, want %d", a, b[a], c.want[a])
				}
			}
			if v := reconcile(p, totals); len(v) != 0 {
				t.Errorf("reconcile: %v", v)
			}
		})
	}
}

func TestPostingCheckRefusesUnbalanced(t *testing.T) {
	cases := []Posting{
		{Kind: "x", Entries: []Entry{{Account: RiderHolds, Debit: 10}, {Account: RiderFunding, Credit: 9}}},
		{Kind: "x", Entries: []Entry{{Account: RiderHolds, Debit: 10}}},
		{Kind: "x", Entries: []Entry{{Account: RiderHolds, Debit: 10, Credit: 10}, {Account: RiderFunding, Credit: 0, Debit: 0}}},
		{Kind: "x", Entries: []Entry{{Account: RiderHolds, Debit: -5}, {Account: RiderFunding, Credit: -5}}},
	}
	for i, ps := range cases {
		if ps.check() == nil {
			t.Errorf("case %d: an invalid posting passed", i)
		}
	}
}

// TestReconcileDetects: each broken invariant is reported.
func TestReconcileDetects(t *testing.T) {
	captured := Payment{ID: "p", Status: Captured, Authorized: 1000, Captured: 800}
	cases := []struct {
		name string
		p    Payment
		t    ledgerTotals
		want string
	}{
		{"captured twice", captured, ledgerTotals{Captured: 800, Captures: 2}, "captured 2 times"},
		{"capture missing from the ledger", captured, ledgerTotals{}, "0 capture transactions"},
		{"captured total differs", captured, ledgerTotals{Captured: 700, Captures: 1}, "ledger says 700"},
		{"refunded total differs", Payment{ID: "p", Status: Refunded, Authorized: 1000, Captured: 800, Refunded: 100}, ledgerTotals{Captured: 800, Captures: 1}, "refunded 100, ledger says 0"},
		{"refunds beyond captures", Payment{ID: "p", Status: Refunded, Authorized: 1000, Captured: 800, Refunded: 900}, ledgerTotals{Captured: 800, Refunded: 900, Captures: 1}, "refunded 900 > captured 800"},
		{"hold left open after capture", captured, ledgerTotals{Captured: 800, Captures: 1, Holds: 1000}, "ledger holds 1000"},
		{"no hold while authorized", Payment{ID: "p", Status: Authorized, Authorized: 1000}, ledgerTotals{}, "wants a hold of 1000"},
	}
	for _, c := range cases {
		v := reconcile(c.p, c.t)
		if len(v) == 0 || !strings.Contains(strings.Join(v, "; "), c.want) {
			t.Errorf("%s: got %v, want a violation mentioning %q", c.name, v, c.want)
		}
	}
	if v := reconcile(captured, ledgerTotals{Captured: 800, Captures: 1}); len(v) != 0 {
		t.Errorf("a consistent payment: %v", v)
	}
}
