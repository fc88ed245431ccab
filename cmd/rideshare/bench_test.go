package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/fleet"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// BenchmarkRides measures whole rides on the whole platform: every service
// its own process, simulated drivers that accept at once and drive 2000
// times faster than real time, riders requesting rides. It reports
// completed rides per second and the time from a ride's request to its
// driver being assigned, read from the platform's own timestamps (the
// ride's created_at and the driver_assigned event), and to the search for
// a driver starting (the searching event: fare quoted and payment held).
// Riders follow each ride on its event stream rather than polling; drivers
// poll for offers every RIDESHARE_BENCH_POLL (100ms), which is part of the
// measured assignment time (half of it on average).
//
// It runs twice on one platform: closed-loop, riders requesting rides back
// to back (the platform's saturation: its completed rides per second),
// then open-loop at half the rate the closed-loop run reached, rides
// requested on a fixed schedule whether or not earlier ones are done, for
// honest latency at a load the platform can carry.
//
//	go test -run '^$' -bench BenchmarkRides -benchtime 300x ./cmd/rideshare
//
// RIDESHARE_BENCH_RIDERS (default 16) and RIDESHARE_BENCH_DRIVERS (40) size
// it; RIDESHARE_BENCH_RATE (rides/s) fixes the open-loop rate instead.
func BenchmarkRides(b *testing.B) {
	p := startPlatform(b, b.TempDir(), "--set", "dispatch.offer_ttl=5s,rides.search_timeout=30s")
	p.client = benchHTTPClient()
	drivers := envInt("RIDESHARE_BENCH_DRIVERS", 40)
	fl := fleet.New(fleet.Config{
		Gateway: p.state.GatewayURL, Drivers: drivers, Password: "fleet-password-1", Area: geo.SanFrancisco, Seed: 1,
		TimeScale: 2000, AcceptDelay: [2]time.Duration{time.Millisecond, time.Millisecond},
		PingEvery: time.Second, PollEvery: envDuration("RIDESHARE_BENCH_POLL", 100*time.Millisecond), Stagger: 500 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = fl.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testenv.Eventually(b, 60*time.Second, func() bool { return fl.Stats().Online == int64(drivers) }, "the fleet did not come online")

	riders := make([]*user, envInt("RIDESHARE_BENCH_RIDERS", 16))
	for i := range riders {
		riders[i] = benchRider(b, p, fmt.Sprintf("bench-rider-%d@example.com", i))
	}
	var seq atomic.Int64 // idempotency keys, unique across both runs
	var saturation float64
	b.Run("closed-loop", func(b *testing.B) {
		s := &rideStats{}
		stop := profileChildren(b, p)
		b.ResetTimer()
		start := time.Now()
		var wg sync.WaitGroup
		for r := range riders {
			wg.Go(func() {
				for i := r; i < b.N; i += len(riders) {
					s.add(takeRide(b, riders[r], int(seq.Add(1))))
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		b.StopTimer()
		stop()
		saturation = s.report(b, elapsed)
	})
	b.Run("half-saturation", func(b *testing.B) {
		rate := float64(envInt("RIDESHARE_BENCH_RATE", 0))
		if rate == 0 {
			rate = saturation / 2
		}
		if rate <= 0 {
			b.Skip("no saturation figure: run the closed-loop benchmark too")
		}
		s := &rideStats{}
		stop := profileChildren(b, p)
		b.ResetTimer()
		start := time.Now()
		var wg sync.WaitGroup
		for i := range b.N {
			// Open loop: ride i is requested at its time, whatever
			// happened to the rides before it.
			time.Sleep(time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))))
			wg.Go(func() { s.add(takeRide(b, riders[i%len(riders)], int(seq.Add(1)))) })
		}
		wg.Wait()
		elapsed := time.Since(start)
		b.StopTimer()
		stop()
		b.ReportMetric(rate, "offered-rides/s")
		s.report(b, elapsed)
	})
}

// benchRider signs a rider up and in. A busy machine (a fleet signing in
// beside it: every sign-up and sign-in is an argon2 hash) may shed some of
// these requests; they are sent again after the Retry-After the platform
// asks for, as a client would.
func benchRider(b *testing.B, p *runningPlatform, email string) *user {
	const password = "correct horse battery"
	send := func(path string, body any) response {
		for range 20 {
			r, err := p.tryDo("POST", path, "", body)
			if err != nil {
				b.Fatalf("%s: %v", path, err)
			}
			if r.status != http.StatusServiceUnavailable && r.status != http.StatusTooManyRequests {
				return r
			}
			wait, _ := strconv.Atoi(r.header.Get("Retry-After"))
			time.Sleep(time.Duration(max(wait, 1)) * time.Second)
		}
		b.Fatalf("%s: still refused after 20 tries", path)
		return response{}
	}
	r := send("/v1/accounts", map[string]any{"role": "rider", "name": "Bench rider", "email": email, "password": password})
	if r.status != http.StatusCreated {
		b.Fatalf("sign-up %s: %d %s", email, r.status, r.body)
	}
	id := r.json(b)["id"].(string)
	r = send("/oauth2/token", url.Values{"grant_type": {"password"}, "client_id": {"rideshare-cli"}, "username": {email}, "password": {password}})
	if r.status != http.StatusOK {
		b.Fatalf("password grant for %s: %d %s", email, r.status, r.body)
	}
	return &user{p: p, id: id, token: r.json(b)["access_token"].(string)}
}

// rideResult is how one ride went, by the platform's timestamps.
type rideResult struct {
	ended              string
	assign, searchFrom time.Duration // from the request; 0 if never
}

// takeRide requests a ride as rider and follows it to its end.
func takeRide(b *testing.B, rider *user, i int) rideResult {
	body := trip(randomCityPoint(i), randomCityPoint(i+7))
	res := rider.do("POST", "/v1/rides", body, "Idempotency-Key", fmt.Sprintf("bench-%d", i))
	if res.status != http.StatusAccepted {
		b.Errorf("request: %d %s", res.status, res.body)
		return rideResult{}
	}
	ride := res.json(b)
	created, _ := time.Parse(time.RFC3339Nano, ride["created_at"].(string))
	// The ride's event stream pushes every status until the ride ends: no
	// polling load on the platform.
	// A stream that gave no end leaves the ride counted as not ended.
	times, ended, _ := followRide(rider, ride["id"].(string))
	r := rideResult{ended: ended}
	if t, ok := times["driver_assigned"]; ok {
		r.assign = t.Sub(created)
	}
	if t, ok := times["searching"]; ok {
		r.searchFrom = t.Sub(created)
	}
	return r
}

// rideStats collects ride results from many goroutines.
type rideStats struct {
	mu                sync.Mutex
	completed, failed int
	assign, search    []time.Duration
}

func (s *rideStats) add(r rideResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.ended != "completed" {
		s.failed++
		return
	}
	s.completed++
	if r.assign > 0 {
		s.assign = append(s.assign, r.assign)
	}
	if r.searchFrom > 0 {
		s.search = append(s.search, r.searchFrom)
	}
}

// report reports the rides per second and latency percentiles, and returns
// the rides per second.
func (s *rideStats) report(b *testing.B, elapsed time.Duration) float64 {
	rate := float64(s.completed) / elapsed.Seconds()
	b.ReportMetric(rate, "rides/s")
	b.ReportMetric(ms(percentile(s.assign, 0.50)), "assign-p50-ms")
	b.ReportMetric(ms(percentile(s.assign, 0.99)), "assign-p99-ms")
	b.ReportMetric(ms(percentile(s.search, 0.99)), "search-p99-ms")
	b.ReportMetric(float64(s.completed), "completed")
	b.ReportMetric(float64(s.failed), "not-completed")
	return rate
}

// percentile is the q-quantile of d (which it sorts).
func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, int(q*float64(len(d))))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// followRide reads the ride's server-sent events until the ride ends, and
// returns when each status was reached and how the ride ended; err says
// why the stream gave no end.
func followRide(u *user, id string) (times map[string]time.Time, ended string, err error) {
	req, _ := http.NewRequest("GET", u.p.state.GatewayURL+"/v1/rides/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+u.token)
	res, err := u.p.client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("ride %s: events: %d", id, res.StatusCode)
	}
	times = map[string]time.Time{}
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
		if _, seen := times[ev.Status]; !seen {
			times[ev.Status] = ev.Time
		}
		if terminalStatus[ev.Status] {
			return times, ev.Status, nil
		}
	}
	return times, "", fmt.Errorf("ride %s: the event stream ended before the ride: %v", id, sc.Err())
}

// BenchmarkRideRequests measures ride requests accepted end to end: POST
// /v1/rides answered 202 by the whole platform (gateway, token check, rides
// storing the ride, its idempotency key and its outbox event), from
// RIDESHARE_BENCH_CLIENTS (32) concurrent clients, each a rider of its own.
// Against it, measured in the same run on the same machine: the same
// requests through a bare chain of two pooled httputil.ReverseProxy hops in
// front of a backend that answers 202 at once (client → proxy → proxy →
// backend), the least any two-hop platform could cost. The accepted rides
// start their sagas, which run beside the requests as they would in use.
//
//	go test -run '^$' -bench BenchmarkRideRequests -benchtime 3000x -count 6 ./cmd/rideshare
func BenchmarkRideRequests(b *testing.B) {
	p := startPlatform(b, b.TempDir())
	p.client = benchHTTPClient()
	clients := envInt("RIDESHARE_BENCH_CLIENTS", 32)
	riders := make([]*user, clients)
	for i := range riders {
		riders[i] = benchRider(b, p, fmt.Sprintf("accept-rider-%d@example.com", i))
	}

	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Location", "/v1/rides/0190a000-0000-7000-8000-000000000000")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write(acceptedRide)
	}))
	defer backend.Close()
	second := httptest.NewServer(bareProxy(backend.URL))
	defer second.Close()
	first := httptest.NewServer(bareProxy(second.URL))
	defer first.Close()

	var bare float64
	var seq atomic.Int64
	for _, target := range []struct{ name, base string }{{"bare-proxy-chain", first.URL}, {"platform", p.state.GatewayURL}} {
		b.Run(target.name, func(b *testing.B) {
			stop := func() {}
			if target.name == "platform" {
				stop = profileChildren(b, p)
			}
			var mu sync.Mutex
			took := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for c := range clients {
				wg.Go(func() {
					for i := c; i < b.N; i += clients {
						n := seq.Add(1)
						t0 := time.Now()
						status, body, err := postRide(p.client, target.base, riders[c].token, n)
						d := time.Since(t0)
						if err != nil || status != http.StatusAccepted {
							b.Errorf("%s: %d %v %s", target.name, status, err, body)
							return
						}
						mu.Lock()
						took = append(took, d)
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			stop()
			rate := float64(len(took)) / elapsed.Seconds()
			b.ReportMetric(rate, "accepted/s")
			b.ReportMetric(ms(percentile(took, 0.50)), "p50-ms")
			b.ReportMetric(ms(percentile(took, 0.99)), "p99-ms")
			if target.name == "bare-proxy-chain" {
				bare = rate
			} else if bare > 0 {
				b.ReportMetric(rate/bare, "x-bare-chain")
			}
		})
	}
}

// acceptedRide is what the bare chain's backend answers: a ride as the
// gateway shows one, the size of the platform's answer.
var acceptedRide = []byte(`{"id":"0190a000-0000-7000-8000-000000000000","status":"requested","rider_id":"0190a000-0000-7000-8000-000000000001","pickup":{"lat":37.7793,"lng":-122.4193},"dropoff":{"lat":37.7599,"lng":-122.4148},"created_at":"2026-11-01T12:00:00.123456Z","updated_at":"2026-11-01T12:00:00.123456Z"}` + "\n")

// postRide requests ride n as token's rider from the API at base.
func postRide(c *http.Client, base, token string, n int64) (int, []byte, error) {
	body, _ := json.Marshal(trip(randomCityPoint(int(n)), randomCityPoint(int(n)+7)))
	req, err := http.NewRequest("POST", base+"/v1/rides", bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Idempotency-Key", "accept-"+strconv.FormatInt(n, 10))
	res, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	return res.StatusCode, out, err
}

// bareProxy is one bare hop: a ReverseProxy with pooled copy buffers and a
// pooled transport, nothing else.
func bareProxy(target string) http.Handler {
	u, _ := url.Parse(target)
	return &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.SetXForwarded() },
		Transport:  benchHTTPClient().Transport,
		BufferPool: &proxyBuffers{},
	}
}

type proxyBuffers struct{ p sync.Pool }

func (b *proxyBuffers) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *proxyBuffers) Put(buf []byte) { b.p.Put(&buf) }

// benchHTTPClient keeps a connection per concurrent request: the default
// transport keeps two per host, and a benchmark that reconnects measures
// connection setup, not the platform.
func benchHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost = 1024, 1024
	return &http.Client{Transport: t, Timeout: 30 * time.Second}
}

