package fleet

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/rideshare-platform/rideshare/internal/geo"
)

const (
	// offlineBudget bounds going offline on the way out: stopping the fleet
	// must not wait on a gateway that is itself shutting down.
	offlineBudget = time.Second
	// boarding is how long a rider takes to get in, before the time scale.
	boarding = 3 * time.Second
	// Backoff after a failed request: short, because a simulated driver
	// should recover as soon as the platform does, and capped, so a platform
	// that stays down gets a request every few seconds per driver, not a
	// storm. Jittered, so a fleet that failed together does not retry in step.
	minBackoff = 250 * time.Millisecond
	maxBackoff = 5 * time.Second
	// maxRetryAfter caps how long a rate limit may park a driver.
	maxRetryAfter = 30 * time.Second
	// acceptTries and stepTries bound how often a driver repeats a trip
	// step that keeps failing before it gives the ride up. The steps are
	// idempotent on the platform, so repeating one is safe.
	acceptTries = 3
	stepTries   = 8
	// minTick keeps the movement loop from spinning when a deadline is
	// a hair away.
	minTick = 5 * time.Millisecond
)

// progress orders the statuses of a ride a driver is working: a step is
// done once the ride reached its status or a later one.
var progress = map[string]int{"driver_assigned": 1, "driver_arrived": 2, "in_progress": 3, "completed": 4}

// mine reports whether a ride in status s is still the driver's to work.
// Anything else (cancelled, given to another driver, failed, completed)
// sends the driver back to roaming.
func mine(s string) bool {
	return s == "driver_assigned" || s == "driver_arrived" || s == "in_progress"
}

// motion is how the car moves while the driver waits for something.
type motion int

const (
	roaming motion = iota // wandering the area looking for fares
	driving               // on the straight line to a destination
	parked                // standing still (the rider is boarding)
)

// driver is one simulated driver: a goroutine with its phone and its car.
type driver struct {
	f     *Fleet
	n     int
	log   *slog.Logger
	rng   *rand.Rand
	car   *car
	phone *phone

	movedAt, pingedAt time.Time
	backoff           time.Duration
	// needOnline is set when the platform refused a ping as if the driver
	// were offline (dispatch lost it, or an operator took it offline), so
	// the roaming loop goes online again.
	needOnline bool
	// seen is the last offer counted in Stats; skip is the last one whose
	// accept was refused, so the driver does not try it again while the
	// listing still shows it.
	seen, skip string
}

// run is the driver's life: sign in, go online, then roam and take offers
// until ctx ends, and go offline on the way out.
func (d *driver) run(ctx context.Context) {
	if !d.signIn(ctx) || !d.goOnline(ctx) {
		return
	}
	d.f.online.Add(1)
	defer d.goOffline(ctx)
	for ctx.Err() == nil {
		if d.needOnline && !d.goOnline(ctx) {
			return
		}
		items, err := d.phone.offers(ctx)
		if err != nil {
			d.failed(ctx, "list offers", err)
			d.move(ctx, roaming, geo.Point{}, d.nextBackoff(err))
			continue
		}
		d.ok()
		if o, ok := d.pick(items); ok {
			d.take(ctx, o)
			continue
		}
		d.move(ctx, roaming, geo.Point{}, d.f.cfg.PollEvery)
	}
}

// signIn signs the driver up, or finds the account a previous run created,
// and logs in. It retries until it succeeds or ctx ends.
func (d *driver) signIn(ctx context.Context) bool {
	pr := profileFor(d.n, d.rng)
	for {
		err := d.phone.signUp(ctx, pr)
		if err == nil || statusOf(err) == http.StatusConflict {
			if err = d.phone.logIn(ctx); err == nil {
				d.ok()
				d.log.DebugContext(ctx, "signed in", "email", d.phone.email)
				return true
			}
		}
		if ctx.Err() != nil {
			return false
		}
		d.failed(ctx, "sign in", err)
		if !transient(err) {
			// Not going to fix itself (the account exists with another
			// password, or the platform refuses the password grant): say so
			// once for the whole fleet, at a level a person sees.
			d.f.refusedOnce.Do(func() {
				d.f.log.WarnContext(ctx, "fleet drivers cannot sign in; retrying", "email", d.phone.email, "err", err)
			})
		}
		if !sleep(ctx, d.nextBackoff(err)) {
			return false
		}
	}
}

// goOnline makes the driver available at the car's position, retrying
// until it succeeds or ctx ends.
func (d *driver) goOnline(ctx context.Context) bool {
	for {
		err := d.phone.setAvailability(ctx, true, d.car.pos)
		if err == nil {
			d.ok()
			d.needOnline = false
			d.movedAt, d.pingedAt = time.Now(), time.Now()
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		d.failed(ctx, "go online", err)
		if !sleep(ctx, d.nextBackoff(err)) {
			return false
		}
	}
}

// goOffline tells the platform the driver stopped, within offlineBudget
// even though ctx has ended: a driver that vanished without a word would
// keep getting offers until dispatch noticed its pings stopped.
func (d *driver) goOffline(ctx context.Context) {
	d.f.online.Add(-1)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), offlineBudget)
	defer cancel()
	if err := d.phone.setAvailability(ctx, false, geo.Point{}); err != nil {
		d.log.DebugContext(ctx, "going offline failed", "err", err)
	}
}

