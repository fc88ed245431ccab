package faults

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

var epoch = time.Date(2026, 11, 3, 20, 40, 7, 0, time.UTC)

// rig is an injector in front of a handler that counts what reaches it.
type rig struct {
	inj     *Injector
	clock   *testenv.Clock
	reg     *prometheus.Registry
	served  atomic.Int64
	handler http.Handler
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{clock: testenv.NewClock(epoch), reg: prometheus.NewRegistry()}
	r.inj = New(Options{Clock: r.clock, Rand: rand.NewPCG(1, 2), Metrics: r.reg})
	r.handler = r.inj.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		r.served.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	return r
}

func (r *rig) set(t *testing.T, f Fault) {
	t.Helper()
	if _, err := r.inj.Set(f); err != nil {
		t.Fatalf("set %+v: %v", f, err)
	}
}

// do serves one plain HTTP request to path with ctx.
func (r *rig) do(ctx context.Context, path string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	r.handler.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil).WithContext(ctx))
	return w
}

// metric reads a counter or gauge from the rig's registry (kind "" for the
// gauge).
func (r *rig) metric(t *testing.T, name, kind string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := kind == ""
			for _, l := range m.GetLabel() {
				match = match || l.GetName() == "kind" && l.GetValue() == kind
			}
			if match {
				if m.Counter != nil {
					return m.Counter.GetValue()
				}
				return m.Gauge.GetValue()
			}
		}
	}
	t.Fatalf("no metric %s{kind=%q}", name, kind)
	return 0
}

func TestNoFaultServesEverything(t *testing.T) {
	r := newRig(t)
	for range 10 {
		if w := r.do(t.Context(), "/rideshare.users.v1.UsersService/GetProfile"); w.Code != http.StatusNoContent {
			t.Fatalf("status %d with no fault set", w.Code)
		}
	}
	if got := r.metric(t, "rideshare_faults_active", ""); got != 0 {
		t.Fatalf("active faults %v, want 0", got)
	}
}

// TestLatencyIsHonoured: the request reaches the handler no sooner than the
// latency. (A lower bound: timers never fire early, so this cannot flake.)
func TestLatencyIsHonoured(t *testing.T) {
	r := newRig(t)
	const latency = 80 * time.Millisecond
	r.set(t, Fault{Latency: latency})
	start := time.Now()
	w := r.do(t.Context(), "/x")
	if took := time.Since(start); took < latency {
		t.Fatalf("answered after %v, before the %v latency", took, latency)
	}
	if w.Code != http.StatusNoContent || r.served.Load() != 1 {
		t.Fatalf("after the latency the request must be served: status %d, served %d", w.Code, r.served.Load())
	}
	if got := r.metric(t, "rideshare_faults_injected_total", KindLatency); got != 1 {
		t.Fatalf("latency faults counted %v, want 1", got)
	}
}

// TestLatencyStopsWhenTheCallerGivesUp: an hour of latency ends as soon as
// the request's context does, and the handler never runs.
func TestLatencyStopsWhenTheCallerGivesUp(t *testing.T) {
	r := newRig(t)
	r.set(t, Fault{Latency: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- r.do(ctx, "/x") }()
	testenv.Eventually(t, 5*time.Second, func() bool {
		return r.metric(t, "rideshare_faults_injected_total", KindLatency) == 1
	}, "the request never started waiting")
	cancel()
	select {
	case w := <-done:
		if r.served.Load() != 0 {
			t.Fatal("the handler ran although the caller gave up")
		}
		if w.Code != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503 for a canceled request", w.Code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the latency did not stop when the context was canceled")
	}
}

// TestDeadlineEndsLatency: a deadline cuts the wait short as a timeout.
func TestDeadlineEndsLatency(t *testing.T) {
	r := newRig(t)
	r.set(t, Fault{Latency: time.Hour})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	w := r.do(ctx, "/x")
	if w.Code != http.StatusGatewayTimeout || r.served.Load() != 0 {
		t.Fatalf("status %d served %d, want 504 and the handler not run", w.Code, r.served.Load())
	}
}

