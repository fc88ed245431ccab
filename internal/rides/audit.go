package rides

import (
	"context"
	"fmt"
	"time"

	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// AuditReport is the state of every ride's saga, for operators and for
// `rideshare check`: after a drill or a fault test every ride should be
// terminal and nothing should be pending.
type AuditReport struct {
	// ByStatus counts rides per status (public spelling, e.g. "no_driver").
	ByStatus map[Status]int64
	// Total is the number of rides.
	Total int64
	// NotTerminal counts rides still under way.
	NotTerminal int64
	// CompensationsPending counts terminal rides whose saga still owes a
	// step: a void, a cancelled search, a driver release, or a capture.
	// The status already shows the outcome; this shows the work behind it.
	CompensationsPending int64
	// CapturesPending counts rides owing a capture (completed, or
	// cancelled with a fee) that payments has not yet confirmed.
	CapturesPending int64
	// Failing counts rides whose next step failed at least once and is
	// waiting to be retried.
	Failing int64
}

// Settled reports whether every ride is terminal with nothing pending.
func (a AuditReport) Settled() bool {
	return a.NotTerminal == 0 && a.CompensationsPending == 0 && a.CapturesPending == 0
}

// Audit reads the rides database (the rides service's own; run it where that
// database is reachable) and reports on the saga.
func Audit(ctx context.Context, db *sqldb.DB) (AuditReport, error) {
	rep := AuditReport{ByStatus: map[Status]int64{}}
	rows, err := db.Reader().QueryContext(ctx, `SELECT status, count(*),
			sum(CASE WHEN steps <> '' THEN 1 ELSE 0 END),
			sum(CASE WHEN last_error <> '' THEN 1 ELSE 0 END),
			sum(CASE WHEN charge_amount > 0 AND captured_at = 0 THEN 1 ELSE 0 END)
		FROM rides GROUP BY status`)
	if err != nil {
		return rep, fmt.Errorf("rides: audit: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var status string
		var n, pending, failing, captures int64
		if err := rows.Scan(&status, &n, &pending, &failing, &captures); err != nil {
			return rep, fmt.Errorf("rides: audit: %w", err)
		}
		s := Status(status)
		rep.ByStatus[s] = n
		rep.Total += n
		rep.Failing += failing
		rep.CapturesPending += captures
		if s.Terminal() {
			rep.CompensationsPending += pending
		} else {
			rep.NotTerminal += n
		}
	}
	return rep, rows.Err()
}

// RideFacts is what `rideshare check` needs to know of one ride to audit
// its saga and to join it with payments' facts: where it stands, what it
// owes the rider's card, and what its saga still has to do.
type RideFacts struct {
	ID     string `json:"id"`
	Status Status `json:"status"`
	// Fare is the upfront fare in minor units of Currency; 0 until quoted.
	Fare     int64  `json:"fare"`
	Currency string `json:"currency,omitempty"`
	// Charge is what is to be, or was, captured: the fare of a completed
	// ride, the fee of a late cancellation; 0 when the rider owes nothing.
	Charge int64 `json:"charge,omitempty"`
	// CapturedAt is when payments confirmed the capture; zero until then.
	CapturedAt time.Time `json:"captured_at,omitzero"`
	// PaymentID is the hold at payments; "" when none was placed.
	PaymentID string `json:"payment_id,omitempty"`
	// Steps are the saga steps still owed, the next first; DueAt is when
	// the next may run, Tries how often it was started and LastError its
	// last failure.
	Steps     []string  `json:"steps,omitempty"`
	DueAt     time.Time `json:"due_at,omitzero"`
	Tries     int       `json:"tries,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	// PaymentPending says the saga still owes the ride's payment a step (an
	// authorization whose outcome it has not learnt, a void, a capture):
	// until it runs, payments may rightly show the hold still open.
	PaymentPending bool `json:"payment_pending,omitempty"`
	// Scheduled says the next step is a timer not yet due (the search
	// watchdog): the saga is waiting by plan, not stuck.
	Scheduled bool      `json:"scheduled,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// UpdatedAt is the ride's last visible change.
	UpdatedAt time.Time `json:"updated_at"`
}

// AuditPage is one page of per-ride facts, in id order.
type AuditPage struct {
	Rides []RideFacts `json:"rides"`
	// Next is the cursor of the following page; "" on the last.
	Next string `json:"next,omitempty"`
}

// AuditRides reads up to limit rides after the ride id after ("" for the
// first page) from the rides database. Ride ids are time-ordered, so rides
// requested while an auditor pages through arrive on its last pages.
func AuditRides(ctx context.Context, db *sqldb.DB, after string, limit int, now time.Time) (AuditPage, error) {
	page := AuditPage{Rides: []RideFacts{}}
	rows, err := db.Reader().QueryContext(ctx, `SELECT `+rideColumns+` FROM rides WHERE id > $1 ORDER BY id LIMIT $2`, after, limit)
	if err != nil {
		return page, fmt.Errorf("rides: audit: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		r, err := scanRide(rows)
		if err != nil {
			return page, err
		}
		page.Rides = append(page.Rides, r.facts(now))
	}
	if err := rows.Err(); err != nil {
		return page, fmt.Errorf("rides: audit: %w", err)
	}
	if len(page.Rides) == limit && limit > 0 {
		page.Next = page.Rides[len(page.Rides)-1].ID
	}
	return page, nil
}

// facts is the ride as the audit reports it.
func (r *Ride) facts(now time.Time) RideFacts {
	f := RideFacts{
		ID: r.id, Status: r.status, Fare: r.fare.Amount, Currency: r.fare.Currency,
		Charge: r.charge.amount.Amount, CapturedAt: r.charge.capturedAt, PaymentID: r.paymentID,
		Tries: r.plan.tries, LastError: r.plan.lastError,
		PaymentPending: r.plan.has(stepAuthorize) || r.plan.has(stepVoid) || r.plan.has(stepCapture),
		CreatedAt:      r.createdAt, UpdatedAt: r.updatedAt,
	}
	if len(r.plan.steps) > 0 {
		f.DueAt = r.plan.due
		f.Scheduled = r.plan.head() == stepAwaitDriver && r.plan.lastError == "" && r.plan.due.After(now)
	}
	for _, s := range r.plan.steps {
		f.Steps = append(f.Steps, string(s))
	}
	return f
}
