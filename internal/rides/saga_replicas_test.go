package rides

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestSagaOnTwoReplicas runs the saga workers of two replicas on one
// database at once, as two rides processes do: every step of every ride is
// claimed by one of them and its RPC made once (one quote, one hold, one
// search per ride), although both keep finding the same due rides. The
// claim is an UPDATE that re-checks the lease on the row it locks, so the
// replica that comes second claims nothing.
func TestSagaOnTwoReplicas(t *testing.T) {
	for _, eng := range []struct {
		name string
		dsn  func(t *testing.T) string
	}{
		{"sqlite", func(t *testing.T) string { return t.TempDir() + "/rides.db" }},
		{"postgres", func(t *testing.T) string { return testenv.PostgresDSN(t) }},
	} {
		t.Run(eng.name, func(t *testing.T) {
			dsn := eng.dsn(t)
			clock := newFakeClock()
			pr, pay, disp := newFakePricing(), newFakePayments(), newFakeDispatch()
			a := build(t, testenv.MigratedDB(t, dsn, Service.Migrations), clock, pr, pay, disp)
			b := build(t, testenv.MigratedDB(t, dsn, Service.Migrations), clock, pr, pay, disp)

			const rides = 30
			ids := make([]string, rides)
			for i := range ids {
				ids[i] = a.request(fmt.Sprintf("rider-%d", i)).GetId()
			}
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for _, h := range []*harness{a, b, a, b} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := h.saga.runDue(context.Background()); err != nil {
						errs <- err
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Errorf("saga worker: %v", err)
			}
			a.drive() // whatever a worker left due when it stopped looking

			for _, id := range ids {
				if r := a.ride(id); r.status != StatusSearching {
					t.Errorf("ride %s is %s, want searching", id, r.status)
				}
				if holds, _, _ := pay.counts(id); holds != 1 {
					t.Errorf("ride %s: %d holds", id, holds)
				}
				if n := len(disp.searchesOf(id)); n != 1 {
					t.Errorf("ride %s: %d searches", id, n)
				}
			}
			if pr.calls != rides || pay.callCount("authorize") != rides || disp.calls["start_search"] != rides {
				t.Fatalf("RPCs made: %d quotes, %d authorizations, %d searches; want %d of each, one per ride",
					pr.calls, pay.callCount("authorize"), disp.calls["start_search"], rides)
			}
		})
	}
}
