package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/resilience"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestPaymentsSlow makes payments answer in 5 s, as a sick card network
// would, and checks what riders and the other processes see: a ride
// request is accepted at once and ends, cancelled, by the hold deadline;
// fare estimates and profile reads, which never touch payments, keep their
// speed; and once payments is well again, rides and the gateway hold no
// more goroutines than before.
//
// No public route calls payments while a rider waits: the hold is the ride
// saga's "authorize" step, which runs after POST /v1/rides has answered 202,
// and a receipt is read from rides' own records. So the bound a rider
// meets is the saga's hold deadline (rides.hold_timeout), not a gateway
// deadline.
func TestPaymentsSlow(t *testing.T) {
	const (
		hold    = 12 * time.Second // rides.hold_timeout: shorter than the 30 s default, to keep the test short
		latency = 5 * time.Second  // rides' per-attempt timeout for payments: every attempt times out
		rides   = 8
		samples = 200
	)
	dir := t.TempDir()
	p := startPlatform(t, dir, "--set", "rides.hold_timeout="+hold.String())
	sampler := p.newRider("sampler@example.com")
	rider := p.newRider("slow-payments@example.com")

	// Warm up what the fault will use: holds (declined at once, so nothing
	// is left behind), estimates and profiles.
	var warm []string
	for i := range rides {
		warm = append(warm, rider.request(fmt.Sprintf("warm-%d", i),
			map[string]any{"pickup": ferryBuilding, "dropoff": twinPeaks, "payment_method": "card_declined"})["id"].(string))
	}
	for _, id := range warm {
		rider.await(id, "payment_declined")
	}
	readLatencies(t, sampler, 20)
	base := map[string]int{}
	for _, svc := range []string{"rides", "gateway"} {
		base[svc] = p.goroutines(svc)
	}
	baseEstimate, baseMe := readLatencies(t, sampler, samples)
	t.Logf("baseline: goroutines rides %d, gateway %d; p99 of %d fare estimates %s, of %d profile reads %s",
		base["rides"], base["gateway"], samples, p99(baseEstimate), samples, p99(baseMe))

	p.fault(dir, "payments", "--latency", latency.String())
	requested := map[string]time.Time{}
	var order []string
	for i := range rides {
		start := time.Now()
		r := rider.do("POST", "/v1/rides", trip(ferryBuilding, twinPeaks), "Idempotency-Key", fmt.Sprintf("slow-%d", i))
		took := time.Since(start)
		// The route's deadline (the gateway's default, 10 s) plus 10%: it
		// must not wait for payments.
		if r.status != http.StatusAccepted || took > 11*time.Second {
			t.Fatalf("POST /v1/rides with payments slow: %d in %s: %s", r.status, took, r.body)
		}
		id := r.json(t)["id"].(string)
		requested[id] = start
		order = append(order, id)
		t.Logf("ride %d requested in %s", i, took.Round(time.Millisecond))
	}
	faultEstimate, faultMe := readLatencies(t, sampler, samples)
	peak := map[string]int{"rides": p.goroutines("rides"), "gateway": p.goroutines("gateway")}
	t.Logf("with payments slow: goroutines rides %d, gateway %d; p99 of %d fare estimates %s, of %d profile reads %s",
		peak["rides"], peak["gateway"], samples, p99(faultEstimate), samples, p99(faultMe))

	// Every ride ends by the hold deadline (plus 10%), cancelled, and
	// charged nothing; rides' log says why. When it ended is the ride's
	// own record (updated_at, which a cancelled ride keeps), not when this
	// test's polling got round to it: on a busy machine a pass over eight
	// rides can itself take a good part of the 10%.
	ended := map[string]time.Duration{}
	testenv.Eventually(t, 2*hold, func() bool {
		for _, id := range order {
			if _, ok := ended[id]; ok {
				continue
			}
			if got := rider.ride(id); slices.Contains(terminalStatuses, got["status"]) {
				if got["status"] != "cancelled" {
					t.Fatalf("ride %s ended %v with payments slow, want cancelled", id, got["status"])
				}
				created, err1 := time.Parse(time.RFC3339Nano, fmt.Sprint(got["created_at"]))
				updated, err2 := time.Parse(time.RFC3339Nano, fmt.Sprint(got["updated_at"]))
				if err1 != nil || err2 != nil {
					t.Fatalf("ride %s: created_at %v, updated_at %v: %v %v", id, got["created_at"], got["updated_at"], err1, err2)
				}
				ended[id] = updated.Sub(created)
			}
		}
		return len(ended) == len(order)
	}, "rides still waiting for their hold after %s", 2*hold)
	for i, id := range order {
		t.Logf("ride %d: cancelled %s after it was created (hold deadline %s; requested %s ago)",
			i, ended[id].Round(time.Millisecond), hold, time.Since(requested[id]).Round(time.Millisecond))
		if limit := hold + hold/10; ended[id] > limit {
			t.Errorf("ride %d ended %s after its request, want within %s", i, ended[id], limit)
		}
		if rc := rider.receipt(id); rc["status"] != "not_charged" {
			t.Errorf("receipt of ride %d: %v, want not_charged", i, rc)
		}
	}
	// rides logs a ride's end after committing it, and up copies the log
	// to its file through a pipe: the line may trail the status just read.
	reason := "payment unavailable: the hold was not placed within " + hold.String()
	var unexplained []string
	testenv.Eventually(t, 10*time.Second, func() bool {
		logs, err := os.ReadFile(filepath.Join(dir, "logs", "rides.log"))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(logs), "\n")
		unexplained = slices.DeleteFunc(slices.Clone(order), func(id string) bool {
			return slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, id) && strings.Contains(l, reason) })
		})
		return len(unexplained) == 0
	}, "rides' log does not say rides %v ended because %q", &unexplained, reason)

	// Once payments is well, the authorizations left behind are settled
	// (each finds its hold and voids it), and then the calls that waited on
	// payments are gone: a count moves by a goroutine or two with
	// background work (a poll, a keep-alive connection), while calls left
	// behind by the fault would be several per call.
	p.fault(dir, "payments", "--clear")
	cleared := time.Now()
	voided := func() float64 {
		return p.metric("rides", "rideshare_ride_saga_step_duration_seconds_count", `step="void"`, `result="ok"`)
	}
	testenv.Eventually(t, 60*time.Second, func() bool { return voided() >= rides },
		"the cancelled rides' authorizations were never settled after payments recovered")
	t.Logf("compensations done %s after payments recovered", time.Since(cleared).Round(time.Millisecond))
	const slack = 4
	now := map[string]int{}
	testenv.Eventually(t, 30*time.Second, func() bool {
		for _, svc := range []string{"rides", "gateway"} {
			now[svc] = p.goroutines(svc)
		}
		return now["rides"] <= base["rides"]+slack && now["gateway"] <= base["gateway"]+slack
	}, "goroutines did not return to their baseline (+%d): rides %d, gateway %d, now %v",
		slack, base["rides"], base["gateway"], &now)
	t.Logf("goroutines %s after payments recovered: rides %d (baseline %d, peak %d), gateway %d (baseline %d, peak %d)",
		time.Since(cleared).Round(time.Millisecond), now["rides"], base["rides"], peak["rides"],
		now["gateway"], base["gateway"], peak["gateway"])

	// Estimates and profiles go nowhere near payments: their tails stay
	// where they were. What a slow payments could do to these routes is
	// seconds (a call waiting on it) or hundreds of milliseconds (a pool
	// starved by calls that each hold it for seconds). With no fault at
	// all, on two shared cores under the race detector and beside other
	// test binaries, the p99 of 200 reads moves from one set to the next
	// by far more than 20% or 15 ms. So the bound is the drills' for a
	// route a fault does not touch (internal/drill's unaffectedMargin):
	// twice the baseline or 250 ms over it, whichever is more; and the
	// baseline is the higher of two unfaulted sets, one before the fault
	// and one after it, so that the machine's load changing meanwhile is
	// not blamed on payments.
	afterEstimate, afterMe := readLatencies(t, sampler, samples)
	for _, c := range []struct {
		name                string
		before, with, after []time.Duration
	}{{"fare estimate", baseEstimate, faultEstimate, afterEstimate}, {"profile read", baseMe, faultMe, afterMe}} {
		b, f := max(p99(c.before), p99(c.after)), p99(c.with)
		limit := max(2*b, b+250*time.Millisecond)
		t.Logf("%s p99: %s before, %s with payments slow, %s after (limit %s)", c.name, p99(c.before), f, p99(c.after), limit)
		if f > limit {
			t.Errorf("%s p99 rose to %s with payments slow, from %s without, want at most %s", c.name, f, b, limit)
		}
	}
}

