package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/fleet"
	"github.com/rideshare-platform/rideshare/internal/geo"
)

// TestRidesSurviveCrashes requests rides while fast simulated drivers take
// them, and SIGKILLs every process of the platform in turn at random
// moments. After the faults stop it checks, from the outside, what a user
// and an auditor rely on: no ride lost, every saga terminal with nothing
// owed, each completed ride captured exactly once for its fare, every other
// hold released, and the ledger balanced. RIDESHARE_CRASH_SEED replays a run;
// RIDESHARE_CRASH_RIDES sets how many rides (default 30).
func TestRidesSurviveCrashes(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("RIDESHARE_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	total := 30
	if s := os.Getenv("RIDESHARE_CRASH_RIDES"); s != "" {
		total, _ = strconv.Atoi(s)
	}
	t.Logf("seed %d (RIDESHARE_CRASH_SEED=%d replays it), %d rides", seed, seed, total)
	rng := rand.New(rand.NewPCG(seed, 1))
	dir := t.TempDir()
	p := startPlatform(t, dir, "--set", "dispatch.offer_ttl=3s,rides.search_timeout=20s")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	drivers := fleet.New(fleet.Config{
		Gateway: p.state.GatewayURL, Drivers: 6, Password: "fleet-password-1", Area: geo.SanFrancisco, Seed: int64(seed),
		TimeScale: 300, AcceptDelay: [2]time.Duration{0, 100 * time.Millisecond},
		PingEvery: 300 * time.Millisecond, PollEvery: 150 * time.Millisecond, Stagger: 200 * time.Millisecond,
	})
	fleetDone := make(chan struct{})
	go func() { defer close(fleetDone); _ = drivers.Run(ctx) }()
	defer func() { cancel(); <-fleetDone }()

	const riderCount = 5
	riders := make([]*user, riderCount)
	for i := range riders {
		riders[i] = p.newRider(fmt.Sprintf("crash-rider-%d@example.com", i))
	}

	// Riders request rides through the faults, retrying each request with
	// its Idempotency-Key until the platform answers, as a phone app would.
	// Every sixth pays with a card that declines and another sixth cancels
	// soon after, so the compensations run under the faults too.
	var (
		mu      sync.Mutex
		owner   = map[string]*user{} // ride id → rider
		wg      sync.WaitGroup
		retries int
	)
	for i := range total {
		rider := riders[i%riderCount]
		from := randomPoint(rng)
		to := randomPoint(rng)
		body := trip(from, to)
		if i%6 == 5 {
			body["payment_method"] = "card_declined"
		}
		cancelAfter := time.Duration(0)
		if i%6 == 4 {
			cancelAfter = time.Duration(200+rng.IntN(1500)) * time.Millisecond
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 300 * time.Millisecond) // spread over the fault window
			key := fmt.Sprintf("crash-%d", i)
			for attempt := 0; ; attempt++ {
				r, err := p.tryDo("POST", "/v1/rides", rider.token, body, "Idempotency-Key", key)
				if err == nil && r.status == http.StatusAccepted {
					id := r.json(t)["id"].(string)
					mu.Lock()
					owner[id] = rider
					retries += attempt
					mu.Unlock()
					if cancelAfter > 0 {
						time.Sleep(cancelAfter)
						for {
							// 200 cancelled; 409 too late (the trip started or the ride ended).
							c, err := p.tryDo("POST", "/v1/rides/"+id+"/cancel", rider.token, nil)
							if err == nil && (c.status == http.StatusOK || c.status == http.StatusConflict) {
								return
							}
							time.Sleep(200 * time.Millisecond)
						}
					}
					return
				}
				if err == nil && r.status < 500 && r.status != http.StatusConflict {
					t.Errorf("ride request %d refused: %d %s", i, r.status, r.body)
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
		}()
	}

	// Kill every process in turn while the rides are being requested.
	victims := []string{"rides", "dispatch", "payments", "pricing", "broker", "notifications", "gateway", "users", "identity"}
	rng.Shuffle(len(victims), func(i, j int) { victims[i], victims[j] = victims[j], victims[i] })
	for _, name := range victims {
		time.Sleep(time.Duration(500+rng.IntN(1000)) * time.Millisecond)
		if pid := p.pidOf(name); pid != 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Logf("killed %s (pid %d)", name, pid)
		}
	}
	wg.Wait()
	if len(owner) != total {
		t.Fatalf("%d of %d ride requests were accepted", len(owner), total)
	}

	// After the faults: every ride terminal, and nothing owed behind it.
	counts := p.assertInvariants(owner, 150*time.Second)
	st := drivers.Stats()
	t.Logf("%d rides through a kill of every process: %v; request retries %d; fleet: %d completed, %d errors",
		total, counts, retries, st.Completed, st.Errors)
	if counts.Captured == 0 {
		t.Error("no ride completed: the test proved nothing about captures")
	}
}

// randomPoint is a point in the middle of the demo city, where the fleet roams.
func randomPoint(rng *rand.Rand) map[string]float64 {
	c := geo.SanFrancisco.Center()
	return map[string]float64{"lat": c.Lat + (rng.Float64()-0.5)*0.04, "lng": c.Lng + (rng.Float64()-0.5)*0.05}
}
