package identity

import (
	"context"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

func TestSweepDeletesOnlyExpiredRows(t *testing.T) {
	db := newTestDB(t)
	ctx := context.Background()
	past, future := sqldb.Micros(time.Now().Add(-time.Minute)), sqldb.Micros(time.Now().Add(time.Hour))
	err := db.InTx(ctx, func(tx *sqldb.Tx) error {
		for i, exp := range []int64{past, future} {
			id := []string{"old", "live"}[i]
			if _, err := tx.Exec(`INSERT INTO revoked_tokens (token_id, expires_at) VALUES ($1, $2)`, id, exp); err != nil {
				return err
			}
			if _, err := tx.Exec(`INSERT INTO refresh_tokens (id, family_id, client_id, subject, scopes, audience, amr, auth_time, created_at, expires_at)
				VALUES ($1, 'f', 'c', 's', '', '', '', 0, 0, $2)`, id, exp); err != nil {
				return err
			}
			if _, err := tx.Exec(`INSERT INTO auth_requests (id, client_id, redirect_uri, state, nonce, scopes, response_type, response_mode,
				code_challenge, code_challenge_method, created_at, expires_at) VALUES ($1, 'c', 'r', '', '', '', 'code', '', '', '', 0, $2)`, id, exp); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := (&sweeper{db: db}).sweep(ctx); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"revoked_tokens", "refresh_tokens", "auth_requests"} {
		if n := count(t, db, table); n != 1 {
			t.Errorf("%s: %d rows after sweeping, want the 1 live row", table, n)
		}
	}
}
