package payments

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// CardNetwork is the simulated card network the payments process runs by
// default. It behaves like a real provider where payments depends on it: it
// is idempotent by key, remembering each answer durably (in the payments
// database, table cardnet_operations) so a retry after a crash of either
// side gets the first answer; it settles a hold once (capture or void, never
// both, never twice) and refunds at most what it captured. It is slow by
// Latency on every call and declines good cards at DeclineRate.
//
// Test payment methods force an outcome: "card_declined" is always
// declined, "card_insufficient_funds" is declined for insufficient funds
// (also with the "pm_" prefix the contract's examples use); any other method,
// or none, is a good card.
type CardNetwork struct {
	db *sqldb.DB
	// Latency is added to every call.
	Latency time.Duration
	// DeclineRate is the chance, 0 to 1, that a good card is declined.
	DeclineRate float64
}

// NewCardNetwork is a simulated network that remembers its answers in db.
func NewCardNetwork(db *sqldb.DB, latency time.Duration, declineRate float64) *CardNetwork {
	return &CardNetwork{db: db, Latency: latency, DeclineRate: declineRate}
}

// The decline reasons the simulated network gives.
const (
	reasonCardDeclined      = "card_declined"
	reasonInsufficientFunds = "insufficient_funds"
	reasonGeneric           = "generic_decline"
)

// netRecord is one remembered answer.
type netRecord struct {
	Op, Hash, AuthRef, Ref, Currency string
	Amount                           int64
	Approved                         bool
	Reason                           string
}

// refused is the error for a request the network will never carry out (not
// transient, unlike a timeout). payments never sends one unless its own
// bookkeeping is wrong.
func refused(format string, args ...any) error {
	return apperr.E(apperr.Unprocessable, "network_refused", "card network: "+format, args...)
}

// Authorize places a hold, or declines.
func (n *CardNetwork) Authorize(ctx context.Context, key string, h Hold) (Authorization, error) {
	if err := n.wait(ctx); err != nil {
		return Authorization{}, err
	}
	hash := netHash(opAuthorize, h.RiderID, h.PaymentMethod, h.Currency, fmt.Sprint(h.Amount))
	rec, err := n.remember(ctx, key, opAuthorize, hash, func(context.Context, *sqldb.Tx) (netRecord, error) {
		ref := "auth_" + newID()
		r := netRecord{Op: opAuthorize, Hash: hash, AuthRef: ref, Ref: ref, Currency: h.Currency, Amount: h.Amount, Approved: true}
		if reason := n.decline(h.PaymentMethod); reason != "" {
			r.Approved, r.Reason = false, reason
		}
		return r, nil
	})
	if err != nil {
		return Authorization{}, err
	}
	return Authorization{Approved: rec.Approved, Ref: rec.Ref, DeclineReason: rec.Reason}, nil
}

// decline is the simulated issuer's verdict on a payment method: a reason,
// or "" to approve.
func (n *CardNetwork) decline(method string) string {
	switch strings.TrimPrefix(method, "pm_") {
	case "card_declined":
		return reasonCardDeclined
	case "card_insufficient_funds":
		return reasonInsufficientFunds
	}
	if n.DeclineRate > 0 && rand.Float64() < n.DeclineRate {
		return reasonGeneric
	}
	return ""
}

// Capture charges amount of an approved, unsettled hold.
func (n *CardNetwork) Capture(ctx context.Context, key, authRef string, amount int64) (string, error) {
	return n.settle(ctx, key, opCapture, authRef, amount)
}

// Void releases an approved, unsettled hold.
func (n *CardNetwork) Void(ctx context.Context, key, authRef string) (string, error) {
	return n.settle(ctx, key, opVoid, authRef, 0)
}

func (n *CardNetwork) settle(ctx context.Context, key, op, authRef string, amount int64) (string, error) {
	if err := n.wait(ctx); err != nil {
		return "", err
	}
	hash := netHash(op, authRef, fmt.Sprint(amount))
	rec, err := n.remember(ctx, key, op, hash, func(ctx context.Context, tx *sqldb.Tx) (netRecord, error) {
		auth, err := n.authorization(ctx, tx, authRef)
		if err != nil {
			return netRecord{}, err
		}
		if amount > auth.Amount {
			return netRecord{}, refused("capture of %d exceeds the hold of %d", amount, auth.Amount)
		}
		var settled string
		err = tx.QueryRowContext(ctx, `SELECT operation FROM cardnet_operations WHERE auth_ref = $1 AND operation IN ('capture', 'void')`, authRef).Scan(&settled)
		switch {
		case err == nil:
			return netRecord{}, refused("hold %s was already settled by a %s", authRef, settled)
		case !errors.Is(err, sql.ErrNoRows):
			return netRecord{}, fmt.Errorf("cardnet: %w", err)
		}
		return netRecord{Op: op, Hash: hash, AuthRef: authRef, Ref: op + "_" + newID(), Currency: auth.Currency, Amount: amount, Approved: true}, nil
	})
	return rec.Ref, err
}

