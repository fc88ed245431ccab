package drill

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rideshare-platform/rideshare/internal/check"
	"github.com/rideshare-platform/rideshare/internal/faults"
	"github.com/rideshare-platform/rideshare/internal/load"
	"github.com/rideshare-platform/rideshare/internal/payments"
	"github.com/rideshare-platform/rideshare/internal/rides"
)

// loadRun is a load running in the background.
type loadRun struct {
	rec    *recorder
	cancel context.CancelFunc
	done   chan struct{}
	rep    *load.Report
	err    error
}

// loadConfig is the drill's load for d: its riders, drivers and rate.
func (r *run) loadConfig(d time.Duration) load.Config {
	o := r.o
	return load.Config{
		Gateway: r.p.Gateway, Riders: o.Riders, Drivers: o.Drivers, Duration: d, Rate: o.Rate, Drain: drain,
		Seed: o.Seed, Password: o.Password, Accounts: o.Accounts, TimeScale: o.TimeScale,
	}
}

// startLoad runs cfg in the background, every request through a
// recorder. The load stops when ctx ends or stop is called.
func (r *run) startLoad(ctx context.Context, cfg load.Config) *loadRun {
	t := http.DefaultTransport.(*http.Transport).Clone()
	// One idle connection per simulated phone, as the load sizes its own.
	t.MaxIdleConns = cfg.Riders + cfg.Drivers + 16
	t.MaxIdleConnsPerHost = t.MaxIdleConns
	lr := &loadRun{rec: newRecorder(t), done: make(chan struct{})}
	cfg.Client = &http.Client{Transport: lr.rec}
	ctx, lr.cancel = context.WithCancel(ctx)
	go func() {
		defer close(lr.done)
		lr.rep, lr.err = r.p.Load(ctx, cfg)
	}()
	r.mu.Lock()
	r.loads = append(r.loads, lr)
	r.mu.Unlock()
	return lr
}

// stop ends the load at once and waits for it.
func (lr *loadRun) stop() {
	lr.cancel()
	<-lr.done
}

// started waits for the load's clock to start (its warm-up over).
func (lr *loadRun) started(ctx context.Context) (time.Time, error) {
	select {
	case <-lr.rec.started:
		return lr.rec.startedAt, nil
	case <-lr.done:
		if lr.err != nil {
			return time.Time{}, lr.err
		}
		return time.Time{}, errors.New("the load ended before any ride was requested")
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
}

// wait waits for the load to finish, drain included.
func (lr *loadRun) wait(ctx context.Context) (*load.Report, error) {
	select {
	case <-lr.done:
	case <-ctx.Done():
		lr.stop()
	}
	if lr.err == nil && lr.rep == nil {
		return nil, errors.New("the load reported nothing")
	}
	return lr.rep, lr.err
}

// begin starts the load and waits for its clock, which becomes the
// timeline's second 0.
func (r *run) begin(ctx context.Context, cfg load.Config) (*loadRun, error) {
	r.say("load: signing in %d riders and %d drivers; rides will arrive at %.2f/s for %s", cfg.Riders, cfg.Drivers, cfg.Rate, cfg.Duration)
	lr := r.startLoad(ctx, cfg)
	at, err := lr.started(ctx)
	if err != nil {
		lr.stop()
		return nil, fmt.Errorf("the load did not start: %w", err)
	}
	r.res.Start = at
	r.say("load: rides arriving")
	return lr, nil
}

// act is what a drill does around its fault window. Every part may be
// nil. before runs from the start of the load until the fault; during
// while the fault lasts; after once it is healed, beside the rest of the
// load, and must return by itself within a bound of its own: the drill
// waits for both.
type act struct {
	before func(ctx context.Context)
	inject func(ctx context.Context) error
	during func(ctx context.Context)
	heal   func(ctx context.Context) error
	after  func(ctx context.Context)
}

// underFault runs the drill's load through a baseline, the fault window
// and a recovery, and returns the load's report and every call its
// riders and drivers made.
func (r *run) underFault(ctx context.Context, cfg load.Config, a act) (*load.Report, []call, error) {
	o := r.o
	cfg.Duration = o.Baseline + o.Window + o.Recovery
	lr, err := r.begin(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	// A failure below stops the load; past the end it is stopped already.
	defer lr.stop()

	background := func(ctx context.Context, fn func(context.Context)) (stop func()) {
		if fn == nil {
			return func() {}
		}
		ctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { fn(ctx) })
		return func() { cancel(); wg.Wait() }
	}

	stopBefore := background(ctx, a.before)
	err = sleep(ctx, o.Baseline)
	stopBefore()
	if err != nil {
		return nil, nil, err
	}
	if a.inject != nil {
		if err := a.inject(ctx); err != nil {
			return nil, nil, err
		}
	}
	r.faultFrom(time.Now())
	stopDuring := background(ctx, a.during)
	err = sleep(ctx, o.Window)
	stopDuring()
	if err != nil {
		return nil, nil, err
	}
	r.faultTo(time.Now())
	if a.heal != nil {
		if err := a.heal(ctx); err != nil {
			return nil, nil, err
		}
	}

	var after sync.WaitGroup
	if a.after != nil {
		after.Go(func() { a.after(ctx) })
	}
	rep, err := lr.wait(ctx)
	after.Wait()
	if err != nil {
		return nil, nil, err
	}
	r.loaded(rep)
	return rep, lr.rec.snapshot(), nil
}

// faultFrom and faultTo mark the fault window on the timeline.
func (r *run) faultFrom(t time.Time) { r.res.FaultFrom = t.Sub(r.res.Start) }
func (r *run) faultTo(t time.Time)   { r.res.FaultTo = t.Sub(r.res.Start) }

// window is the fault window as wall-clock times.
func (r *run) window() span {
	return span{r.res.Start.Add(r.res.FaultFrom), r.res.Start.Add(r.res.FaultTo)}
}

// baseline and recovery are the load's time before and after the fault;
// the drain, when only the rides still running poll, is in neither.
func (r *run) baseline() span { return span{r.res.Start, r.window().From} }
func (r *run) recovery(rep *load.Report) span {
	return span{r.window().To, r.res.Start.Add(rep.Duration)}
}

// loaded keeps the load's report and says how it went.
func (r *run) loaded(rep *load.Report) {
	r.res.Load = rep
	r.res.Timeline = rep.Timeline
	r.say("load: done: %d rides requested, %s; %d requests, %d errors",
		rep.Rides.Requested, terminalSummary(rep.Rides), rep.Requests, rep.Errors)
	if rep.Rides.Dropped > 0 {
		r.say("load: %d of %d ride arrivals found every rider busy and were dropped: give more --riders", rep.Rides.Dropped, rep.Rides.Offered)
	}
}

// terminalSummary is "52 completed, 3 cancelled, 1 still running".
func terminalSummary(rd load.Rides) string {
	var parts []string
	for _, s := range []string{load.StatusCompleted, load.StatusCancelled, load.StatusPaymentDeclined, load.StatusNoDriver} {
		if n := rd.Terminal[s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, s))
		}
	}
	if n := sumOf(rd.NotTerminal); n > 0 {
		parts = append(parts, fmt.Sprintf("%d still running", n))
	}
	if len(parts) == 0 {
		return "none ended"
	}
	return strings.Join(parts, ", ")
}

