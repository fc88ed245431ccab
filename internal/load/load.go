// Package load is an open-loop load generator for the public API: it
// drives simulated riders and drivers through the gateway, as phones would,
// and reports throughput and latency percentiles per route.
//
// Open loop means ride requests arrive on a fixed clock, one every
// 1/Rate seconds, whether or not earlier ones were answered: a slow
// platform shows as latency, not as fewer requests (a closed loop, where
// each user waits for its answer before asking again, slows down with the
// system it measures and hides exactly the latency it should show).
//
// Each arrival is one ride taken by a free simulated rider: estimate the
// fare, request the ride with an Idempotency-Key (retried with the same key
// on a 5xx, a 409, a 429 or no answer), then poll it until it ends. Drivers
// are the simulated fleet of package fleet. Every request of either goes
// through one recording transport, which times it under its route
// template. Sign-ups and log-ins happen before the clock starts and are not
// measured.
package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/rideshare-platform/rideshare/internal/fleet"
	"github.com/rideshare-platform/rideshare/internal/geo"
)

// Config is one run. Zero values take the defaults documented on each
// field.
type Config struct {
	// Gateway is the platform's public base URL.
	Gateway string
	// Riders is how many simulated riders take the arrivals. Each has at
	// most one ride at a time, so Riders caps the rides in flight: an
	// arrival that finds every rider busy is dropped and reported as the
	// generator's saturation.
	Riders int
	// Drivers is how many simulated drivers (package fleet) run (0: none;
	// the platform's own drivers, if any, take the rides).
	Drivers int
	// Duration is how long arrivals are scheduled.
	Duration time.Duration
	// Rate is ride arrivals per second (default Riders/DefaultRideEvery:
	// each rider asks for a ride about every 30 seconds).
	Rate float64
	// Drain bounds how long rides still running after Duration are
	// followed before they are reported as not terminal (default 30s;
	// negative: not at all).
	Drain time.Duration
	// Seed makes the trips and the drivers' behaviour reproducible.
	Seed int64
	// Password is every load account's password (required). Riders sign
	// in as ACCOUNTS-rider-NNNN@load.rideshare.invalid and drivers as
	// ACCOUNTS-driver-NNN@fleet.rideshare.invalid, created on first use
	// and reused by later runs with the same password.
	Password string
	// Accounts prefixes the accounts' emails (default "load").
	Accounts string
	// Area is where trips start and end, and drivers roam (default
	// geo.SanFrancisco).
	Area geo.Area
	// TripMeters is the range of a trip's straight-line length, drawn
	// uniformly (default 1 km to 4 km).
	TripMeters [2]float64
	// PaymentMethod is sent with every ride request (default: none, the
	// platform's default card; "card_declined" makes every ride fail).
	PaymentMethod string

	// TimeScale is how much faster than real time drivers drive (default
	// DefaultTimeScale: a 3 km trip takes 6 s).
	TimeScale float64
	// AcceptDelay is the range of a driver's pause before accepting an
	// offer (default 200ms..1s).
	AcceptDelay [2]time.Duration
	// PollEvery is how often riders read their ride and idle drivers ask
	// for offers (default 1s, with ±20% jitter for riders).
	PollEvery time.Duration
	// PingEvery is the drivers' location ping period (default 2s).
	PingEvery time.Duration

	// Warmup bounds signing the accounts in and bringing the drivers
	// online before the clock starts (default 2m: each account costs the
	// platform a memory-hard password hash or two, a dozen or so a second
	// on a small machine).
	Warmup time.Duration
	// Progress, if set, gets a progress line every second; on a terminal
	// the line is redrawn in place.
	Progress io.Writer
	// Client makes the requests; its Transport (default: a pooled one
	// sized for the run) is wrapped by the recorder. Requests get the
	// phones' 5 s timeout each.
	Client *http.Client
	// Logger receives the fleet's logs (default: discard).
	Logger *slog.Logger
}

// Defaults for the zero values of Config.
const (
	DefaultRideEvery = 30 * time.Second
	DefaultDrain     = 30 * time.Second
	DefaultTimeScale = 60
	DefaultPollEvery = time.Second
	DefaultWarmup    = 2 * time.Minute
	DefaultAccounts  = "load"
)

var (
	// DefaultTripMeters is the default range of a trip's length.
	DefaultTripMeters = [2]float64{1000, 4000}
	// DefaultAcceptDelay is the default range of a driver's pause before
	// accepting, shorter than the fleet's, so the drivers are not the
	// bottleneck the run measures.
	DefaultAcceptDelay = [2]time.Duration{200 * time.Millisecond, time.Second}
)