// pick chooses the offer to take from a listing: the first one still open
// that was not already refused.
func (d *driver) pick(items []offer) (offer, bool) {
	now := time.Now()
	for _, o := range items {
		if o.RideID == "" || o.RideID == d.skip || (!o.ExpiresAt.IsZero() && !o.ExpiresAt.After(now)) {
			continue
		}
		if o.RideID != d.seen {
			d.seen = o.RideID
			d.f.offers.Add(1)
		}
		return o, true
	}
	return offer{}, false
}

// take pauses like a person reading the offer, accepts it, and works the
// ride. Whatever happens, the driver is roaming again when it returns.
func (d *driver) take(ctx context.Context, o offer) {
	d.log.DebugContext(ctx, "offer", "ride", o.RideID)
	d.move(ctx, roaming, geo.Point{}, d.acceptDelay(o.ExpiresAt))
	if ctx.Err() != nil {
		return
	}
	r, ok := d.accept(ctx, o.RideID)
	if !ok {
		d.skip = o.RideID
		return
	}
	d.f.accepted.Add(1)
	pickup, dropoff := o.Pickup.point(), o.Dropoff.point()
	if r.Pickup != nil && r.Dropoff != nil {
		pickup, dropoff = r.Pickup.point(), r.Dropoff.point()
	}
	if d.trip(ctx, o.RideID, pickup, dropoff) {
		d.f.completed.Add(1)
		d.log.DebugContext(ctx, "ride completed", "ride", o.RideID)
	}
}

// acceptDelay draws the pause before accepting, shortened to half the
// offer's remaining time so a slow "human" does not let it expire.
func (d *driver) acceptDelay(expires time.Time) time.Duration {
	lo, hi := d.f.cfg.AcceptDelay[0], d.f.cfg.AcceptDelay[1]
	delay := lo + time.Duration(d.rng.Int64N(int64(hi-lo)+1))
	if !expires.IsZero() {
		delay = max(0, min(delay, time.Until(expires)/2))
	}
	return delay
}

// accept takes the ride. An offer that expired or went to someone else
// (404, 409, 422) is an ordinary outcome, not an error.
func (d *driver) accept(ctx context.Context, id string) (ride, bool) {
	for try := 1; ; try++ {
		r, err := d.phone.step(ctx, id, "accept")
		if err == nil {
			d.ok()
			return r, true
		}
		if ctx.Err() != nil {
			return ride{}, false
		}
		switch statusOf(err) {
		case http.StatusNotFound, http.StatusConflict, http.StatusUnprocessableEntity:
			d.log.DebugContext(ctx, "offer gone", "ride", id, "err", err)
			return ride{}, false
		}
		d.failed(ctx, "accept", err)
		if !transient(err) {
			return ride{}, false
		}
		if try == acceptTries {
			// The accept may have landed with only its answer lost: the ride
			// is the driver's exactly when the driver can see it assigned.
			r, err := d.phone.ride(ctx, id)
			return r, err == nil && mine(r.Status)
		}
		d.move(ctx, roaming, geo.Point{}, d.nextBackoff(err))
		if ctx.Err() != nil {
			return ride{}, false
		}
	}
}

// trip works an accepted ride to completion, and reports whether it got
// there; false means the ride was cancelled, given up or ctx ended.
func (d *driver) trip(ctx context.Context, id string, pickup, dropoff geo.Point) bool {
	return d.driveTo(ctx, id, pickup) &&
		d.step(ctx, id, "arrive", "driver_arrived") &&
		d.wait(ctx, id, time.Duration(float64(boarding)/d.f.cfg.TimeScale)) &&
		d.step(ctx, id, "start", "in_progress") &&
		d.driveTo(ctx, id, dropoff) &&
		d.step(ctx, id, "complete", "completed")
}

// driveTo drives to dest, checking every PollEvery that the ride is still
// the driver's, and once more on arrival before the next step.
func (d *driver) driveTo(ctx context.Context, id string, dest geo.Point) bool {
	for {
		arrived := d.move(ctx, driving, dest, d.f.cfg.PollEvery)
		if ctx.Err() != nil || !d.stillMine(ctx, id) {
			return false
		}
		if arrived {
			return true
		}
	}
}

// wait stands still for dur (pinging), then checks the ride.
func (d *driver) wait(ctx context.Context, id string, dur time.Duration) bool {
	d.move(ctx, parked, geo.Point{}, dur)
	return ctx.Err() == nil && d.stillMine(ctx, id)
}

// stillMine reads the ride and reports whether the driver should go on
// with it. When the ride cannot be read, the driver goes on: the next check
// or the next step will tell.
func (d *driver) stillMine(ctx context.Context, id string) bool {
	r, err := d.phone.ride(ctx, id)
	switch {
	case err == nil:
		d.ok()
		if !mine(r.Status) {
			d.log.DebugContext(ctx, "ride no longer ours; roaming", "ride", id, "status", r.Status)
			return false
		}
		return true
	case statusOf(err) == http.StatusNotFound:
		d.log.DebugContext(ctx, "ride no longer visible; roaming", "ride", id)
		return false
	default:
		d.failed(ctx, "read ride", err)
		return ctx.Err() == nil
	}
}

