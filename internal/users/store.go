package users

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	usersv1 "github.com/rideshare-platform/rideshare/api/users/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/auth"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// store keeps profiles in the users database.
type store struct {
	db     *sqldb.DB
	outbox *outbox.Outbox
}

const profileColumns = `user_id, role, name, email, vehicle_make, vehicle_model, vehicle_plate, vehicle_color, rating_sum, rating_count, created_at`

// create inserts p in its own transaction; see createTx.
func (s *store) create(ctx context.Context, p Profile) (out Profile, err error) {
	err = s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		out, err = s.createTx(ctx, tx, p)
		return err
	})
	return out, err
}

// createTx inserts p in tx unless a profile for the account exists, and
// announces a new one. It returns the stored profile either way, so replays
// of the same account (a retried call, a redelivered event) are harmless.
func (s *store) createTx(ctx context.Context, tx *sqldb.Tx, p Profile) (out Profile, err error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO profiles (user_id, role, name, email, vehicle_make, vehicle_model, vehicle_plate, vehicle_color, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (user_id) DO NOTHING`,
		p.UserID, auth.RoleName(p.Role), p.Name, p.Email, p.Vehicle.Make, p.Vehicle.Model, p.Vehicle.Plate, p.Vehicle.Color, sqldb.Micros(p.CreatedAt))
	if err != nil {
		return Profile{}, fmt.Errorf("users: insert profile: %w", err)
	}
	if out, err = scanProfile(tx.QueryRowContext(ctx, `SELECT `+profileColumns+` FROM profiles WHERE user_id = $1`, p.UserID)); err != nil {
		return Profile{}, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return out, nil
	}
	return out, s.outbox.Append(ctx, tx, outbox.Event{
		Type: "profile.created", Key: p.UserID,
		Payload: &usersv1.ProfileCreated{
			UserId: out.UserID, Role: out.Role, Name: out.Name, Email: out.Email, Vehicle: vehicleProto(out.Vehicle),
		},
	})
}

// get reads one profile.
func (s *store) get(ctx context.Context, userID string) (Profile, error) {
	return scanProfile(s.db.Reader().QueryRowContext(ctx, `SELECT `+profileColumns+` FROM profiles WHERE user_id = $1`, userID))
}

func scanProfile(row *sql.Row) (Profile, error) {
	var p Profile
	var role string
	var created int64
	err := row.Scan(&p.UserID, &role, &p.Name, &p.Email, &p.Vehicle.Make, &p.Vehicle.Model, &p.Vehicle.Plate, &p.Vehicle.Color, &p.RatingSum, &p.RatingCount, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return Profile{}, apperr.E(apperr.NotFound, "", "profile not found")
	}
	if err != nil {
		return Profile{}, fmt.Errorf("users: read profile: %w", err)
	}
	p.Role = auth.RoleOf(role)
	p.CreatedAt = sqldb.Time(created)
	return p, nil
}

// now is the store's clock, truncated to what the database keeps.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
