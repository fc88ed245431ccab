package pricing

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// store keeps fare rules, surge state and the quote secret in the pricing
// database.
type store struct {
	db *sqldb.DB
}

// fareRules reads every rule, keyed by area.
func (s *store) fareRules(ctx context.Context) (map[string]FareRule, error) {
	rows, err := s.db.Reader().QueryContext(ctx,
		`SELECT area, currency, base_fare, per_km, per_minute, minimum_fare FROM fare_rules`)
	if err != nil {
		return nil, fmt.Errorf("pricing: read fare rules: %w", err)
	}
	defer rows.Close()
	rules := map[string]FareRule{}
	for rows.Next() {
		var r FareRule
		if err := rows.Scan(&r.Area, &r.Currency, &r.BaseFare, &r.PerKm, &r.PerMinute, &r.Minimum); err != nil {
			return nil, fmt.Errorf("pricing: read fare rules: %w", err)
		}
		if err := r.validate(); err != nil {
			return nil, err
		}
		rules[r.Area] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pricing: read fare rules: %w", err)
	}
	return rules, nil
}

// supply reads a zone's last reported counts; a zone dispatch never reported
// is the zero Supply, which prices without surge.
func (s *store) supply(ctx context.Context, zone string) (Supply, error) {
	sup := Supply{Zone: zone}
	var at int64
	err := s.db.Reader().QueryRowContext(ctx,
		`SELECT available_drivers, open_requests, observed_at FROM surge_zones WHERE zone = $1`, zone).
		Scan(&sup.AvailableDrivers, &sup.OpenRequests, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return sup, nil
	}
	if err != nil {
		return Supply{}, fmt.Errorf("pricing: read surge state: %w", err)
	}
	sup.ObservedAt = sqldb.Time(at)
	return sup, nil
}

// recordSupplyTx stores sup in tx unless the zone already holds newer counts:
// the latest observation wins whatever order events arrive in.
func (s *store) recordSupplyTx(ctx context.Context, tx *sqldb.Tx, sup Supply) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO surge_zones (zone, available_drivers, open_requests, observed_at)
			VALUES ($1, $2, $3, $4)
			ON CONFLICT (zone) DO UPDATE SET available_drivers = excluded.available_drivers,
				open_requests = excluded.open_requests, observed_at = excluded.observed_at
			WHERE surge_zones.observed_at <= excluded.observed_at`,
		sup.Zone, sup.AvailableDrivers, sup.OpenRequests, sqldb.Micros(sup.ObservedAt))
	if err != nil {
		return fmt.Errorf("pricing: record surge state: %w", err)
	}
	return nil
}

// quoteSecret is the random secret quote keys derive from, created on first
// use. Replicas starting together may race to create it; the first insert
// wins and every replica reads back the same secret.
func (s *store) quoteSecret(ctx context.Context) (secret []byte, err error) {
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("pricing: quote secret: %w", err)
	}
	err = s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO quote_secrets (id, secret, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING`,
			"quote", fresh, sqldb.Micros(time.Now())); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT secret FROM quote_secrets WHERE id = $1`, "quote").Scan(&secret)
	})
	if err != nil {
		return nil, fmt.Errorf("pricing: quote secret: %w", err)
	}
	return secret, nil
}
