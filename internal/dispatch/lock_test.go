package dispatch

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"connectrpc.com/connect"
)

// TestDriverNeverHoldsTwoOffers: many searches start at once for different
// rides near one driver; exactly one is offered to them, and as each offer
// ends the driver gets at most one other ride at a time. On PostgreSQL the
// searches really run concurrently, so this is the lock's proof.
func TestDriverNeverHoldsTwoOffers(t *testing.T) {
	onEngines(t, func(t *testing.T, e *env) {
		e.online("solo", north(100))
		const n = 16
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				_, err := e.h.StartSearch(context.Background(), connect.NewRequest(e.searchReq(fmt.Sprintf("r%02d", i), 1)))
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		offered := e.offers("solo")
		if len(offered) != 1 {
			t.Fatalf("solo holds %d offers %v, want exactly 1", len(offered), offered)
		}
		// Declining passes the driver on to one other waiting ride at a time.
		seen := map[string]bool{}
		for range 3 {
			ride := offered[0]
			seen[ride] = true
			if _, err := e.respond("solo", ride, false); err != nil {
				t.Fatal(err)
			}
			e.clock.Advance(defaultConfig.retryEvery)
			e.tick()
			offered = e.offers("solo")
			if len(offered) != 1 || seen[offered[0]] {
				t.Fatalf("after declining %s, solo holds %v, want one new ride", ride, offered)
			}
		}
	})
}

// TestConcurrentSearchesShareDrivers: more rides than drivers, all at
// once: every driver holds exactly one offer, each ride at most one.
func TestConcurrentSearchesShareDrivers(t *testing.T) {
	onEngines(t, func(t *testing.T, e *env) {
		const drivers, nRides = 5, 20
		for i := range drivers {
			e.online(fmt.Sprintf("d%d", i), north(float64(100*(i+1))))
		}
		var wg sync.WaitGroup
		for i := range nRides {
			wg.Go(func() {
				if _, err := e.h.StartSearch(context.Background(), connect.NewRequest(e.searchReq(fmt.Sprintf("r%02d", i), 1))); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		held := map[string]string{}
		for i := range drivers {
			d := fmt.Sprintf("d%d", i)
			offers := e.offers(d)
			if len(offers) != 1 {
				t.Fatalf("%s holds %d offers %v, want 1", d, len(offers), offers)
			}
			if other, dup := held[offers[0]]; dup {
				t.Fatalf("ride %s offered to both %s and %s", offers[0], other, d)
			}
			held[offers[0]] = d
		}
		// And the accepted rides stay with their drivers under concurrent accepts.
		var acc sync.WaitGroup
		for ride, d := range held {
			acc.Go(func() {
				if res, err := e.respond(d, ride, true); err != nil || !res.GetAssigned() {
					t.Errorf("%s accepting %s: %v %v", d, ride, res, err)
				}
			})
		}
		acc.Wait()
		if ev := assignedEvents(e); len(ev) != drivers {
			t.Fatalf("%d DriverAssigned events, want %d", len(ev), drivers)
		}
	})
}
