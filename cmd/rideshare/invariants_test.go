package main

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	paymentsv1 "github.com/rideshare-platform/rideshare/api/payments/v1"
	"github.com/rideshare-platform/rideshare/api/payments/v1/paymentsv1connect"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/rides"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

var terminalStatus = map[string]bool{"completed": true, "cancelled": true, "payment_declined": true, "no_driver": true}

// lostStatus marks a ride the platform accepted and then says it does not
// know.
const lostStatus = "<lost: 404>"

// invariantCounts is what assertInvariants found, for a test's report.
type invariantCounts struct {
	// ByStatus counts the rides by terminal status.
	ByStatus map[string]int
	// Lost counts rides accepted and then not found; DoubleCharged counts
	// rides charged more than once or more than their fare, or charged
	// without having been completed. Both are 0 when the checks pass: they
	// are counted so that a report says so with numbers.
	Lost, DoubleCharged int
	// Captured counts completed rides captured exactly once for their fare.
	Captured int
	// Voided counts holds released; Declined authorizations the card
	// network refused; NeverHeld rides that ended before any hold.
	Voided, Declined, NeverHeld int
	// Ledger is payments' ledger check at the end.
	LedgerEntries, Debits, Credits int64
	// Settled is when every ride was terminal with nothing owed.
	Settled time.Time
}

func (c invariantCounts) String() string {
	return fmt.Sprintf("by status %v; lost %d; double-charged %d; captured exactly once %d; holds released %d (voided %d, declined %d, never held %d); ledger balanced over %d entries (debits %d = credits %d)",
		c.ByStatus, c.Lost, c.DoubleCharged, c.Captured, c.Voided+c.Declined+c.NeverHeld, c.Voided, c.Declined, c.NeverHeld, c.LedgerEntries, c.Debits, c.Credits)
}

