package rides

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	geov1 "github.com/rideshare-platform/rideshare/api/geo/v1"
	moneyv1 "github.com/rideshare-platform/rideshare/api/money/v1"
	ridesv1 "github.com/rideshare-platform/rideshare/api/rides/v1"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// store is the rides repository: it loads a ride in a transaction, lets a
// use case change it through its methods, and saves it with its events.
type store struct {
	db      *sqldb.DB
	outbox  *outbox.Outbox
	metrics *metrics
	// kick wakes the saga worker; it runs after a commit that left a step
	// due, so the next step starts at once instead of at the next poll.
	kick func()
}

const rideColumns = `id, rider_id, driver_id, status, reason, pickup, dropoff, quote_id, payment_method,
	fare_amount, fare_currency, payment_id, search_attempt, excluded_drivers, search_deadline, assigned_at,
	charge_amount, captured_at, steps, due_at, step_tries, last_error, version, created_at, updated_at`

// errStale is a lost race with another writer (PostgreSQL with several
// replicas): the update is run again on the fresh row.
var errStale = errors.New("rides: ride changed concurrently")

// insert stores a new ride and announces it.
func (s *store) insert(ctx context.Context, tx *sqldb.Tx, r *Ride) error {
	excluded, _ := json.Marshal(nonNil(r.excluded))
	_, err := tx.ExecContext(ctx, `INSERT INTO rides (`+rideColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25)`,
		r.id, r.riderID, r.driverID, string(r.status), r.reason, pointText(r.pickup), pointText(r.dropoff), r.quoteID, r.paymentMethod,
		r.fare.Amount, r.fare.Currency, r.paymentID, int64(r.attempt), string(excluded), micros(r.searchDeadline), micros(r.assignedAt),
		r.charge.amount.Amount, micros(r.charge.capturedAt), r.plan.encode(), micros(r.plan.due), int64(r.plan.tries), r.plan.lastError,
		r.version, micros(r.createdAt), micros(r.updatedAt))
	if err != nil {
		return fmt.Errorf("rides: insert ride: %w", err)
	}
	ev := &ridesv1.RideRequested{RideId: r.id, RiderId: r.riderID, Pickup: pointProto(r.pickup), Dropoff: pointProto(r.dropoff)}
	if !r.fare.IsZero() {
		ev.Fare = moneyProto(r.fare)
	}
	if err := s.outbox.Append(ctx, tx, outbox.Event{Type: "ride.requested", Key: r.id, Payload: ev}); err != nil {
		return err
	}
	return s.saved(ctx, tx, r)
}

// save writes a changed ride back, if nobody else changed it since it was
// read, with a RideStatusChanged for every status change.
func (s *store) save(ctx context.Context, tx *sqldb.Tx, r *Ride) error {
	excluded, _ := json.Marshal(nonNil(r.excluded))
	res, err := tx.ExecContext(ctx, `UPDATE rides SET driver_id = $1, status = $2, reason = $3, fare_amount = $4, fare_currency = $5,
		payment_id = $6, search_attempt = $7, excluded_drivers = $8, search_deadline = $9, assigned_at = $10, charge_amount = $11,
		captured_at = $12, steps = $13, due_at = $14, step_tries = $15, last_error = $16, updated_at = $17, version = version + 1
		WHERE id = $18 AND version = $19`,
		r.driverID, string(r.status), r.reason, r.fare.Amount, r.fare.Currency,
		r.paymentID, int64(r.attempt), string(excluded), micros(r.searchDeadline), micros(r.assignedAt), r.charge.amount.Amount,
		micros(r.charge.capturedAt), r.plan.encode(), micros(r.plan.due), int64(r.plan.tries), r.plan.lastError, micros(r.updatedAt),
		r.id, r.version)
	if err != nil {
		return fmt.Errorf("rides: save ride: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return errStale
	}
	r.version++
	for _, c := range r.changes {
		err := s.outbox.Append(ctx, tx, outbox.Event{Type: "ride.status_changed", Key: r.id, Payload: &ridesv1.RideStatusChanged{
			RideId: r.id, RiderId: r.riderID, DriverId: c.driverID, From: statusProto(c.from), To: statusProto(c.to), Reason: c.reason,
		}})
		if err != nil {
			return err
		}
		if c.to.Terminal() && s.metrics != nil {
			to := c.to
			tx.OnCommit(func() { s.metrics.terminal.WithLabelValues(string(to)).Inc() })
		}
	}
	return s.saved(ctx, tx, r)
}

// saved resets the ride's pending changes and wakes the worker after the
// commit if a step is due.
func (s *store) saved(_ context.Context, tx *sqldb.Tx, r *Ride) error {
	r.changes = nil
	r.dirty = false
	if r.plan.head() != "" && s.kick != nil {
		tx.OnCommit(s.kick)
	}
	return nil
}

// update runs fn on ride id in a transaction of its own and saves the
// result; fn's error rolls everything back. fn may run more than once (a
// lost race is retried), so it must only change the ride it is given.
func (s *store) update(ctx context.Context, id string, fn func(*Ride) error) (*Ride, error) {
	for try := 0; ; try++ {
		var out *Ride
		err := s.db.InTx(ctx, func(tx *sqldb.Tx) error {
			var err error
			out, err = s.updateTx(ctx, tx, id, fn)
			return err
		})
		if errors.Is(err, errStale) && try < 5 {
			continue
		}
		return out, err
	}
}

// updateTx is update inside a transaction the caller owns (an event
// handler's, which also records the event as applied).
func (s *store) updateTx(ctx context.Context, tx *sqldb.Tx, id string, fn func(*Ride) error) (*Ride, error) {
	r, err := scanRide(tx.QueryRowContext(ctx, `SELECT `+rideColumns+` FROM rides WHERE id = $1`, id))
	if err != nil {
		return nil, err
	}
	if err := fn(r); err != nil {
		return nil, err
	}
	if r.dirty {
		if err := s.save(ctx, tx, r); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// get reads one ride.
func (s *store) get(ctx context.Context, id string) (*Ride, error) {
	return scanRide(s.db.Reader().QueryRowContext(ctx, `SELECT `+rideColumns+` FROM rides WHERE id = $1`, id))
}

// claim leases up to limit rides whose first step is due, for one worker to
// run that step until the lease ends. The conditional update is the lock: on
// PostgreSQL with several replicas, exactly one of them wins each ride.
// Counting the try here, before any RPC, is what lets a cancel know whether
// an authorization may already have reached payments.
func (s *store) claim(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]*Ride, error) {
	var out []*Ride
	err := s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		out = nil
		rows, err := tx.QueryContext(ctx, `SELECT id FROM rides WHERE steps <> '' AND due_at <= $1 AND leased_until <= $2
			ORDER BY due_at LIMIT $3`, micros(now), micros(now), limit)
		if err != nil {
			return fmt.Errorf("rides: due steps: %w", err)
		}
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, id := range ids {
			res, err := tx.ExecContext(ctx, `UPDATE rides SET leased_until = $1, step_tries = step_tries + 1, version = version + 1
				WHERE id = $2 AND steps <> '' AND due_at <= $3 AND leased_until <= $4`,
				micros(now.Add(lease)), id, micros(now), micros(now))
			if err != nil {
				return fmt.Errorf("rides: claim %s: %w", id, err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				continue
			}
			r, err := scanRide(tx.QueryRowContext(ctx, `SELECT `+rideColumns+` FROM rides WHERE id = $1`, id))
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// record applies a step's result (see update) and ends the lease.
func (s *store) record(ctx context.Context, id string, fn func(*Ride) error) (*Ride, error) {
	for try := 0; ; try++ {
		var out *Ride
		err := s.db.InTx(ctx, func(tx *sqldb.Tx) error {
			var err error
			if out, err = s.updateTx(ctx, tx, id, fn); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE rides SET leased_until = 0 WHERE id = $1`, id); err != nil {
				return fmt.Errorf("rides: end lease: %w", err)
			}
			if s.kick != nil {
				tx.OnCommit(s.kick)
			}
			return nil
		})
		if errors.Is(err, errStale) && try < 5 {
			continue
		}
		return out, err
	}
}

