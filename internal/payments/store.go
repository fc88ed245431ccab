package payments

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// store keeps payments, idempotency keys and the ledger in the payments
// database. Every write takes the caller's transaction: the processor
// decides what commits together.
type store struct {
	db *sqldb.DB
}

// querier is a transaction or the read pool.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

const paymentColumns = `id, ride_id, rider_id, currency, authorized, captured, refunded, status, payment_method, decline_reason, auth_ref,
	pending_op, pending_request, pending_amount, captured_at, created_at, updated_at`

func (s *store) insertPayment(ctx context.Context, tx *sqldb.Tx, p Payment) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO payments (`+paymentColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`, paymentArgs(p)...)
	if err != nil {
		return fmt.Errorf("payments: insert payment: %w", err)
	}
	return nil
}

// save writes p's mutable state back.
func (s *store) save(ctx context.Context, tx *sqldb.Tx, p Payment) error {
	_, err := tx.ExecContext(ctx, `UPDATE payments SET captured = $1, refunded = $2, status = $3, decline_reason = $4, auth_ref = $5,
		pending_op = $6, pending_request = $7, pending_amount = $8, captured_at = $9, updated_at = $10 WHERE id = $11`,
		p.Captured, p.Refunded, string(p.Status), p.DeclineReason, p.AuthRef,
		p.Pending.Op, p.Pending.RequestID, p.Pending.Amount, nullMicros(p.CapturedAt), sqldb.Micros(p.UpdatedAt), p.ID)
	if err != nil {
		return fmt.Errorf("payments: update payment: %w", err)
	}
	return nil
}

// startPending records the intent of op on a settled, idle payment. The
// condition makes it safe without row locks: of two requests that both saw
// the payment idle, only one claims it.
func (s *store) startPending(ctx context.Context, tx *sqldb.Tx, p Payment, op Pending, now time.Time) error {
	res, err := tx.ExecContext(ctx, `UPDATE payments SET pending_op = $1, pending_request = $2, pending_amount = $3, updated_at = $4
		WHERE id = $5 AND status = $6 AND pending_op = ''`,
		op.Op, op.RequestID, op.Amount, sqldb.Micros(now), p.ID, string(p.Status))
	if err != nil {
		return fmt.Errorf("payments: start %s: %w", op.Op, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return apperr.E(apperr.Conflict, "operation_in_progress", "the payment changed concurrently; another operation is in progress")
	}
	return nil
}

func paymentArgs(p Payment) []any {
	return []any{p.ID, p.RideID, p.RiderID, p.Currency, p.Authorized, p.Captured, p.Refunded, string(p.Status), p.PaymentMethod, p.DeclineReason, p.AuthRef,
		p.Pending.Op, p.Pending.RequestID, p.Pending.Amount, nullMicros(p.CapturedAt), sqldb.Micros(p.CreatedAt), sqldb.Micros(p.UpdatedAt)}
}

// payment reads one payment by id.
func (s *store) payment(ctx context.Context, q querier, id string) (Payment, error) {
	return scanPayment(q.QueryRowContext(ctx, `SELECT `+paymentColumns+` FROM payments WHERE id = $1`, id))
}

// paymentByRide reads the payment of a ride.
func (s *store) paymentByRide(ctx context.Context, q querier, rideID string) (Payment, error) {
	return scanPayment(q.QueryRowContext(ctx, `SELECT `+paymentColumns+` FROM payments WHERE ride_id = $1`, rideID))
}

type scanner interface{ Scan(dest ...any) error }

// scanPayment reads a payment row, and extra columns after it.
func scanPayment(row scanner, extra ...any) (Payment, error) {
	var p Payment
	var status string
	var capturedAt sql.NullInt64
	var created, updated int64
	dest := []any{&p.ID, &p.RideID, &p.RiderID, &p.Currency, &p.Authorized, &p.Captured, &p.Refunded, &status, &p.PaymentMethod, &p.DeclineReason, &p.AuthRef,
		&p.Pending.Op, &p.Pending.RequestID, &p.Pending.Amount, &capturedAt, &created, &updated}
	err := row.Scan(append(dest, extra...)...)
	if errors.Is(err, sql.ErrNoRows) {
		return Payment{}, apperr.E(apperr.NotFound, "", "payment not found")
	}
	if err != nil {
		return Payment{}, fmt.Errorf("payments: read payment: %w", err)
	}
	p.Status = Status(status)
	if capturedAt.Valid {
		p.CapturedAt = sqldb.Time(capturedAt.Int64)
	}
	p.CreatedAt, p.UpdatedAt = sqldb.Time(created), sqldb.Time(updated)
	return p, nil
}

func nullMicros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return sqldb.Micros(t)
}

