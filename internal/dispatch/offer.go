package dispatch

import (
	"context"
	"time"

	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// errOfferGone answers an accept that came too late: the offer expired, was
// withdrawn, or was already answered otherwise.
func errOfferGone() error {
	return apperr.E(apperr.Conflict, "offer_expired", "the offer has expired or was withdrawn")
}

// listOffers is the driver's open offers, soonest expiry first.
func (d *dispatcher) listOffers(ctx context.Context, driverID string) ([]*offer, error) {
	now := d.clock()
	all, err := d.store.openOffers(ctx, d.store.db.Reader(), "", driverID)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, o := range all {
		if now.Before(o.ExpiresAt) { // expired but not yet processed by the timers
			out = append(out, o)
		}
	}
	return out, nil
}

// accept books the driver for the ride if their offer is open: the offer
// lock becomes an assignment and DriverAssigned is announced in the same
// transaction. Accepting again answers the same; an offer that is over is
// a Conflict (offer_expired); a ride never offered to the driver is
// NotFound.
func (d *dispatcher) accept(ctx context.Context, driverID, rideID string) (eta int, err error) {
	now := d.clock()
	o, err := d.store.latestOffer(ctx, d.store.db.Reader(), rideID, driverID)
	if err != nil {
		return 0, err
	}
	switch {
	case o.Status == offerAccepted:
		return o.ETA, nil
	case o.Status != offerOpen || !now.Before(o.ExpiresAt):
		return 0, errOfferGone()
	}
	// The route estimate may be a call to a routing engine: never inside
	// the transaction.
	eta = d.eta(ctx, driverID, o.Pickup)
	err = d.store.db.InTx(ctx, func(tx *sqldb.Tx) error {
		se, err := d.store.lockSearch(ctx, tx, o.RideID, o.Attempt)
		if err != nil {
			return err
		}
		cur, err := d.store.offerOf(ctx, tx, o.RideID, o.Attempt, driverID)
		if err != nil {
			return err
		}
		if cur.Status == offerAccepted { // a concurrent accept of the same offer won
			eta = cur.ETA
			return nil
		}
		if cur.Status != offerOpen || !now.Before(cur.ExpiresAt) || se.Status != searching {
			return errOfferGone()
		}
		if _, err := d.store.closeOffer(ctx, tx, cur, offerAccepted, now); err != nil {
			return err
		}
		if err := d.store.holdDriver(ctx, tx, driverID, se.RideID, se.Attempt); err != nil {
			return err
		}
		se.Status, se.DriverID, se.ETA, se.RetryAt = assigned, driverID, eta, time.Time{}
		if err := d.store.updateSearch(ctx, tx, se, now); err != nil {
			return err
		}
		tx.OnCommit(func() {
			d.metrics.offers.WithLabelValues(offerAccepted).Inc()
			d.metrics.searches.WithLabelValues(assigned).Inc()
		})
		return d.outbox.Append(ctx, tx, outbox.Event{
			Type: "ride.driver_assigned", Key: se.RideID,
			Payload: &dispatchv1.DriverAssigned{RideId: se.RideID, DriverId: driverID, EtaSeconds: int32(eta), Attempt: se.Attempt},
		})
	})
	if err != nil {
		return 0, err
	}
	return eta, nil
}

// decline ends the driver's open offer and passes the ride to the next
// driver. Declining an offer that is already over (declined, expired,
// withdrawn) is a harmless repeat; declining one already accepted is a
// Conflict: the driver is booked and must cancel the ride instead.
func (d *dispatcher) decline(ctx context.Context, driverID, rideID string) error {
	o, err := d.store.latestOffer(ctx, d.store.db.Reader(), rideID, driverID)
	if err != nil {
		return err
	}
	if o.Status == offerAccepted {
		return apperr.E(apperr.Conflict, "offer_accepted", "the offer was accepted; cancel the ride instead")
	}
	if o.Status != offerOpen {
		return nil
	}
	return d.endOffer(ctx, o, offerDeclined, func(cur *offer) error {
		if cur.Status == offerAccepted {
			return apperr.E(apperr.Conflict, "offer_accepted", "the offer was accepted; cancel the ride instead")
		}
		return nil
	})
}

// expireOffer ends an offer whose time ran out and passes the ride on.
func (d *dispatcher) expireOffer(ctx context.Context, o *offer) error {
	return d.endOffer(ctx, o, offerExpired, nil)
}

// endOffer closes o with status in its own transaction if it is still
// open (and, when expiring, really due), then offers the ride to the next
// driver. notOpen, if set, decides what an offer found no longer open
// answers.
func (d *dispatcher) endOffer(ctx context.Context, o *offer, status string, notOpen func(*offer) error) error {
	now := d.clock()
	return d.store.db.InTx(ctx, func(tx *sqldb.Tx) error {
		return d.endOfferTx(ctx, tx, o, status, now, notOpen)
	})
}

func (d *dispatcher) endOfferTx(ctx context.Context, tx *sqldb.Tx, o *offer, status string, now time.Time, notOpen func(*offer) error) error {
	se, err := d.store.lockSearch(ctx, tx, o.RideID, o.Attempt)
	if err != nil {
		return err
	}
	cur, err := d.store.offerOf(ctx, tx, o.RideID, o.Attempt, o.DriverID)
	if err != nil {
		return err
	}
	if cur.Status != offerOpen || (status == offerExpired && now.Before(cur.ExpiresAt)) {
		if notOpen != nil {
			return notOpen(cur)
		}
		return nil
	}
	if err := d.closeOffer(ctx, tx, se, cur, status, now); err != nil {
		return err
	}
	if se.Status != searching {
		return nil
	}
	return d.offerNext(ctx, tx, se, now)
}

// eta is the driving time from the driver's last known position to p; 0
// when the position is unknown. A failing routing engine falls back to the
// built-in estimate: an assignment must not fail for want of an ETA.
func (d *dispatcher) eta(ctx context.Context, driverID string, p geo.Point) int {
	from, _, ok := d.fleet.position(driverID)
	if !ok {
		return 0
	}
	_, secs, err := d.router.Route(ctx, from, p)
	if err != nil {
		d.log.WarnContext(ctx, "routing failed; using the built-in estimate", "err", err)
		_, secs, _ = DefaultEstimator.Route(ctx, from, p)
	}
	return secs
}
