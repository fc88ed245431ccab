package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// rideStream is the riders of the fault tests: Rides requests spread evenly
// over Window from Start, each retried with its Idempotency-Key until the
// platform answers, as a phone app would, so a ride is accepted exactly
// once whatever died under it. A sixth pay with a card that declines and a
// sixth are cancelled soon after (each cancel retried until answered), so
// that the compensations run under the faults too.
type rideStream struct {
	Riders []*user
	Rides  int
	Start  time.Time
	Window time.Duration
	// GiveUp fails the test for a request or cancel still unanswered then.
	GiveUp time.Time
	// Key prefixes the Idempotency-Keys, one per test.
	Key string
	RNG *rand.Rand
}

// streamedRides is what a rideStream's riders were given.
type streamedRides struct {
	owner         map[string]*user // ride id → rider: every ride accepted
	declinedCard  map[string]bool  // ride id → paid with the declining card
	retries       int64            // ride requests sent more than once
	cancelRetries int64
	refused       int64 // requests and cancels refused with a 4xx
}

// requestRides starts s's riders and returns at once, so that the test can
// run its faults meanwhile; wait returns once every rider is done.
func (p *runningPlatform) requestRides(s rideStream) (wait func() streamedRides) {
	t := p.t
	var (
		mu                     sync.Mutex
		wg                     sync.WaitGroup
		retries, cancelRetries atomic.Int64
		refused                atomic.Int64
		got                    = streamedRides{owner: map[string]*user{}, declinedCard: map[string]bool{}}
		every                  = s.Window / time.Duration(s.Rides)
	)
	// A platform that refuses one request tends to refuse a stretch of
	// them: the first few say why, the count says how many.
	refusal := func(format string, args ...any) {
		switch n := refused.Add(1); {
		case n <= 5:
			t.Errorf(format, args...)
		case n == 6:
			t.Error("further refusals are counted, not shown")
		}
	}
	for i := range s.Rides {
		rider := s.Riders[i%len(s.Riders)]
		body := trip(randomPoint(s.RNG), randomPoint(s.RNG))
		declines := i%6 == 5
		if declines {
			body["payment_method"] = "card_declined"
		}
		cancelAfter := time.Duration(0)
		if i%6 == 4 {
			cancelAfter = 200*time.Millisecond + time.Duration(s.RNG.Int64N(int64(1500*time.Millisecond)))
		}
		wg.Go(func() {
			time.Sleep(time.Until(s.Start.Add(time.Duration(i) * every)))
			key := fmt.Sprintf("%s-%d", s.Key, i)
			var id string
			for attempt := 0; ; attempt++ {
				if time.Now().After(s.GiveUp) {
					t.Errorf("ride request %d was never accepted (%d tries)", i, attempt)
					return
				}
				if attempt > 0 {
					retries.Add(1)
					time.Sleep(200 * time.Millisecond)
				}
				r, err := p.tryDo("POST", "/v1/rides", rider.token, body, "Idempotency-Key", key)
				if err == nil && r.status == http.StatusAccepted {
					var ride struct{ ID string }
					if err := json.Unmarshal(r.body, &ride); err != nil || ride.ID == "" {
						t.Errorf("ride request %d: 202 with %s (%v)", i, r.body, err)
						return
					}
					id = ride.ID
					break
				}
				// A dead process (5xx, no answer) or the first try still
				// running (409) is retried; anything else is a refusal.
				if err == nil && r.status < 500 && r.status != http.StatusConflict {
					refusal("ride request %d refused: %d %s", i, r.status, r.body)
					return
				}
			}
			mu.Lock()
			got.owner[id], got.declinedCard[id] = rider, declines
			mu.Unlock()
			if cancelAfter == 0 {
				return
			}
			time.Sleep(cancelAfter)
			for attempt := 0; ; attempt++ {
				if time.Now().After(s.GiveUp) {
					t.Errorf("the cancel of ride %s was never answered (%d tries)", id, attempt)
					return
				}
				if attempt > 0 {
					cancelRetries.Add(1)
					time.Sleep(200 * time.Millisecond)
				}
				// 200 cancelled; 409 too late (the trip started or the ride ended).
				c, err := p.tryDo("POST", "/v1/rides/"+id+"/cancel", rider.token, nil)
				if err == nil && (c.status == http.StatusOK || c.status == http.StatusConflict) {
					return
				}
				if err == nil && c.status < 500 {
					refusal("cancel of ride %s refused: %d %s", id, c.status, c.body)
					return
				}
			}
		})
	}
	return func() streamedRides {
		wg.Wait()
		got.retries, got.cancelRetries, got.refused = retries.Load(), cancelRetries.Load(), refused.Load()
		return got
	}
}
