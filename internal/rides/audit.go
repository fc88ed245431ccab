package rides

import (
	"context"
	"fmt"

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
