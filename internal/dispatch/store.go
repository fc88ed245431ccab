package dispatch

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// store is the dispatch database: availability, searches, offers and the
// driver locks. Every function that changes a search takes the *sqldb.Tx of
// the caller's unit of work; the search row is locked first (lockSearch), so
// that on PostgreSQL concurrent changes to one search queue up behind each
// other, and SQLite serialises all writers anyway.
type store struct {
	db *sqldb.DB
}

// querier is what both the read pool and a transaction offer.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Search statuses.
const (
	searching  = "searching"  // offering drivers one at a time
	assigned   = "assigned"   // a driver accepted; their lock holds them
	released   = "released"   // the assigned driver was freed (trip over)
	failed     = "failed"     // deadline passed with no acceptance
	cancelled  = "cancelled"  // CancelSearch
	superseded = "superseded" // a later attempt of the same ride started
)

// Offer statuses.
const (
	offerOpen      = "open"
	offerAccepted  = "accepted"
	offerDeclined  = "declined"
	offerExpired   = "expired"
	offerWithdrawn = "withdrawn"
)

// Lock kinds.
const (
	lockOffered  = "offered"
	lockAssigned = "assigned"
)

// search is one (ride, attempt) looking for a driver.
type search struct {
	RideID   string
	Attempt  uint32
	RiderID  string
	Pickup   geo.Point
	Dropoff  geo.Point
	Zone     string
	Fare     money
	Exclude  []string
	Deadline time.Time
	// RetryAt is when to look for a free driver again; zero when the search
	// is not waiting for one.
	RetryAt  time.Time
	Status   string
	DriverID string
	ETA      int
}

// money is an amount in minor units of a currency.
type money struct {
	Amount   int64
	Currency string
}

// offer is a ride offered to one driver, with what the driver sees of it.
type offer struct {
	RideID    string
	Attempt   uint32
	DriverID  string
	Status    string
	ExpiresAt time.Time
	Pickup    geo.Point
	Dropoff   geo.Point
	Fare      money
	// SearchStatus and ETA are the search's, for answering a repeated
	// accept.
	SearchStatus string
	ETA          int
}

func e6(v float64) int64     { return int64(math.Round(v * 1e6)) }
func fromE6(v int64) float64 { return float64(v) / 1e6 }

func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return sqldb.Micros(t)
}

func timeOf(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return sqldb.Time(us)
}

// --- drivers ---

