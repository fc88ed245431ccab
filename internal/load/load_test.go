package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// quick is a small run against f: rides are read every 20 ms.
func quick(f *fakeGateway) Config {
	return Config{Gateway: f.srv.URL, Riders: 20, Rate: 20, Duration: time.Second, Drain: 10 * time.Second,
		Password: "pw-1", Seed: 7, PollEvery: 20 * time.Millisecond}
}

func mustRun(t *testing.T, c Config) *Report {
	t.Helper()
	rep, err := Run(context.Background(), c)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if o := rep.Rides; o.Offered != o.Dropped+o.Failed+o.Requested || o.Requested != sum(o.Terminal)+sum(o.NotTerminal) {
		t.Errorf("rides do not add up: %+v", o)
	}
	return rep
}

func route(rep *Report, name string) RouteReport {
	for _, r := range rep.Routes {
		if r.Route == name {
			return r
		}
	}
	return RouteReport{}
}

// A slow platform must not lower the offered load: arrivals keep their
// clock, and slowness shows as latency (or, once every rider is busy, as
// arrivals the generator reports dropped), never as fewer offers.
func TestSlowPlatformDoesNotLowerOfferedLoad(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		riders      int
		wantDropped bool
	}{
		{"enough riders", 40, false},
		{"too few riders", 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeGateway(t)
			f.delay = 300 * time.Millisecond
			c := quick(f)
			c.Riders = tc.riders
			rep := mustRun(t, c)
			if rep.Rides.Offered != 20 {
				t.Errorf("offered %d rides, want 20 (20/s for 1s) whatever the latency", rep.Rides.Offered)
			}
			if got := rep.Rides.Dropped > 0; got != tc.wantDropped {
				t.Errorf("dropped %d, want some: %v", rep.Rides.Dropped, tc.wantDropped)
			}
			if rep.Rides.Failed != 0 || rep.Rides.Terminal[StatusCompleted] != rep.Rides.Requested {
				t.Errorf("rides %+v: want every requested ride completed", rep.Rides)
			}
			for _, name := range []string{"POST /v1/rides", "POST /v1/fares/estimate"} {
				if l := route(rep, name).Latency; l.P50 < f.delay || l.Count != rep.Rides.Requested {
					t.Errorf("%s latency %+v: want %d answers, each at least the server's %s", name, l, rep.Rides.Requested, f.delay)
				}
			}
		})
	}
}

// Every request is charged to its route template, the counts match what
// the server answered, rides are counted by how they ended, refused
// attempts show as errors by route and status, and the timeline adds up
// to the totals.
func TestAccounting(t *testing.T) {
	t.Parallel()
	f := newFakeGateway(t)
	outcomes := []string{StatusCompleted, StatusCancelled, StatusNoDriver, StatusPaymentDeclined, StatusCompleted}
	f.outcome = func(n int) string { return outcomes[n%len(outcomes)] }
	f.failStatus, f.failTimes = http.StatusServiceUnavailable, 1
	c := quick(f)
	c.Duration = 2500 * time.Millisecond
	// A rider for every arrival: none is dropped however slowly the rides
	// run, so every count below is fixed.
	c.Riders = 50
	var progress bytes.Buffer
	c.Progress = &progress
	rep := mustRun(t, c)

	if rep.Rides.Offered != 50 || rep.Rides.Requested != 50 || rep.Rides.Dropped != 0 || rep.Rides.Failed != 0 {
		t.Errorf("rides %+v: want 50 offered and requested", rep.Rides)
	}
	f.mu.Lock()
	ended := map[string]int64{}
	for k, v := range f.ended {
		ended[k] = int64(v)
	}
	attempts := maps.Clone(f.attempts)
	f.mu.Unlock()
	if !maps.Equal(rep.Rides.Terminal, ended) || len(rep.Rides.NotTerminal) != 0 {
		t.Errorf("terminal %v not terminal %v, want what the server showed: %v", rep.Rides.Terminal, rep.Rides.NotTerminal, ended)
	}
	for key, n := range attempts {
		if n != 2 {
			t.Errorf("ride request %s: %d attempts, want the refused one and one retry with the same key", key, n)
		}
	}

	server := f.routeCounts()
	want := map[string]int64{}
	for _, name := range []string{"POST /v1/fares/estimate", "POST /v1/rides", "GET /v1/rides/{id}"} {
		want[name] = int64(server[name])
	}
	got := map[string]int64{}
	var total int64
	for _, r := range rep.Routes {
		got[r.Route] = r.Requests
		total += r.Requests
		if r.Latency.Count+r.Errors < r.Requests || r.Latency.P50 > r.Latency.P99 || r.Latency.P99 > r.Latency.Max {
			t.Errorf("%s: latency %+v for %d requests", r.Route, r.Latency, r.Requests)
		}
	}
	if !maps.Equal(got, want) || total != rep.Requests {
		t.Errorf("requests by route %v (total %d of %d), want what the server answered: %v", got, total, rep.Requests, want)
	}
	wantErrs := []ErrorCount{{Route: "POST /v1/rides", Class: "HTTP 503 unavailable", Count: 50}}
	if !reflect.DeepEqual(rep.ErrorsByRoute, wantErrs) || rep.Errors != 50 {
		t.Errorf("errors %v (%d), want %v", rep.ErrorsByRoute, rep.Errors, wantErrs)
	}

	var sec Second
	for i, s := range rep.Timeline {
		if s.At != i {
			t.Errorf("timeline[%d] is second %d", i, s.At)
		}
		sec.Offered += s.Offered
		sec.Requests += s.Requests
		sec.Errors += s.Errors
		sec.RidesRequested += s.RidesRequested
		sec.RidesCompleted += s.RidesCompleted
	}
	if len(rep.Timeline) < 3 {
		t.Errorf("timeline has %d seconds, want one per second of a %s run", len(rep.Timeline), c.Duration)
	}
	if sec.Offered != rep.Rides.Offered || sec.Requests != rep.Requests || sec.Errors != rep.Errors ||
		sec.RidesRequested != rep.Rides.Requested || sec.RidesCompleted != rep.Rides.Terminal[StatusCompleted] {
		t.Errorf("timeline sums %+v, want the totals", sec)
	}
	if lines := strings.Split(strings.TrimSpace(progress.String()), "\n"); len(lines) < 2 ||
		!strings.Contains(lines[0], "offered ") || !strings.Contains(lines[0], "p99 ") {
		t.Errorf("progress lines do not show the offered rate:\n%s", progress.String())
	}
}

