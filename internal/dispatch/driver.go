package dispatch

import (
	"context"
	"time"

	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// setAvailability puts the driver online or offline, with their position if
// given. Going offline declines the driver's open offers (each ride passes
// to its next driver); a ride already assigned goes on.
func (d *dispatcher) setAvailability(ctx context.Context, driverID string, online bool, at *geo.Point) error {
	now := d.clock()
	var f *fix
	if at != nil {
		f = &fix{driverID: driverID, at: *at, recorded: now}
	}
	if !online {
		// Stop offers at once rather than after the commit: a failed commit
		// only hides the driver until the next fleet refresh, while the
		// other order could offer them a ride as they leave.
		d.fleet.setOnline(driverID, false, now)
	}
	err := d.store.db.InTx(ctx, func(tx *sqldb.Tx) error {
		if err := d.store.setAvailability(ctx, tx, driverID, online, now, f); err != nil {
			return err
		}
		if online {
			return nil
		}
		open, err := d.store.openOffers(ctx, tx, "", driverID)
		if err != nil {
			return err
		}
		for _, o := range open {
			if err := d.endOfferTx(ctx, tx, o, offerDeclined, now, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if f != nil && d.fleet.locate(driverID, f.at, f.recorded, true) {
		d.cast.fix(driverID, f.at, f.recorded)
	}
	d.fleet.setOnline(driverID, online, now)
	d.cast.online(driverID, online, now)
	return nil
}

// locate records a position ping in memory only, and broadcasts it to the
// other replicas; the flusher persists it later. A fix stamped in the
// future counts as taken now, so a device whose clock runs fast cannot make
// every later honest ping look stale.
func (d *dispatcher) locate(driverID string, p geo.Point, recorded time.Time) bool {
	now := d.clock()
	if recorded.IsZero() || recorded.After(now) {
		recorded = now
	}
	recorded = recorded.UTC().Truncate(time.Microsecond)
	applied := d.fleet.locate(driverID, p, recorded, false)
	if applied {
		d.cast.fix(driverID, p, recorded)
		d.metrics.pings.WithLabelValues("applied").Inc()
	} else {
		d.metrics.pings.WithLabelValues("stale").Inc()
	}
	return applied
}

// flushPositions writes the positions changed since the last flush.
func (d *dispatcher) flushPositions(ctx context.Context) error {
	fixes := d.fleet.takeDirty()
	if len(fixes) == 0 {
		return nil
	}
	if err := d.store.saveFixes(ctx, fixes, d.clock()); err != nil {
		d.fleet.markDirty(fixes)
		return err
	}
	return nil
}

// refreshFleet merges into the fleet what the database holds: drivers
// changed since since (all online drivers when since is zero) and every
// lock. It returns the time the read began, the since of the next refresh.
func (d *dispatcher) refreshFleet(ctx context.Context, since time.Time) (time.Time, error) {
	readAt := d.clock()
	rows, err := d.store.drivers(ctx, since, since.IsZero())
	if err != nil {
		return since, err
	}
	locked, err := d.store.lockedDrivers(ctx)
	if err != nil {
		return since, err
	}
	d.fleet.merge(rows, locked, readAt)
	return readAt, nil
}
