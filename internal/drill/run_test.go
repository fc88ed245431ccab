package drill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/check"
	"github.com/rideshare-platform/rideshare/internal/discovery"
	"github.com/rideshare-platform/rideshare/internal/faults"
	"github.com/rideshare-platform/rideshare/internal/load"
	"github.com/rideshare-platform/rideshare/internal/payments"
	"github.com/rideshare-platform/rideshare/internal/resilience"
	"github.com/rideshare-platform/rideshare/internal/rides"
)

// fakePlatform is a platform a drill can run against with no process
// behind it: it records what the drill did to it, and answers as a
// healthy platform would (or as a test makes it).
type fakePlatform struct {
	mu      sync.Mutex
	did     []string // "set pricing", "clear pricing", "SIGSTOP broker", ...
	faults  map[string]faults.Fault
	stopped bool
	// backlog is the outboxes' unsent events: they pile up while the
	// broker is stopped.
	backlog int
	// degradedWhenDown says whether the fake gateway answers estimates
	// degraded while pricing is faulted (false: it fails them).
	degradedWhenDown bool
	procs            map[string]string
}

func newFakePlatform() *fakePlatform {
	return &fakePlatform{faults: map[string]faults.Fault{}, degradedWhenDown: true,
		procs: map[string]string{"gateway": "http://gw", "rides": "http://rides", "payments": "http://payments", "dispatch": "http://dispatch"}}
}

func (f *fakePlatform) record(format string, args ...any) {
	f.mu.Lock()
	f.did = append(f.did, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}

func (f *fakePlatform) actions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.did)
}

func (f *fakePlatform) Set(_ context.Context, target string, flt faults.Fault) error {
	f.mu.Lock()
	f.faults[target] = flt
	f.mu.Unlock()
	f.record("set %s", target)
	return nil
}

func (f *fakePlatform) Clear(_ context.Context, target, route string) error {
	f.mu.Lock()
	delete(f.faults, target)
	f.mu.Unlock()
	f.record("clear %s", target)
	return nil
}

func (f *fakePlatform) faulted(target string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.faults[target]
	return ok
}

func (f *fakePlatform) Processes(context.Context) (map[string]string, error) { return f.procs, nil }

func (f *fakePlatform) Metrics(context.Context, string) (Metrics, error) { return Metrics{}, nil }

func (f *fakePlatform) Resilience(context.Context, string) ([]resilience.DependencyState, error) {
	return nil, nil
}

func (f *fakePlatform) Discovery(context.Context, string) (map[string][]discovery.InstanceState, error) {
	return nil, nil
}

func (f *fakePlatform) Signal(name string, sig syscall.Signal) (int, error) {
	f.mu.Lock()
	switch sig {
	case syscall.SIGSTOP:
		f.stopped = true
	case syscall.SIGCONT:
		f.stopped = false
	}
	f.mu.Unlock()
	f.record("%s %s", map[syscall.Signal]string{syscall.SIGSTOP: "SIGSTOP", syscall.SIGCONT: "SIGCONT", syscall.SIGKILL: "SIGKILL"}[sig], name)
	return 4242, nil
}

func (f *fakePlatform) Rides(context.Context, string) (check.RidesPage, error) {
	return check.RidesPage{Now: time.Now(), AuditPage: rides.AuditPage{Rides: []rides.RideFacts{}}}, nil
}

func (f *fakePlatform) Payments(context.Context, string) (check.PaymentsPage, error) {
	return check.PaymentsPage{Now: time.Now(), AuditPage: payments.AuditPage{Ledger: &payments.LedgerAudit{Balanced: true}}}, nil
}

// Outboxes: while the broker is stopped every read finds more events
// waiting; once it runs again they are gone.
func (f *fakePlatform) Outboxes(context.Context) ([]check.Outbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		f.backlog += 7
	} else {
		f.backlog = 0
	}
	return []check.Outbox{{Service: "rides", Unsent: f.backlog}}, nil
}

