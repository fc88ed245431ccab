// Package check audits a running platform's invariants, the ones DESIGN.md
// promises hold whatever faults the platform went through:
//
//  1. every ride's saga is terminal or progressing (none stuck);
//  2. every completed ride was captured exactly once, for its fare (and a
//     late cancellation exactly once for its fee);
//  3. every other hold was voided, declined or never placed: nothing is
//     left authorized for a ride that ended without a charge;
//  4. the payments ledger balances, and every payment agrees with it;
//  5. every service's outbox drains: no event waits for the broker longer
//     than a relay normally takes.
//
// It joins what rides and payments each report of their own data (no
// service reads another's tables) in one place, Run, which the command
// line, drills and tests share. Where the reports come from is a Source:
// Admin reads each process's /admin/audit endpoint.
package check

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/rideshare-platform/rideshare/internal/payments"
	"github.com/rideshare-platform/rideshare/internal/rides"
)

// Source is where Run reads the platform's state. Rides and Payments
// page through each service's per-ride facts ("" for the first page);
// Run reads every page of rides before payments, so that whatever rides
// records as done (a capture, a void), payments already shows.
type Source interface {
	Rides(ctx context.Context, after string) (RidesPage, error)
	Payments(ctx context.Context, after string) (PaymentsPage, error)
	Outboxes(ctx context.Context) ([]Outbox, error)
}

// RidesPage is a page of rides' audit and the rides service's clock when it
// read it: a ride's age is measured by the clock that stamped it.
type RidesPage struct {
	Now time.Time
	rides.AuditPage
}

// PaymentsPage is a page of payments' audit and payments' clock.
type PaymentsPage struct {
	Now time.Time
	payments.AuditPage
}

// Outbox is one service's outbox backlog.
type Outbox struct {
	Service string `json:"service"`
	Unsent  int    `json:"unsent"`
	// OldestAge is how long the oldest unsent event has waited; 0 when
	// none waits.
	OldestAge time.Duration `json:"oldest_unsent_ns"`
}

// Defaults of Options.
const (
	// DefaultStuckAfter is longer than any quiet spell of a healthy ride
	// under the default settings: the hold is given 30 s, a search 60 s
	// plus 30 s of slack, and a trip with the simulated fleet (ten times
	// real time) a few minutes at most.
	DefaultStuckAfter = 5 * time.Minute
	// DefaultOutboxMaxAge is a few relay rounds: the relay is woken at
	// every commit, polls each second, waits up to 5 s for the broker's
	// acknowledgement and backs off at most 5 s after a failure.
	DefaultOutboxMaxAge = 15 * time.Second
)

// Options tune the check.
type Options struct {
	// StuckAfter is how long a ride may go without progress before its
	// saga counts as stuck (default DefaultStuckAfter). It is also the
	// allowance for clock skew between rides and payments.
	StuckAfter time.Duration
	// OutboxMaxAge is how long an event may wait in an outbox (default
	// DefaultOutboxMaxAge).
	OutboxMaxAge time.Duration
	// Settled also requires the platform to be at rest: every ride
	// terminal, nothing owed by any saga, every outbox empty. Drills ask
	// for it once their riders stopped; a live platform never is.
	Settled bool
}

func (o Options) withDefaults() Options {
	if o.StuckAfter <= 0 {
		o.StuckAfter = DefaultStuckAfter
	}
	if o.OutboxMaxAge <= 0 {
		o.OutboxMaxAge = DefaultOutboxMaxAge
	}
	return o
}

// Invariant names which invariant a violation breaks.
type Invariant string

// The invariants, in the order of the package comment; Settled is the
// optional "at rest" requirement (Options.Settled).
const (
	Sagas    Invariant = "saga"
	Captures Invariant = "capture"
	Holds    Invariant = "hold"
	Ledger   Invariant = "ledger"
	Outboxes Invariant = "outbox"
	AtRest   Invariant = "settled"
)

// invariants orders violations in a report.
var invariants = []Invariant{Sagas, Captures, Holds, Ledger, Outboxes, AtRest}

// Violation is one broken invariant, said as a sentence naming the ride,
// payment or service concerned.
type Violation struct {
	Invariant Invariant `json:"invariant"`
	// Subject is the ride id, payment id or service name.
	Subject string `json:"subject"`
	Message string `json:"message"`
}

func (v Violation) String() string { return v.Message }

