package resilience

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// TestRetriesOnlyIdempotentCalls runs over a real connection: only calls
// that may be repeated are, at most three times in all, and only on
// transient failures.
func TestRetriesOnlyIdempotentCalls(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name   string
		call   func(*env, context.Context) error
		answer func(context.Context, int64) error
		calls  int64
		ok     bool
	}{
		{"write without key, peer down", (*env).write, down, 1, false},
		{"write with key, peer down", (*env).keyedWrite, down, 3, false},
		{"read, peer down", (*env).read, down, 3, false},
		{"read, peer back on the third attempt", (*env).read, func(ctx context.Context, n int64) error {
			if n < 3 {
				return down(ctx, n)
			}
			return nil
		}, 3, true},
		{"read, overloaded peer", (*env).read, func(context.Context, int64) error {
			return apperr.E(apperr.RateLimited, "", "slow down")
		}, 3, false},
		{"read, not found", (*env).read, func(context.Context, int64) error {
			return apperr.E(apperr.NotFound, "", "no such payment")
		}, 1, false},
		{"read, internal error", (*env).read, func(context.Context, int64) error {
			return errors.New("bug")
		}, 1, false},
		{"read, peer's own breaker open", (*env).read, func(context.Context, int64) error {
			return apperr.E(apperr.Unavailable, CodeCircuitOpen, "its dependency is down")
		}, 1, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, fast(), true)
			e.payments.set(c.answer)
			err := c.call(e, ctx)
			if (err == nil) != c.ok {
				t.Fatalf("err = %v, want ok=%v", err, c.ok)
			}
			if got := e.payments.calls.Load(); got != c.calls {
				t.Fatalf("%d calls reached the peer, want %d", got, c.calls)
			}
		})
	}
}

// TestErrorsKeepTheirClassification: after the policies, a caller sees the
// peer's own error, not a wrapper.
func TestErrorsKeepTheirClassification(t *testing.T) {
	e := newEnv(t, fast(), true)
	e.payments.set(func(context.Context, int64) error {
		return apperr.E(apperr.NotFound, "no_payment", "no such payment")
	})
	if err := e.read(context.Background()); apperr.KindOf(err) != apperr.NotFound || apperr.CodeOf(err) != "no_payment" {
		t.Fatalf("got %v (%s)", err, apperr.CodeOf(err))
	}
	e.payments.set(down)
	if err := e.keyedWrite(context.Background()); apperr.KindOf(err) != apperr.Unavailable || apperr.CodeOf(err) != "unavailable" {
		t.Fatalf("after retries: %v (%s), want the peer's Unavailable", err, apperr.CodeOf(err))
	}
}

// TestTimeoutsAndTheCallersDeadline: a per-attempt timeout is retried; the
// caller's own deadline or cancellation never is.
func TestTimeoutsAndTheCallersDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, fast("resilience.payments.timeout", "100ms"), false)
		never := make(chan struct{})
		defer close(never)
		e.payments.set(hang(never))

		// Each attempt times out after 100 ms; the caller has 10 s.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		err := e.read(ctx)
		if n := e.payments.calls.Load(); n != 3 || !apperr.Is(err, apperr.Timeout) {
			t.Fatalf("attempt timeouts: %d calls, %v; want 3 calls, Timeout", n, err)
		}
		if took := time.Since(start); took > 400*time.Millisecond {
			t.Fatalf("three 100 ms attempts took %s", took)
		}

		// The caller's deadline (50 ms) is sooner than the attempt's: one
		// attempt, no retry however idempotent.
		e.payments.calls.Store(0)
		ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := e.read(ctx); e.payments.calls.Load() != 1 || !apperr.Is(err, apperr.Timeout) {
			t.Fatalf("caller's deadline: %d calls, %v; want 1, Timeout", e.payments.calls.Load(), err)
		}

		// The caller gives up: no retry either.
		e.payments.calls.Store(0)
		ctx, cancel = context.WithCancel(context.Background())
		go func() { time.Sleep(30 * time.Millisecond); cancel() }()
		if err := e.read(ctx); e.payments.calls.Load() != 1 || err == nil {
			t.Fatalf("caller canceled: %d calls, %v; want 1 and an error", e.payments.calls.Load(), err)
		}
	})
}

// TestAttemptNeverOutlivesTheCaller: the deadline a peer is given (from
// the wire) is the policy's timeout, or the caller's remaining time when
// that is sooner, never more.
func TestAttemptNeverOutlivesTheCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, fast("resilience.payments.timeout", "1s"), false)
		for _, c := range []struct {
			caller time.Duration // 0: no deadline
			want   time.Duration
		}{
			{0, time.Second},
			{5 * time.Second, time.Second},
			{300 * time.Millisecond, 300 * time.Millisecond},
		} {
			ctx := context.Background()
			if c.caller > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, c.caller)
				defer cancel()
			}
			if err := e.read(ctx); err != nil {
				t.Fatal(err)
			}
			given := e.payments.deadlines()
			if got := given[len(given)-1]; got > c.want || got < c.want-time.Millisecond {
				t.Errorf("caller with %s: the peer was given %s, want %s", c.caller, got, c.want)
			}
		}
	})
}

// TestRetryBudget: against a peer that is down, retries add at most a
// tenth to the calls it receives, however long the outage and whether
// callers call one at a time or together.
func TestRetryBudget(t *testing.T) {
	for _, callers := range []int{1, 8} {
		synctest.Test(t, func(t *testing.T) {
			e := newEnv(t, fast(), false)
			e.payments.set(down)
			const perCaller = 2000 / 8 * 8
			done := make(chan struct{})
			for range callers {
				go func() {
					defer func() { done <- struct{}{} }()
					for range perCaller / callers {
						if err := e.read(context.Background()); err == nil {
							t.Error("a call to a peer that is down succeeded")
						}
					}
				}()
			}
			for range callers {
				<-done
			}
			ratio := float64(e.payments.calls.Load()) / perCaller
			t.Logf("%d callers: %d requests reached the peer as %d calls (%.3f)", callers, perCaller, e.payments.calls.Load(), ratio)
			if ratio > 1.1 {
				t.Errorf("%d callers: calls/requests = %.3f, want <= 1.1", callers, ratio)
			}
			if ratio <= 1 {
				t.Errorf("%d callers: no retry at all (%.3f): the budget allows some", callers, ratio)
			}
		})
	}
}