// TestPaymentsFailing makes every call to payments fail for 30 s while
// riders keep requesting rides, and checks the caller's (rides') policies
// from the outside: each call is tried at most three times, payments sees
// at most 10% more calls than rides makes, and the breaker opens once it
// has seen its minimum of calls, lets nothing through while open, probes
// when half-open, and closes again once payments is back.
func TestPaymentsFailing(t *testing.T) {
	const (
		window   = 30 * time.Second // how long payments fails
		minCalls = 10
		openFor  = 2 * time.Second
		probes   = 2
		// settle is how long after opening an in-flight attempt (let in
		// before the breaker opened) may still land at payments: on two
		// busy cores, a request between two processes can wait hundreds
		// of milliseconds for one of them to run. Half of each open period
		// is left to watch.
		settle = time.Second
	)
	dir := t.TempDir()
	p := startPlatform(t, dir, "--set", fmt.Sprintf(
		"resilience.payments.breaker_min_calls=%d,resilience.payments.breaker_open_for=%s,resilience.payments.breaker_probes=%d",
		minCalls, openFor, probes))
	rider := p.newRider("failing-payments@example.com")
	admin := p.adminToken()
	if d := p.paymentsDependency(admin); d.Breaker.State != "closed" || d.Policy.MaxAttempts != 3 {
		t.Fatalf("rides' payments policy before the fault: %+v", d)
	}

	p.fault(dir, "payments", "--error-rate", "1")
	faultAt := time.Now()
	calls0, retries0, received0 := p.paymentsCalls(), p.metric("rides", "rideshare_dependency_retries_total", `peer="payments"`), p.injectedErrors()
	refused0 := p.metric("rides", "rideshare_dependency_calls_total", `peer="payments"`, `result="circuit_open"`)

	// One call on its own: it is tried exactly three times. rides counts
	// a call once its last attempt has failed, so by then all three have
	// reached payments; but the saga's next try of the hold, a backoff
	// later, may add to payments' count before this test reads it. A
	// worker counts a try in the ride's row when it claims the step,
	// before calling: a count of one, read after payments', says that
	// payments' count is the one call's alone. Otherwise it is not judged.
	alone := rider.request("alone", trip(ferryBuilding, twinPeaks))["id"].(string)
	testenv.Eventually(t, 30*time.Second, func() bool { return p.paymentsCalls() > calls0 }, "rides never called payments")
	first := p.injectedErrors() - received0
	if tries := p.stepTries(alone); tries == 1 {
		t.Logf("one call from rides: %v attempts reached payments", first)
		if first != 3 {
			t.Errorf("one call reached payments %v times, want 3 (max_attempts)", first)
		}
	} else {
		t.Logf("one call from rides: not judged, the saga had tried the hold %d times when payments' count was read", tries)
	}

	// Riders keep asking for rides through the window; each ride's hold is
	// retried by the saga, every retry a call to payments.
	stop := make(chan struct{})
	var load sync.WaitGroup
	var loadErrs []string
	load.Go(func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			r, err := p.tryDo("POST", "/v1/rides", rider.token, trip(ferryBuilding, twinPeaks), "Idempotency-Key", fmt.Sprintf("load-%d", i))
			if err != nil || r.status != http.StatusAccepted {
				loadErrs = append(loadErrs, fmt.Sprintf("%v %d %s", err, r.status, r.body))
			}
		}
	})
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		load.Wait()
	}()

	// Watch the breaker and payments' count together. An observation is
	// inside an open period when the breaker reads open, with time left,
	// both before and after the count is read, and the count was read at
	// least settle after the breaker opened.
	type seen struct {
		start, end time.Time     // of the observation
		left       time.Duration // of the open period, at the end
		received   float64
	}
	var obs []seen
	var polls int
	var firstOpen *resilience.DependencyState
	for time.Since(faultAt) < window {
		start := time.Now()
		before := p.paymentsDependency(admin)
		received := p.injectedErrors()
		after := p.paymentsDependency(admin)
		polls++
		if before.Breaker.State == "open" && firstOpen == nil {
			firstOpen = &before
			t.Logf("breaker open %s into the fault: %d calls in its window, failure rate %.2f, %v calls reached payments",
				time.Since(faultAt).Round(time.Millisecond), before.Breaker.Calls, before.Breaker.FailureRate, received-received0)
		}
		left := time.Duration(before.Breaker.RemainingOpenMS) * time.Millisecond
		if before.Breaker.State == "open" && after.Breaker.State == "open" && after.Breaker.RemainingOpenMS > 0 &&
			after.Breaker.RemainingOpenMS <= before.Breaker.RemainingOpenMS && openFor-left >= settle {
			obs = append(obs, seen{start: start, end: time.Now(),
				left: time.Duration(after.Breaker.RemainingOpenMS) * time.Millisecond, received: received})
		}
		time.Sleep(50 * time.Millisecond)
	}
	calls1, retries1, received1 := p.paymentsCalls(), p.metric("rides", "rideshare_dependency_retries_total", `peer="payments"`), p.injectedErrors()
	refused := p.metric("rides", "rideshare_dependency_calls_total", `peer="payments"`, `result="circuit_open"`) - refused0
	p.fault(dir, "payments", "--clear")
	cleared := time.Now()

	if firstOpen == nil {
		t.Fatalf("the breaker never opened in %s of failures", window)
	}
	if firstOpen.Breaker.Calls < minCalls || firstOpen.Breaker.FailureRate < 0.5 {
		t.Errorf("the breaker opened on %d calls at failure rate %.2f, want at least %d calls at 0.5 or more",
			firstOpen.Breaker.Calls, firstOpen.Breaker.FailureRate, minCalls)
	}

	// Group the observations by open period: one began after the last
	// ended, which was no sooner than the time it had left when last seen.
	// Payments' count must not move within a period, and moves between two
	// by the probes of the half-open breaker in between: at least one (a
	// failed probe is what reopened it) and at most breaker_probes.
	type period struct {
		seen    []seen
		skipped bool // a whole period may have gone unobserved before it
	}
	var periods []period
	for i, s := range obs {
		if i == 0 {
			periods = append(periods, period{seen: []seen{s}})
			continue
		}
		prev := obs[i-1]
		ended := prev.end.Add(prev.left)
		if s.start.Before(ended) {
			periods[len(periods)-1].seen = append(periods[len(periods)-1].seen, s)
			continue
		}
		periods = append(periods, period{seen: []seen{s}, skipped: s.start.Sub(ended) > openFor})
	}
	t.Logf("%d open periods observed in %d polls", len(periods), polls)
	if len(periods) < 3 {
		t.Fatalf("only %d open periods observed in %s with the breaker open %s at a time", len(periods), window, openFor)
	}
	for i, pd := range periods {
		first, last := pd.seen[0].received, pd.seen[len(pd.seen)-1].received
		if first != last {
			t.Errorf("open period %d: %v calls reached payments while the breaker was open (%v to %v)", i, last-first, first, last)
		}
		if i == 0 || pd.skipped {
			continue
		}
		before := periods[i-1].seen
		probed := first - before[len(before)-1].received
		t.Logf("half-open before open period %d: %v probes reached payments", i, probed)
		if probed < 1 || probed > probes {
			t.Errorf("half-open before open period %d: %v calls reached payments, want 1 to %d probes", i, probed, probes)
		}
	}

	calls, retries, received := calls1-calls0, retries1-retries0, received1-received0
	t.Logf("in %s of failures: rides made %v calls to payments, %v of them refused by the open breaker, with %v retries; "+
		"payments received %v: %.3f per call (%.3f per call the breaker let through)",
		window, calls, refused, retries, received, received/calls, received/(calls-refused))
	if received/calls > 1.1 {
		t.Errorf("payments received %v calls for rides' %v: %.3f per call, want at most 1.1", received, calls, received/calls)
	}
	if received > 3*calls || retries > 2*calls {
		t.Errorf("%v attempts and %v retries for %v calls: more than 3 attempts per call", received, retries, calls)
	}

	// Payments is back: the next call after the open delay probes, the
	// probes succeed and the breaker closes.
	var states []string
	testenv.Eventually(t, 20*time.Second, func() bool {
		st := p.paymentsDependency(admin).Breaker.State
		if len(states) == 0 || states[len(states)-1] != st {
			states = append(states, st)
		}
		return st == "closed"
	}, "the breaker did not close after payments recovered (states %v)", &states)
	close(stop)
	load.Wait()
	t.Logf("breaker closed %s after the fault was cleared (states %v); %d ride requests failed",
		time.Since(cleared).Round(time.Millisecond), states, len(loadErrs))
	if len(loadErrs) > 0 {
		t.Errorf("ride requests failed while payments was down (they need no payments to be accepted): %v", loadErrs)
	}
	if ok := p.metric("rides", "rideshare_dependency_calls_total", `peer="payments"`, `result="success"`); ok == 0 {
		t.Errorf("no call to payments succeeded after it recovered")
	}
}