// keyRecord is a stored idempotency key.
type keyRecord struct {
	// ID names the request; a refund's ledger transaction and network key
	// derive from it.
	ID                     string
	Scope, Op, Key, Hash   string
	PaymentID              string
	Response               []byte // nil while the operation is pending
	LockedUntil, CreatedAt time.Time
}

const keyColumns = `id, scope, operation, idem_key, request_hash, payment_id, response, locked_until, created_at`

func scanKey(row scanner) (keyRecord, error) {
	var k keyRecord
	var locked, created int64
	if err := row.Scan(&k.ID, &k.Scope, &k.Op, &k.Key, &k.Hash, &k.PaymentID, &k.Response, &locked, &created); err != nil {
		return keyRecord{}, err
	}
	k.LockedUntil, k.CreatedAt = sqldb.Time(locked), sqldb.Time(created)
	return k, nil
}

// key finds the key of (scope, op); ok is false when there is none.
func (s *store) key(ctx context.Context, q querier, scope, op, key string) (k keyRecord, ok bool, err error) {
	k, err = scanKey(q.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM idempotency_keys WHERE scope = $1 AND operation = $2 AND idem_key = $3`, scope, op, key))
	if errors.Is(err, sql.ErrNoRows) {
		return keyRecord{}, false, nil
	}
	if err != nil {
		return keyRecord{}, false, fmt.Errorf("payments: read idempotency key: %w", err)
	}
	return k, true, nil
}

// keyByID reads a key by its request id.
func (s *store) keyByID(ctx context.Context, q querier, id string) (keyRecord, error) {
	k, err := scanKey(q.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM idempotency_keys WHERE id = $1`, id))
	if err != nil {
		return keyRecord{}, fmt.Errorf("payments: read idempotency key %s: %w", id, err)
	}
	return k, nil
}

func (s *store) insertKey(ctx context.Context, tx *sqldb.Tx, k keyRecord) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO idempotency_keys (`+keyColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		k.ID, k.Scope, k.Op, k.Key, k.Hash, k.PaymentID, k.Response, sqldb.Micros(k.LockedUntil), sqldb.Micros(k.CreatedAt))
	if err != nil {
		return fmt.Errorf("payments: insert idempotency key: %w", err)
	}
	return nil
}

// lease takes over a pending key whose lease was `from`, until `until`. It
// reports false when someone else took it or finished it first.
func (s *store) lease(ctx context.Context, tx *sqldb.Tx, id string, from, until time.Time) (bool, error) {
	res, err := tx.ExecContext(ctx, `UPDATE idempotency_keys SET locked_until = $1 WHERE id = $2 AND locked_until = $3 AND response IS NULL`,
		sqldb.Micros(until), id, sqldb.Micros(from))
	if err != nil {
		return false, fmt.Errorf("payments: lease idempotency key: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// release ends the lease of a pending key at once: its attempt failed
// without an answer, so a retry need not wait.
func (s *store) release(ctx context.Context, tx *sqldb.Tx, id string) error {
	_, err := tx.ExecContext(ctx, `UPDATE idempotency_keys SET locked_until = 0 WHERE id = $1 AND response IS NULL`, id)
	if err != nil {
		return fmt.Errorf("payments: release idempotency key: %w", err)
	}
	return nil
}

// completeKey stores the response of a key's request.
func (s *store) completeKey(ctx context.Context, tx *sqldb.Tx, id string, response []byte) error {
	_, err := tx.ExecContext(ctx, `UPDATE idempotency_keys SET response = $1, locked_until = 0 WHERE id = $2`, response, id)
	if err != nil {
		return fmt.Errorf("payments: complete idempotency key: %w", err)
	}
	return nil
}

// stale lists pending keys whose lease has run out: operations whose
// process died or whose network call failed, waiting to be finished.
func (s *store) stale(ctx context.Context, now time.Time, limit int) ([]keyRecord, error) {
	rows, err := s.db.Reader().QueryContext(ctx, `SELECT `+keyColumns+` FROM idempotency_keys
		WHERE response IS NULL AND locked_until < $1 ORDER BY locked_until LIMIT $2`, sqldb.Micros(now), limit)
	if err != nil {
		return nil, fmt.Errorf("payments: stale keys: %w", err)
	}
	defer rows.Close()
	var out []keyRecord
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, fmt.Errorf("payments: stale keys: %w", err)
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// purgeKeys forgets finished keys created before cutoff. Pending keys are
// kept whatever their age: they are work still to finish.
func (s *store) purgeKeys(ctx context.Context, tx *sqldb.Tx, cutoff time.Time) (int64, error) {
	res, err := tx.ExecContext(ctx, `DELETE FROM idempotency_keys WHERE response IS NOT NULL AND created_at < $1`, sqldb.Micros(cutoff))
	if err != nil {
		return 0, fmt.Errorf("payments: purge idempotency keys: %w", err)
	}
	return res.RowsAffected()
}

// post writes one balanced ledger transaction for a payment.
func (s *store) post(ctx context.Context, tx *sqldb.Tx, paymentID, networkRef string, ps Posting, now time.Time) error {
	if err := ps.check(); err != nil {
		return err
	}
	id := newID()
	if _, err := tx.ExecContext(ctx, `INSERT INTO ledger_transactions (id, payment_id, kind, ref, currency, network_ref, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, id, paymentID, ps.Kind, ps.Ref, ps.Currency, networkRef, sqldb.Micros(now)); err != nil {
		return fmt.Errorf("payments: ledger %s: %w", ps.Kind, err)
	}
	for i, e := range ps.Entries {
		if _, err := tx.ExecContext(ctx, `INSERT INTO ledger_entries (transaction_id, line, account, debit, credit) VALUES ($1, $2, $3, $4, $5)`,
			id, i+1, string(e.Account), e.Debit, e.Credit); err != nil {
			return fmt.Errorf("payments: ledger %s entry: %w", ps.Kind, err)
		}
	}
	return nil
}