// Ride request retries, as a phone would: a few, with growing jittered
// pauses, longer if the gateway asks (429 or 503 with Retry-After).
const (
	requestTries  = 5
	minBackoff    = 250 * time.Millisecond
	maxBackoff    = 4 * time.Second
	maxRetryAfter = 10 * time.Second
	// signInParallel bounds concurrent sign-ins: each costs identity a
	// memory-hard password hash, and a burst of them is not what the run
	// measures.
	signInParallel = 8
	// driverStagger is the pause between two drivers' starts.
	driverStagger = 80 * time.Millisecond
)

// ErrUnreachable means the platform gave no answer at all: the run could
// not start.
var ErrUnreachable = errors.New("the platform cannot be reached")

// withDefaults fills c's zero values and checks the rest.
func (c Config) withDefaults() (Config, error) {
	switch {
	case c.Gateway == "":
		return c, errors.New("load: a gateway URL is required")
	case c.Riders < 1:
		return c, errors.New("load: at least one rider is needed")
	case c.Drivers < 0:
		return c, errors.New("load: the number of drivers must be 0 or more")
	case c.Duration <= 0:
		return c, errors.New("load: the duration must be positive")
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return c, errors.New("load: the rate must be a positive number of rides per second")
	case c.Password == "":
		return c, errors.New("load: a password for the load accounts is required")
	case c.TripMeters[0] < 0 || c.TripMeters[1] < c.TripMeters[0]:
		return c, errors.New("load: the trip length range must be 0 <= min <= max")
	}
	c.Gateway = strings.TrimRight(c.Gateway, "/")
	if c.Rate == 0 {
		c.Rate = float64(c.Riders) / DefaultRideEvery.Seconds()
	}
	switch {
	case c.Drain == 0:
		c.Drain = DefaultDrain
	case c.Drain < 0:
		c.Drain = 0
	}
	if c.Accounts == "" {
		c.Accounts = DefaultAccounts
	}
	if c.Area == (geo.Area{}) {
		c.Area = geo.SanFrancisco
	}
	if c.TripMeters == [2]float64{} {
		c.TripMeters = DefaultTripMeters
	}
	if c.TimeScale <= 0 {
		c.TimeScale = DefaultTimeScale
	}
	if c.AcceptDelay == [2]time.Duration{} {
		c.AcceptDelay = DefaultAcceptDelay
	}
	if c.PollEvery <= 0 {
		c.PollEvery = DefaultPollEvery
	}
	if c.Warmup <= 0 {
		c.Warmup = DefaultWarmup
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// RiderEmail is the account of load rider n (from 1) under prefix.
func RiderEmail(prefix string, n int) string {
	return fmt.Sprintf("%s-rider-%04d@load.rideshare.invalid", prefix, n)
}

// run is one load run's moving parts.
type run struct {
	cfg   Config
	stats *stats
	hc    *http.Client
	rng   *rand.Rand // the trips; only the scheduler draws from it
	runID string     // makes idempotency keys unique to this run
	fleet *fleet.Fleet
}

// Run drives the load described by c and reports what it measured. Only a
// bad configuration, a platform that does not answer at all
// (ErrUnreachable), no rider able to sign in, or ctx ending during the
// warm-up return an error; everything that goes wrong during the run is in
// the report. If ctx ends during the run, Run stops at once and reports
// what ran, with Interrupted set.
func Run(ctx context.Context, c Config) (*Report, error) {
	cfg, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	st := newStats(time.Now)
	r := &run{cfg: cfg, stats: st, rng: rand.New(rand.NewPCG(uint64(cfg.Seed), 0x10ad)), runID: uuid.NewString()[:8]}
	r.hc = r.client()
	if err := r.reachable(ctx); err != nil {
		return nil, err
	}
	return r.run(ctx)
}

// client is the configured client with the recorder as its transport.
func (r *run) client() *http.Client {
	base := http.RoundTripper(nil)
	hc := &http.Client{}
	if r.cfg.Client != nil {
		*hc = *r.cfg.Client
		base = r.cfg.Client.Transport
	}
	if base == nil {
		// One idle connection per rider and driver: the default of two per
		// host would make most requests open a new connection, and the run
		// would measure TCP handshakes.
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns = r.cfg.Riders + r.cfg.Drivers + 16
		t.MaxIdleConnsPerHost = t.MaxIdleConns
		base = t
	}
	hc.Transport = &transport{base: base, routes: newRouteTable(), stats: r.stats, now: time.Now}
	return hc
}

// reachable asks the gateway for /readyz once: any answer will do (a
// platform that is not ready shows in the report), none is ErrUnreachable.
func (r *run) reachable(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.cfg.Gateway+"/readyz", nil)
	if err != nil {
		return fmt.Errorf("load: gateway %q: %w", r.cfg.Gateway, err)
	}
	res, err := r.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w at %s: %w", ErrUnreachable, r.cfg.Gateway, err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	return res.Body.Close()
}

func (r *run) run(ctx context.Context) (*Report, error) {
	cfg := r.cfg
	rep := &Report{Gateway: cfg.Gateway, Riders: cfg.Riders, Drivers: cfg.Drivers, Rate: cfg.Rate, Seed: cfg.Seed,
		Duration: cfg.Duration, Drain: cfg.Drain}

	// The fleet runs from the warm-up until the drain is over; it stops
	// after the measurements, so its going offline is not measured.
	fleetCtx, stopFleet := context.WithCancel(ctx)
	fleetDone := make(chan struct{})
	defer func() { stopFleet(); <-fleetDone }()
	startFleet := func() { close(fleetDone) }
	if cfg.Drivers > 0 {
		r.fleet = fleet.New(fleet.Config{
			Gateway: cfg.Gateway, Drivers: cfg.Drivers, Area: cfg.Area, Seed: cfg.Seed, Password: cfg.Password,
			Accounts: cfg.Accounts + "-driver", TimeScale: cfg.TimeScale, AcceptDelay: cfg.AcceptDelay,
			PingEvery: cfg.PingEvery, PollEvery: cfg.PollEvery, Client: r.hc, Logger: cfg.Logger,
			// A driver's sign-in costs identity two password hashes, and
			// a small machine does a few dozen a second: a dozen drivers a
			// second keeps their requests from queueing past their
			// timeout, which would only make them retry.
			Stagger: max(time.Second, time.Duration(cfg.Drivers)*driverStagger),
		})
		startFleet = func() { go func() { defer close(fleetDone); _ = r.fleet.Run(fleetCtx) }() }
	}

	warmStart := time.Now()
	riders, err := r.warmUp(ctx, &rep.Warmup, startFleet)
	rep.Warmup.Took = time.Since(warmStart)
	if err != nil {
		return nil, err
	}

	var fleetBefore fleet.Stats
	if r.fleet != nil {
		fleetBefore = r.fleet.Stats()
	}
	start := r.stats.begin()
	rep.Started = start.UTC()
	free := make(chan *fleet.Rider, len(riders))
	for _, rd := range riders {
		free <- rd
	}
	// Arrivals stop at the end of Duration; rides already requested are
	// followed until the drain ends (or ctx does).
	ridesCtx, stopRides := context.WithDeadline(ctx, start.Add(cfg.Duration+cfg.Drain))
	defer stopRides()
	progressDone := r.startProgress(ridesCtx, len(riders), free)

	var rides sync.WaitGroup
	r.schedule(ctx, start, free, func(n int, rd *fleet.Rider, t trip) {
		rides.Go(func() {
			defer func() { free <- rd }()
			r.ride(ridesCtx, rd, n, t)
		})
	})
	rides.Wait()
	stopRides()
	<-progressDone
	r.stats.end()

	rep.Interrupted = ctx.Err() != nil
	rep.Elapsed = time.Since(start)
	r.stats.fill(rep)
	if r.fleet != nil {
		fs, b := r.fleet.Stats(), fleetBefore
		rep.Fleet = FleetStats{Online: fs.Online, Offers: fs.Offers - b.Offers, Accepted: fs.Accepted - b.Accepted,
			Completed: fs.Completed - b.Completed, Errors: fs.Errors - b.Errors}
	}
	if s := rep.Elapsed.Seconds(); s > 0 {
		rep.RequestsPerSecond = float64(rep.Requests) / s
		rep.CompletedPerSecond = float64(rep.Rides.Terminal[StatusCompleted]) / s
	}
	if s := min(cfg.Duration, rep.Elapsed).Seconds(); s > 0 {
		rep.RidesPerSecond = float64(rep.Rides.Requested) / s
	}
	return rep, nil
}

// schedule makes the arrivals: number n is due at start + n/Rate, however
// long earlier ones take. A late wake-up (a busy machine) makes the overdue
// arrivals at once rather than skipping them, so the offered count is
// exactly Rate × Duration. Each arrival goes to a free rider, or is
// dropped when there is none.
func (r *run) schedule(ctx context.Context, start time.Time, free chan *fleet.Rider, launch func(int, *fleet.Rider, trip)) {
	end := start.Add(r.cfg.Duration)
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for n := 0; ; n++ {
		due := start.Add(time.Duration(float64(n) / r.cfg.Rate * float64(time.Second)))
		if !due.Before(end) {
			return
		}
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return
		}
		t := r.trip() // drawn for dropped arrivals too, so a seed gives the same trips
		select {
		case rd := <-free:
			r.stats.arrival(false)
			launch(n, rd, t)
		default:
			r.stats.arrival(true)
		}
	}
}