// Refund returns amount of a captured hold, never more in total than the
// capture.
func (n *CardNetwork) Refund(ctx context.Context, key, authRef string, amount int64) (string, error) {
	if err := n.wait(ctx); err != nil {
		return "", err
	}
	hash := netHash(opRefund, authRef, fmt.Sprint(amount))
	rec, err := n.remember(ctx, key, opRefund, hash, func(ctx context.Context, tx *sqldb.Tx) (netRecord, error) {
		auth, err := n.authorization(ctx, tx, authRef)
		if err != nil {
			return netRecord{}, err
		}
		var captured, refunded int64
		err = tx.QueryRowContext(ctx, `SELECT
				COALESCE(SUM(CASE WHEN operation = 'capture' THEN amount ELSE 0 END), 0),
				COALESCE(SUM(CASE WHEN operation = 'refund' THEN amount ELSE 0 END), 0)
			FROM cardnet_operations WHERE auth_ref = $1 AND operation IN ('capture', 'refund')`, authRef).Scan(&captured, &refunded)
		if err != nil {
			return netRecord{}, fmt.Errorf("cardnet: %w", err)
		}
		if refunded+amount > captured {
			return netRecord{}, refused("refund of %d exceeds what is left of the capture (%d of %d)", amount, captured-refunded, captured)
		}
		return netRecord{Op: opRefund, Hash: hash, AuthRef: authRef, Ref: "refund_" + newID(), Currency: auth.Currency, Amount: amount, Approved: true}, nil
	})
	return rec.Ref, err
}

func (n *CardNetwork) authorization(ctx context.Context, tx *sqldb.Tx, ref string) (netRecord, error) {
	r, err := scanNetRecord(tx.QueryRowContext(ctx, `SELECT `+netColumns+` FROM cardnet_operations WHERE ref = $1 AND operation = 'authorize'`, ref))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return netRecord{}, refused("no authorization %s", ref)
	case err != nil:
		return netRecord{}, fmt.Errorf("cardnet: %w", err)
	case !r.Approved:
		return netRecord{}, refused("authorization %s was declined", ref)
	}
	return r, nil
}

const netColumns = `operation, request_hash, auth_ref, ref, currency, amount, approved, reason`

func scanNetRecord(row *sql.Row) (netRecord, error) {
	var r netRecord
	err := row.Scan(&r.Op, &r.Hash, &r.AuthRef, &r.Ref, &r.Currency, &r.Amount, &r.Approved, &r.Reason)
	return r, err
}

// remember returns the answer stored for key, or decides one and stores it,
// in one transaction. Two concurrent first calls with one key race on the
// primary key; the loser retries once and finds the winner's answer.
func (n *CardNetwork) remember(ctx context.Context, key, op, hash string, decide func(context.Context, *sqldb.Tx) (netRecord, error)) (netRecord, error) {
	for attempt := 0; ; attempt++ {
		var rec netRecord
		err := n.db.InTx(ctx, func(tx *sqldb.Tx) error {
			found, err := scanNetRecord(tx.QueryRowContext(ctx, `SELECT `+netColumns+` FROM cardnet_operations WHERE network_key = $1`, key))
			switch {
			case err == nil:
				if found.Op != op || found.Hash != hash {
					return refused("idempotency key %q was used for a different request", key)
				}
				rec = found
				return nil
			case !errors.Is(err, sql.ErrNoRows):
				return fmt.Errorf("cardnet: %w", err)
			}
			if rec, err = decide(ctx, tx); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO cardnet_operations (network_key, operation, request_hash, auth_ref, ref, currency, amount, approved, reason, created_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
				key, rec.Op, rec.Hash, rec.AuthRef, rec.Ref, rec.Currency, rec.Amount, rec.Approved, rec.Reason, sqldb.Micros(time.Now()))
			return err
		})
		if err != nil && sqldb.IsUniqueViolation(err) && attempt == 0 {
			continue
		}
		if err != nil && sqldb.IsUniqueViolation(err) {
			return netRecord{}, refused("conflicting settlement of %s", key)
		}
		return rec, err
	}
}

// wait is the network's latency, cut short if the caller gives up.
func (n *CardNetwork) wait(ctx context.Context) error {
	if n.Latency <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(n.Latency)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func netHash(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(h[:])
}

// newID is a UUIDv7, time-ordered so ids index well.
func newID() string { return uuid.Must(uuid.NewV7()).String() }
