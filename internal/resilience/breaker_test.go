package resilience

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// breakerSettings: opens at half the calls failing once 10 were made in
// 10 s; open 5 s; 3 probes.
var breakerSettings = map[string]string{
	"resilience.payments.breaker_min_calls":    "10",
	"resilience.payments.breaker_failure_rate": "0.5",
	"resilience.payments.breaker_window":       "10s",
	"resilience.payments.breaker_open_for":     "5s",
	"resilience.payments.breaker_probes":       "3",
}

func breakerState(t *testing.T, e *env, peer string) string {
	t.Helper()
	for _, s := range e.table.Snapshot() {
		if s.Peer == peer {
			return s.Breaker.State
		}
	}
	t.Fatalf("no dependency %s", peer)
	return ""
}

// openBreaker fails payments' first ten calls, which opens its breaker.
func openBreaker(t *testing.T, e *env) {
	t.Helper()
	e.payments.set(down)
	for i := range 10 {
		if breakerState(t, e, "payments") != "closed" {
			t.Fatalf("open after %d calls, before the minimum of 10", i)
		}
		if err := e.write(context.Background()); !apperr.Is(err, apperr.Unavailable) || apperr.CodeOf(err) == CodeCircuitOpen {
			t.Fatalf("call %d: %v, want the peer's own failure", i+1, err)
		}
	}
	if got := breakerState(t, e, "payments"); got != "open" {
		t.Fatalf("after 10 failed calls the breaker is %s, want open", got)
	}
}

// TestBreakerOpensFailsFastProbesAndCloses walks the breaker's whole cycle
// on a simulated clock.
func TestBreakerOpensFailsFastProbesAndCloses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, breakerSettings, false)
		openBreaker(t, e)

		// Open: nothing reaches the peer, every call fails at once, for
		// 5 s, retries or not.
		start := time.Now()
		for range 50 {
			for _, call := range []func(*env, context.Context) error{(*env).write, (*env).read} {
				err := call(e, context.Background())
				if !apperr.Is(err, apperr.Unavailable) || apperr.CodeOf(err) != CodeCircuitOpen {
					t.Fatalf("open breaker: %v (%s), want Unavailable circuit_open", err, apperr.CodeOf(err))
				}
			}
		}
		if n := e.payments.calls.Load(); n != 10 {
			t.Fatalf("%d calls reached the peer through an open breaker", n-10)
		}
		if took := time.Since(start); took != 0 {
			t.Fatalf("failing fast took %s", took)
		}
		time.Sleep(4900 * time.Millisecond)
		if err := e.write(context.Background()); apperr.CodeOf(err) != CodeCircuitOpen || e.payments.calls.Load() != 10 {
			t.Fatalf("4.9 s after opening: %v; want still open", err)
		}

		// Half-open after 5 s: three probes at a time go through, the
		// fourth caller is refused while they run.
		time.Sleep(100 * time.Millisecond)
		release := make(chan struct{})
		e.payments.set(hang(release))
		var wg sync.WaitGroup
		probeErrs := make(chan error, 3)
		for range 3 {
			wg.Go(func() { probeErrs <- e.write(context.Background()) })
		}
		synctest.Wait()
		if n := e.payments.calls.Load(); n != 13 {
			t.Fatalf("%d probes reached the peer, want 3", n-10)
		}
		if got := breakerState(t, e, "payments"); got != "half-open" {
			t.Fatalf("probing: breaker %s, want half-open", got)
		}
		if err := e.write(context.Background()); apperr.CodeOf(err) != CodeCircuitOpen {
			t.Fatalf("a fourth call while three probe: %v, want circuit_open", err)
		}
		close(release)
		wg.Wait()
		close(probeErrs)
		for err := range probeErrs {
			if err != nil {
				t.Fatalf("probe: %v", err)
			}
		}

		// Three successful probes closed it: calls flow again.
		if got := breakerState(t, e, "payments"); got != "closed" {
			t.Fatalf("after 3 good probes: breaker %s, want closed", got)
		}
		e.payments.set(nil)
		for range 20 {
			if err := e.write(context.Background()); err != nil {
				t.Fatalf("closed again: %v", err)
			}
		}
	})
}

// TestBreakerReopensOnAFailedProbe: a probe that fails sends the breaker
// back to open for another full delay.
func TestBreakerReopensOnAFailedProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, breakerSettings, false)
		openBreaker(t, e)
		time.Sleep(5 * time.Second)
		if err := e.write(context.Background()); !apperr.Is(err, apperr.Unavailable) || apperr.CodeOf(err) == CodeCircuitOpen {
			t.Fatalf("probe: %v, want the peer's failure", err)
		}
		if got := breakerState(t, e, "payments"); got != "open" {
			t.Fatalf("after a failed probe: %s, want open", got)
		}
		time.Sleep(4 * time.Second)
		if err := e.write(context.Background()); apperr.CodeOf(err) != CodeCircuitOpen || e.payments.calls.Load() != 11 {
			t.Fatalf("4 s after the failed probe: %v, %d calls; want still open", err, e.payments.calls.Load())
		}
	})
}

// TestBreakerIgnoresAnswers: a peer answering NotFound is working; its
// breaker never opens on that.
func TestBreakerIgnoresAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, breakerSettings, false)
		e.payments.set(func(context.Context, int64) error { return apperr.E(apperr.NotFound, "", "no such payment") })
		for range 100 {
			if err := e.write(context.Background()); !apperr.Is(err, apperr.NotFound) {
				t.Fatalf("%v, want NotFound", err)
			}
		}
		if got := breakerState(t, e, "payments"); got != "closed" {
			t.Fatalf("breaker %s after 100 NotFound answers", got)
		}
	})
}

// TestBreakerIsPerDependency: payments' open breaker leaves pricing alone.
func TestBreakerIsPerDependency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, breakerSettings, false)
		openBreaker(t, e)
		if err := e.surge(context.Background()); err != nil {
			t.Fatalf("pricing while payments' breaker is open: %v", err)
		}
	})
}

// TestRetryRefusedByTheBreaker: a call whose own failed attempt opens the
// breaker was not refused at once: the peer failed it, so its caller hears
// the peer's failure and the metrics count a failure, as when the retry
// budget refuses the retry. Only the calls after it are circuit_open.
func TestRetryRefusedByTheBreaker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, breakerSettings, false)
		e.payments.set(down)
		for range 9 {
			_ = e.write(context.Background())
		}
		err := e.read(context.Background()) // its first attempt is the tenth failure: the breaker opens and refuses the retry
		if !apperr.Is(err, apperr.Unavailable) || apperr.CodeOf(err) == CodeCircuitOpen {
			t.Fatalf("the call that opened the breaker: %v (%s), want the peer's own failure", err, apperr.CodeOf(err))
		}
		if n := e.payments.calls.Load(); n != 10 || breakerState(t, e, "payments") != "open" {
			t.Fatalf("%d calls reached the peer, breaker %s; want 10 and open", n, breakerState(t, e, "payments"))
		}
		if err := e.read(context.Background()); apperr.CodeOf(err) != CodeCircuitOpen {
			t.Fatalf("the next call: %v, want circuit_open", err)
		}
		for _, c := range []struct {
			series string
			want   float64
		}{
			{`rideshare_dependency_calls_total{peer="payments",result="failure"}`, 10},
			{`rideshare_dependency_calls_total{peer="payments",result="circuit_open"}`, 1},
		} {
			if got := gauge(t, e, c.series); got != c.want {
				t.Errorf("%s = %v, want %v", c.series, got, c.want)
			}
		}
	})
}
