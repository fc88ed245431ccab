package dispatch

import (
	"context"
	"errors"
	"time"

	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// The timers are rows, not goroutines: an offer's expires_at, a search's
// deadline and retry_at. One worker scans for due rows, sleeps until the
// earliest next one (or until woken in-process by a change), and so resumes
// every timer after a restart. Each due row is handled in its own
// transaction that re-checks it under the search's row lock, so replicas
// scanning the same rows, or a row handled twice, change nothing twice.

// pollEvery bounds the timer worker's sleep, so it also notices due times
// written by other replicas.
const pollEvery = time.Second

// timerBatch is how many due rows of each kind one tick handles.
const timerBatch = 100

// runTimers is the timer worker.
func (d *dispatcher) runTimers(ctx context.Context) error {
	for {
		next, err := d.tick(ctx)
		wait := pollEvery
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d.log.WarnContext(ctx, "dispatch timers", "err", err)
		} else if !next.IsZero() {
			wait = min(max(next.Sub(d.clock()), 0), pollEvery)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-d.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// tick handles every timer due now and returns when the next one is due
// (zero if none is stored).
func (d *dispatcher) tick(ctx context.Context) (time.Time, error) {
	now := d.clock()
	var errs []error
	full := false

	// Deadlines first, so a search out of time fails instead of being
	// offered to one more driver.
	deadlines, err := d.store.dueSearches(ctx, now, false, timerBatch)
	errs = append(errs, err)
	full = full || len(deadlines) == timerBatch
	for _, k := range deadlines {
		errs = append(errs, d.deadlinePassed(ctx, k))
	}
	offers, err := d.store.dueOffers(ctx, now, timerBatch)
	errs = append(errs, err)
	full = full || len(offers) == timerBatch
	for _, o := range offers {
		errs = append(errs, d.expireOffer(ctx, o))
	}
	retries, err := d.store.dueSearches(ctx, now, true, timerBatch)
	errs = append(errs, err)
	full = full || len(retries) == timerBatch
	for _, k := range retries {
		errs = append(errs, d.retrySearch(ctx, k))
	}

	if err := errors.Join(errs...); err != nil {
		return time.Time{}, err
	}
	if full {
		return now, nil
	}
	return d.store.nextDue(ctx)
}

// deadlinePassed fails a search still unassigned at its deadline.
func (d *dispatcher) deadlinePassed(ctx context.Context, k searchKey) error {
	now := d.clock()
	return d.store.db.InTx(ctx, func(tx *sqldb.Tx) error {
		se, err := d.store.lockSearch(ctx, tx, k.RideID, k.Attempt)
		if err != nil {
			return err
		}
		if se.Status != searching || now.Before(se.Deadline) {
			return nil
		}
		return d.failSearch(ctx, tx, se, now)
	})
}

// retrySearch looks again for a free driver for a search that found none.
func (d *dispatcher) retrySearch(ctx context.Context, k searchKey) error {
	now := d.clock()
	return d.store.db.InTx(ctx, func(tx *sqldb.Tx) error {
		se, err := d.store.lockSearch(ctx, tx, k.RideID, k.Attempt)
		if err != nil {
			return err
		}
		if se.Status != searching || se.RetryAt.IsZero() || now.Before(se.RetryAt) {
			return nil
		}
		open, err := d.store.openOffers(ctx, tx, se.RideID, "")
		if err != nil {
			return err
		}
		if len(open) > 0 {
			se.RetryAt = time.Time{}
			return d.store.updateSearch(ctx, tx, se, now)
		}
		return d.offerNext(ctx, tx, se, now)
	})
}