// nextDue is when the earliest step becomes runnable (due and not leased);
// ok is false when no ride owes a step.
func (s *store) nextDue(ctx context.Context) (t time.Time, ok bool, err error) {
	var us sql.NullInt64
	err = s.db.Reader().QueryRowContext(ctx, `SELECT min(CASE WHEN leased_until > due_at THEN leased_until ELSE due_at END)
		FROM rides WHERE steps <> ''`).Scan(&us)
	if err != nil || !us.Valid {
		return time.Time{}, false, err
	}
	return sqldb.Time(us.Int64), true, nil
}

// listFilter selects whose rides a list shows.
type listFilter struct {
	riderID, driverID string // at most one set; neither means every ride
}

// list reads a page of rides, newest first, after cur.
func (s *store) list(ctx context.Context, f listFilter, cur *cursor, limit int) ([]*Ride, error) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	switch {
	case f.riderID != "":
		where = append(where, "rider_id = "+arg(f.riderID))
	case f.driverID != "":
		where = append(where, "driver_id = "+arg(f.driverID))
	}
	if cur != nil {
		at := arg(cur.createdAt)
		where = append(where, "(created_at < "+at+" OR (created_at = "+at+" AND id < "+arg(cur.id)+"))")
	}
	q := `SELECT ` + rideColumns + ` FROM rides`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY created_at DESC, id DESC LIMIT ` + arg(limit)
	rows, err := s.db.Reader().QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("rides: list: %w", err)
	}
	defer rows.Close()
	var out []*Ride
	for rows.Next() {
		r, err := scanRide(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

type scanner interface{ Scan(dest ...any) error }

func scanRide(row scanner) (*Ride, error) {
	var (
		r                                        Ride
		status, pickup, dropoff, excluded, steps string
		attempt, tries                           int64
		deadline, assigned, capturedAt, due      int64
		chargeAmount, created, updated           int64
	)
	err := row.Scan(&r.id, &r.riderID, &r.driverID, &status, &r.reason, &pickup, &dropoff, &r.quoteID, &r.paymentMethod,
		&r.fare.Amount, &r.fare.Currency, &r.paymentID, &attempt, &excluded, &deadline, &assigned,
		&chargeAmount, &capturedAt, &steps, &due, &tries, &r.plan.lastError, &r.version, &created, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound()
	}
	if err != nil {
		return nil, fmt.Errorf("rides: read ride: %w", err)
	}
	r.status = Status(status)
	if r.pickup, err = parsePoint(pickup); err != nil {
		return nil, err
	}
	if r.dropoff, err = parsePoint(dropoff); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(excluded), &r.excluded); err != nil {
		return nil, fmt.Errorf("rides: ride %s excluded drivers: %w", r.id, err)
	}
	r.attempt = uint32(attempt)
	r.searchDeadline = timeOf(deadline)
	r.assignedAt = timeOf(assigned)
	if chargeAmount != 0 {
		r.charge.amount = Money{Amount: chargeAmount, Currency: r.fare.Currency}
	}
	r.charge.capturedAt = timeOf(capturedAt)
	r.plan.steps = decodeSteps(steps)
	r.plan.due = timeOf(due)
	r.plan.tries = int(tries)
	r.createdAt = sqldb.Time(created)
	r.updatedAt = sqldb.Time(updated)
	return &r, nil
}

// micros stores t; the zero time is 0.
func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return sqldb.Micros(t)
}

// timeOf reads a stored time; 0 is the zero time.
func timeOf(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return sqldb.Time(us)
}

// pointText stores p exactly: the shortest decimal text that reads back as
// the same float64 (the schema has no floating-point type both engines
// treat alike).
func pointText(p geo.Point) string {
	return strconv.FormatFloat(p.Lat, 'g', -1, 64) + "," + strconv.FormatFloat(p.Lng, 'g', -1, 64)
}

func parsePoint(s string) (geo.Point, error) {
	lat, lng, ok := strings.Cut(s, ",")
	if !ok {
		return geo.Point{}, fmt.Errorf("rides: stored point %q", s)
	}
	a, err1 := strconv.ParseFloat(lat, 64)
	b, err2 := strconv.ParseFloat(lng, 64)
	if err := errors.Join(err1, err2); err != nil {
		return geo.Point{}, fmt.Errorf("rides: stored point %q: %w", s, err)
	}
	return geo.Point{Lat: a, Lng: b}, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func pointProto(p geo.Point) *geov1.Point { return p.Proto() }

func moneyProto(m Money) *moneyv1.Money {
	return &moneyv1.Money{Amount: m.Amount, Currency: m.Currency}
}
