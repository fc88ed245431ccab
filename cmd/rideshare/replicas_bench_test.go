package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/fleet"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// BenchmarkRidesOnPostgres measures whole rides per second with every
// service's data in PostgreSQL, run once with one process of every service
// and once with two (gateway and identity included), the same riders, fleet
// and settings otherwise. Riders request rides back to back (closed loop)
// and follow each on its event stream to its end; simulated drivers accept
// at once and drive 2000 times faster than real time. It reports completed
// rides per second and the request-to-assigned time read from the
// platform's own timestamps; the ratio of the two rides/s figures is what a
// second replica of everything buys on this machine.
//
//	go test -run '^$' -bench BenchmarkRidesOnPostgres -benchtime 200x ./cmd/rideshare
//
// The broker is up's embedded one in both runs, so that only the number of
// service processes differs; RIDESHARE_BENCH_CLUSTER=1 puts a three-member
// JetStream cluster (in this process, every stream replicated three times)
// in its place. RIDESHARE_BENCH_RIDERS (default 32) and
// RIDESHARE_BENCH_DRIVERS (40) size it. It needs RIDESHARE_TEST_POSTGRES.
func BenchmarkRidesOnPostgres(b *testing.B) {
	for _, n := range []int{1, 2} {
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) {
			args := []string{"--set", "dispatch.offer_ttl=5s,rides.search_timeout=30s"}
			if n > 1 {
				args = append(args, "--replicas", everyService(n))
			}
			if os.Getenv("RIDESHARE_BENCH_CLUSTER") != "" {
				c := testenv.JetStreamCluster(b, 3)
				args = append(args, "--nats", c.URL(), "--stream-replicas", "3")
			}
			p, _, _ := startOnPostgres(b, b.TempDir(), args...)
			p.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: time.Minute}
			drivers := envInt("RIDESHARE_BENCH_DRIVERS", 40)
			fl := fleet.New(fleet.Config{
				Gateway: p.state.GatewayURL, Drivers: drivers, Password: "fleet-password-1", Area: geo.SanFrancisco, Seed: 1,
				TimeScale: 2000, AcceptDelay: [2]time.Duration{time.Millisecond, time.Millisecond},
				PingEvery: time.Second, PollEvery: 100 * time.Millisecond, Stagger: 500 * time.Millisecond,
			})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); _ = fl.Run(ctx) }()
			defer func() { cancel(); <-done }()
			testenv.Eventually(b, 60*time.Second, func() bool { return fl.Stats().Online == int64(drivers) }, "the fleet did not come online")
			riders := make([]*user, envInt("RIDESHARE_BENCH_RIDERS", 32))
			for i := range riders {
				riders[i] = p.newRider(fmt.Sprintf("pg-bench-rider-%d@example.com", i))
			}

			var seq atomic.Int64 // idempotency keys, unique across the runs
			b.Run("closed-loop", func(b *testing.B) {
				var (
					mu                sync.Mutex
					completed, failed int
					assign            []time.Duration
					shed              atomic.Int64
				)
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for r, rider := range riders {
					wg.Go(func() {
						for i := r; i < b.N; i += len(riders) {
							ended, assigned := rideToEnd(b, rider, int(seq.Add(1)), &shed)
							mu.Lock()
							if ended == "completed" {
								completed++
								assign = append(assign, assigned)
							} else {
								failed++
							}
							mu.Unlock()
						}
					})
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				slices.Sort(assign)
				b.ReportMetric(float64(completed)/elapsed.Seconds(), "rides/s")
				if len(assign) > 0 {
					b.ReportMetric(float64(assign[len(assign)/2].Microseconds())/1000, "assign-p50-ms")
					b.ReportMetric(float64(assign[len(assign)*99/100].Microseconds())/1000, "assign-p99-ms")
				}
				b.ReportMetric(float64(failed), "not-completed")
				b.ReportMetric(float64(shed.Load()), "shed-retries")
			})
		})
	}
}

// rideToEnd requests ride i as rider and follows its event stream until it
// ends, returning how it ended and how long after its request (by the
// platform's clock) a driver was assigned. It counts in shed the requests
// refused for load and tried again.
func rideToEnd(b *testing.B, rider *user, i int, shed *atomic.Int64) (ended string, assigned time.Duration) {
	// A server past its capacity sheds with 503 (or the gateway's limit
	// with 429): the rider tries again with the same key, as an app would.
	// (Not rider.do: this goroutine may not end the benchmark.)
	var res response
	var err error
	for try := 0; ; try++ {
		res, err = rider.p.tryDo("POST", "/v1/rides", rider.token, trip(randomCityPoint(i), randomCityPoint(i+7)),
			"Idempotency-Key", fmt.Sprintf("pg-bench-%d", i))
		if err != nil || (res.status != http.StatusServiceUnavailable && res.status != http.StatusTooManyRequests) || try == 10 {
			break
		}
		shed.Add(1)
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || res.status != http.StatusAccepted {
		b.Errorf("request: %v %d %s", err, res.status, res.body)
		return "", 0
	}
	var ride struct {
		ID      string    `json:"id"`
		Created time.Time `json:"created_at"`
	}
	if err = json.Unmarshal(res.body, &ride); err != nil {
		b.Errorf("request: %v: %s", err, res.body)
		return "", 0
	}
	times, ended, err := followRide(rider, ride.ID)
	if err != nil {
		b.Error(err)
	}
	if t, ok := times["driver_assigned"]; ok {
		assigned = t.Sub(ride.Created)
	}
	return ended, assigned
}
