package dispatch

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestTimersOnTwoReplicas runs the timer worker of two replicas on one
// database at the same moments, as two dispatch processes polling the
// same rows do: every expired offer is handled once (one "expired" event,
// one next offer per ride, no driver offered two rides), and every search
// out of time fails once. Each timer's transaction re-reads its row under
// the search's row lock, so the replica that comes second finds the work
// done. On SQLite the two replicas are two pools on one file.
func TestTimersOnTwoReplicas(t *testing.T) {
	for _, eng := range []struct {
		name string
		dsn  func(t *testing.T) string
	}{
		{"sqlite", func(t *testing.T) string { return t.TempDir() + "/dispatch.db" }},
		{"postgres", func(t *testing.T) string { return testenv.PostgresDSN(t) }},
	} {
		t.Run(eng.name, func(t *testing.T) {
			dsn := eng.dsn(t)
			clock := newClock()
			a := newEnvOn(t, testenv.MigratedDB(t, dsn, Service.Migrations), clock)
			const rides, drivers = 10, 20
			for i := range drivers {
				a.online(fmt.Sprintf("d%02d", i), north(float64(100*(i+1))))
			}
			// b starts after the drivers went online, so it loads them from
			// the database as a replica starting up does.
			b := newEnvOn(t, testenv.MigratedDB(t, dsn, Service.Migrations), clock)

			first := map[string]string{}
			for i := range rides {
				ride := fmt.Sprintf("r%02d", i)
				a.search(a.searchReq(ride, 1))
				if first[ride] = a.holder(ride); first[ride] == "" {
					t.Fatalf("%s was offered to nobody", ride)
				}
			}

			clock.Advance(defaultConfig.offerTTL)
			concurrentTicks(t, a, b)
			expired := map[string]int{}
			for _, ev := range declinedEvents(a) {
				if ev.GetReason() == offerExpired {
					expired[ev.GetRideId()]++
				}
			}
			holders := map[string]string{}
			for i := range rides {
				ride := fmt.Sprintf("r%02d", i)
				if expired[ride] != 1 {
					t.Errorf("%s: its offer expired %d times, want once", ride, expired[ride])
				}
				h := a.holder(ride) // fails the test on two open offers
				switch {
				case h == "":
					t.Errorf("%s was not passed on to another driver", ride)
				case h == first[ride]:
					t.Errorf("%s was offered to %s again after that offer expired", ride, h)
				case holders[h] != "":
					t.Errorf("%s holds offers for %s and %s", h, holders[h], ride)
				}
				holders[h] = ride
			}

			clock.Advance(time.Minute) // past every search's deadline
			concurrentTicks(t, a, b)
			failed := map[string]int{}
			for _, ev := range failedEvents(a) {
				failed[ev.GetRideId()]++
			}
			for i := range rides {
				ride := fmt.Sprintf("r%02d", i)
				if failed[ride] != 1 {
					t.Errorf("%s: search failed %d times, want once", ride, failed[ride])
				}
				if h := a.holder(ride); h != "" {
					t.Errorf("%s still offered to %s after its deadline", ride, h)
				}
			}
			if n := len(failedEvents(a)); n != rides {
				t.Errorf("%d SearchFailed events, want %d", n, rides)
			}
		})
	}
}

// concurrentTicks runs each replica's timer tick several times at once, so
// both keep finding the same due rows while the other handles them.
func concurrentTicks(t *testing.T, replicas ...*env) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 16*len(replicas))
	for _, e := range replicas {
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := e.d.tick(context.Background()); err != nil {
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("timer tick: %v", err)
	}
}