func sumOf(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// setFault injects f on target until heal (or the drill's end) clears it.
// The fault also expires by itself a while after the window, so a drill
// killed outright leaves nothing broken for long.
func (r *run) setFault(ctx context.Context, target string, f faults.Fault) error {
	if f.For == 0 {
		f.For = r.o.Window + 2*time.Minute
	}
	// Undone on any exit, even if setting it failed half way (on one
	// replica of two).
	r.onCleanup(faultKey(target, f.Route), func(ctx context.Context) error { return r.p.Faults.Clear(ctx, target, f.Route) })
	if err := r.p.Faults.Set(ctx, target, f); err != nil {
		return fmt.Errorf("setting the fault on %s: %w", target, err)
	}
	r.say("%s: %s", target, describeFault(f))
	return nil
}

// clearFault heals what setFault did.
func (r *run) clearFault(ctx context.Context, target, route string) error {
	if err := r.p.Faults.Clear(ctx, target, route); err != nil {
		return fmt.Errorf("clearing the fault on %s: %w", target, err)
	}
	r.done(faultKey(target, route))
	r.say("%s: fault cleared", target)
	return nil
}

func faultKey(target, route string) string { return "the fault on " + target + route }

// describeFault words a fault for the events.
func describeFault(f faults.Fault) string {
	var what []string
	if f.Hang {
		what = append(what, "every call hangs")
	}
	if f.Latency > 0 {
		what = append(what, fmt.Sprintf("every call answers %s late", f.Latency))
	}
	if f.ErrorRate > 0 {
		what = append(what, fmt.Sprintf("%.0f%% of calls fail", 100*f.ErrorRate))
	}
	where := ""
	if f.Route != "" {
		where = " on " + f.Route
	}
	return strings.Join(what, ", ") + where
}

// settle audits the platform once its riders stopped, re-checking until
// every invariant holds and it is at rest, or Settle has passed.
func (r *run) settle(ctx context.Context) {
	r.say("check: auditing the invariants (waiting up to %s for the platform to settle)", r.o.Settle)
	start := time.Now()
	deadline := start.Add(r.o.Settle)
	var (
		rep check.Report
		err error
	)
	for {
		rep, err = check.Run(ctx, r.p.Audit, check.Options{Settled: true})
		if (err == nil && rep.OK()) || ctx.Err() != nil || !time.Now().Add(time.Second).Before(deadline) {
			break
		}
		if sleep(ctx, time.Second) != nil {
			break
		}
	}
	took := time.Since(start)
	if err == nil {
		r.res.Check = &rep
	}
	r.find(settleFinding(rep, err, took, r.o.Settle))
	if err == nil && rep.OK() {
		r.say("check: every invariant holds; settled %s after the riders stopped", roundDur(took))
	} else {
		r.say("check: %s", r.res.Findings[len(r.res.Findings)-1].Got)
	}
}

// settleFinding judges the final audit.
func settleFinding(rep check.Report, err error, took, limit time.Duration) Finding {
	f := Finding{What: "invariants once the riders stopped (sagas, captures, holds, ledger, outboxes)",
		Want: "all hold, settled within " + roundDur(limit)}
	switch {
	case err != nil:
		f.Got = "could not audit: " + err.Error()
	case rep.OK():
		f.Got = fmt.Sprintf("all hold: %d rides, %d captured once, %d holds released, ledger balanced; settled after %s",
			rep.Rides.Total, rep.Payments.CapturedOnce+rep.Payments.FeesCaptured, rep.Payments.Released(), roundDur(took))
		f.OK = true
	default:
		var first []string
		for i, v := range rep.Violations {
			if i == 3 {
				first = append(first, fmt.Sprintf("and %d more", len(rep.Violations)-3))
				break
			}
			first = append(first, "["+string(v.Invariant)+"] "+v.Message)
		}
		f.Got = fmt.Sprintf("%d violations after %s: %s", len(rep.Violations), roundDur(took), strings.Join(first, "; "))
	}
	return f
}

// loadFindings judge what every drill promises of the rides: each ride
// asked for was accepted, and each accepted ride ended.
func loadFindings(rep *load.Report) []Finding {
	asked := rep.Rides.Offered - rep.Rides.Dropped
	running := sumOf(rep.Rides.NotTerminal)
	return []Finding{
		{What: "ride requests refused or never answered (after the riders' retries)",
			Got: fmt.Sprintf("%d of %d", rep.Rides.Failed, asked), Want: "0", OK: rep.Rides.Failed == 0},
		{What: "rides lost: accepted but not ended when the riders stopped following them",
			Got:  fmt.Sprintf("%d of %d%s", running, rep.Rides.Requested, breakdown(rep.Rides.NotTerminal)),
			Want: "0", OK: running == 0},
	}
}

// breakdown is " (searching 3, in_progress 2)", or "".
func breakdown(m map[string]int64) string {
	var parts []string
	for k, v := range m {
		if v > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, v))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// ridesIn reads the facts of the rides created within sp.
func (r *run) ridesIn(ctx context.Context, sp span) ([]rides.RideFacts, error) {
	var out []rides.RideFacts
	after := ""
	for range 10_000 {
		page, err := r.p.Audit.Rides(ctx, after)
		if err != nil {
			return nil, fmt.Errorf("reading the rides: %w", err)
		}
		for _, f := range page.Rides {
			if sp.contains(f.CreatedAt) {
				out = append(out, f)
			}
		}
		if page.Next == "" || page.Next == after {
			break
		}
		after = page.Next
	}
	return out, nil
}

// paymentsOf reads payments' facts of the rides ids.
func (r *run) paymentsOf(ctx context.Context, ids map[string]bool) (map[string]payments.PaymentFacts, error) {
	out := map[string]payments.PaymentFacts{}
	after := ""
	for range 10_000 {
		page, err := r.p.Audit.Payments(ctx, after)
		if err != nil {
			return nil, fmt.Errorf("reading the payments: %w", err)
		}
		for _, p := range page.Payments {
			if ids[p.RideID] {
				out[p.RideID] = p
			}
		}
		if page.Next == "" || page.Next == after {
			break
		}
		after = page.Next
	}
	return out, nil
}

// scrape sums a metric over every process (a replica's count is its own).
func (r *run) scrape(ctx context.Context, names []string, metric string, labels ...string) (float64, error) {
	var sum float64
	var errs []error
	for _, n := range names {
		m, err := r.p.Admin.Metrics(ctx, n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sum += m.Sum(metric, labels...)
	}
	if len(errs) == len(names) && len(errs) > 0 {
		return 0, errors.Join(errs...)
	}
	return sum, nil
}

// instances are the processes of service (itself, or its replicas
// "payments-1", "payments-2"), sorted.
func (r *run) instances(ctx context.Context, service string) ([]string, error) {
	procs, err := r.p.Admin.Processes(ctx)
	if err != nil {
		return nil, err
	}
	return instancesOf(procs, service), nil
}

// roundDur shortens a duration for a sentence: "3m12s", "4.2s", "31ms".
func roundDur(d time.Duration) string {
	switch {
	case d >= time.Minute:
		return d.Round(time.Second).String()
	case d >= time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= 10*time.Millisecond:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Microsecond).String()
}
