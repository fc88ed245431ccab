// Package drill runs live drills against a running platform: each one
// answers one of the classic questions about microservices (what if
// payments is slow? what if the broker stops?) with numbers. A drill runs
// simulated riders and drivers (package load), injects its fault after a
// few seconds of baseline, heals it, lets the riders finish, then audits
// the platform's invariants (package check) once everything settled. Its
// verdict is a list of named findings, each a number measured against
// what it should be, so a failing drill says what went wrong and by how
// much.
//
// What a drill needs of the platform (load, faults, processes, the
// audit, metrics, the broker) comes through the small interfaces of
// Platform, so the verdicts are tested with fakes and the command line
// plugs in the real platform.
package drill

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rideshare-platform/rideshare/internal/check"
	"github.com/rideshare-platform/rideshare/internal/load"
)

// Need is something a drill needs of the platform beyond its public API,
// its fault switches and its audit.
type Need string

// The needs.
const (
	// NeedProcesses: the drill signals the platform's processes, so it
	// runs against `rideshare up` on this machine.
	NeedProcesses Need = "local processes"
	// NeedReplicas: a service runs two instances or more.
	NeedReplicas Need = "replicas"
	// NeedBroker: the drill connects to the platform's NATS.
	NeedBroker Need = "the broker"
)

// Scenario is one drill of the table.
type Scenario struct {
	Name string `json:"name"`
	// Question is what the drill answers.
	Question string `json:"question"`
	// Fault says what the drill does to the platform.
	Fault string `json:"fault"`
	// Window is how long the fault lasts by default.
	Window time.Duration `json:"window_ns"`
	// Recovery is how long the load goes on after the fault by default,
	// when the drill watches something come back (DefaultRecovery when 0).
	Recovery time.Duration `json:"recovery_ns,omitempty"`
	Needs    []Need        `json:"needs,omitempty"`

	run func(ctx context.Context, r *run) error
}

// scenarios is the table, in the order `drill all` runs them: the gentle
// faults first, the ones that stop processes last.
var scenarios = []Scenario{
	{Name: "slow-payments", Question: "What do riders see when payments is slow?",
		Fault: "payments answers every call 5 s late", Window: 20 * time.Second, run: slowPayments},
	{Name: "payments-down", Question: "Does a failing payments service take rides down with it, or does a breaker shed the calls?",
		Fault: "payments fails every call", Window: 20 * time.Second, run: paymentsDown},
	{Name: "pricing-down", Question: "Can riders still get a fare estimate when pricing is down?",
		Fault: "pricing fails every call", Window: 15 * time.Second, Recovery: 15 * time.Second, run: pricingDown},
	{Name: "declined-cards", Question: "Does a declined card end its ride cleanly, with nothing charged, while other rides go on?",
		Fault: "some riders pay with a card that is always declined", Window: 15 * time.Second, run: declinedCards},
	{Name: "no-drivers", Question: "What happens to a ride nobody can take?",
		Fault: "rides are requested with no driver to take them", Window: 10 * time.Second, run: noDrivers},
	{Name: "duplicate-delivery", Question: "Does an event delivered twice apply twice?",
		Fault: "every event of a recent window is published again", Window: 10 * time.Second, Needs: []Need{NeedBroker}, run: duplicateDelivery},
	{Name: "overload", Question: "Under twice the load it can take, does the platform still get its capacity's worth of work done?",
		Fault: "fare estimates arrive at twice the measured capacity", Window: 15 * time.Second, run: overload},
	{Name: "kill-replica", Question: "When one instance of a service dies mid-load, is any ride lost?",
		Fault: "one instance of a replicated service is SIGKILLed", Window: 15 * time.Second, Needs: []Need{NeedProcesses, NeedReplicas}, run: killReplica},
	{Name: "broker-outage", Question: "When the broker stops, are events lost, or held and delivered later?",
		Fault: "the broker is frozen (SIGSTOP), then resumed (SIGCONT)", Window: 20 * time.Second, Needs: []Need{NeedProcesses}, run: brokerOutage},
}

// Scenarios lists every drill, in the order `drill all` runs them.
func Scenarios() []Scenario {
	out := make([]Scenario, len(scenarios))
	copy(out, scenarios)
	return out
}