// Report is the outcome of one check: counts, then every violation found.
type Report struct {
	CheckedAt  time.Time     `json:"checked_at"`
	Rides      RideCounts    `json:"rides"`
	Payments   PaymentCounts `json:"payments"`
	Ledger     LedgerCounts  `json:"ledger"`
	Outboxes   []Outbox      `json:"outboxes"`
	Violations []Violation   `json:"violations"`
}

// OK reports whether every invariant holds.
func (r Report) OK() bool { return len(r.Violations) == 0 }

// RideCounts counts rides by where their saga stands.
type RideCounts struct {
	Total    int                  `json:"total"`
	ByStatus map[rides.Status]int `json:"by_status"`
	// InFlight are rides not yet terminal; Owing are terminal rides whose
	// saga still owes a step (a void, a capture, a driver's release).
	InFlight int `json:"in_flight"`
	Owing    int `json:"owing"`
	Stuck    int `json:"stuck"`
}

// PaymentCounts counts terminal rides by how their payment settled.
type PaymentCounts struct {
	// CapturedOnce are completed rides captured exactly once for their
	// fare; FeesCaptured late cancellations captured once for their fee.
	CapturedOnce int `json:"captured_once"`
	FeesCaptured int `json:"fees_captured"`
	// Voided, Declined and NeverHeld are the rides that ended without a
	// charge, by what became of their hold: together, the holds released.
	Voided    int `json:"voided"`
	Declined  int `json:"declined"`
	NeverHeld int `json:"never_held"`
	// Settling are terminal rides whose saga still owes their payment a
	// step: not yet judged.
	Settling int `json:"settling"`
}

// Released is the number of rides that ended without a charge and hold
// nothing.
func (c PaymentCounts) Released() int { return c.Voided + c.Declined + c.NeverHeld }

// LedgerCounts sums the ledger.
type LedgerCounts struct {
	Transactions int64 `json:"transactions"`
	Entries      int64 `json:"entries"`
	Debits       int64 `json:"debits"`
	Credits      int64 `json:"credits"`
	Balanced     bool  `json:"balanced"`
}

// maxPages bounds a paging loop against a source whose cursor never ends
// (a bug on its side): 10,000 pages of the default 1,000 rides.
const maxPages = 10_000

// Run checks the invariants once. An error means the platform could not be
// audited (a service did not answer); the invariants' verdict is the
// report's.
func Run(ctx context.Context, src Source, opts Options) (Report, error) {
	opts = opts.withDefaults()
	rep := Report{CheckedAt: time.Now().UTC(), Rides: RideCounts{ByStatus: map[rides.Status]int{}}, Violations: []Violation{}}
	a := &auditor{opts: opts, rep: &rep}

	var ridesFrom time.Time // rides' clock when the first page was read
	var all []rideAt
	after := ""
	for range maxPages {
		page, err := src.Rides(ctx, after)
		if err != nil {
			return rep, fmt.Errorf("rides: %w", err)
		}
		if ridesFrom.IsZero() {
			ridesFrom = page.Now
		}
		for _, f := range page.Rides {
			all = append(all, rideAt{f, page.Now})
		}
		if page.Next == "" || page.Next == after {
			break
		}
		after = page.Next
	}

	pays := map[string]payments.PaymentFacts{}
	after = ""
	for range maxPages {
		page, err := src.Payments(ctx, after)
		if err != nil {
			return rep, fmt.Errorf("payments: %w", err)
		}
		if page.Ledger != nil {
			a.ledger(*page.Ledger)
		}
		for _, p := range page.Payments {
			pays[p.RideID] = p
		}
		if page.Next == "" || page.Next == after {
			break
		}
		after = page.Next
	}

	for _, r := range all {
		a.saga(r.RideFacts, r.now)
		a.payment(r.RideFacts, pays)
		delete(pays, r.ID)
	}
	a.orphans(pays, ridesFrom)

	obs, err := src.Outboxes(ctx)
	if err != nil {
		return rep, fmt.Errorf("outboxes: %w", err)
	}
	sort.Slice(obs, func(i, j int) bool { return obs[i].Service < obs[j].Service })
	rep.Outboxes = obs
	for _, o := range obs {
		a.outbox(o)
	}
	// In the invariants' order, then as found (by ride id within each).
	sort.SliceStable(rep.Violations, func(i, j int) bool {
		return slices.Index(invariants, rep.Violations[i].Invariant) < slices.Index(invariants, rep.Violations[j].Invariant)
	})
	return rep, nil
}

type rideAt struct {
	rides.RideFacts
	now time.Time
}

