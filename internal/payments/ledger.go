package payments

import (
	"fmt"
)

// Account is a ledger account. The ledger follows money as it flows: an
// entry debits the account money moves into and credits the account it comes
// from, so an account's balance (debits minus credits) is the money in it.
//
//   - rider_funding: riders' payment methods, outside the platform. Its
//     balance is negative by what riders currently have held or paid.
//   - rider_holds: money reserved on riders' cards by open authorizations.
//   - platform_revenue: the platform's commission on captured fares.
//   - driver_payable: the rest of captured fares, owed to drivers.
//
// So the four movements are:
//
//	hold A          DR rider_holds A                  CR rider_funding A
//	release A       DR rider_funding A                CR rider_holds A
//	capture C of A  DR platform_revenue s(C)          CR rider_holds A
//	                DR driver_payable C-s(C)
//	                DR rider_funding A-C (the unused part of the hold)
//	refund R        DR rider_funding R                CR platform_revenue, driver_payable (R, split as captured)
//
// and at any moment: rider_holds = open holds; platform_revenue +
// driver_payable = captured - refunded; the sum of all balances is zero.
type Account string

// The accounts.
const (
	RiderFunding    Account = "rider_funding"
	RiderHolds      Account = "rider_holds"
	PlatformRevenue Account = "platform_revenue"
	DriverPayable   Account = "driver_payable"
)

// The kinds of ledger transaction, one per movement of money.
const (
	kindHold    = "hold"
	kindRelease = "release"
	kindCapture = "capture"
	kindRefund  = "refund"
)

// platformShareBPS is the platform's commission on a captured fare, in basis
// points. The rides saga does not send a split, so it is one constant here
// until pricing owns commission rules.
const platformShareBPS = 2000

// platformShare is the platform's part of amount, rounded down (the driver
// gets the odd minor unit). It is monotone, so the part of a refund computed
// as a difference of shares is never negative and never exceeds the refund.
func platformShare(amount int64) int64 { return amount * platformShareBPS / 10_000 }

// Entry is one line of a ledger transaction: exactly one of Debit and Credit
// is positive.
type Entry struct {
	Account Account
	Debit   int64
	Credit  int64
}

// Posting is one ledger transaction: a movement of money for a payment, in
// one currency, whose entries balance.
type Posting struct {
	Kind string
	// Ref distinguishes postings of the same kind on one payment: '' for
	// the hold, the release and the capture (there is at most one of each),
	// the refund's request id for a refund.
	Ref      string
	Currency string
	Entries  []Entry
}

// check is the double-entry rule, verified before anything is written.
func (ps Posting) check() error {
	if len(ps.Entries) < 2 {
		return fmt.Errorf("ledger: %s posting with %d entries", ps.Kind, len(ps.Entries))
	}
	var debits, credits int64
	for _, e := range ps.Entries {
		if (e.Debit > 0) == (e.Credit > 0) || e.Debit < 0 || e.Credit < 0 {
			return fmt.Errorf("ledger: %s entry on %s must be one positive debit or credit (%d/%d)", ps.Kind, e.Account, e.Debit, e.Credit)
		}
		debits += e.Debit
		credits += e.Credit
	}
	if debits != credits {
		return fmt.Errorf("ledger: %s posting unbalanced: debits %d, credits %d", ps.Kind, debits, credits)
	}
	return nil
}

// posting builds a posting, leaving out zero lines (a full capture releases
// nothing; a tiny fare may carry no commission).
func posting(kind, ref, currency string, entries ...Entry) Posting {
	ps := Posting{Kind: kind, Ref: ref, Currency: currency}
	for _, e := range entries {
		if e.Debit != 0 || e.Credit != 0 {
			ps.Entries = append(ps.Entries, e)
		}
	}
	return ps
}

// holdPosting records the authorization of p.
func holdPosting(p Payment) Posting {
	return posting(kindHold, "", p.Currency,
		Entry{Account: RiderHolds, Debit: p.Authorized},
		Entry{Account: RiderFunding, Credit: p.Authorized})
}