// trip is a ride's pickup and dropoff.
type trip struct{ pickup, dropoff geo.Point }

// trip draws a pickup uniformly in the area (away from its edges) and a
// dropoff at a length drawn from TripMeters in a random direction, kept
// inside the area.
func (r *run) trip() trip {
	a := r.cfg.Area
	dLat, dLng := (a.Max.Lat-a.Min.Lat)*0.05, (a.Max.Lng-a.Min.Lng)*0.05
	p := geo.Point{
		Lat: a.Min.Lat + dLat + r.rng.Float64()*(a.Max.Lat-a.Min.Lat-2*dLat),
		Lng: a.Min.Lng + dLng + r.rng.Float64()*(a.Max.Lng-a.Min.Lng-2*dLng),
	}
	lo, hi := r.cfg.TripMeters[0], r.cfg.TripMeters[1]
	meters := lo + r.rng.Float64()*(hi-lo)
	bearing := r.rng.Float64() * 2 * math.Pi
	const metersPerDegree = 111_320
	d := geo.Point{
		Lat: p.Lat + meters*math.Cos(bearing)/metersPerDegree,
		Lng: p.Lng + meters*math.Sin(bearing)/(metersPerDegree*math.Cos(p.Lat*math.Pi/180)),
	}
	d.Lat = min(max(d.Lat, a.Min.Lat+dLat), a.Max.Lat-dLat)
	d.Lng = min(max(d.Lng, a.Min.Lng+dLng), a.Max.Lng-dLng)
	return trip{pickup: p, dropoff: d}
}

