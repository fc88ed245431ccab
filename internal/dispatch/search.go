package dispatch

import (
	"context"
	"fmt"
	"time"

	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// candidatesPerRound is how many nearest free drivers one round of
// offerNext tries to lock before asking the index for more.
const candidatesPerRound = 8

// startSearch records a search and offers its ride to the nearest free
// driver. A repeat of the same (ride, attempt) changes nothing; so does an
// attempt older than one already started (a late retry of the saga). A
// newer attempt ends the ride's earlier ones first: their open offers are
// withdrawn and a driver they booked is released, since the saga searches
// again only once that driver gave the ride up.
func (d *dispatcher) startSearch(ctx context.Context, se *search) error {
	now := d.clock()
	se.Status = searching
	return d.store.db.InTx(ctx, func(tx *sqldb.Tx) error {
		attempts, err := d.store.attempts(ctx, tx, se.RideID)
		if err != nil {
			return err
		}
		for a := range attempts {
			if a >= se.Attempt {
				return nil
			}
		}
		for a, status := range attempts {
			if status != searching && status != assigned {
				continue
			}
			old, err := d.store.lockSearch(ctx, tx, se.RideID, a)
			if err != nil {
				return err
			}
			if err := d.endSearch(ctx, tx, old, superseded, now); err != nil {
				return err
			}
		}
		inserted, err := d.store.insertSearch(ctx, tx, se, now)
		if err != nil || !inserted {
			return err
		}
		tx.OnCommit(func() {
			d.metrics.searchesStarted.Inc()
			d.nudge()
		})
		return d.offerNext(ctx, tx, se, now)
	})
}

// offerNext offers se's ride to the nearest online driver who is free, not
// excluded, and was not offered this ride before; the search's row must be
// locked in tx and have no open offer. Taking the driver's lock is what
// makes the offer exclusive: a driver another search locked first is
// skipped. With nobody free, the search waits and retries; past its
// deadline, it fails.
func (d *dispatcher) offerNext(ctx context.Context, tx *sqldb.Tx, se *search, now time.Time) error {
	if !now.Before(se.Deadline) {
		return d.failSearch(ctx, tx, se, now)
	}
	skip, err := d.store.offeredDrivers(ctx, tx, se.RideID)
	if err != nil {
		return err
	}
	for _, id := range se.Exclude {
		skip[id] = true
	}
	for {
		// Every candidate returned is added to skip below, so each round
		// asks for drivers not tried yet and the loop ends.
		cands := d.fleet.nearestFree(se.Pickup, candidatesPerRound, func(id string) bool { return !skip[id] })
		if len(cands) == 0 {
			break
		}
		for _, c := range cands {
			skip[c.ID] = true
			ok, err := d.store.lockDriver(ctx, tx, c.ID, se.RideID, se.Attempt, now)
			if err != nil {
				return err
			}
			if !ok {
				// Held by another ride (this process's picture was stale).
				d.fleet.setBusy(c.ID, true, now)
				continue
			}
			o := offer{RideID: se.RideID, Attempt: se.Attempt, DriverID: c.ID, ExpiresAt: minTime(now.Add(d.cfg.offerTTL), se.Deadline)}
			opened, err := d.store.insertOffer(ctx, tx, o, now)
			if err != nil {
				return err
			}
			if !opened {
				return fmt.Errorf("dispatch: ride %s already has an open offer", se.RideID)
			}
			se.RetryAt = time.Time{}
			if err := d.store.updateSearch(ctx, tx, se, now); err != nil {
				return err
			}
			driverID := c.ID
			tx.OnCommit(func() {
				d.fleet.setBusy(driverID, true, now)
				d.cast.busy(driverID, true, now)
				d.metrics.offers.WithLabelValues("offered").Inc()
				d.nudge()
			})
			return nil
		}
	}
	se.RetryAt = now.Add(d.cfg.retryEvery)
	tx.OnCommit(d.nudge)
	return d.store.updateSearch(ctx, tx, se, now)
}

// failSearch ends a search that reached its deadline unassigned, once: the
// caller holds the row lock and saw status searching.
func (d *dispatcher) failSearch(ctx context.Context, tx *sqldb.Tx, se *search, now time.Time) error {
	if err := d.withdrawOffers(ctx, tx, se, now); err != nil {
		return err
	}
	se.Status, se.RetryAt = failed, time.Time{}
	if err := d.store.updateSearch(ctx, tx, se, now); err != nil {
		return err
	}
	tx.OnCommit(func() { d.metrics.searches.WithLabelValues(failed).Inc() })
	return d.outbox.Append(ctx, tx, outbox.Event{
		Type: "ride.search_failed", Key: se.RideID,
		Payload: &dispatchv1.SearchFailed{RideId: se.RideID, Reason: "no_driver", Attempt: se.Attempt},
	})
}

// endSearch ends a search that is searching or assigned with status
// (cancelled or superseded): open offers are withdrawn and a booked driver
// is released. The caller holds the row lock.
func (d *dispatcher) endSearch(ctx context.Context, tx *sqldb.Tx, se *search, status string, now time.Time) error {
	switch se.Status {
	case searching:
		if err := d.withdrawOffers(ctx, tx, se, now); err != nil {
			return err
		}
	case assigned:
		if err := d.unlock(ctx, tx, se.DriverID, se, now); err != nil {
			return err
		}
	default:
		return nil
	}
	outcome := status
	if se.Status == assigned {
		outcome = released // the search itself had succeeded
	}
	tx.OnCommit(func() { d.metrics.searches.WithLabelValues(outcome).Inc() })
	se.Status, se.RetryAt = status, time.Time{}
	return d.store.updateSearch(ctx, tx, se, now)
}

// withdrawOffers closes the search's open offers (reason "withdrawn") and
// frees their drivers.
func (d *dispatcher) withdrawOffers(ctx context.Context, tx *sqldb.Tx, se *search, now time.Time) error {
	open, err := d.store.openOffers(ctx, tx, se.RideID, "")
	if err != nil {
		return err
	}
	for _, o := range open {
		if o.Attempt != se.Attempt {
			continue
		}
		if err := d.closeOffer(ctx, tx, se, o, offerWithdrawn, now); err != nil {
			return err
		}
	}
	return nil
}

// closeOffer ends an open offer unaccepted (declined, expired or
// withdrawn), frees the driver and announces it.
func (d *dispatcher) closeOffer(ctx context.Context, tx *sqldb.Tx, se *search, o *offer, status string, now time.Time) error {
	closed, err := d.store.closeOffer(ctx, tx, o, status, now)
	if err != nil || !closed {
		return err
	}
	if err := d.unlock(ctx, tx, o.DriverID, se, now); err != nil {
		return err
	}
	return d.declined(ctx, tx, o, status)
}

// unlock frees the driver's lock for se.
func (d *dispatcher) unlock(ctx context.Context, tx *sqldb.Tx, driverID string, se *search, now time.Time) error {
	if err := d.store.unlockDriver(ctx, tx, driverID, se.RideID, se.Attempt); err != nil {
		return err
	}
	tx.OnCommit(func() {
		d.fleet.setBusy(driverID, false, now)
		d.cast.busy(driverID, false, now)
	})
	return nil
}

// cancelSearch ends every live attempt of the ride: open offers are
// withdrawn and a booked driver is released. Cancelling a finished search
// does nothing.
func (d *dispatcher) cancelSearch(ctx context.Context, rideID string) error {
	return d.eachLive(ctx, rideID, func(tx *sqldb.Tx, se *search, now time.Time) error {
		return d.endSearch(ctx, tx, se, cancelled, now)
	})
}

// releaseDriver frees the driver booked for the ride (the trip ended or
// was cancelled after assignment). A ride with no booked driver is left
// alone: a search still running is ended by cancelSearch.
func (d *dispatcher) releaseDriver(ctx context.Context, rideID string) error {
	return d.eachLive(ctx, rideID, func(tx *sqldb.Tx, se *search, now time.Time) error {
		if se.Status != assigned {
			return nil
		}
		if err := d.unlock(ctx, tx, se.DriverID, se, now); err != nil {
			return err
		}
		tx.OnCommit(func() { d.metrics.searches.WithLabelValues(released).Inc() })
		se.Status = released
		return d.store.updateSearch(ctx, tx, se, now)
	})
}

// eachLive runs fn in one transaction on every attempt of the ride that
// is searching or assigned, each row locked and re-read first.
func (d *dispatcher) eachLive(ctx context.Context, rideID string, fn func(tx *sqldb.Tx, se *search, now time.Time) error) error {
	now := d.clock()
	return d.store.db.InTx(ctx, func(tx *sqldb.Tx) error {
		attempts, err := d.store.attempts(ctx, tx, rideID)
		if err != nil {
			return err
		}
		for a, status := range attempts {
			if status != searching && status != assigned {
				continue
			}
			se, err := d.store.lockSearch(ctx, tx, rideID, a)
			if err != nil {
				return err
			}
			if se.Status != searching && se.Status != assigned {
				continue
			}
			if err := fn(tx, se, now); err != nil {
				return err
			}
		}
		return nil
	})
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