// The generator respects the gateway's limits: a 429 is an error class,
// and the retry waits the Retry-After; a refusal that is not transient is
// not retried and the arrival counts as failed.
func TestRefusals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		status, times int
		retryAfter    string
		wantAttempts  int
		wantRequested bool
	}{
		{http.StatusTooManyRequests, 1, "1", 2, true},
		{http.StatusUnprocessableEntity, 100, "", 1, false},
	} {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			t.Parallel()
			f := newFakeGateway(t)
			f.failStatus, f.failTimes, f.retryAfter = tc.status, tc.times, tc.retryAfter
			c := quick(f)
			c.Rate, c.Duration = 5, 600*time.Millisecond
			rep := mustRun(t, c)
			want := Rides{Offered: 3, Failed: 3, Terminal: map[string]int64{}, NotTerminal: map[string]int64{}}
			if tc.wantRequested {
				want = Rides{Offered: 3, Requested: 3, Terminal: map[string]int64{StatusCompleted: 3}, NotTerminal: map[string]int64{}}
			}
			if !reflect.DeepEqual(rep.Rides, want) {
				t.Errorf("rides %+v, want %+v", rep.Rides, want)
			}
			wantErrs := []ErrorCount{{Route: "POST /v1/rides", Class: "HTTP " + strconv.Itoa(tc.status) + " unavailable", Count: 3}}
			if !reflect.DeepEqual(rep.ErrorsByRoute, wantErrs) {
				t.Errorf("errors %v, want %v", rep.ErrorsByRoute, wantErrs)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			for key, n := range f.attempts {
				if n != tc.wantAttempts {
					t.Errorf("%s: %d attempts, want %d", key, n, tc.wantAttempts)
				}
			}
			if tc.retryAfter != "" && rep.Elapsed < time.Second {
				t.Errorf("the run took %s: the retries did not wait the Retry-After of %ss", rep.Elapsed, tc.retryAfter)
			}
		})
	}
}

// Rides still running when the drain ends are reported by their last
// status, and arrivals that find every rider busy are reported dropped.
func TestNotTerminalAndSaturation(t *testing.T) {
	t.Parallel()
	f := newFakeGateway(t)
	f.outcome = func(int) string { return "" }
	c := quick(f)
	c.Riders, c.Rate, c.Drain = 2, 10, 200*time.Millisecond
	rep := mustRun(t, c)
	want := Rides{Offered: 10, Dropped: 8, Requested: 2, Terminal: map[string]int64{}, NotTerminal: map[string]int64{"searching": 2}}
	if !reflect.DeepEqual(rep.Rides, want) {
		t.Errorf("rides %+v, want %+v", rep.Rides, want)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"dropped 8: generator saturated", "not terminal 2 (searching 2)", "GET /v1/rides/{id}"} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("text report lacks %q:\n%s", s, text.String())
		}
	}
}

func TestReportJSONRoundTrip(t *testing.T) {
	t.Parallel()
	f := newFakeGateway(t)
	f.failStatus, f.failTimes = http.StatusBadGateway, 1
	c := quick(f)
	c.Rate, c.Duration = 10, 500*time.Millisecond
	rep := mustRun(t, c)
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatalf("the JSON report does not decode: %v\n%s", err, b.String())
	}
	if !reflect.DeepEqual(&back, rep) {
		t.Errorf("round trip changed the report:\n got %+v\nwant %+v", back, *rep)
	}
	for _, field := range []string{`"p99_ns"`, `"timeline"`, `"errors_by_route"`, `"GET /v1/rides/{id}"`} {
		if !strings.Contains(b.String(), field) {
			t.Errorf("JSON report lacks %s", field)
		}
	}
}

