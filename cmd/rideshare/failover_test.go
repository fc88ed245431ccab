package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/cli"
	"github.com/rideshare-platform/rideshare/internal/discovery"
	"github.com/rideshare-platform/rideshare/internal/fleet"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestReplicaFailover runs dispatch as three replicas, requests rides while
// fast simulated drivers take them, and SIGKILLs one replica mid-load. What
// a user relies on: no ride fails (every request accepted at the first try,
// every ride completed), the dead instance leaves the registry once its TTL
// runs out, and its restarted successor takes traffic again.
func TestReplicaFailover(t *testing.T) {
	dir := t.TempDir()
	p := startPlatform(t, dir, "--replicas", "dispatch=3", "--set", "dispatch.offer_ttl=3s,rides.search_timeout=60s")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	drivers := fleet.New(fleet.Config{
		Gateway: p.state.GatewayURL, Drivers: 10, Password: "fleet-password-1", Area: geo.SanFrancisco, Seed: 7,
		TimeScale: 300, AcceptDelay: [2]time.Duration{0, 100 * time.Millisecond},
		PingEvery: 300 * time.Millisecond, PollEvery: 150 * time.Millisecond, Stagger: 100 * time.Millisecond,
	})
	fleetDone := make(chan struct{})
	go func() { defer close(fleetDone); _ = drivers.Run(ctx) }()
	defer func() { cancel(); <-fleetDone }()

	admin := p.adminToken()
	instances := func() []string {
		r, err := p.tryDo("GET", "/admin/discovery", admin, nil)
		if err != nil || r.status != http.StatusOK {
			return nil
		}
		var view map[string][]discovery.InstanceState
		if err := json.Unmarshal([]byte(r.body), &view); err != nil {
			t.Fatalf("/admin/discovery: %v: %s", err, r.body)
		}
		var out []string
		for _, in := range view["dispatch"] {
			out = append(out, in.URL)
		}
		return out
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return len(instances()) == 3 }, "three dispatch instances registered: %v", instances())

	const total, riderCount = 24, 4
	riders := make([]*user, riderCount)
	for i := range riders {
		riders[i] = p.newRider(fmt.Sprintf("failover-rider-%d@example.com", i))
	}
	rng := rand.New(rand.NewPCG(7, 1))
	var (
		mu      sync.Mutex
		owner   = map[string]*user{}
		refused []string
		wg      sync.WaitGroup
	)
	for i := range total {
		rider, body := riders[i%riderCount], trip(randomPoint(rng), randomPoint(rng))
		wg.Go(func() {
			time.Sleep(time.Duration(i) * 250 * time.Millisecond) // spread over the kill
			r, err := p.tryDo("POST", "/v1/rides", rider.token, body, "Idempotency-Key", fmt.Sprintf("failover-%d", i))
			mu.Lock()
			defer mu.Unlock()
			if err != nil || r.status != http.StatusAccepted {
				refused = append(refused, fmt.Sprintf("ride %d: %v %d %s", i, err, r.status, r.body))
				return
			}
			owner[r.json(t)["id"].(string)] = rider
		})
	}

	// Mid-load, one replica dies without a word.
	time.Sleep(2 * time.Second)
	victim := p.pidOf("dispatch-2")
	if victim == 0 {
		t.Fatalf("no dispatch-2 process among %v", childPIDs(t))
	}
	before := p.stateNow().Services["dispatch-2"]
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Logf("killed dispatch-2 (pid %d) at %s", victim, before)
	// The gateway forgets an instance a TTL after its last heartbeat
	// reached it. The bound leaves a busy machine time to deliver that
	// heartbeat and answer these reads, and stays well short of the ten
	// TTLs after which any silent instance is pruned, so that passing
	// still means the TTL did it.
	testenv.Eventually(t, 3*discovery.DefaultTTL, func() bool {
		return !strings.Contains(strings.Join(instances(), " "), before)
	}, "the killed instance %s is still registered: %v", before, instances())
	t.Logf("the killed instance left the registry after %s (TTL %s)", time.Since(killed).Round(10*time.Millisecond), discovery.DefaultTTL)

	// Its successor comes back on a new address, registers, and serves.
	var after string
	testenv.Eventually(t, 60*time.Second, func() bool {
		after = p.stateNow().Services["dispatch-2"]
		return after != "" && after != before && strings.Contains(strings.Join(instances(), " "), after)
	}, "dispatch-2 did not come back into the registry: state %q, registry %v", after, instances())
	t.Logf("dispatch-2 back at %s after %s", after, time.Since(killed).Round(10*time.Millisecond))

	wg.Wait()
	if len(refused) > 0 {
		t.Fatalf("%d of %d ride requests failed:\n%s", len(refused), total, strings.Join(refused, "\n"))
	}
	counts := p.awaitTerminal(owner, 90*time.Second)
	if counts["completed"] != total {
		t.Fatalf("rides ended %v, want all %d completed", counts, total)
	}

	// The successor takes traffic: its own server counts calls to it.
	served := func() float64 { return p.metricAt(after, "rideshare_http_requests_total", "DispatchService") }
	start := served()
	testenv.Eventually(t, 20*time.Second, func() bool { return served() > start }, "dispatch-2's successor at %s served no call", after)
	st := drivers.Stats()
	t.Logf("%d rides through a replica kill: %v; requests refused: 0; fleet: %d rides completed, %d errors", total, counts, st.Completed, st.Errors)
}

// stateNow re-reads platform.json, which up rewrites when a replica comes
// back on a new address.
func (p *runningPlatform) stateNow() cli.State {
	p.t.Helper()
	s, err := cli.ReadState(p.dir)
	if err != nil {
		p.t.Fatal(err)
	}
	return s
}

// TestGatewayReplicasReady runs the gateway as two replicas on one public
// socket. Up must call the platform ready only when both are: a probe
// through the shared socket could be answered by either, so each is asked
// on its own address, which platform.json lists, and from the moment up
// is ready every connection to the public address finds a ready gateway.
func TestGatewayReplicasReady(t *testing.T) {
	p := startPlatform(t, t.TempDir(), "--replicas", "gateway=2")
	own := map[string]bool{}
	for _, name := range []string{"gateway-1", "gateway-2"} {
		u := p.state.Services[name]
		if u == "" || u == p.state.GatewayURL || own[u] {
			t.Fatalf("%s: address %q; want its own, beside the public %s: %v", name, u, p.state.GatewayURL, p.state.Services)
		}
		own[u] = true
		res, err := p.client.Get(u + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("%s /readyz at %s: %d", name, u, res.StatusCode)
		}
	}
	// A new connection each time, so the kernel hands each to whichever
	// replica accepts first.
	fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range 40 {
		res, err := fresh.Get(p.state.GatewayURL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("public /readyz, connection %d: %d", i, res.StatusCode)
		}
	}
}