// BenchmarkPlatformIdle boots the whole platform as `rideshare up` does
// (without its simulated drivers) and reports how long it took to be ready,
// and the memory it holds once idle, after RIDESHARE_BENCH_IDLE (5s), summed
// over every process up starts (the broker and each service): their
// resident sets (idle-rss-MiB), which count the pages of the one binary
// they share once per process, and their proportional sets (idle-pss-MiB),
// which share those pages out, so the sum is the memory the platform holds.
// It measures; it asserts nothing.
//
//	go test -run '^$' -bench BenchmarkPlatformIdle -benchtime 1x -count 5 ./cmd/rideshare
func BenchmarkPlatformIdle(b *testing.B) {
	idle := envDuration("RIDESHARE_BENCH_IDLE", 5*time.Second)
	var ready time.Duration
	var rss, pss int64
	for range b.N {
		start := time.Now()
		p := startPlatform(b, b.TempDir())
		ready += time.Since(start)
		b.StopTimer()
		time.Sleep(idle) // idling is what is measured
		each := memoryOf(b)
		if len(each) == 0 {
			b.Fatal("no processes to measure")
		}
		var line []string
		for _, name := range slices.Sorted(maps.Keys(each)) {
			m := each[name]
			rss, pss = rss+m.rss, pss+m.pss
			line = append(line, fmt.Sprintf("%s %.1f/%.1f", name, float64(m.rss)/(1<<20), float64(m.pss)/(1<<20)))
		}
		b.Logf("resident/proportional MiB: %s", strings.Join(line, ", "))
		p.shutdown()
		b.StartTimer()
	}
	b.ReportMetric(ready.Seconds()/float64(b.N), "ready-s")
	b.ReportMetric(float64(rss)/float64(b.N)/(1<<20), "idle-rss-MiB")
	b.ReportMetric(float64(pss)/float64(b.N)/(1<<20), "idle-pss-MiB")
}

