package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/fleet"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// BenchmarkRides measures whole rides on the whole platform: every service
// its own process, simulated drivers that accept at once and drive 2000
// times faster than real time, riders requesting rides back to back. It
// reports completed rides per second and the time from a ride's request to
// its driver being assigned, read from the platform's own timestamps (the
// ride's created_at and the driver_assigned event). Riders follow each ride
// on its event stream rather than polling; drivers poll for offers every
// 100 ms, which is part of the measured assignment time (50 ms on average).
//
//	go test -run '^$' -bench BenchmarkRides -benchtime 300x ./cmd/rideshare
//
// RIDESHARE_BENCH_RIDERS (default 16) and RIDESHARE_BENCH_DRIVERS (40) size it.
func BenchmarkRides(b *testing.B) {
	p := startPlatform(b, b.TempDir(), "--set", "dispatch.offer_ttl=5s,rides.search_timeout=30s")
	drivers := fleet.New(fleet.Config{
		Gateway: p.state.GatewayURL, Drivers: envInt("RIDESHARE_BENCH_DRIVERS", 40), Password: "fleet-password-1", Area: geo.SanFrancisco, Seed: 1,
		TimeScale: 2000, AcceptDelay: [2]time.Duration{time.Millisecond, time.Millisecond},
		PingEvery: time.Second, PollEvery: 100 * time.Millisecond, Stagger: 500 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = drivers.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testenv.Eventually(b, 30*time.Second, func() bool { return drivers.Stats().Online == int64(envInt("RIDESHARE_BENCH_DRIVERS", 40)) }, "the fleet did not come online")

	riderCount := envInt("RIDESHARE_BENCH_RIDERS", 16)
	riders := make([]*user, riderCount)
	for i := range riders {
		riders[i] = p.newRider(fmt.Sprintf("bench-rider-%d@example.com", i))
	}
	var (
		mu        sync.Mutex
		assign    []time.Duration
		completed int
	)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for r := range riderCount {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rider := riders[r]
			for i := r; i < b.N; i += riderCount {
				body := trip(randomCityPoint(i), randomCityPoint(i+7))
				res := rider.do("POST", "/v1/rides", body, "Idempotency-Key", fmt.Sprintf("bench-%d", i))
				if res.status != http.StatusAccepted {
					b.Errorf("request: %d %s", res.status, res.body)
					return
				}
				ride := res.json(b)
				created, _ := time.Parse(time.RFC3339Nano, ride["created_at"].(string))
				// The ride's event stream pushes every status until the
				// ride ends: no polling load on the platform.
				assigned, ended := followRide(b, rider, ride["id"].(string))
				mu.Lock()
				if ended == "completed" {
					completed++
					if !assigned.IsZero() {
						assign = append(assign, assigned.Sub(created))
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()

	slices.Sort(assign)
	pct := func(q float64) float64 {
		if len(assign) == 0 {
			return 0
		}
		return float64(assign[min(len(assign)-1, int(q*float64(len(assign))))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(completed)/elapsed.Seconds(), "rides/s")
	b.ReportMetric(pct(0.50), "assign-p50-ms")
	b.ReportMetric(pct(0.99), "assign-p99-ms")
	b.ReportMetric(float64(completed), "completed")
}

// followRide reads the ride's server-sent events until the ride ends, and
// returns when its driver was assigned and how it ended.
func followRide(b *testing.B, u *user, id string) (assigned time.Time, ended string) {
	req, _ := http.NewRequest("GET", u.p.state.GatewayURL+"/v1/rides/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+u.token)
	res, err := u.p.client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev struct {
			Status string    `json:"status"`
			Time   time.Time `json:"time"`
		}
		if json.Unmarshal([]byte(data), &ev) != nil {
			continue
		}
		if ev.Status == "driver_assigned" {
			assigned = ev.Time
		}
		if terminalStatus[ev.Status] {
			return assigned, ev.Status
		}
	}
	return assigned, ""
}

// randomCityPoint spreads trips over the middle of the demo city,
// deterministically.
func randomCityPoint(i int) map[string]float64 {
	c := geo.SanFrancisco.Center()
	f := func(k int) float64 { return float64((i*7919+k*104729)%1000)/1000 - 0.5 }
	return map[string]float64{"lat": c.Lat + f(1)*0.04, "lng": c.Lng + f(2)*0.05}
}

func envInt(key string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(key)); err == nil && n > 0 {
		return n
	}
	return def
}