func TestRunErrors(t *testing.T) {
	t.Parallel()
	closed := testenv.NoListener
	refusing := newFakeGateway(t)
	refusing.signInFail = func(string) int { return http.StatusBadRequest }

	for _, tc := range []struct {
		name            string
		c               Config
		wantUnreachable bool
	}{
		{"nothing listens", Config{Gateway: closed, Riders: 1, Duration: time.Second, Password: "x"}, true},
		{"no rider can sign in", Config{Gateway: refusing.srv.URL, Riders: 2, Duration: time.Second, Password: "x", Warmup: 2 * time.Second}, false},
		{"no gateway", Config{Riders: 1, Duration: time.Second, Password: "x"}, false},
		{"no riders", Config{Gateway: closed, Duration: time.Second, Password: "x"}, false},
		{"no duration", Config{Gateway: closed, Riders: 1, Password: "x"}, false},
		{"negative rate", Config{Gateway: closed, Riders: 1, Duration: time.Second, Rate: -1, Password: "x"}, false},
		{"no password", Config{Gateway: closed, Riders: 1, Duration: time.Second}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Run(context.Background(), tc.c)
			if err == nil || rep != nil {
				t.Fatalf("Run = %v, %v; want an error", rep, err)
			}
			if got := errors.Is(err, ErrUnreachable); got != tc.wantUnreachable {
				t.Errorf("error %v: unreachable %v, want %v", err, got, tc.wantUnreachable)
			}
		})
	}
}

// Ending the caller's context stops the run at once with a report of what
// ran, not an error.
func TestInterrupted(t *testing.T) {
	t.Parallel()
	f := newFakeGateway(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Cancel once rides run, not after a guessed time: the riders' sign-ins
	// come first and may outlast any such guess on a busy machine, and
	// ending the context during them is an error, not an interrupted run.
	f.outcome = func(n int) string {
		if n == 2 {
			cancel()
		}
		return ""
	}
	c := quick(f)
	c.Duration = time.Minute
	rep, err := Run(ctx, c)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !rep.Interrupted || rep.Rides.Offered == 0 || rep.Rides.Offered >= 60*20 || sum(rep.Rides.NotTerminal) != rep.Rides.Requested {
		t.Errorf("interrupted report %+v: want some rides offered, each still running", rep.Rides)
	}
}

func TestDefaultRate(t *testing.T) {
	c, err := Config{Gateway: "http://x", Riders: 90, Duration: time.Second, Password: "x"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Rate != 3 || c.Drain != DefaultDrain {
		t.Errorf("90 riders: rate %v drain %s, want 3/s (one ride per rider per %s) and %s", c.Rate, c.Drain, DefaultRideEvery, DefaultDrain)
	}
	c, _ = Config{Gateway: "http://x", Riders: 1, Duration: time.Second, Password: "x", Drain: -1}.withDefaults()
	if c.Drain != 0 {
		t.Errorf("a negative drain is %s, want none", c.Drain)
	}
}

func TestRouteNames(t *testing.T) {
	rt := newRouteTable()
	for _, tc := range []struct{ method, path, want string }{
		{"GET", "/v1/rides/0190d5a2-7c1e-7b3a-9f7e-3c5d2a1b4e6f", "GET /v1/rides/{id}"},
		{"POST", "/v1/rides/abc/accept", "POST /v1/rides/{id}/accept"},
		{"POST", "/v1/rides", "POST /v1/rides"},
		{"GET", "/v1/drivers/me/offers", "GET /v1/drivers/me/offers"},
		{"POST", "/oauth2/token", "POST /oauth2/token"},
		{"DELETE", "/v1/rides/abc", "DELETE (other)"},
		{"GET", "/nowhere/abc", "GET (other)"},
	} {
		req := httptest.NewRequest(tc.method, "http://gw"+tc.path, nil)
		if got := rt.name(req); got != tc.want {
			t.Errorf("%s %s is route %q, want %q", tc.method, tc.path, got, tc.want)
		}
	}
}

func TestErrorClass(t *testing.T) {
	for _, tc := range []struct {
		status int
		err    error
		code   string
		want   string
	}{
		{503, nil, "", "HTTP 503"},
		{429, nil, "rate_limited", "HTTP 429 rate_limited"},
		{0, context.DeadlineExceeded, "", "timeout"},
		{0, &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, "", "connection refused"},
		{0, &net.OpError{Op: "dial", Err: errors.New("boom")}, "", "network error"},
	} {
		if got := errorClass(tc.status, tc.err, tc.code); got != tc.want {
			t.Errorf("errorClass(%d, %v, %q) = %q, want %q", tc.status, tc.err, tc.code, got, tc.want)
		}
	}
}
