// Package fleet simulates drivers, so a platform started by `rideshare up`
// answers a newcomer's first ride request with a driver and no extra step.
//
// Each simulated driver is a goroutine that uses only the public HTTP API of
// the gateway, exactly as a driver's phone app would: it signs up (or logs
// in to the account a previous run created), goes online, roams the service
// area pinging its position, polls for offers, accepts one after a human
// pause, drives to the pickup, arrives, starts, drives to the dropoff and
// completes, then roams again. A cancelled ride sends it back to roaming.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rideshare-platform/rideshare/internal/geo"
)

// Config says how many drivers to simulate, where, and how fast.
// Zero durations and scales take the defaults documented on each field.
type Config struct {
	// Gateway is the platform's public base URL, e.g. http://127.0.0.1:8080.
	Gateway string
	// Drivers is how many drivers to run.
	Drivers int
	// Area is where the drivers roam (default geo.SanFrancisco).
	Area geo.Area
	// Seed makes the drivers' starting points, walks and pauses
	// reproducible; driver i draws from its own stream of this seed.
	Seed int64
	// Password is every fleet account's password. `up` passes a secret kept
	// in its data folder, so a later run can log in to the same accounts.
	Password string
	// Accounts names the drivers' accounts: driver n signs in as
	// ACCOUNTS-NNN@fleet.rideshare.invalid (default "fleet-driver"). A
	// second fleet beside the one `up` runs (a load run) needs its own,
	// or two goroutines would drive one account.
	Accounts string
	// TimeScale speeds up driving: 1 is real time; the default 10 makes a
	// 5 km trip at 30 km/h take about a minute.
	TimeScale float64
	// AcceptDelay is the range of a human-like pause before accepting an
	// offer, drawn uniformly (default 1s..3s).
	AcceptDelay [2]time.Duration
	// PingEvery is the location ping period (default 2s).
	PingEvery time.Duration
	// PollEvery is how often a roaming driver asks for offers, and how often
	// a driver on a trip checks whether the ride was cancelled (default 1s).
	PollEvery time.Duration
	// Stagger spreads the drivers' start times over this long, so their
	// sign-ups do not all land at once (default 1s).
	Stagger time.Duration
	// Client makes the HTTP requests (default: a client with a connection
	// pool sized for the fleet). Each request gets a 5 s timeout regardless.
	Client *http.Client
	// Logger receives the fleet's logs; request errors go at debug level
	// (default: discard).
	Logger *slog.Logger
}

// Defaults for the zero values of Config.
const (
	DefaultTimeScale = 10
	DefaultPingEvery = 2 * time.Second
	DefaultPollEvery = time.Second
	DefaultStagger   = time.Second
	DefaultAccounts  = "fleet-driver"
)

// DefaultAcceptDelay is the default range of the pause before accepting.
var DefaultAcceptDelay = [2]time.Duration{time.Second, 3 * time.Second}

// EmailFor is the account email of fleet driver n (counted from 1) with
// the default Accounts.
func EmailFor(n int) string { return AccountEmail(DefaultAccounts, n) }

// AccountEmail is the email of driver n of a fleet whose Accounts is prefix.
func AccountEmail(prefix string, n int) string {
	return fmt.Sprintf("%s-%03d@fleet.rideshare.invalid", prefix, n)
}

// Stats counts what the fleet did since Run started.
type Stats struct {
	// Online is how many drivers are online now.
	Online int64
	// Offers is how many distinct ride offers the drivers saw.
	Offers int64
	// Accepted is how many offers a driver accepted and got the ride.
	Accepted int64
	// Completed is how many rides a fleet driver drove to completion.
	Completed int64
	// Errors is how many requests failed unexpectedly (an offer that went to
	// someone else is not an error).
	Errors int64
}

// Fleet is a set of simulated drivers. Run it once.
type Fleet struct {
	cfg Config
	log *slog.Logger

	online, offers, accepted, completed, errs atomic.Int64

	// refusedOnce keeps a permanently refused sign-in (a fleet account that
	// exists with another password) to one warning for the whole fleet.
	refusedOnce sync.Once
}