// setAvailability stores the driver's state, and the position given with
// it if any (only when newer than the stored one).
func (s *store) setAvailability(ctx context.Context, tx *sqldb.Tx, id string, online bool, at time.Time, f *fix) error {
	var lat, lng, located int64
	if f != nil {
		lat, lng, located = e6(f.at.Lat), e6(f.at.Lng), micros(f.recorded)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO drivers (driver_id, online, online_at, lat_e6, lng_e6, located_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $3)
			ON CONFLICT (driver_id) DO UPDATE SET online = excluded.online, online_at = excluded.online_at, updated_at = excluded.updated_at,
				lat_e6 = CASE WHEN excluded.located_at > drivers.located_at THEN excluded.lat_e6 ELSE drivers.lat_e6 END,
				lng_e6 = CASE WHEN excluded.located_at > drivers.located_at THEN excluded.lng_e6 ELSE drivers.lng_e6 END,
				located_at = CASE WHEN excluded.located_at > drivers.located_at THEN excluded.located_at ELSE drivers.located_at END`,
		id, online, micros(at), lat, lng, located)
	if err != nil {
		return fmt.Errorf("dispatch: store availability: %w", err)
	}
	return nil
}

// saveFixes writes positions of known drivers in one transaction, each only
// over an older one. Rows are written in driver order, so two replicas
// flushing at once on PostgreSQL lock them in the same order and never
// deadlock.
func (s *store) saveFixes(ctx context.Context, fixes []fix, now time.Time) error {
	sort.Slice(fixes, func(i, j int) bool { return fixes[i].driverID < fixes[j].driverID })
	return s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		for _, f := range fixes {
			if _, err := tx.ExecContext(ctx, `UPDATE drivers SET lat_e6 = $1, lng_e6 = $2, located_at = $3, updated_at = $4
					WHERE driver_id = $5 AND located_at < $3`,
				e6(f.at.Lat), e6(f.at.Lng), micros(f.recorded), micros(now), f.driverID); err != nil {
				return fmt.Errorf("dispatch: store position: %w", err)
			}
		}
		return nil
	})
}

// drivers reads the drivers changed at or after since; with onlineOnly,
// only those online.
func (s *store) drivers(ctx context.Context, since time.Time, onlineOnly bool) ([]driverRow, error) {
	q := `SELECT driver_id, online, online_at, lat_e6, lng_e6, located_at FROM drivers WHERE updated_at >= $1`
	if onlineOnly {
		q += ` AND online = TRUE`
	}
	rows, err := s.db.Reader().QueryContext(ctx, q, micros(since))
	if err != nil {
		return nil, fmt.Errorf("dispatch: read drivers: %w", err)
	}
	defer rows.Close()
	var out []driverRow
	for rows.Next() {
		var r driverRow
		var onlineAt, lat, lng, located int64
		if err := rows.Scan(&r.id, &r.online, &onlineAt, &lat, &lng, &located); err != nil {
			return nil, fmt.Errorf("dispatch: read drivers: %w", err)
		}
		r.onlineAt, r.posAt = timeOf(onlineAt), timeOf(located)
		r.pos = geo.Point{Lat: fromE6(lat), Lng: fromE6(lng)}
		out = append(out, r)
	}
	return out, rows.Err()
}

// lockedDrivers is every driver held by a lock.
func (s *store) lockedDrivers(ctx context.Context) (map[string]bool, error) {
	return driverSet(ctx, s.db.Reader(), "read locks", `SELECT driver_id FROM driver_locks`)
}

// driverSet runs a query of driver ids and returns them as a set.
func driverSet(ctx context.Context, q querier, what, query string, args ...any) (map[string]bool, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("dispatch: %s: %w", what, err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("dispatch: %s: %w", what, err)
		}
		out[id] = true
	}
	return out, rows.Err()
}

// --- searches ---

const searchColumns = `ride_id, attempt, rider_id, pickup_lat_e6, pickup_lng_e6, dropoff_lat_e6, dropoff_lng_e6, zone,
	fare_amount, fare_currency, exclude, deadline, retry_at, status, driver_id, eta_seconds`

type scanner interface{ Scan(dest ...any) error }

func scanSearch(row scanner) (*search, error) {
	var s search
	var attempt, deadline, retry, eta int64
	var plat, plng, dlat, dlng int64
	var exclude string
	err := row.Scan(&s.RideID, &attempt, &s.RiderID, &plat, &plng, &dlat, &dlng, &s.Zone,
		&s.Fare.Amount, &s.Fare.Currency, &exclude, &deadline, &retry, &s.Status, &s.DriverID, &eta)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apperr.E(apperr.NotFound, "", "search not found")
	}
	if err != nil {
		return nil, fmt.Errorf("dispatch: read search: %w", err)
	}
	s.Attempt, s.ETA = uint32(attempt), int(eta)
	s.Pickup = geo.Point{Lat: fromE6(plat), Lng: fromE6(plng)}
	s.Dropoff = geo.Point{Lat: fromE6(dlat), Lng: fromE6(dlng)}
	s.Deadline, s.RetryAt = timeOf(deadline), timeOf(retry)
	if err := json.Unmarshal([]byte(exclude), &s.Exclude); err != nil {
		return nil, fmt.Errorf("dispatch: read search exclusions: %w", err)
	}
	return &s, nil
}

// insertSearch stores s unless its (ride, attempt) exists; inserted says
// whether it was new.
func (s *store) insertSearch(ctx context.Context, tx *sqldb.Tx, se *search, now time.Time) (inserted bool, err error) {
	exclude, err := json.Marshal(append([]string{}, se.Exclude...))
	if err != nil {
		return false, err
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO searches (ride_id, attempt, rider_id, pickup_lat_e6, pickup_lng_e6, dropoff_lat_e6, dropoff_lng_e6, zone,
			fare_amount, fare_currency, exclude, deadline, status, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)
			ON CONFLICT (ride_id, attempt) DO NOTHING`,
		se.RideID, int64(se.Attempt), se.RiderID, e6(se.Pickup.Lat), e6(se.Pickup.Lng), e6(se.Dropoff.Lat), e6(se.Dropoff.Lng), se.Zone,
		se.Fare.Amount, se.Fare.Currency, string(exclude), micros(se.Deadline), se.Status, micros(now))
	if err != nil {
		return false, fmt.Errorf("dispatch: insert search: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// lockSearch locks the search row for the rest of tx (the version bump
// takes PostgreSQL's row lock, and a concurrent writer re-reads the row
// after waiting) and returns it.
func (s *store) lockSearch(ctx context.Context, tx *sqldb.Tx, rideID string, attempt uint32) (*search, error) {
	return scanSearch(tx.QueryRowContext(ctx, `UPDATE searches SET version = version + 1 WHERE ride_id = $1 AND attempt = $2
			RETURNING `+searchColumns, rideID, int64(attempt)))
}

// getSearch reads a search without locking it.
func (s *store) getSearch(ctx context.Context, q querier, rideID string, attempt uint32) (*search, error) {
	return scanSearch(q.QueryRowContext(ctx, `SELECT `+searchColumns+` FROM searches WHERE ride_id = $1 AND attempt = $2`, rideID, int64(attempt)))
}

// attempts lists a ride's attempts with their statuses.
func (s *store) attempts(ctx context.Context, q querier, rideID string) (map[uint32]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT attempt, status FROM searches WHERE ride_id = $1`, rideID)
	if err != nil {
		return nil, fmt.Errorf("dispatch: read searches: %w", err)
	}
	defer rows.Close()
	out := map[uint32]string{}
	for rows.Next() {
		var a int64
		var st string
		if err := rows.Scan(&a, &st); err != nil {
			return nil, fmt.Errorf("dispatch: read searches: %w", err)
		}
		out[uint32(a)] = st
	}
	return out, rows.Err()
}

// updateSearch writes the mutable part of se (status, retry time, driver,
// ETA).
func (s *store) updateSearch(ctx context.Context, tx *sqldb.Tx, se *search, now time.Time) error {
	_, err := tx.ExecContext(ctx, `UPDATE searches SET status = $1, retry_at = $2, driver_id = $3, eta_seconds = $4, updated_at = $5
			WHERE ride_id = $6 AND attempt = $7`,
		se.Status, micros(se.RetryAt), se.DriverID, int64(se.ETA), micros(now), se.RideID, int64(se.Attempt))
	if err != nil {
		return fmt.Errorf("dispatch: update search: %w", err)
	}
	return nil
}

// --- offers ---

// offeredDrivers is every driver this ride was offered to and who answered
// it, ignored it or holds it now (withdrawn offers do not count: the driver
// never had a fair chance to answer).
func (s *store) offeredDrivers(ctx context.Context, tx *sqldb.Tx, rideID string) (map[string]bool, error) {
	return driverSet(ctx, tx, "read offers", `SELECT driver_id FROM offers WHERE ride_id = $1 AND status <> $2`, rideID, offerWithdrawn)
}

// insertOffer opens an offer; false if the ride already has an open one.
func (s *store) insertOffer(ctx context.Context, tx *sqldb.Tx, o offer, now time.Time) (bool, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO offers (ride_id, attempt, driver_id, status, expires_at, created_at)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
		o.RideID, int64(o.Attempt), o.DriverID, offerOpen, micros(o.ExpiresAt), micros(now))
	if err != nil {
		return false, fmt.Errorf("dispatch: insert offer: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

const offerColumns = `o.ride_id, o.attempt, o.driver_id, o.status, o.expires_at,
	s.pickup_lat_e6, s.pickup_lng_e6, s.dropoff_lat_e6, s.dropoff_lng_e6, s.fare_amount, s.fare_currency, s.status, s.eta_seconds`

const offerJoin = ` FROM offers o JOIN searches s ON s.ride_id = o.ride_id AND s.attempt = o.attempt`

func scanOffer(row scanner) (*offer, error) {
	var o offer
	var attempt, expires, plat, plng, dlat, dlng, eta int64
	err := row.Scan(&o.RideID, &attempt, &o.DriverID, &o.Status, &expires,
		&plat, &plng, &dlat, &dlng, &o.Fare.Amount, &o.Fare.Currency, &o.SearchStatus, &eta)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apperr.E(apperr.NotFound, "", "offer not found")
	}
	if err != nil {
		return nil, fmt.Errorf("dispatch: read offer: %w", err)
	}
	o.Attempt, o.ETA = uint32(attempt), int(eta)
	o.ExpiresAt = timeOf(expires)
	o.Pickup = geo.Point{Lat: fromE6(plat), Lng: fromE6(plng)}
	o.Dropoff = geo.Point{Lat: fromE6(dlat), Lng: fromE6(dlng)}
	return &o, nil
}

// latestOffer is the driver's offer for the ride in its latest attempt
// that made them one; NotFound if the ride was never offered to them.
func (s *store) latestOffer(ctx context.Context, q querier, rideID, driverID string) (*offer, error) {
	return scanOffer(q.QueryRowContext(ctx, `SELECT `+offerColumns+offerJoin+`
			WHERE o.ride_id = $1 AND o.driver_id = $2 ORDER BY o.attempt DESC LIMIT 1`, rideID, driverID))
}

// offerOf reads one offer.
func (s *store) offerOf(ctx context.Context, q querier, rideID string, attempt uint32, driverID string) (*offer, error) {
	return scanOffer(q.QueryRowContext(ctx, `SELECT `+offerColumns+offerJoin+`
			WHERE o.ride_id = $1 AND o.attempt = $2 AND o.driver_id = $3`, rideID, int64(attempt), driverID))
}

// openOffers lists open offers, soonest expiry first: of a driver, of a
// ride (any attempt), or both.
func (s *store) openOffers(ctx context.Context, q querier, rideID, driverID string) ([]*offer, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+offerColumns+offerJoin+`
			WHERE o.status = $1 AND ($2 = '' OR o.ride_id = $2) AND ($3 = '' OR o.driver_id = $3)
			ORDER BY o.expires_at, o.ride_id`, offerOpen, rideID, driverID)
	if err != nil {
		return nil, fmt.Errorf("dispatch: read offers: %w", err)
	}
	defer rows.Close()
	var out []*offer
	for rows.Next() {
		o, err := scanOffer(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// closeOffer moves an open offer to status; false if it was not open.
func (s *store) closeOffer(ctx context.Context, tx *sqldb.Tx, o *offer, status string, now time.Time) (bool, error) {
	res, err := tx.ExecContext(ctx, `UPDATE offers SET status = $1, responded_at = $2
			WHERE ride_id = $3 AND attempt = $4 AND driver_id = $5 AND status = $6`,
		status, micros(now), o.RideID, int64(o.Attempt), o.DriverID, offerOpen)
	if err != nil {
		return false, fmt.Errorf("dispatch: close offer: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// --- driver locks ---

// lockDriver takes the driver's lock for the ride; false if someone holds
// it. ON CONFLICT DO NOTHING (not a caught unique violation) because on
// PostgreSQL a failed statement would abort the whole transaction; a
// concurrent uncommitted lock makes it wait for that transaction's outcome.
func (s *store) lockDriver(ctx context.Context, tx *sqldb.Tx, driverID, rideID string, attempt uint32, now time.Time) (bool, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO driver_locks (driver_id, ride_id, attempt, kind, created_at)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (driver_id) DO NOTHING`,
		driverID, rideID, int64(attempt), lockOffered, micros(now))
	if err != nil {
		return false, fmt.Errorf("dispatch: lock driver: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// holdDriver turns the driver's offer lock for the ride into an
// assignment.
func (s *store) holdDriver(ctx context.Context, tx *sqldb.Tx, driverID, rideID string, attempt uint32) error {
	res, err := tx.ExecContext(ctx, `UPDATE driver_locks SET kind = $1 WHERE driver_id = $2 AND ride_id = $3 AND attempt = $4`,
		lockAssigned, driverID, rideID, int64(attempt))
	if err != nil {
		return fmt.Errorf("dispatch: hold driver: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("dispatch: driver %s holds no lock for ride %s attempt %d", driverID, rideID, attempt)
	}
	return nil
}

// unlockDriver frees the driver if their lock is for this ride and
// attempt.
func (s *store) unlockDriver(ctx context.Context, tx *sqldb.Tx, driverID, rideID string, attempt uint32) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM driver_locks WHERE driver_id = $1 AND ride_id = $2 AND attempt = $3`,
		driverID, rideID, int64(attempt))
	if err != nil {
		return fmt.Errorf("dispatch: unlock driver: %w", err)
	}
	return nil
}

// --- timers ---

// searchKey names a search.
type searchKey struct {
	RideID  string
	Attempt uint32
}

// dueOffers lists open offers whose expiry has come.
func (s *store) dueOffers(ctx context.Context, now time.Time, limit int) ([]*offer, error) {
	rows, err := s.db.Reader().QueryContext(ctx, `SELECT `+offerColumns+offerJoin+`
			WHERE o.status = $1 AND o.expires_at <= $2 ORDER BY o.expires_at LIMIT $3`, offerOpen, micros(now), limit)
	if err != nil {
		return nil, fmt.Errorf("dispatch: read due offers: %w", err)
	}
	defer rows.Close()
	var out []*offer
	for rows.Next() {
		o, err := scanOffer(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// dueSearches lists searching searches whose deadline (retry false) or
// retry time (retry true) has come.
func (s *store) dueSearches(ctx context.Context, now time.Time, retry bool, limit int) ([]searchKey, error) {
	q := `SELECT ride_id, attempt FROM searches WHERE status = $1 AND deadline <= $2 ORDER BY deadline LIMIT $3`
	if retry {
		q = `SELECT ride_id, attempt FROM searches WHERE status = $1 AND retry_at > 0 AND retry_at <= $2 ORDER BY retry_at LIMIT $3`
	}
	rows, err := s.db.Reader().QueryContext(ctx, q, searching, micros(now), limit)
	if err != nil {
		return nil, fmt.Errorf("dispatch: read due searches: %w", err)
	}
	defer rows.Close()
	var out []searchKey
	for rows.Next() {
		var k searchKey
		var a int64
		if err := rows.Scan(&k.RideID, &a); err != nil {
			return nil, fmt.Errorf("dispatch: read due searches: %w", err)
		}
		k.Attempt = uint32(a)
		out = append(out, k)
	}
	return out, rows.Err()
}

// nextDue is the earliest stored due time of any timer; zero if none.
func (s *store) nextDue(ctx context.Context) (time.Time, error) {
	var next sql.NullInt64
	err := s.db.Reader().QueryRowContext(ctx, `SELECT MIN(t) FROM (
			SELECT MIN(expires_at) AS t FROM offers WHERE status = $1
			UNION ALL SELECT MIN(deadline) FROM searches WHERE status = $2
			UNION ALL SELECT MIN(retry_at) FROM searches WHERE status = $2 AND retry_at > 0) AS due`,
		offerOpen, searching).Scan(&next)
	if err != nil {
		return time.Time{}, fmt.Errorf("dispatch: read next due time: %w", err)
	}
	if !next.Valid {
		return time.Time{}, nil
	}
	return timeOf(next.Int64), nil
}

// --- supply ---

// openRequests counts searching rides by pickup zone; zone "" counts all
// zones.
func (s *store) openRequests(ctx context.Context, zone string) (map[string]int, error) {
	rows, err := s.db.Reader().QueryContext(ctx, `SELECT zone, COUNT(*) FROM searches WHERE status = $1 AND ($2 = '' OR zone = $2) GROUP BY zone`,
		searching, zone)
	if err != nil {
		return nil, fmt.Errorf("dispatch: count open requests: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var z string
		var n int
		if err := rows.Scan(&z, &n); err != nil {
			return nil, fmt.Errorf("dispatch: count open requests: %w", err)
		}
		out[z] = n
	}
	return out, rows.Err()
}

// openOfferCount counts open offers (the metric).
func (s *store) openOfferCount(ctx context.Context) (int, error) {
	var n int
	err := s.db.Reader().QueryRowContext(ctx, `SELECT COUNT(*) FROM offers WHERE status = $1`, offerOpen).Scan(&n)
	return n, err
}