// ride is one arrival, end to end, counted by how it ended.
func (r *run) ride(ctx context.Context, rd *fleet.Rider, n int, t trip) {
	req := fleet.RideRequest{Pickup: t.pickup, Dropoff: t.dropoff, PaymentMethod: r.cfg.PaymentMethod}
	// The estimate is what a phone shows before the rider confirms; its
	// quote locks the fare. Without one (an error, or a degraded estimate)
	// the ride is requested at the platform's fare.
	if est, err := rd.Estimate(ctx, t.pickup, t.dropoff); err == nil {
		req.QuoteID = est.QuoteID
	}
	key := fmt.Sprintf("load-%s-%d", r.runID, n)
	var ride fleet.RideState
	for try := 1; ; try++ {
		var err error
		ride, err = rd.RequestRide(ctx, key, req)
		if err == nil {
			break
		}
		retry := fleet.Transient(err) || fleet.StatusOf(err) == http.StatusConflict // 409: the first attempt still runs
		if ctx.Err() != nil || !retry || try == requestTries || !sleep(ctx, backoff(try, err)) {
			r.stats.rideFailed()
			return
		}
	}
	r.stats.rideRequested()
	status := ride.Status
	if status == "" {
		status = "requested"
	}
	// Jitter keeps riders who requested together from polling in step.
	jitter := rand.New(rand.NewPCG(uint64(r.cfg.Seed), uint64(n)))
	// A ride without an id cannot be followed: it stays as it was
	// answered, a platform bug the report shows as not terminal.
	for ride.ID != "" && !Terminal(status) {
		every := time.Duration(float64(r.cfg.PollEvery) * (0.8 + 0.4*jitter.Float64()))
		if !sleep(ctx, every) {
			break
		}
		if got, err := rd.Ride(ctx, ride.ID); err == nil && got.Status != "" {
			status = got.Status
		}
	}
	r.stats.rideEnded(status)
}

// backoff is the pause before retry number try+1: doubling from
// minBackoff, capped, jittered, or what the gateway asked for if longer.
func backoff(try int, err error) time.Duration {
	b := min(minBackoff<<(try-1), maxBackoff)
	b = b/2 + rand.N(b/2+1)
	return max(b, min(fleet.RetryAfter(err), maxRetryAfter))
}