// releasePosting records the void of p's hold.
func releasePosting(p Payment) Posting {
	return posting(kindRelease, "", p.Currency,
		Entry{Account: RiderFunding, Debit: p.Authorized},
		Entry{Account: RiderHolds, Credit: p.Authorized})
}

// capturePosting records charging amount from p's hold: the hold is closed
// in full, the charge is split between platform and driver, and the rest
// returns to the rider.
func capturePosting(p Payment, amount int64) Posting {
	fee := platformShare(amount)
	return posting(kindCapture, "", p.Currency,
		Entry{Account: PlatformRevenue, Debit: fee},
		Entry{Account: DriverPayable, Debit: amount - fee},
		Entry{Account: RiderFunding, Debit: p.Authorized - amount},
		Entry{Account: RiderHolds, Credit: p.Authorized})
}

// refundPosting records returning amount of p's capture to the rider,
// taking it back from platform and driver in the proportion it was split, so
// that refunding everything brings both back to exactly zero.
func refundPosting(p Payment, amount int64, ref string) Posting {
	fee := platformShare(p.Refunded+amount) - platformShare(p.Refunded)
	return posting(kindRefund, ref, p.Currency,
		Entry{Account: RiderFunding, Debit: amount},
		Entry{Account: PlatformRevenue, Credit: fee},
		Entry{Account: DriverPayable, Credit: amount - fee})
}

// LedgerReport is the result of checking the ledger.
type LedgerReport struct {
	Transactions, Entries int64
	// Debits and Credits are the sums of all entries, in minor units.
	Debits, Credits int64
	// Unbalanced lists transactions whose entries do not balance.
	Unbalanced []string
	// Violations lists payments that disagree with the ledger: captured
	// twice, totals that differ, refunds beyond captures.
	Violations []string
}

// Balanced is the double-entry invariant: debits equal credits overall and
// within every transaction.
func (r LedgerReport) Balanced() bool { return r.Debits == r.Credits && len(r.Unbalanced) == 0 }

// OK is Balanced and every payment agreeing with the ledger.
func (r LedgerReport) OK() bool { return r.Balanced() && len(r.Violations) == 0 }

// ledgerTotals is what the ledger says about one payment.
type ledgerTotals struct {
	// Holds is the balance of rider_holds for the payment.
	Holds int64
	// Captured is what capture transactions moved to revenue and payable;
	// Refunded what refund transactions returned to the rider.
	Captured, Refunded int64
	// Captures counts capture transactions.
	Captures int64
}

// reconcile lists how p and the ledger's totals for it disagree: the
// invariants "captured at most once", "captured and refunded totals match
// the ledger", "refunds never exceed captures", "a hold is open exactly while
// the payment is authorized".
func reconcile(p Payment, t ledgerTotals) []string {
	var out []string
	bad := func(format string, args ...any) {
		out = append(out, fmt.Sprintf("payment %s: ", p.ID)+fmt.Sprintf(format, args...))
	}
	if t.Captures > 1 {
		bad("captured %d times", t.Captures)
	}
	captured := p.Status == Captured || p.Status == Refunded
	if captured && t.Captures == 0 || !captured && t.Captures > 0 {
		bad("status %s but %d capture transactions", p.Status, t.Captures)
	}
	if t.Captured != p.Captured {
		bad("captured %d, ledger says %d", p.Captured, t.Captured)
	}
	if t.Refunded != p.Refunded {
		bad("refunded %d, ledger says %d", p.Refunded, t.Refunded)
	}
	if p.Refunded > p.Captured || p.Captured > p.Authorized {
		bad("refunded %d > captured %d or captured > authorized %d", p.Refunded, p.Captured, p.Authorized)
	}
	wantHold := int64(0)
	if p.Status == Authorized {
		wantHold = p.Authorized
	}
	if t.Holds != wantHold {
		bad("status %s wants a hold of %d, ledger holds %d", p.Status, wantHold, t.Holds)
	}
	return out
}