// Find is the drill called name.
func Find(name string) (Scenario, bool) {
	for _, s := range scenarios {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

// Names lists the drills' names.
func Names() []string {
	out := make([]string, len(scenarios))
	for i, s := range scenarios {
		out[i] = s.Name
	}
	return out
}

// Options tune a drill. Zero values take the defaults.
type Options struct {
	// Window is how long the fault lasts (default: the drill's own).
	Window time.Duration
	// Baseline and Recovery are how long the load runs before the fault
	// and after it is healed (default 8 s each).
	Baseline, Recovery time.Duration
	// Riders and Drivers are the simulated riders and drivers (default 50
	// and 30); Rate is ride arrivals per second (default 1).
	Riders, Drivers int
	Rate            float64
	// Password is the load accounts' password (required); Accounts
	// prefixes their emails (default "drill").
	Password string
	Accounts string
	// Seed makes the trips reproducible (default: the time).
	Seed int64
	// TimeScale is how much faster than real time the simulated drivers
	// drive (default load.DefaultTimeScale).
	TimeScale float64
	// SearchTimeout is the platform's rides.search_timeout (default 60 s):
	// how long no-drivers waits for its rides to give up.
	SearchTimeout time.Duration
	// Settle bounds the wait for the platform to settle after the riders
	// stopped (default 90 s).
	Settle time.Duration
	// Kill is the service or instance kill-replica kills (default: an
	// instance of dispatch, else of the first service that has replicas).
	Kill string
	// Progress gets what happens, as it happens (nil: nothing).
	Progress io.Writer
}

// Defaults of Options.
const (
	DefaultBaseline      = 8 * time.Second
	DefaultRecovery      = 8 * time.Second
	DefaultRiders        = 50
	DefaultDrivers       = 30
	DefaultRate          = 1.0
	DefaultAccounts      = "drill"
	DefaultSearchTimeout = 60 * time.Second
	DefaultSettle        = 90 * time.Second
	// drain bounds how long rides are followed after the arrivals end:
	// longer than a ride waiting out its hold deadline (rides.hold_timeout,
	// 30 s by default), then a trip.
	drain = 90 * time.Second
)

func (o Options) withDefaults(s Scenario) (Options, error) {
	if o.Password == "" {
		return o, errors.New("drill: a password for the load accounts is required")
	}
	if o.Window <= 0 {
		o.Window = s.Window
	}
	if o.Baseline <= 0 {
		o.Baseline = DefaultBaseline
	}
	if o.Recovery <= 0 {
		o.Recovery = cmp.Or(s.Recovery, DefaultRecovery)
	}
	if o.Riders <= 0 {
		o.Riders = DefaultRiders
	}
	if o.Drivers < 0 {
		return o, errors.New("drill: the number of drivers must be 0 or more")
	}
	if o.Drivers == 0 {
		o.Drivers = DefaultDrivers
	}
	if o.Rate <= 0 {
		// A ride a second, which 30 drivers at the load's time scale take
		// with room to spare; each rider has one ride at a time, and a
		// ride waiting out a slow payment takes 30 s or more, hence 50.
		o.Rate = DefaultRate
	}
	if o.Accounts == "" {
		o.Accounts = DefaultAccounts
	}
	if o.Seed == 0 {
		o.Seed = time.Now().UnixNano()
	}
	if o.SearchTimeout <= 0 {
		o.SearchTimeout = DefaultSearchTimeout
	}
	if o.Settle <= 0 {
		o.Settle = DefaultSettle
	}
	return o, nil
}

// Finding is one number a verdict rests on: what was measured, what it
// came to, what it should be, and whether it is.
type Finding struct {
	What string `json:"what"`
	Got  string `json:"got"`
	Want string `json:"want"`
	OK   bool   `json:"ok"`
}

func (f Finding) String() string {
	mark := "ok  "
	if !f.OK {
		mark = "FAIL"
	}
	return fmt.Sprintf("%s  %s: %s (want %s)", mark, f.What, f.Got, f.Want)
}

// Event is something the drill did or saw, at At since the timeline's
// start (negative: before the load's clock started).
type Event struct {
	At   time.Duration `json:"at_ns"`
	Time time.Time     `json:"time"`
	What string        `json:"what"`
}

// Result is one drill's outcome.
type Result struct {
	Name     string        `json:"name"`
	Question string        `json:"question"`
	Fault    string        `json:"fault"`
	Started  time.Time     `json:"started"`
	Took     time.Duration `json:"took_ns"`
	// Pass is the verdict: every finding holds, and the drill ran.
	Pass bool `json:"pass"`
	// Error says why the drill could not run or finish (a need the
	// platform does not meet, the platform unreachable).
	Error    string    `json:"error,omitempty"`
	Findings []Finding `json:"findings"`
	Events   []Event   `json:"events"`
	// Timeline is the load's per-second record (the chart); Start is its
	// second 0, and FaultFrom and FaultTo bound the fault on it.
	Timeline  []load.Second `json:"timeline"`
	Start     time.Time     `json:"timeline_start"`
	FaultFrom time.Duration `json:"fault_from_ns"`
	FaultTo   time.Duration `json:"fault_to_ns"`
	// Load is the load's report; Check the final audit.
	Load  *load.Report  `json:"load,omitempty"`
	Check *check.Report `json:"check,omitempty"`
}

// Failed is the number of findings that do not hold.
func (r *Result) Failed() int {
	n := 0
	for _, f := range r.Findings {
		if !f.OK {
			n++
		}
	}
	return n
}

// Run runs the drill called name against p.
func Run(ctx context.Context, name string, p Platform, o Options) (*Result, error) {
	s, ok := Find(name)
	if !ok {
		return nil, fmt.Errorf("drill: no drill %q (the drills: %s)", name, strings.Join(Names(), ", "))
	}
	o, err := o.withDefaults(s)
	if err != nil {
		return nil, err
	}
	if p.Load == nil {
		p.Load = load.Run
	}
	r := &run{p: p, o: o, s: s, res: &Result{Name: s.Name, Question: s.Question, Fault: s.Fault, Started: time.Now(), Findings: []Finding{}}}
	r.say("drill %s: %s", s.Name, s.Question)
	err = r.needs()
	if err == nil {
		err = s.run(ctx, r)
	}
	r.cleanUp(ctx)
	res := r.res
	res.Took = time.Since(res.Started)
	if err != nil {
		res.Error = err.Error()
		if ctx.Err() != nil {
			res.Error = "interrupted: " + res.Error
		}
	}
	res.Pass = res.Error == "" && len(res.Findings) > 0 && res.Failed() == 0
	r.finishEvents()
	return res, nil
}

// run is one drill's moving parts.
type run struct {
	p   Platform
	o   Options
	s   Scenario
	res *Result

	mu       sync.Mutex
	cleanups []cleanup
	loads    []*loadRun
}

type cleanup struct {
	key string
	fn  func(context.Context) error
}

// needs checks what the drill needs beyond the basics.
func (r *run) needs() error {
	for _, n := range r.s.Needs {
		switch {
		case n == NeedProcesses && r.p.Procs == nil:
			return errors.New("this drill signals the platform's processes, so it needs the local platform " +
				"(`rideshare up` on this machine, found through its data folder), not a remote one")
		case n == NeedBroker && r.p.Broker == nil:
			return errors.New("this drill publishes to the platform's broker, and there is no broker address: " +
				"give --nats URL for a remote platform")
		}
	}
	for _, need := range []struct {
		missing bool
		what    string
	}{{r.p.Faults == nil, "fault switches"}, {r.p.Admin == nil, "admin endpoints"}, {r.p.Audit == nil, "audit"}} {
		if need.missing {
			return fmt.Errorf("drill: the platform's %s are not reachable", need.what)
		}
	}
	return nil
}

// say records an event and shows it.
func (r *run) say(format string, args ...any) {
	e := Event{Time: time.Now(), What: fmt.Sprintf(format, args...)}
	r.mu.Lock()
	r.res.Events = append(r.res.Events, e)
	r.mu.Unlock()
	if r.o.Progress != nil {
		fmt.Fprintf(r.o.Progress, "%s  %s\n", e.Time.Local().Format(time.TimeOnly), e.What)
	}
}

// find records a finding.
func (r *run) find(fs ...Finding) {
	r.res.Findings = append(r.res.Findings, fs...)
}

// finishEvents places the events on the timeline.
func (r *run) finishEvents() {
	start := r.res.Start
	if start.IsZero() {
		start = r.res.Started
	}
	for i := range r.res.Events {
		r.res.Events[i].At = r.res.Events[i].Time.Sub(start)
	}
}

// onCleanup registers what undoes a fault, under key: a drill that ends
// early (an error, Ctrl-C) must not leave payments slow or the broker
// frozen. done removes it once the drill healed the fault itself.
func (r *run) onCleanup(key string, fn func(context.Context) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, cleanup{key, fn})
}

func (r *run) done(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, c := range r.cleanups {
		if c.key == key {
			r.cleanups = append(r.cleanups[:i], r.cleanups[i+1:]...)
			return
		}
	}
}

// cleanUp undoes what is left, even when ctx has ended (the operator
// pressed Ctrl-C: that is exactly when it matters).
func (r *run) cleanUp(ctx context.Context) {
	r.mu.Lock()
	cs, loads := r.cleanups, r.loads
	r.cleanups, r.loads = nil, nil
	r.mu.Unlock()
	for _, lr := range loads {
		lr.stop() // a load the drill left running when it failed
	}
	for i := len(cs) - 1; i >= 0; i-- {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		if err := cs[i].fn(cctx); err != nil {
			r.say("could not undo %s: %v", cs[i].key, err)
		} else {
			r.say("undone: %s", cs[i].key)
		}
		cancel()
	}
}

// sleep waits d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// httpClient is the client for the drill's own requests.
func (r *run) httpClient() *http.Client {
	if r.p.HTTP != nil {
		return r.p.HTTP
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost = 4096, 4096
	return &http.Client{Transport: t, Timeout: 10 * time.Second}
}
