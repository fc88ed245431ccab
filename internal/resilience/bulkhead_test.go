package resilience

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// TestBulkheadBoundsASlowDependency: while a slow payments holds all its
// slots, one more call is refused within the bulkhead's short wait (not
// after the slow calls), and pricing is not affected at all.
func TestBulkheadBoundsASlowDependency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, map[string]string{
			"resilience.payments.bulkhead":      "2",
			"resilience.payments.bulkhead_wait": "10ms",
			"resilience.payments.timeout":       "1m",
		}, false)
		release := make(chan struct{})
		e.payments.set(hang(release))
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				if err := e.read(context.Background()); err != nil {
					t.Errorf("a slow call that held a slot: %v", err)
				}
			})
		}
		synctest.Wait()
		if s := snapshotOf(t, e, "payments"); s.Bulkhead.InUse != 2 || s.Bulkhead.Limit != 2 {
			t.Fatalf("bulkhead %+v, want 2 of 2 in use", s.Bulkhead)
		}

		start := time.Now()
		err := e.read(context.Background())
		if !apperr.Is(err, apperr.Unavailable) || apperr.CodeOf(err) != CodeBulkheadFull {
			t.Fatalf("a third call: %v (%s), want Unavailable bulkhead_full", err, apperr.CodeOf(err))
		}
		if took := time.Since(start); took > 10*time.Millisecond {
			t.Fatalf("refused after %s, want within the 10 ms wait", took)
		}
		if n := e.payments.calls.Load(); n != 2 {
			t.Fatalf("%d calls reached payments, want 2", n)
		}
		for range 10 {
			if err := e.surge(context.Background()); err != nil {
				t.Fatalf("pricing while payments is full: %v", err)
			}
		}

		close(release)
		wg.Wait()
		if err := e.read(context.Background()); err != nil {
			t.Fatalf("after the slow calls ended: %v", err)
		}
		if s := snapshotOf(t, e, "payments"); s.Bulkhead.InUse != 0 {
			t.Fatalf("%d slots still held", s.Bulkhead.InUse)
		}
	})
}

func snapshotOf(t *testing.T, e *env, peer string) DependencyState {
	t.Helper()
	for _, s := range e.table.Snapshot() {
		if s.Peer == peer {
			return s
		}
	}
	t.Fatalf("no dependency %s", peer)
	return DependencyState{}
}