// checkLedger verifies the ledger: that it balances overall and per
// transaction, and that every payment agrees with it (reconcile). Each
// query is one statement, so each sees one consistent snapshot on both
// engines even while payments are being written: a payment and its ledger
// transactions always commit together.
func (s *store) checkLedger(ctx context.Context) (LedgerReport, error) {
	var r LedgerReport
	q := s.db.Reader()
	if err := q.QueryRowContext(ctx, `SELECT count(*), COALESCE(SUM(debit), 0), COALESCE(SUM(credit), 0) FROM ledger_entries`).
		Scan(&r.Entries, &r.Debits, &r.Credits); err != nil {
		return r, fmt.Errorf("payments: ledger sums: %w", err)
	}
	if err := q.QueryRowContext(ctx, `SELECT count(*) FROM ledger_transactions`).Scan(&r.Transactions); err != nil {
		return r, fmt.Errorf("payments: ledger transactions: %w", err)
	}
	// A transaction with fewer than two lines is as wrong as one that does
	// not balance: it moved money from or to nowhere.
	rows, err := q.QueryContext(ctx, `SELECT t.id FROM ledger_transactions t LEFT JOIN ledger_entries e ON e.transaction_id = t.id
		GROUP BY t.id HAVING COALESCE(SUM(e.debit), 0) <> COALESCE(SUM(e.credit), 0) OR count(e.line) < 2 ORDER BY t.id`)
	if err != nil {
		return r, fmt.Errorf("payments: unbalanced transactions: %w", err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return r, err
		}
		r.Unbalanced = append(r.Unbalanced, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return r, err
	}

	rows, err = q.QueryContext(ctx, `SELECT `+paymentColumns+`,
			COALESCE(l_holds, 0), COALESCE(l_captured, 0), COALESCE(l_refunded, 0), COALESCE(l_captures, 0)
		FROM payments LEFT JOIN (
			SELECT t.payment_id,
				SUM(CASE WHEN e.account = 'rider_holds' THEN e.debit - e.credit ELSE 0 END) AS l_holds,
				SUM(CASE WHEN t.kind = 'capture' AND e.account IN ('platform_revenue', 'driver_payable') THEN e.debit ELSE 0 END) AS l_captured,
				SUM(CASE WHEN t.kind = 'refund' AND e.account = 'rider_funding' THEN e.debit ELSE 0 END) AS l_refunded,
				count(DISTINCT CASE WHEN t.kind = 'capture' THEN t.id END) AS l_captures
			FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id
			GROUP BY t.payment_id
		) l ON l.payment_id = payments.id
		ORDER BY id`)
	if err != nil {
		return r, fmt.Errorf("payments: reconcile: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var t ledgerTotals
		p, err := scanPayment(rows, &t.Holds, &t.Captured, &t.Refunded, &t.Captures)
		if err != nil {
			return r, err
		}
		r.Violations = append(r.Violations, reconcile(p, t)...)
	}
	return r, rows.Err()
}