// gateway is a fake public API: estimates (degraded while pricing is
// faulted) and ride requests.
func (f *fakePlatform) gateway(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v1/fares/estimate":
			down := f.faulted("pricing")
			if down && !f.degradedWhenDown {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"degraded": down, "surge": 1.0})
		case r.Method == http.MethodPost && r.URL.Path == "/v1/rides":
			w.WriteHeader(http.StatusAccepted)
			_, _ = io.WriteString(w, `{"id":"r1","status":"requested"}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// healed reports whether the drill did something to the platform and has
// undone all of it.
func (f *fakePlatform) healed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.did) > 0 && len(f.faults) == 0 && !f.stopped
}

// load stands in for load.Run: through the client it is given, it asks
// for an estimate and a ride every few milliseconds for the duration,
// and reports every ride completed. Past the duration it goes on until
// the drill has made and healed its fault, then asks once more: the drill
// does both on its own timers, which run late on a busy machine, and its
// verdict needs requests during the fault and after it.
func (f *fakePlatform) load(ctx context.Context, c load.Config) (*load.Report, error) {
	start := time.Now()
	do := func(path string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.Gateway+path, strings.NewReader("{}"))
		if res, err := c.Client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	}
	n := int64(0)
	for more := true; more && ctx.Err() == nil; {
		more = time.Since(start) < c.Duration || !f.healed()
		do("/v1/fares/estimate")
		do("/v1/rides")
		n++
		time.Sleep(5 * time.Millisecond)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rep := &load.Report{Started: start, Duration: c.Duration, Rides: load.Rides{Offered: n, Requested: n,
		Terminal: map[string]int64{load.StatusCompleted: n}, NotTerminal: map[string]int64{}}}
	for i := range int(time.Since(start)/time.Second) + 1 {
		rep.Timeline = append(rep.Timeline, load.Second{At: i, Requests: 2 * n, P50: time.Millisecond, P99: 2 * time.Millisecond})
	}
	return rep, nil
}

// quick are options that run a drill in about a second.
func quick() Options {
	return Options{Baseline: 150 * time.Millisecond, Window: 400 * time.Millisecond, Recovery: 150 * time.Millisecond,
		Password: "pw", Settle: 2 * time.Second, Seed: 1}
}

func (f *fakePlatform) platform(t *testing.T) Platform {
	return Platform{Gateway: f.gateway(t).URL, Load: f.load, Faults: f, Admin: f, Audit: f, Procs: f}
}

func TestBrokerOutageStopsAndResumesTheBroker(t *testing.T) {
	f := newFakePlatform()
	res, err := Run(context.Background(), "broker-outage", f.platform(t), quick())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"SIGSTOP broker", "SIGCONT broker"}; !slices.Equal(f.actions(), want) {
		t.Errorf("the drill did %v, want %v", f.actions(), want)
	}
	if !res.Pass {
		var b strings.Builder
		_ = res.WriteText(&b)
		t.Fatalf("broker-outage against a platform whose outboxes hold and drain failed:\n%s", b.String())
	}
	// The window on the timeline is where the drill put it: after the
	// baseline, as long as asked rather than the drill's default. (Its end
	// is bounded by that default, not by the asked length plus a guess at
	// how late a busy machine runs the drill's timer.)
	def, _ := Find("broker-outage")
	if res.FaultFrom < 150*time.Millisecond || res.FaultTo-res.FaultFrom < 400*time.Millisecond || res.FaultTo-res.FaultFrom >= def.Window {
		t.Errorf("fault window %s..%s, want from 150ms for 400ms, not the default %s", res.FaultFrom, res.FaultTo, def.Window)
	}
	if res.Check == nil || !res.Check.OK() || res.Load == nil || len(res.Timeline) == 0 {
		t.Errorf("the result lacks its audit, load or timeline: %+v", res)
	}
}

// TestInterruptedDrillResumesTheBroker cancels a drill while the broker is
// stopped: it must not stay frozen.
func TestInterruptedDrillResumesTheBroker(t *testing.T) {
	f := newFakePlatform()
	ctx, cancel := context.WithCancel(context.Background())
	o := quick()
	o.Window = time.Minute
	o.Progress = progressFunc(func(line string) {
		if strings.Contains(line, "SIGSTOP") {
			cancel()
		}
	})
	res, err := Run(ctx, "broker-outage", f.platform(t), o)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.actions(); !slices.Equal(got, []string{"SIGSTOP broker", "SIGCONT broker"}) {
		t.Errorf("the drill did %v: the broker must be resumed", got)
	}
	if res.Pass || !strings.Contains(res.Error, "interrupted") {
		t.Errorf("an interrupted drill: pass=%v error=%q", res.Pass, res.Error)
	}
}

// progressFunc calls fn with each line written to it.
type progressFunc func(line string)

func (p progressFunc) Write(b []byte) (int, error) { p(string(b)); return len(b), nil }

func TestPricingDown(t *testing.T) {
	for _, c := range []struct {
		name     string
		degraded bool
		pass     bool
	}{
		{"the gateway falls back", true, true},
		{"the gateway fails the estimates", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFakePlatform()
			f.degradedWhenDown = c.degraded
			res, err := Run(context.Background(), "pricing-down", f.platform(t), quick())
			if err != nil {
				t.Fatal(err)
			}
			if got := f.actions(); !slices.Equal(got, []string{"set pricing", "clear pricing"}) {
				t.Errorf("the drill did %v, want the fault set then cleared", got)
			}
			var b strings.Builder
			_ = res.WriteText(&b)
			if res.Pass != c.pass {
				t.Fatalf("pass = %v, want %v:\n%s", res.Pass, c.pass, b.String())
			}
			if !c.pass && !strings.Contains(b.String(), "FAIL  fare estimates answered 200 while pricing was down") {
				t.Errorf("the failure does not name the estimates:\n%s", b.String())
			}
		})
	}
}

// TestLoadFailureClearsNothingItDidNotSet: a load that cannot start fails
// the drill before any fault, and says why.
func TestLoadThatCannotStart(t *testing.T) {
	f := newFakePlatform()
	p := f.platform(t)
	p.Load = func(context.Context, load.Config) (*load.Report, error) {
		return nil, errors.New("load: no rider could sign in")
	}
	res, err := Run(context.Background(), "slow-payments", p, quick())
	if err != nil {
		t.Fatal(err)
	}
	if res.Pass || !strings.Contains(res.Error, "no rider could sign in") || len(f.actions()) != 0 {
		t.Errorf("pass=%v error=%q did=%v", res.Pass, res.Error, f.actions())
	}
}

func TestNeeds(t *testing.T) {
	f := newFakePlatform()
	remote := f.platform(t)
	remote.Procs = nil
	for _, c := range []struct {
		name, drill string
		p           Platform
		want        string
	}{
		{"a remote platform", "kill-replica", remote, "needs the local platform"},
		{"no replicas", "kill-replica", f.platform(t), "--replicas dispatch=3"},
		{"no broker", "duplicate-delivery", f.platform(t), "--nats"},
	} {
		res, err := Run(context.Background(), c.drill, c.p, quick())
		if err != nil {
			t.Fatal(err)
		}
		if res.Pass || !strings.Contains(res.Error, c.want) {
			t.Errorf("%s: pass=%v error=%q, want it to say %q", c.name, res.Pass, res.Error, c.want)
		}
	}
	if got := f.actions(); len(got) != 0 {
		t.Errorf("drills that could not run did %v", got)
	}
	if _, err := Run(context.Background(), "no-such-drill", f.platform(t), quick()); err == nil {
		t.Error("an unknown drill ran")
	}
}

func TestRecorder(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/fares/estimate" {
			_, _ = io.WriteString(w, `{"fare":{"amount":1200,"currency":"USD"},"degraded":true,"surge":1.5}`)
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	rec := newRecorder(http.DefaultTransport)
	hc := &http.Client{Transport: rec}
	get := func(method, path string) {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		res, err := hc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	}
	get("GET", "/v1/rides/0192-abc")
	select {
	case <-rec.started:
		t.Fatal("the clock started before any estimate")
	default:
	}
	get("POST", "/v1/fares/estimate")
	select {
	case <-rec.started:
	default:
		t.Fatal("the first estimate did not start the clock")
	}
	get("PUT", "/nowhere")
	calls := rec.snapshot()
	if len(calls) != 3 {
		t.Fatalf("recorded %v", calls)
	}
	if c := calls[0]; c.Route != routeRide || c.Status != 404 || !c.Failed {
		t.Errorf("a ride read: %+v", c)
	}
	if c := calls[1]; c.Route != routeEstimate || c.Status != 200 || !c.Degraded || c.Surge != 1.5 || c.Failed {
		t.Errorf("an estimate: %+v", c)
	}
	if c := calls[2]; c.Route != "PUT (other)" {
		t.Errorf("an unknown route is named %q", c.Route)
	}
	srv.Close()
	get("GET", "/v1/rides/x")
	if c := rec.snapshot()[3]; c.Status != 0 || !c.Failed {
		t.Errorf("a request with no answer: %+v", c)
	}
}