func TestErrorRate(t *testing.T) {
	const n = 1000
	for _, tc := range []struct {
		name     string
		fault    Fault
		min, max int
	}{
		{"always", Fault{ErrorRate: 1}, n, n},
		{"never", Fault{ErrorRate: 0, Latency: time.Nanosecond}, 0, 0},
		{"half", Fault{ErrorRate: 0.5}, 450, 550},
		{"a tenth", Fault{ErrorRate: 0.1}, 70, 130},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.set(t, tc.fault)
			failed := 0
			for range n {
				switch w := r.do(t.Context(), "/x"); w.Code {
				case http.StatusServiceUnavailable:
					failed++
				case http.StatusNoContent:
				default:
					t.Fatalf("unexpected status %d", w.Code)
				}
			}
			if failed < tc.min || failed > tc.max {
				t.Fatalf("%d of %d failed, want %d..%d", failed, n, tc.min, tc.max)
			}
			if int(r.served.Load()) != n-failed {
				t.Fatalf("served %d, want %d: a failed request must not reach the handler", r.served.Load(), n-failed)
			}
			if got := r.metric(t, "rideshare_faults_injected_total", KindError); got != float64(failed) {
				t.Fatalf("errors counted %v, want %d", got, failed)
			}
		})
	}
}

// TestPlainHTTPErrorIsAProblem: a plain HTTP caller gets problem+json with
// the stable code, and the status the fault asked for.
func TestPlainHTTPErrorIsAProblem(t *testing.T) {
	for _, status := range []int{0, http.StatusTooManyRequests, http.StatusInternalServerError} {
		r := newRig(t)
		r.set(t, Fault{ErrorRate: 1, Status: status})
		want := status
		if want == 0 {
			want = http.StatusServiceUnavailable
		}
		w := r.do(t.Context(), "/v1/rides")
		var p apperr.Problem
		if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
			t.Fatalf("status %d: body %q: %v", status, w.Body, err)
		}
		if w.Code != want || p.Status != want || p.Code != Code ||
			w.Header().Get("Content-Type") != "application/problem+json" || !strings.Contains(p.Detail, "fault injected") {
			t.Fatalf("fault status %d: got %d %v %+v", status, w.Code, w.Header(), p)
		}
	}
}

// TestHangUntilTheCallerGivesUp: a hung request answers only once its
// context ends, and never reaches the handler.
func TestHangUntilTheCallerGivesUp(t *testing.T) {
	r := newRig(t)
	r.set(t, Fault{Hang: true, ErrorRate: 1, Latency: time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan *httptest.ResponseRecorder, 1)
	go func() { done <- r.do(ctx, "/x") }()
	testenv.Eventually(t, 5*time.Second, func() bool {
		return r.metric(t, "rideshare_faults_injected_total", KindHang) == 1
	}, "the request never hung")
	select {
	case w := <-done:
		t.Fatalf("a hung request answered %d before its caller gave up", w.Code)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the hang did not end when the context was canceled")
	}
	if r.served.Load() != 0 {
		t.Fatal("a hung request reached the handler")
	}
	if r.metric(t, "rideshare_faults_injected_total", KindError) != 0 {
		t.Fatal("a hang also counted as an error")
	}
}

// TestRoutePrefix: a fault applies only under its route, and the most
// specific route wins where several match.
func TestRoutePrefix(t *testing.T) {
	r := newRig(t)
	r.set(t, Fault{Route: "/rideshare.payments.v1.PaymentsService/", ErrorRate: 1})
	r.set(t, Fault{Route: "/rideshare.payments.v1.PaymentsService/Capture", Latency: time.Nanosecond})
	for path, want := range map[string]int{
		"/rideshare.payments.v1.PaymentsService/Authorize": http.StatusServiceUnavailable,
		"/rideshare.payments.v1.PaymentsService/Void":      http.StatusServiceUnavailable,
		"/rideshare.payments.v1.PaymentsService/Capture":   http.StatusNoContent, // the longer route's fault: latency only
		"/rideshare.users.v1.UsersService/GetProfile":      http.StatusNoContent,
		"/v1/rides": http.StatusNoContent,
	} {
		if w := r.do(t.Context(), path); w.Code != want {
			t.Errorf("%s: status %d, want %d", path, w.Code, want)
		}
	}
}

// TestInfrastructureIsExempt: probes, metrics and the admin switch answer
// even under a fault on every route, so a hang can always be cleared.
func TestInfrastructureIsExempt(t *testing.T) {
	r := newRig(t)
	r.set(t, Fault{Hang: true})
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/admin/faults"} {
		if w := r.do(t.Context(), path); w.Code != http.StatusNoContent {
			t.Errorf("%s: status %d under a hang fault", path, w.Code)
		}
	}
}