// memory is one process's resident and proportional set sizes, in bytes.
type memory struct{ rss, pss int64 }

// memoryOf is the memory of each of up's processes, by name.
func memoryOf(b *testing.B) map[string]memory {
	out := map[string]memory{}
	for pid, name := range childPIDs(b) {
		rollup, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			continue
		}
		var m memory
		for line := range strings.Lines(string(rollup)) {
			key, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			switch key {
			case "Rss":
				m.rss = kb << 10
			case "Pss":
				m.pss = kb << 10
			}
		}
		out[name] = m
	}
	return out
}

// benchProfileEnv names a folder; with it set, every process `up` starts
// from this test binary writes a CPU profile there of each measured run of
// the benchmarks above (SIGUSR1 starts it, SIGUSR2 ends it), named after
// its service:
//
//	RIDESHARE_BENCH_PROFILE_DIR=/tmp/prof go test -run '^$' -bench BenchmarkRideRequests/platform ...
//	go tool pprof -top /tmp/prof/rides-*.cpu
const benchProfileEnv = "RIDESHARE_BENCH_PROFILE_DIR"

func init() {
	dir := os.Getenv(benchProfileEnv)
	if os.Getenv(childEnv) != "1" || dir == "" {
		return
	}
	name := "up"
	if len(os.Args) > 2 && os.Args[1] == "serve" {
		name = os.Args[2]
		if i := slices.Index(os.Args, "--instance"); i > 0 && i+1 < len(os.Args) {
			name = os.Args[i+1]
		}
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		var f *os.File
		for s := range sigs {
			switch {
			case s == syscall.SIGUSR1 && f == nil:
				var err error
				if f, err = os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.cpu", name, os.Getpid()))); err != nil {
					continue
				}
				if pprof.StartCPUProfile(f) != nil {
					f.Close()
					f = nil
				}
			case s == syscall.SIGUSR2 && f != nil:
				pprof.StopCPUProfile()
				f.Close()
				f = nil
				_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%d.done", name, os.Getpid())), nil, 0o600)
			}
		}
	}()
}

// profileChildren starts the CPU profiles of p's processes when
// RIDESHARE_BENCH_PROFILE_DIR is set, and returns what ends them (and
// waits until they are written).
func profileChildren(b *testing.B, p *runningPlatform) (stop func()) {
	dir := os.Getenv(benchProfileEnv)
	if dir == "" {
		return func() {}
	}
	pids := childPIDs(b)
	for pid, name := range pids {
		// A marker left by an earlier run (the benchmark's first, one-op
		// run) would end the wait below before this run's profile is out.
		_ = os.Remove(filepath.Join(dir, fmt.Sprintf("%s-%d.done", name, pid)))
		_ = syscall.Kill(pid, syscall.SIGUSR1)
	}
	return func() {
		for pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGUSR2)
		}
		testenv.Eventually(b, 10*time.Second, func() bool {
			for pid, name := range pids {
				if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("%s-%d.done", name, pid))); err != nil {
					return false
				}
			}
			return true
		}, "the processes did not write their profiles to %s", dir)
	}
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

func envDuration(key string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(key)); err == nil && d > 0 {
		return d
	}
	return def
}