// terminalStatuses end a ride.
var terminalStatuses = []any{"completed", "cancelled", "payment_declined", "no_driver"}

// fault runs `rideshare fault` against the platform in dir, as an operator
// would.
func (p *runningPlatform) fault(dir string, args ...string) {
	p.t.Helper()
	var out testenv.Buffer
	if code := run(p.t.Context(), append(append([]string{"fault"}, args...), "--data", dir), os.Getenv, nil, &out, &out); code != 0 {
		p.t.Fatalf("rideshare fault %v: exit %d\n%s", args, code, out.String())
	}
}

// readLatencies times n fare estimates and n profile reads, interleaved so
// that both see the same conditions.
func readLatencies(t *testing.T, u *user, n int) (estimate, me []time.Duration) {
	t.Helper()
	for range n {
		start := time.Now()
		if r := u.do("POST", "/v1/fares/estimate", trip(ferryBuilding, twinPeaks)); r.status != http.StatusOK {
			t.Fatalf("estimate: %d %s", r.status, r.body)
		}
		estimate = append(estimate, time.Since(start))
		start = time.Now()
		if r := u.do("GET", "/v1/me", nil); r.status != http.StatusOK {
			t.Fatalf("GET /v1/me: %d %s", r.status, r.body)
		}
		me = append(me, time.Since(start))
	}
	return estimate, me
}