// assertInvariants checks, once the faults have stopped, what a user and an
// auditor rely on, for every ride in owner (ride id → its rider; the only
// rides the platform has seen): within settle, every ride found and
// terminal and every saga owing nothing; then each completed ride captured
// exactly once for its fare (by payments, by its ledger, by the card
// network, and on the rider's receipt), every other hold released and
// nothing charged for it, the ledger balanced, and every service's outbox
// drained. It fails the test on any violation and returns the counts.
//
// Its failures name their own lines, not the caller's: which check fired is
// what a failed fault test needs to say first.
func (p *runningPlatform) assertInvariants(owner map[string]*user, settle time.Duration) invariantCounts {
	t := p.t
	ctx := context.Background()
	deadline := time.Now().Add(settle)
	// What is left of settle, but never so little that a check that passes
	// the moment the platform is idle could not run once.
	left := func() time.Duration { return max(time.Until(deadline), 10*time.Second) }

	c := invariantCounts{ByStatus: p.awaitTerminal(owner, settle)}
	c.Lost = c.ByStatus[lostStatus]

	ridesDB, err := sqldb.Open(ctx, filepath.Join(p.dir, "rides.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer ridesDB.Close()
	var audit rides.AuditReport
	testenv.Eventually(t, left(), func() bool {
		audit, err = rides.Audit(ctx, ridesDB)
		return err == nil && audit.Settled()
	}, "the saga still owes work: %+v (%v)", &audit, &err)
	c.Settled = time.Now()
	// An Idempotency-Key retried across a crash must not have created a
	// second ride.
	if audit.Total != int64(len(owner)) {
		t.Errorf("the rides database holds %d rides; the riders were given %d", audit.Total, len(owner))
	}

	// What payments, its ledger and the card network say about each ride.
	charges := p.chargesByRide(ctx)
	for id, ch := range charges {
		if owner[id] == nil {
			if ch.ledgerCaptures > 0 || ch.networkCaptures > 0 {
				c.DoubleCharged++
			}
			t.Errorf("payments holds a payment for ride %s, which no rider asked for: %+v", id, ch)
		}
	}
	pay := paymentsv1connect.NewPaymentsServiceClient(p.client, p.instanceURL("payments"), p.asService("rides"))
	service := &authv1.Caller{UserId: "rides", Role: authv1.Role_ROLE_SERVICE}
	for _, id := range slices.Sorted(maps.Keys(owner)) {
		rider := owner[id]
		ride := rider.ride(id)
		rc := rider.receipt(id)
		ch := charges[id]
		res, err := pay.GetPayment(ctx, connect.NewRequest(&paymentsv1.GetPaymentRequest{Caller: service, Lookup: &paymentsv1.GetPaymentRequest_RideId{RideId: id}}))
		var payment *paymentsv1.Payment
		if err == nil {
			payment = res.Msg.GetPayment()
		}
		if ride["status"] == "completed" {
			fare := int64(ride["fare"].(map[string]any)["amount"].(float64))
			if ch.ledgerCaptures > 1 || ch.networkCaptures > 1 || ch.ledgerCaptured > fare || ch.networkCaptured > fare {
				c.DoubleCharged++
			}
			ok := true
			if payment.GetStatus() != paymentsv1.PaymentStatus_PAYMENT_STATUS_CAPTURED || payment.GetCaptured().GetAmount() != fare {
				ok = false
				t.Errorf("completed ride %s (fare %d): payment %v %v, want captured for the fare", id, fare, payment, err)
			}
			if ch.ledgerCaptures != 1 || ch.ledgerCaptured != fare || ch.networkCaptures != 1 || ch.networkCaptured != fare {
				ok = false
				t.Errorf("completed ride %s (fare %d): %+v, want one capture of the fare in the ledger and on the card network", id, fare, ch)
			}
			if rc["status"] != "captured" || rc["amount"] != float64(fare) {
				ok = false
				t.Errorf("completed ride %s (fare %d): receipt %v", id, fare, rc)
			}
			if ok {
				c.Captured++
			}
			continue
		}
		if ch.ledgerCaptures > 0 || ch.networkCaptures > 0 {
			c.DoubleCharged++
			t.Errorf("ride %s ended %s but was charged: %+v", id, ride["status"], ch)
		}
		if rc["status"] != "not_charged" || rc["amount"] != float64(0) {
			t.Errorf("ride %s ended %s: receipt %v, want not_charged", id, ride["status"], rc)
		}
		if err != nil {
			if !apperr.Is(err, apperr.NotFound) || ch.payment {
				t.Errorf("ride %s: payment %v (payments' table: %+v)", id, err, ch)
			}
			c.NeverHeld++
			continue
		}
		switch st := payment.GetStatus(); st {
		case paymentsv1.PaymentStatus_PAYMENT_STATUS_VOIDED:
			c.Voided++
		case paymentsv1.PaymentStatus_PAYMENT_STATUS_DECLINED:
			c.Declined++
		default:
			t.Errorf("ride %s ended %s but its payment is %s", id, ride["status"], st)
		}
	}

	// The ledger balances and agrees with every payment (payments checks a
	// payment is captured at most once and holds only while authorized).
	ledger, err := pay.CheckLedger(ctx, connect.NewRequest(&paymentsv1.CheckLedgerRequest{Caller: service}))
	switch {
	case err != nil:
		t.Errorf("ledger check: %v", err)
	case !ledger.Msg.GetBalanced():
		t.Errorf("the ledger does not balance or disagrees with a payment (%d entries, debits %d, credits %d); payments' log lists the violations",
			ledger.Msg.GetEntries(), ledger.Msg.GetDebits(), ledger.Msg.GetCredits())
	default:
		c.LedgerEntries, c.Debits, c.Credits = ledger.Msg.GetEntries(), ledger.Msg.GetDebits(), ledger.Msg.GetCredits()
	}

	p.awaitOutboxesDrained(ctx, left())
	// The same invariants as `rideshare check` sees them, from the
	// platform's own audit rather than its databases: the two must agree.
	rep := p.awaitCheck(ctx, left())
	if rep.Rides.Total != len(owner) || rep.Payments.CapturedOnce != c.Captured {
		t.Errorf("rideshare check counted %d rides and %d captured once; the riders' view is %d and %d",
			rep.Rides.Total, rep.Payments.CapturedOnce, len(owner), c.Captured)
	}
	p.assertNoCrashes()
	return c
}

// assertNoCrashes checks that no process died of its own accord and that
// the race detector, which every child runs with, reported no race in its
// log: a crashed child would otherwise pass unseen, quietly restarted by
// up's supervisor. A race whose conflicting accesses both lie in the NATS
// server's own code (the broker process embeds it, and it has known races
// under the detector, e.g. nats-io/nats-server#7288) is logged, not
// failed: it is not this platform's code, and the invariants checked
// beside it say whether it cost anything.
func (p *runningPlatform) assertNoCrashes() {
	logs, _ := filepath.Glob(filepath.Join(p.dir, "logs", "*.log"))
	for _, f := range logs {
		b, err := os.ReadFile(f)
		if err != nil {
			p.t.Errorf("reading %s: %v", f, err)
			continue
		}
		lines := strings.Split(string(b), "\n")
		for i, line := range lines {
			if strings.HasPrefix(line, "WARNING: DATA RACE") || strings.HasPrefix(line, "panic: ") || strings.HasPrefix(line, "fatal error: ") {
				// The report follows, to its end or 80 lines: the log
				// goes with the test's temporary folder.
				report := lines[i:min(i+80, len(lines))]
				if end := slices.Index(report[1:], "=================="); end >= 0 {
					report = report[:end+2]
				}
				if strings.HasPrefix(line, "WARNING: DATA RACE") && upstreamRace(report) {
					p.t.Logf("%s: a race inside the NATS server (not failed):\n%s", filepath.Base(f), strings.Join(report, "\n"))
					continue
				}
				p.t.Errorf("%s: %s", filepath.Base(f), strings.Join(report, "\n"))
			}
		}
	}
}

// raceAccess heads one of the two conflicting accesses in a race report.
var raceAccess = regexp.MustCompile(`^(Previous )?(Atomic )?([Rr]ead|[Ww]rite) at 0x[0-9a-f]+ by `)

// upstreamRace reports whether both accesses of a race report happen in
// the NATS server's code: the first frame of each that is not the
// standard library's is in github.com/nats-io/nats-server.
func upstreamRace(report []string) bool {
	accesses := 0
	for i, line := range report {
		if !raceAccess.MatchString(line) {
			continue
		}
		accesses++
		frame := ""
		for _, l := range report[i+1:] {
			if !strings.HasPrefix(l, "  ") {
				break // the next section
			}
			fn := strings.TrimSpace(l)
			if strings.HasPrefix(fn, "/") || strings.HasPrefix(fn, "<") {
				continue // a file:line, not a function
			}
			if first, _, found := strings.Cut(fn, "/"); found && strings.Contains(first, ".") {
				frame = fn
				break
			}
		}
		if !strings.HasPrefix(frame, "github.com/nats-io/nats-server/") {
			return false
		}
	}
	return accesses >= 2
}

// awaitTerminal waits until every ride in owner (ride id → its rider) has
// reached a terminal status, and counts them by status. A ride the
// platform answers 404 for is counted as lostStatus, and is not terminal.
func (p *runningPlatform) awaitTerminal(owner map[string]*user, timeout time.Duration) map[string]int {
	p.t.Helper()
	// A terminal status never changes, so each pass asks only about the
	// rides still under way: with thousands of rides a pass stays short.
	status := rideStatuses{}
	testenv.Eventually(p.t, timeout, func() bool {
		done := true
		for id, rider := range owner {
			if terminalStatus[status[id]] {
				continue
			}
			r, err := p.tryDo("GET", "/v1/rides/"+id, rider.token, nil)
			switch {
			case err == nil && r.status == http.StatusNotFound:
				status[id] = lostStatus
			case err == nil && r.status == http.StatusOK:
				status[id] = r.json(p.t)["status"].(string)
			default:
				status[id] = fmt.Sprintf("<unanswered: %v %d>", err, r.status)
			}
			done = done && terminalStatus[status[id]]
		}
		return done
	}, "rides did not all reach a terminal state: %v", status)
	counts := map[string]int{}
	for _, s := range status {
		counts[s]++
	}
	return counts
}

// rideStatuses is each ride's last known status; it prints the rides not
// terminal, which is what a failure needs to show.
type rideStatuses map[string]string

func (s rideStatuses) String() string {
	byStatus := map[string][]string{}
	for id, st := range s {
		if !terminalStatus[st] {
			byStatus[st] = append(byStatus[st], id)
		}
	}
	var b strings.Builder
	for _, st := range slices.Sorted(maps.Keys(byStatus)) {
		ids := byStatus[st]
		slices.Sort(ids)
		fmt.Fprintf(&b, "\n  %s: %d, e.g. %s", st, len(ids), strings.Join(ids[:min(len(ids), 5)], " "))
	}
	return b.String()
}

// charge is what payments' database says about one ride's money, read by
// the test as an auditor would, apart from payments' own code: its payment
// row, the capture transactions in its ledger and what they moved to the
// platform and the driver, and the captures the card network approved.
type charge struct {
	payment                          bool
	ledgerCaptures, ledgerCaptured   int64
	networkCaptures, networkCaptured int64
}

// chargesByRide reads every ride's charges from payments' database.
func (p *runningPlatform) chargesByRide(ctx context.Context) map[string]charge {
	p.t.Helper()
	db, err := sqldb.Open(ctx, filepath.Join(p.dir, "payments.db"))
	if err != nil {
		p.t.Fatal(err)
	}
	defer db.Close()
	out := map[string]charge{}
	query := func(q string, scan func(c *charge, a, b int64)) {
		rows, err := db.Reader().QueryContext(ctx, q)
		if err != nil {
			p.t.Fatalf("payments.db: %v", err)
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var a, b int64
			if err := rows.Scan(&id, &a, &b); err != nil {
				p.t.Fatalf("payments.db: %v", err)
			}
			c := out[id]
			scan(&c, a, b)
			out[id] = c
		}
		if err := rows.Err(); err != nil {
			p.t.Fatalf("payments.db: %v", err)
		}
	}
	query(`SELECT ride_id, 0, 0 FROM payments`, func(c *charge, _, _ int64) { c.payment = true })
	query(`SELECT p.ride_id, count(DISTINCT t.id),
			COALESCE(SUM(CASE WHEN e.account IN ('platform_revenue', 'driver_payable') THEN e.debit ELSE 0 END), 0)
		FROM payments p JOIN ledger_transactions t ON t.payment_id = p.id AND t.kind = 'capture'
		JOIN ledger_entries e ON e.transaction_id = t.id
		GROUP BY p.ride_id`, func(c *charge, n, amount int64) { c.ledgerCaptures, c.ledgerCaptured = n, amount })
	query(`SELECT p.ride_id, count(*), COALESCE(SUM(o.amount), 0)
		FROM payments p JOIN cardnet_operations o ON o.auth_ref = p.auth_ref AND o.operation = 'capture' AND o.approved
		WHERE p.auth_ref <> ''
		GROUP BY p.ride_id`, func(c *charge, n, amount int64) { c.networkCaptures, c.networkCaptured = n, amount })
	return out
}

// awaitOutboxesDrained waits until every service's outbox has handed all its
// events to the broker.
func (p *runningPlatform) awaitOutboxesDrained(ctx context.Context, timeout time.Duration) {
	p.t.Helper()
	files, err := filepath.Glob(filepath.Join(p.dir, "*.db"))
	if err != nil || len(files) == 0 {
		p.t.Fatalf("no service databases in %s: %v", p.dir, err)
	}
	backlog := map[string]int{}
	for _, f := range files {
		db, err := sqldb.Open(ctx, f)
		if err != nil {
			p.t.Fatal(err)
		}
		defer db.Close()
		ob := outbox.New(db, filepath.Base(f), outbox.Options{})
		testenv.Eventually(p.t, timeout, func() bool {
			n, err := ob.Backlog(ctx)
			backlog[filepath.Base(f)] = n
			return err == nil && n == 0
		}, "outboxes not drained: %v", backlog)
	}
}

// instanceURL is the address of a running instance of service name: the
// service's own, or its first replica's.
func (p *runningPlatform) instanceURL(name string) string {
	p.t.Helper()
	s := p.stateNow()
	for _, n := range []string{name, name + "-1"} {
		if u := s.Services[n]; u != "" {
			return u
		}
	}
	p.t.Fatalf("no instance of %s in %v", name, s.Services)
	return ""
}
