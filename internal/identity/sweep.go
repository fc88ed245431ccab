package identity

import (
	"context"
	"fmt"
	"time"

	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// sweeper deletes what has expired.
type sweeper struct {
	db *sqldb.DB
}

// run sweeps now and then every period until ctx ends.
func (s *sweeper) run(ctx context.Context, period time.Duration) error {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		if err := s.sweep(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *sweeper) sweep(ctx context.Context) error {
	cutoff := sqldb.Micros(now())
	return s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		for _, table := range []string{"auth_requests", "refresh_tokens", "revoked_tokens"} {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE expires_at < $1`, cutoff); err != nil {
				return fmt.Errorf("identity: sweep %s: %w", table, err)
			}
		}
		return nil
	})
}