// p99 is the 99th percentile (nearest rank) of ds.
func p99(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(math.Ceil(0.99*float64(len(s))))-1].Round(10 * time.Microsecond)
}

// metric sums the samples of the series name on svc's /metrics whose
// labels include every one of labels (each written as in the text format,
// `peer="payments"`).
func (p *runningPlatform) metric(svc, name string, labels ...string) float64 {
	p.t.Helper()
	base := p.state.Services[svc]
	if svc == "gateway" {
		base = p.state.GatewayURL
	}
	return p.metricAt(base, name, labels...)
}

// metricAt sums the series called name (with every one of labels) that the
// process at base exposes.
func (p *runningPlatform) metricAt(base, name string, labels ...string) float64 {
	p.t.Helper()
	svc := base
	res, err := p.client.Get(base + "/metrics")
	if err != nil {
		p.t.Fatalf("%s /metrics: %v", svc, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		p.t.Fatalf("%s /metrics: %d %v", svc, res.StatusCode, err)
	}
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		series, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		if n, _, _ := strings.Cut(series, "{"); n != name {
			continue
		}
		if slices.ContainsFunc(labels, func(l string) bool { return !strings.Contains(series, l) }) {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			p.t.Fatalf("%s /metrics: %q: %v", svc, line, err)
		}
		sum += v
	}
	return sum
}

