package payments

import (
	"context"
	"fmt"
	"time"

	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// PaymentFacts is what `rideshare check` needs to know of one ride's
// payment to join it with the ride: where it settled and how often money
// was captured.
type PaymentFacts struct {
	RideID   string `json:"ride_id"`
	ID       string `json:"id"`
	Status   Status `json:"status"`
	Currency string `json:"currency"`
	// Authorized, Captured and Refunded are amounts in minor units.
	Authorized int64 `json:"authorized"`
	Captured   int64 `json:"captured"`
	Refunded   int64 `json:"refunded,omitempty"`
	// Captures counts the ledger's capture transactions: the money that
	// really moved, whatever the payment row says.
	Captures int64 `json:"captures"`
	// Pending is an operation recorded but not finished ("capture", ...).
	Pending   string    `json:"pending,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// LedgerAudit is the ledger check as the audit reports it.
type LedgerAudit struct {
	Transactions int64 `json:"transactions"`
	Entries      int64 `json:"entries"`
	Debits       int64 `json:"debits"`
	Credits      int64 `json:"credits"`
	Balanced     bool  `json:"balanced"`
	// Unbalanced and Violations are the first maxLedgerFindings of each;
	// the counts are whole.
	Unbalanced      []string `json:"unbalanced,omitempty"`
	UnbalancedCount int      `json:"unbalanced_count,omitempty"`
	Violations      []string `json:"violations,omitempty"`
	ViolationCount  int      `json:"violation_count,omitempty"`
}

// maxLedgerFindings bounds the findings one answer lists: a ledger broken
// everywhere says so in its counts without an answer as large as itself.
const maxLedgerFindings = 100

// AuditPage is one page of per-ride payment facts, in ride id order. The
// first page also carries the ledger check.
type AuditPage struct {
	Ledger   *LedgerAudit   `json:"ledger,omitempty"`
	Payments []PaymentFacts `json:"payments"`
	// Next is the cursor of the following page; "" on the last.
	Next string `json:"next,omitempty"`
}

// audit reads up to limit payments after the ride id after ("" for the
// first page, which also checks the ledger).
func (s *store) audit(ctx context.Context, after string, limit int) (AuditPage, error) {
	page := AuditPage{Payments: []PaymentFacts{}}
	if after == "" {
		rep, err := s.checkLedger(ctx)
		if err != nil {
			return page, err
		}
		page.Ledger = &LedgerAudit{
			Transactions: rep.Transactions, Entries: rep.Entries, Debits: rep.Debits, Credits: rep.Credits, Balanced: rep.Balanced(),
			Unbalanced: rep.Unbalanced[:min(len(rep.Unbalanced), maxLedgerFindings)], UnbalancedCount: len(rep.Unbalanced),
			Violations: rep.Violations[:min(len(rep.Violations), maxLedgerFindings)], ViolationCount: len(rep.Violations),
		}
	}
	rows, err := s.db.Reader().QueryContext(ctx, `SELECT p.ride_id, p.id, p.status, p.currency, p.authorized, p.captured, p.refunded,
			p.pending_op, p.created_at,
			(SELECT count(*) FROM ledger_transactions t WHERE t.payment_id = p.id AND t.kind = 'capture')
		FROM payments p WHERE p.ride_id > $1 ORDER BY p.ride_id LIMIT $2`, after, limit)
	if err != nil {
		return page, fmt.Errorf("payments: audit: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var f PaymentFacts
		var status string
		var created int64
		if err := rows.Scan(&f.RideID, &f.ID, &status, &f.Currency, &f.Authorized, &f.Captured, &f.Refunded,
			&f.Pending, &created, &f.Captures); err != nil {
			return page, fmt.Errorf("payments: audit: %w", err)
		}
		f.Status, f.CreatedAt = Status(status), sqldb.Time(created)
		page.Payments = append(page.Payments, f)
	}
	if err := rows.Err(); err != nil {
		return page, fmt.Errorf("payments: audit: %w", err)
	}
	if len(page.Payments) == limit && limit > 0 {
		page.Next = page.Payments[len(page.Payments)-1].RideID
	}
	return page, nil
}