// step makes one trip step (arrive, start, complete), which should bring
// the ride to status want. A refused step is settled by reading the ride:
// already there (an earlier answer was lost) counts as done, a ride that is
// no longer the driver's ends the trip, anything else is retried a few
// times, after which the driver gives the ride up.
func (d *driver) step(ctx context.Context, id, action, want string) bool {
	for try := 1; ; try++ {
		_, err := d.phone.step(ctx, id, action)
		if err == nil {
			d.ok()
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		d.failed(ctx, action, err)
		if !transient(err) {
			r, rerr := d.phone.ride(ctx, id)
			switch {
			case rerr == nil && progress[r.Status] >= progress[want]:
				return true
			case rerr == nil && !mine(r.Status), statusOf(rerr) == http.StatusNotFound:
				return false
			}
		}
		if try == stepTries {
			d.abandon(ctx, id, action)
			return false
		}
		d.move(ctx, parked, geo.Point{}, d.nextBackoff(err))
		if ctx.Err() != nil {
			return false
		}
	}
}

// abandon gives up a ride whose steps keep failing. Before the trip starts
// the driver cancels, which sends the ride back to searching for another
// driver rather than leaving the rider waiting on one who left; after it
// starts only the platform can finish it.
func (d *driver) abandon(ctx context.Context, id, action string) {
	d.log.WarnContext(ctx, "fleet driver gives a ride up: its steps keep failing", "ride", id, "step", action)
	if r, err := d.phone.ride(ctx, id); err == nil && progress[r.Status] < progress["in_progress"] && mine(r.Status) {
		if _, err := d.phone.step(ctx, id, "cancel"); err != nil {
			d.failed(ctx, "cancel", err)
		}
	}
}

// move runs the car for up to dur: roaming, driving toward dest, or parked,
// pinging its position every PingEvery and on arrival. It reports whether
// the car reached dest, returning as soon as it does; ctx ending returns
// early too (callers check ctx).
func (d *driver) move(ctx context.Context, how motion, dest geo.Point, dur time.Duration) bool {
	cfg := d.f.cfg
	end := time.Now().Add(dur)
	for {
		now := time.Now()
		arrived := d.advance(how, dest, now)
		if arrived || now.Sub(d.pingedAt) >= cfg.PingEvery {
			d.ping(ctx, how)
		}
		if arrived {
			return true
		}
		tick := min(end.Sub(now), cfg.PingEvery-now.Sub(d.pingedAt))
		if how == driving {
			// Wake up on arrival rather than up to a ping period later.
			eta := time.Duration(geo.Distance(d.car.pos, dest) / (tripSpeed * cfg.TimeScale) * float64(time.Second))
			tick = min(tick, eta)
		}
		if end.Sub(now) <= 0 {
			return false
		}
		if !sleep(ctx, max(tick, minTick)) {
			return false
		}
	}
}

// advance moves the car for the time since it last moved, and reports
// whether it reached dest (driving only).
func (d *driver) advance(how motion, dest geo.Point, now time.Time) bool {
	elapsed := now.Sub(d.movedAt).Seconds()
	d.movedAt = now
	switch how {
	case roaming:
		d.car.wander(roamSpeed * d.f.cfg.TimeScale * elapsed)
	case driving:
		return d.car.toward(dest, tripSpeed*d.f.cfg.TimeScale*elapsed)
	}
	return false
}

// ping reports the car's position. A roaming driver whose ping is refused
// as if it were not online (a 4xx other than auth or rate limits) goes
// online again from the main loop.
func (d *driver) ping(ctx context.Context, how motion) {
	d.pingedAt = time.Now()
	err := d.phone.ping(ctx, d.car.pos)
	if err == nil {
		return
	}
	d.failed(ctx, "ping", err)
	if s := statusOf(err); how == roaming && s >= 400 && s < 500 && s != http.StatusUnauthorized && s != http.StatusTooManyRequests {
		d.needOnline = true
	}
}

// failed counts and logs an unexpected failure. Failures caused by the
// fleet stopping are neither.
func (d *driver) failed(ctx context.Context, what string, err error) {
	if ctx.Err() != nil {
		return
	}
	d.f.errs.Add(1)
	d.log.DebugContext(ctx, what+" failed", "err", err)
}

func (d *driver) ok() { d.backoff = 0 }

// nextBackoff is the pause after a failure: doubling from minBackoff to
// maxBackoff with jitter, or longer if the server asked for it.
func (d *driver) nextBackoff(err error) time.Duration {
	d.backoff = min(max(2*d.backoff, minBackoff), maxBackoff)
	b := d.backoff/2 + time.Duration(d.rng.Int64N(int64(d.backoff/2)+1))
	return max(b, min(retryAfter(err), maxRetryAfter))
}