// New returns a fleet for c, with its defaults filled in.
func New(c Config) *Fleet {
	if c.Area == (geo.Area{}) {
		c.Area = geo.SanFrancisco
	}
	if c.TimeScale <= 0 {
		c.TimeScale = DefaultTimeScale
	}
	if c.AcceptDelay == [2]time.Duration{} {
		c.AcceptDelay = DefaultAcceptDelay
	}
	if c.AcceptDelay[1] < c.AcceptDelay[0] {
		c.AcceptDelay[1] = c.AcceptDelay[0]
	}
	if c.PingEvery <= 0 {
		c.PingEvery = DefaultPingEvery
	}
	if c.PollEvery <= 0 {
		c.PollEvery = DefaultPollEvery
	}
	if c.Stagger <= 0 {
		c.Stagger = DefaultStagger
	}
	if c.Accounts == "" {
		c.Accounts = DefaultAccounts
	}
	if c.Client == nil {
		// The default transport keeps two idle connections per host: with a
		// fleet of drivers all talking to one gateway, that would reconnect
		// on almost every request.
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = max(c.Drivers, 2)
		c.Client = &http.Client{Transport: t}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return &Fleet{cfg: c, log: c.Logger.With("component", "fleet")}
}

// Run runs a fleet for c until ctx ends, then returns nil.
func Run(ctx context.Context, c Config) error { return New(c).Run(ctx) }

// Run starts the drivers, staggered over Config.Stagger, and runs them until
// ctx ends. Each driver goes offline on the way out (best effort, within a
// second), and Run returns nil once all have stopped. It returns an error
// at once only if the configuration cannot work.
func (f *Fleet) Run(ctx context.Context) error {
	if err := f.check(); err != nil {
		return err
	}
	f.log.InfoContext(ctx, "fleet starting", "drivers", f.cfg.Drivers, "gateway", f.cfg.Gateway, "time_scale", f.cfg.TimeScale)
	var wg sync.WaitGroup
	for i := range f.cfg.Drivers {
		n := i + 1
		delay := f.cfg.Stagger * time.Duration(i) / time.Duration(f.cfg.Drivers)
		wg.Go(func() {
			if !sleep(ctx, delay) {
				return
			}
			f.newDriver(n).run(ctx)
		})
	}
	<-ctx.Done()
	wg.Wait()
	f.log.Info("fleet stopped", "completed", f.completed.Load(), "errors", f.errs.Load())
	return nil
}

// Stats is a snapshot of the fleet's counters; safe to call while it runs.
func (f *Fleet) Stats() Stats {
	return Stats{
		Online: f.online.Load(), Offers: f.offers.Load(), Accepted: f.accepted.Load(),
		Completed: f.completed.Load(), Errors: f.errs.Load(),
	}
}

func (f *Fleet) check() error {
	c := f.cfg
	switch {
	case c.Gateway == "":
		return errors.New("fleet: a gateway URL is required")
	case c.Drivers < 0:
		return errors.New("fleet: the number of drivers must be 0 or more")
	case c.Password == "":
		return errors.New("fleet: a password for the fleet accounts is required")
	case !c.Area.Min.Valid() || !c.Area.Max.Valid() || c.Area.Min.Lat >= c.Area.Max.Lat || c.Area.Min.Lng >= c.Area.Max.Lng:
		return fmt.Errorf("fleet: area %q is not a rectangle of coordinates", c.Area.Name)
	case c.AcceptDelay[0] < 0:
		return errors.New("fleet: the accept delay cannot be negative")
	}
	return nil
}

func (f *Fleet) newDriver(n int) *driver {
	// Each driver has its own stream of the seed, so one driver's choices do
	// not shift another's and a run is reproducible driver by driver.
	rng := rand.New(rand.NewPCG(uint64(f.cfg.Seed), uint64(n)))
	return &driver{
		f:   f,
		n:   n,
		log: f.log.With("driver", n),
		rng: rng,
		car: newCar(f.cfg.Area, rng),
		phone: &phone{
			base: trimSlash(f.cfg.Gateway), hc: f.cfg.Client,
			email: AccountEmail(f.cfg.Accounts, n), password: f.cfg.Password,
		},
	}
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

// sleep waits d or until ctx ends, and reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

var (
	firstNames = []string{"Ana", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal",
		"Kofi", "Lena", "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor", "Wen", "Yusuf", "Zoe"}
	cars = [][2]string{{"Toyota", "Prius"}, {"Toyota", "Camry"}, {"Honda", "Civic"}, {"Honda", "Accord"},
		{"Tesla", "Model 3"}, {"Hyundai", "Ioniq 5"}, {"Kia", "Niro"}, {"Chevrolet", "Bolt"}, {"Ford", "Escape"}, {"Nissan", "Leaf"}}
	colors = []string{"black", "white", "silver", "grey", "blue", "red", "green"}
)

// profileFor is driver n's name and car: drawn from the seed, with a plate
// made from n so that every fleet plate is distinct.
func profileFor(n int, rng *rand.Rand) profile {
	model := cars[rng.IntN(len(cars))]
	return profile{
		Name: fmt.Sprintf("%s %c. (fleet)", firstNames[rng.IntN(len(firstNames))], 'A'+rune(rng.IntN(26))),
		Vehicle: vehicle{
			Make: model[0], Model: model[1], Color: colors[rng.IntN(len(colors))],
			Plate: fmt.Sprintf("9FLT%03d", n),
		},
	}
}