// auditor judges facts into a report.
type auditor struct {
	opts Options
	rep  *Report
}

func (a *auditor) violate(inv Invariant, subject, format string, args ...any) {
	a.rep.Violations = append(a.rep.Violations, Violation{Invariant: inv, Subject: subject, Message: fmt.Sprintf(format, args...)})
}

// saga judges invariant 1 for one ride: terminal with nothing owed, or
// changed within StuckAfter, or waiting for a timer of its own plan.
func (a *auditor) saga(f rides.RideFacts, now time.Time) {
	c := &a.rep.Rides
	c.Total++
	c.ByStatus[f.Status]++
	terminal := f.Status.Terminal()
	switch {
	case terminal && len(f.Steps) == 0:
		return
	case terminal:
		c.Owing++
	default:
		c.InFlight++
	}
	if a.opts.Settled {
		if terminal {
			a.violate(AtRest, f.ID, "ride %s ended %s but its saga still owes %s", f.ID, f.Status, strings.Join(f.Steps, ", "))
		} else {
			a.violate(AtRest, f.ID, "ride %s is still %s", f.ID, f.Status)
		}
	}
	idle := now.Sub(f.UpdatedAt)
	if f.Scheduled || idle <= a.opts.StuckAfter {
		return
	}
	c.Stuck++
	switch {
	case terminal:
		a.violate(Sagas, f.ID, "ride %s ended %s %s ago but its saga still owes %s%s",
			f.ID, f.Status, round(idle), strings.Join(f.Steps, ", "), stepTrouble(f, now))
	case len(f.Steps) > 0:
		a.violate(Sagas, f.ID, "ride %s has been %s for %s with no progress: its saga's next step is %s%s",
			f.ID, f.Status, round(idle), f.Steps[0], stepTrouble(f, now))
	default:
		a.violate(Sagas, f.ID, "ride %s has been %s for %s with no progress (its saga waits for the driver)",
			f.ID, f.Status, round(idle))
	}
}

// stepTrouble says why a ride's next step has not happened.
func stepTrouble(f rides.RideFacts, now time.Time) string {
	switch {
	case f.LastError != "":
		return fmt.Sprintf(", which failed %d times (last: %s)", f.Tries, f.LastError)
	case !f.DueAt.IsZero() && now.After(f.DueAt):
		return fmt.Sprintf(", due %s ago and never run", round(now.Sub(f.DueAt)))
	}
	return ""
}

// payment judges invariants 2 and 3 for one ride against its payment.
func (a *auditor) payment(f rides.RideFacts, pays map[string]payments.PaymentFacts) {
	c := &a.rep.Payments
	p, held := pays[f.ID]
	if !f.Status.Terminal() {
		if held && p.Captures > 0 {
			a.violate(Captures, f.ID, "ride %s is still %s but payment %s was already captured (%s)", f.ID, f.Status, p.ID, money(p.Captured, p.Currency))
		}
		return
	}
	if f.PaymentPending {
		c.Settling++ // the saga has not finished with the payment; invariant 1 watches it
		return
	}
	if f.Status == rides.StatusCompleted || f.Charge > 0 {
		a.charged(f, p, held)
		return
	}
	switch {
	case !held && f.PaymentID != "":
		a.violate(Holds, f.ID, "ride %s ended %s holding payment %s, which payments does not have", f.ID, f.Status, f.PaymentID)
	case !held:
		c.NeverHeld++
	case p.Captures > 0 || p.Captured > 0:
		a.violate(Holds, f.ID, "ride %s ended %s owing nothing, but payment %s captured %s", f.ID, f.Status, p.ID, money(p.Captured, p.Currency))
	case p.Pending != "":
		a.violate(Holds, f.ID, "ride %s ended %s, but a %s of its payment %s never finished", f.ID, f.Status, p.Pending, p.ID)
	case p.Status == payments.Voided:
		c.Voided++
	case p.Status == payments.Declined:
		c.Declined++
	default:
		a.violate(Holds, f.ID, "ride %s ended %s, but its payment %s is still %s for %s", f.ID, f.Status, p.ID, p.Status, money(p.Authorized, p.Currency))
	}
}

