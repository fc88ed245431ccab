package rides

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	ridesv1 "github.com/rideshare-platform/rideshare/api/rides/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// RequestRide's Idempotency-Key follows Stripe's rules: keys are scoped to
// the caller and kept at least keyRetention; the same key with the same
// body returns the first response and creates nothing; with another body it
// is 422 idempotency_key_reused; while the first request is still running it
// is 409 idempotency_key_in_flight.
//
// The record is written first (in_flight) and completed with the response in
// the same transaction as the ride, so a crash leaves either both or
// neither. Within one transaction nobody else can see in_flight: SQLite's
// single writer runs the two requests one after the other, and on PostgreSQL
// a concurrent retry's INSERT … ON CONFLICT waits on the first request's
// uncommitted key, then finds it done (or, if the first rolled back, takes
// the key as a first request). in_flight becomes visible as soon as a
// reservation commits before the work: a RequestRide that had to call
// another service before answering (no call may sit inside a transaction)
// would reserve, commit, call, then complete, and on PostgreSQL with several
// replicas a retry landing on another replica in between would be told
// idempotency_key_in_flight. The check is here so that such a change stays
// correct; the tests plant an in-flight record to prove it.

// keyRetention is how long a key is remembered; pruneKeys forgets older ones.
const keyRetention = 24 * time.Hour

// maxKeyLen bounds a client's key.
const maxKeyLen = 255

// requestHash fingerprints what a RequestRide asks for, without who asks
// (the scope) or the key itself, so a retry of the same body matches.
func requestHash(m *ridesv1.RequestRideRequest) (string, error) {
	body := &ridesv1.RequestRideRequest{Pickup: m.GetPickup(), Dropoff: m.GetDropoff(), QuoteId: m.GetQuoteId(), PaymentMethod: m.GetPaymentMethod()}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(body)
	if err != nil {
		return "", fmt.Errorf("rides: hash request: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// reserveKey claims (callerID, key) for a request with hash in tx. It
// returns the first response when the key was already used for the same
// request, and nil when this request is the first and must do the work.
func reserveKey(ctx context.Context, tx *sqldb.Tx, callerID, key, hash string, now time.Time) (*ridesv1.RequestRideResponse, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO ride_requests (caller_id, idem_key, request_hash, state, created_at)
		VALUES ($1, $2, $3, 'in_flight', $4) ON CONFLICT (caller_id, idem_key) DO NOTHING`, callerID, key, hash, sqldb.Micros(now))
	if err != nil {
		return nil, fmt.Errorf("rides: reserve idempotency key: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return nil, err
	} else if n == 1 {
		return nil, nil
	}
	var prevHash, state string
	var body []byte
	err = tx.QueryRowContext(ctx, `SELECT request_hash, state, response FROM ride_requests WHERE caller_id = $1 AND idem_key = $2`,
		callerID, key).Scan(&prevHash, &state, &body)
	if errors.Is(err, sql.ErrNoRows) {
		// Pruned between the insert and the read: only possible with a
		// concurrent janitor; the client retries.
		return nil, apperr.E(apperr.Conflict, "idempotency_key_in_flight", "the request with this Idempotency-Key is still being processed")
	}
	if err != nil {
		return nil, fmt.Errorf("rides: read idempotency key: %w", err)
	}
	switch {
	case prevHash != hash:
		return nil, apperr.E(apperr.Unprocessable, "idempotency_key_reused", "this Idempotency-Key was used for a different request")
	case state != "done":
		return nil, apperr.E(apperr.Conflict, "idempotency_key_in_flight", "the request with this Idempotency-Key is still being processed")
	}
	out := &ridesv1.RequestRideResponse{}
	if err := proto.Unmarshal(body, out); err != nil {
		return nil, fmt.Errorf("rides: stored response for idempotency key: %w", err)
	}
	return out, nil
}

// completeKey stores the response a retry of the same request gets.
func completeKey(ctx context.Context, tx *sqldb.Tx, callerID, key, rideID string, resp *ridesv1.RequestRideResponse) error {
	body, err := proto.Marshal(resp)
	if err != nil {
		return fmt.Errorf("rides: store response: %w", err)
	}
	_, err = tx.ExecContext(ctx, `UPDATE ride_requests SET state = 'done', ride_id = $1, response = $2 WHERE caller_id = $3 AND idem_key = $4`,
		rideID, body, callerID, key)
	if err != nil {
		return fmt.Errorf("rides: complete idempotency key: %w", err)
	}
	return nil
}

// pruneKeys forgets keys older than keyRetention.
func pruneKeys(ctx context.Context, db *sqldb.DB, now time.Time) (int64, error) {
	var n int64
	err := db.InTx(ctx, func(tx *sqldb.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM ride_requests WHERE created_at < $1`, sqldb.Micros(now.Add(-keyRetention)))
		if err != nil {
			return fmt.Errorf("rides: prune idempotency keys: %w", err)
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}