// sleep waits d or until ctx ends, and reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// warmUp signs every rider in, then starts the drivers and waits for them
// to come online, within the warm-up budget. A rider that cannot sign in by then sits the
// run out; with none at all there is no run.
func (r *run) warmUp(ctx context.Context, w *Warmup, startFleet func()) ([]*fleet.Rider, error) {
	cfg := r.cfg
	wctx, cancel := context.WithTimeout(ctx, cfg.Warmup)
	defer cancel()
	var (
		mu      sync.Mutex
		ready   []*fleet.Rider
		lastErr error
		wg      sync.WaitGroup
		slots   = make(chan struct{}, signInParallel)
	)
	stopProgress := r.warmUpProgress(&mu, &ready)
	defer stopProgress()
	for i := range cfg.Riders {
		n := i + 1
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			rd := fleet.NewRider(cfg.Gateway, r.hc, RiderEmail(cfg.Accounts, n), cfg.Password)
			for try := 1; ; try++ {
				err := rd.SignIn(wctx, fmt.Sprintf("Load Rider %04d", n))
				mu.Lock()
				if err == nil {
					ready = append(ready, rd)
				} else if wctx.Err() == nil {
					lastErr = err
				}
				mu.Unlock()
				if err == nil || !fleet.Transient(err) || !sleep(wctx, backoff(min(try, 5), err)) {
					return
				}
			}
		})
	}
	wg.Wait()
	// The drivers sign in after the riders rather than beside them: both
	// contend for the same password hashing, and together they would
	// queue past their timeouts.
	startFleet()
	if r.fleet != nil {
		tick := time.NewTicker(50 * time.Millisecond)
		for r.fleet.Stats().Online < int64(cfg.Drivers) && wctx.Err() == nil {
			select {
			case <-wctx.Done():
			case <-tick.C:
			}
		}
		tick.Stop()
		w.DriversOnline = int(r.fleet.Stats().Online)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	w.RidersReady = len(ready)
	if lastErr != nil {
		w.LastError = lastErr.Error()
	}
	if len(ready) == 0 {
		return nil, fmt.Errorf("load: no rider could sign in within %s: %v", cfg.Warmup, lastErr)
	}
	return ready, nil
}

// warmUpProgress prints, every second until stopped, how many riders
// are signed in and drivers online.
func (r *run) warmUpProgress(mu *sync.Mutex, ready *[]*fleet.Rider) (stop func()) {
	w := r.cfg.Progress
	if w == nil {
		return func() {}
	}
	live := isTerminal(w)
	start := time.Now()
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				if live {
					fmt.Fprint(w, "\r\033[K")
				}
				return
			case <-tick.C:
			}
			mu.Lock()
			n := len(*ready)
			mu.Unlock()
			line := fmt.Sprintf("warm-up %4ds  riders signed in %d/%d", int(time.Since(start).Seconds()), n, r.cfg.Riders)
			if r.fleet != nil {
				line += fmt.Sprintf("  drivers online %d/%d", r.fleet.Stats().Online, r.cfg.Drivers)
			}
			if live {
				fmt.Fprintf(w, "\r\033[K%s", line)
			} else {
				fmt.Fprintln(w, line)
			}
		}
	}()
	return func() { close(quit); <-done }
}

// startProgress prints the live line every second until ctx ends, and
// closes the timeline's seconds as they pass. The returned channel closes
// when it has stopped.
func (r *run) startProgress(ctx context.Context, riders int, free chan *fleet.Rider) <-chan struct{} {
	done := make(chan struct{})
	w := r.cfg.Progress
	live := isTerminal(w)
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				if live {
					fmt.Fprintln(w)
				}
				return
			case <-tick.C:
			}
			r.stats.tick()
			if w == nil {
				continue
			}
			p := r.stats.progress()
			line := r.progressLine(p, riders-len(free))
			if live {
				fmt.Fprintf(w, "\r\033[K%s", line)
			} else {
				fmt.Fprintln(w, line)
			}
		}
	}()
	return done
}

// progressLine is one progress report: the last second's offered and
// achieved ride arrivals (rides the platform accepted) and requests, then
// errors, latency percentiles and completed rides so far.
func (r *run) progressLine(p progress, inFlight int) string {
	phase := "load "
	if p.elapsed > r.cfg.Duration {
		phase = "drain"
	}
	return fmt.Sprintf("%s %4ds  offered %d/s  achieved %d/s  %d req/s  errors %d  p50 %s  p99 %s  in flight %d  completed %d",
		phase, int(p.elapsed.Seconds()), p.last.Offered, p.last.RidesRequested, p.last.Requests,
		p.errors, ms(p.p50), ms(p.p99), inFlight, p.completed)
}

// isTerminal reports whether w is a terminal, where a progress line can
// be redrawn in place instead of scrolling.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