// charged judges a ride that owes a charge: captured exactly once, for its
// fare (completed) or the fee rides asked for (a late cancellation).
func (a *auditor) charged(f rides.RideFacts, p payments.PaymentFacts, held bool) {
	want, what := f.Charge, "its cancellation fee"
	if f.Status == rides.StatusCompleted {
		want, what = f.Fare, "its fare"
	}
	switch {
	case !held:
		a.violate(Captures, f.ID, "ride %s ended %s owing %s of %s, but payments has no payment for it", f.ID, f.Status, what, money(want, f.Currency))
	case p.Captures == 0:
		a.violate(Captures, f.ID, "ride %s ended %s owing %s of %s, but payment %s was never captured (it is %s)",
			f.ID, f.Status, what, money(want, f.Currency), p.ID, p.Status)
	case p.Captures > 1:
		a.violate(Captures, f.ID, "ride %s was captured %d times (payment %s)", f.ID, p.Captures, p.ID)
	case p.Status != payments.Captured && p.Status != payments.Refunded:
		a.violate(Captures, f.ID, "ride %s was captured, but its payment %s says it is %s", f.ID, p.ID, p.Status)
	case p.Captured != want || p.Currency != f.Currency:
		a.violate(Captures, f.ID, "ride %s was captured %s, but %s is %s (payment %s)", f.ID, money(p.Captured, p.Currency), what, money(want, f.Currency), p.ID)
	case f.CapturedAt.IsZero():
		a.violate(Captures, f.ID, "ride %s: payment %s was captured, but the saga finished without recording it", f.ID, p.ID)
	case f.Status == rides.StatusCompleted:
		a.rep.Payments.CapturedOnce++
	default:
		a.rep.Payments.FeesCaptured++
	}
}

// orphans judges payments of rides that rides does not know. A ride
// requested while the check read rides is not on its pages, so only
// payments older than the first page (less the clock allowance) count.
func (a *auditor) orphans(pays map[string]payments.PaymentFacts, ridesFrom time.Time) {
	ids := make([]string, 0, len(pays))
	for id := range pays {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		p := pays[id]
		if ridesFrom.IsZero() || !p.CreatedAt.Before(ridesFrom.Add(-a.opts.StuckAfter)) {
			continue
		}
		switch {
		case p.Captures > 0:
			a.violate(Captures, id, "payment %s captured %s for ride %s, which rides does not know", p.ID, money(p.Captured, p.Currency), id)
		case p.Status == payments.Authorized || p.Status == payments.Authorizing || p.Pending != "":
			a.violate(Holds, id, "payment %s holds %s for ride %s, which rides does not know", p.ID, money(p.Authorized, p.Currency), id)
		}
	}
}

// ledger judges invariant 4.
func (a *auditor) ledger(l payments.LedgerAudit) {
	a.rep.Ledger = LedgerCounts{Transactions: l.Transactions, Entries: l.Entries, Debits: l.Debits, Credits: l.Credits, Balanced: l.Balanced}
	if !l.Balanced {
		msg := fmt.Sprintf("the ledger does not balance: debits %d, credits %d", l.Debits, l.Credits)
		if l.UnbalancedCount > 0 {
			msg += fmt.Sprintf("; %d transactions are unbalanced (%s)", l.UnbalancedCount, strings.Join(l.Unbalanced, ", "))
		}
		a.violate(Ledger, "payments", "%s", msg)
	}
	for _, v := range l.Violations {
		subject, _, _ := strings.Cut(strings.TrimPrefix(v, "payment "), ":")
		a.violate(Ledger, subject, "ledger: %s", v)
	}
	if more := l.ViolationCount - len(l.Violations); more > 0 {
		a.violate(Ledger, "payments", "ledger: and %d more payments disagree with the ledger", more)
	}
}

// outbox judges invariant 5 for one service.
func (a *auditor) outbox(o Outbox) {
	switch {
	case o.Unsent > 0 && o.OldestAge > a.opts.OutboxMaxAge:
		a.violate(Outboxes, o.Service, "%s: %d events wait in the outbox, the oldest for %s: the relay or the broker is stuck",
			o.Service, o.Unsent, round(o.OldestAge))
	case o.Unsent > 0 && a.opts.Settled:
		a.violate(AtRest, o.Service, "%s: %d events still wait in the outbox", o.Service, o.Unsent)
	}
}

// money is an amount in minor units with its currency: "1250 USD".
func money(amount int64, currency string) string {
	if currency == "" {
		return fmt.Sprintf("%d (no currency)", amount)
	}
	return fmt.Sprintf("%d %s", amount, currency)
}

// round shortens a duration for a sentence: "3m12s", "4.2s".
func round(d time.Duration) string {
	switch {
	case d >= time.Minute:
		return d.Round(time.Second).String()
	case d >= time.Second:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Millisecond).String()
}