// TestExpiry: a fault set "for" a while ends by itself at that time on the
// injector's clock.
func TestExpiry(t *testing.T) {
	r := newRig(t)
	r.set(t, Fault{ErrorRate: 1, For: time.Minute})
	r.set(t, Fault{Route: "/slow", Latency: time.Nanosecond}) // until cleared
	if got := r.metric(t, "rideshare_faults_active", ""); got != 2 {
		t.Fatalf("active faults %v, want 2", got)
	}
	r.clock.Advance(time.Minute - time.Second)
	if w := r.do(t.Context(), "/x"); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d one second before expiry, want 503", w.Code)
	}
	r.clock.Advance(time.Second)
	if w := r.do(t.Context(), "/x"); w.Code != http.StatusNoContent {
		t.Fatalf("status %d after expiry, want the request served", w.Code)
	}
	active := r.inj.Active()
	if len(active) != 1 || active[0].Route != "/slow" {
		t.Fatalf("active after expiry: %+v", active)
	}
	if got := r.metric(t, "rideshare_faults_active", ""); got != 1 {
		t.Fatalf("active faults gauge %v after expiry, want 1", got)
	}
}

func TestSetReplacesAndClears(t *testing.T) {
	r := newRig(t)
	r.set(t, Fault{ErrorRate: 1})
	r.set(t, Fault{Latency: time.Second}) // same route: replaces
	r.set(t, Fault{Route: "/a", Hang: true})
	got := r.inj.Active()
	if len(got) != 2 || got[0].Route != "" || got[0].ErrorRate != 0 || got[0].Latency != time.Second || got[1].Route != "/a" {
		t.Fatalf("after replace: %+v", got)
	}
	if got[0].SetAt != epoch || !got[0].ExpiresAt.IsZero() {
		t.Fatalf("stamps: %+v", got[0])
	}
	if !r.inj.Clear("/a") || r.inj.Clear("/a") {
		t.Fatal("Clear must report whether a fault was there")
	}
	if n := r.inj.ClearAll(); n != 1 || len(r.inj.Active()) != 0 {
		t.Fatalf("ClearAll removed %d, left %+v", n, r.inj.Active())
	}
	if w := r.do(t.Context(), "/x"); w.Code != http.StatusNoContent {
		t.Fatalf("status %d after clearing", w.Code)
	}
}

// TestNilMetricsAndDefaults: the zero Options work (what a quick wiring or
// a test without metrics passes).
func TestNilMetricsAndDefaults(t *testing.T) {
	inj := New(Options{})
	f, err := inj.Set(Fault{ErrorRate: 1, For: time.Minute})
	if err != nil || f.Status != DefaultStatus || f.ExpiresAt.Sub(f.SetAt) != time.Minute {
		t.Fatalf("set: %+v %v", f, err)
	}
	h := inj.Middleware(http.NotFoundHandler())
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/x", nil))
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d", w.Code)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		fault Fault
		want  string // part of the error; "" means valid
	}{
		{Fault{Latency: time.Second}, ""},
		{Fault{ErrorRate: 0.5, Status: 429, Route: "/a.B/"}, ""},
		{Fault{Hang: true, For: time.Minute}, ""},
		{Fault{}, "needs latency, error_rate or hang"},
		{Fault{ErrorRate: 1.5}, "between 0 and 1"},
		{Fault{ErrorRate: -0.1}, "between 0 and 1"},
		{Fault{Latency: -time.Second}, "latency must not be negative"},
		{Fault{Hang: true, For: -time.Second}, "for must not be negative"},
		{Fault{Hang: true, Route: "payments"}, "must be a path prefix"},
		{Fault{ErrorRate: 1, Status: 200}, "status 200"},
	} {
		err := tc.fault.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.fault, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: error %v, want one saying %q", tc.fault, err, tc.want)
		}
	}
}

func TestString(t *testing.T) {
	for f, want := range map[*Fault]string{
		{Latency: 3 * time.Second}:                             "latency 3s",
		{ErrorRate: 0.5, Route: "/p.S/A"}:                      "50% errors on /p.S/A",
		{ErrorRate: 1, Status: 429, Latency: time.Millisecond}: "latency 1ms, 100% errors (status 429)",
		{Hang: true}: "hang",
		{ErrorRate: 1.0 / 3, Status: DefaultStatus}: "33.33% errors",
	} {
		if got := f.String(); got != want {
			t.Errorf("%+v: %q, want %q", *f, got, want)
		}
	}
}