// stepTries is how many times the saga has started the first step it owes
// for ride id, from rides' own database.
func (p *runningPlatform) stepTries(id string) int {
	p.t.Helper()
	db, err := sqldb.Open(context.Background(), filepath.Join(p.dir, "rides.db"))
	if err != nil {
		p.t.Fatal(err)
	}
	defer db.Close()
	var tries int
	if err := db.Reader().QueryRow(`SELECT step_tries FROM rides WHERE id = $1`, id).Scan(&tries); err != nil {
		p.t.Fatalf("rides.db: ride %s: %v", id, err)
	}
	return tries
}

// goroutines is svc's go_goroutines now.
func (p *runningPlatform) goroutines(svc string) int {
	return int(p.metric(svc, "go_goroutines"))
}

// paymentsCalls is how many calls rides made to payments, however they
// ended (answered, failed after retries, refused by the breaker, ...).
func (p *runningPlatform) paymentsCalls() float64 {
	return p.metric("rides", "rideshare_dependency_calls_total", `peer="payments"`)
}

// injectedErrors is how many requests payments failed on purpose: with
// every request failing, every call that reached it.
func (p *runningPlatform) injectedErrors() float64 {
	return p.metric("payments", "rideshare_faults_injected_total", `kind="error"`)
}

// paymentsDependency is rides' policies for payments as its admin
// endpoint shows them.
func (p *runningPlatform) paymentsDependency(token string) resilience.DependencyState {
	p.t.Helper()
	req, _ := http.NewRequest("GET", p.state.Services["rides"]+"/admin/resilience", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := p.client.Do(req)
	if err != nil {
		p.t.Fatalf("rides /admin/resilience: %v", err)
	}
	defer res.Body.Close()
	var body struct {
		Dependencies []resilience.DependencyState `json:"dependencies"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil || res.StatusCode != http.StatusOK {
		p.t.Fatalf("rides /admin/resilience: %d %v", res.StatusCode, err)
	}
	for _, d := range body.Dependencies {
		if d.Peer == "payments" {
			return d
		}
	}
	p.t.Fatalf("rides /admin/resilience lists no payments: %+v", body.Dependencies)
	return resilience.DependencyState{}
}
