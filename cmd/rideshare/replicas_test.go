package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/catalog"
	"github.com/rideshare-platform/rideshare/internal/check"
	"github.com/rideshare-platform/rideshare/internal/fleet"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// replicasRate is the rides requested per second through the faults: about
// what the platform carries under the race detector on two cores with two
// processes of every service, a three-member cluster and PostgreSQL.
const replicasRate = 4

// replicasSettle is how long after the faults stop every saga has to be
// terminal, with the invariants holding.
const replicasSettle = 90 * time.Second

// replicasDrivers is the simulated fleet: a ride keeps a driver 2–4 s at
// the fleet's time scale, so 16 carry the rate with room for offers that
// time out while a dispatch replica is down.
const replicasDrivers = 16

// everyService is up's --replicas value that runs n instances of each
// service, the gateway and identity included.
func everyService(n int) string {
	var kv []string
	for _, s := range catalog.Services {
		kv = append(kv, s.Name+"="+strconv.Itoa(n))
	}
	return strings.Join(kv, ",")
}

// replicaFault is one tick of the fault plan: a replica SIGKILLed, or the
// cluster's meta leader stopped, or the stopped member started again.
type replicaFault struct {
	at                    time.Duration // from the start of the rides
	kill                  string        // a process: "rides-2"
	stopNATS, restartNATS bool
}

func (f replicaFault) String() string {
	switch {
	case f.stopNATS:
		return "stop the NATS meta leader"
	case f.restartNATS:
		return "restart the stopped NATS member"
	}
	return "SIGKILL " + f.kill
}

// replicaPlan draws rounds of faults from rng. In a round one replica of
// every service is SIGKILLed, the services in a random order 1.5–2 s apart,
// and one NATS member is stopped after the second or third kill and started
// again three ticks later. A service's two replicas are never both down: its
// next kill is a round (some 17 s) away, and up restarts a killed process
// within a second or two.
func replicaPlan(rng *rand.Rand, rounds int) []replicaFault {
	var plan []replicaFault
	at := 2 * time.Second // the first rides are under way
	tick := func(f replicaFault) {
		f.at = at
		plan = append(plan, f)
		at += 1500*time.Millisecond + time.Duration(rng.Int64N(int64(500*time.Millisecond)))
	}
	for range rounds {
		names := make([]string, 0, len(catalog.Services))
		for _, s := range catalog.Services {
			names = append(names, s.Name)
		}
		rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
		stopAt := 2 + rng.IntN(2)
		for i, name := range names {
			if i == stopAt {
				tick(replicaFault{stopNATS: true})
			}
			if i == stopAt+3 {
				tick(replicaFault{restartNATS: true})
			}
			tick(replicaFault{kill: fmt.Sprintf("%s-%d", name, 1+rng.IntN(2))})
		}
	}
	return plan
}

// TestReplicasSurviveFaults runs the platform scaled out on this machine:
// two replicas of every service, each service's data in its own PostgreSQL
// database, and a three-member NATS JetStream cluster (in this process, on
// loopback) holding every stream and the registry three times. Riders
// request rides at a steady rate while fast simulated drivers take them;
// meanwhile one replica of each service is SIGKILLed in turn, and the
// cluster's meta leader is stopped and later started again. Within 90 s of
// the faults stopping every ride the riders were given must be found and
// terminal (0 lost), none charged twice or without being completed (0
// double charges, by payments' ledger and by the card network), and the
// invariants of `rideshare check` must hold with the platform at rest.
// Every killed replica must be back.
//
// RIDESHARE_REPLICAS_SEED replays a run's rides and faults;
// RIDESHARE_REPLICAS_ROUNDS (default 1) repeats the round of faults, and
// RIDESHARE_REPLICAS_RIDES (default 4 a second through the faults) sets the
// rides: the bigger profile is ROUNDS=5 (some 350 rides through 40 kills
// and 5 member stops in 90 s; about 2.5 minutes under the race detector).
func TestReplicasSurviveFaults(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	rounds, rides := 1, 0
	for key, into := range map[string]*int{"RIDESHARE_REPLICAS_ROUNDS": &rounds, "RIDESHARE_REPLICAS_RIDES": &rides} {
		if s := os.Getenv(key); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				t.Fatalf("%s=%q: want a positive whole number", key, s)
			}
			*into = n
		}
	}
	if s := os.Getenv("RIDESHARE_REPLICAS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("RIDESHARE_REPLICAS_SEED=%q: %v", s, err)
		}
	}
	faultRNG := rand.New(rand.NewPCG(seed, 2))
	plan := replicaPlan(faultRNG, rounds)
	window := plan[len(plan)-1].at + 2*time.Second
	if rides == 0 {
		rides = int(window.Seconds() * replicasRate)
	}
	replay := fmt.Sprintf("RIDESHARE_REPLICAS_SEED=%d RIDESHARE_REPLICAS_ROUNDS=%d RIDESHARE_REPLICAS_RIDES=%d go test -race -count=1 -run TestReplicasSurviveFaults -v ./cmd/rideshare/",
		seed, rounds, rides)
	t.Logf("seed %d: %d rides over %s, %d faults; replay with\n  %s", seed, rides, window.Round(time.Second), len(plan), replay)

	// The cluster first, so that it stops only after the platform has.
	cluster := testenv.JetStreamCluster(t, 3)
	dir := t.TempDir()
	t.Cleanup(func() {
		if t.Failed() {
			keepData(t, dir) // every process's log: warnings, restarts
			t.Logf("FAILED with seed %d; replay with\n  %s", seed, replay)
		}
	})
	p, _, _ := startOnPostgres(t, dir, "--nats", cluster.URL(), "--stream-replicas", "3",
		"--replicas", everyService(2), "--set", "dispatch.offer_ttl=3s,rides.search_timeout=20s")

	var processes []string
	for _, name := range childPIDs(t) {
		processes = append(processes, name)
	}
	slices.Sort(processes)
	if len(processes) != 2*len(catalog.Services) {
		t.Fatalf("want two processes of every service, and no broker: %v", processes)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	drivers := fleet.New(fleet.Config{
		Gateway: p.state.GatewayURL, Drivers: replicasDrivers, Password: "fleet-password-1", Area: geo.SanFrancisco, Seed: int64(seed),
		TimeScale: 300, AcceptDelay: [2]time.Duration{0, 100 * time.Millisecond},
		PingEvery: 500 * time.Millisecond, PollEvery: 200 * time.Millisecond, Stagger: 500 * time.Millisecond,
	})
	fleetDone := make(chan struct{})
	go func() { defer close(fleetDone); _ = drivers.Run(ctx) }()
	defer func() { cancel(); <-fleetDone }()
	const riderCount = 8
	riders := make([]*user, riderCount)
	for i := range riders {
		riders[i] = p.newRider(fmt.Sprintf("replicas-rider-%d@example.com", i))
	}
	var fleetNow fleet.Stats
	testenv.Eventually(t, 60*time.Second, func() bool {
		fleetNow = drivers.Stats()
		return fleetNow.Online == replicasDrivers
	}, "the fleet is not online: %+v", &fleetNow)

	// Rides arrive at a steady rate, from riders who retry until answered.
	start := time.Now()
	wait := p.requestRides(rideStream{Riders: riders, Rides: rides, Start: start, Window: window,
		GiveUp: start.Add(window + replicasSettle), Key: "replicas", RNG: rand.New(rand.NewPCG(seed, 1))})

	// The faults, on their plan. A killed replica's pid is kept to prove
	// later that up started a new one.
	logf := func(format string, args ...any) {
		t.Logf("%s +%6.2fs "+format, append([]any{time.Now().Format("15:04:05.000"), time.Since(start).Seconds()}, args...)...)
	}
	killed := map[string][]int{} // process → the pids killed
	natsStops := 0
	var natsStopped chan int // the member stopped, once it is down
	for _, f := range plan {
		time.Sleep(time.Until(start.Add(f.at)))
		switch {
		case f.stopNATS:
			// A member with JetStream takes seconds to shut down: the kills
			// keep their schedule meanwhile.
			member := cluster.MetaLeader()
			if member < 0 {
				// Mid-election after the last restart: stop any member.
				member = faultRNG.IntN(cluster.Size())
			}
			natsStops++
			logf("stopping NATS member %s", cluster.Name(member))
			natsStopped = make(chan int, 1)
			go func() {
				cluster.Stop(member)
				logf("NATS member %s is down", cluster.Name(member))
				natsStopped <- member
			}()
		case f.restartNATS:
			member := <-natsStopped
			cluster.Restart(member)
			logf("restarted NATS member %s", cluster.Name(member))
		default:
			pid := p.pidOf(f.kill)
			if pid == 0 || syscall.Kill(pid, syscall.SIGKILL) != nil {
				t.Errorf("%s was not running at +%s (still restarting from an earlier kill?): %v", f.kill, f.at, childPIDs(t))
				continue
			}
			killed[f.kill] = append(killed[f.kill], pid)
			logf("SIGKILL %s (pid %d)", f.kill, pid)
		}
	}
	faultsStopped := time.Now()
	logf("faults stopped")

	got := wait()
	owner, declinedCard := got.owner, got.declinedCard
	if len(owner) != rides {
		t.Fatalf("%d of %d ride requests were accepted", len(owner), rides)
	}

	// Every ride found and terminal: none lost, none stuck.
	byStatus := p.awaitTerminal(owner, time.Until(faultsStopped.Add(replicasSettle)))
	terminalAt := time.Now()

	// Every killed replica is back and ready where platform.json says
	// (each gateway replica's own address, beside the public socket they
	// share), and the cluster whole again: the audit reads every process
	// where it is now.
	for name, pids := range killed {
		var last struct {
			pid int
			at  string
		}
		testenv.Eventually(t, 30*time.Second, func() bool {
			last.pid, last.at = p.pidOf(name), p.stateNow().Services[name]
			if last.pid == 0 || slices.Contains(pids, last.pid) {
				return false
			}
			res, err := p.client.Get(last.at + "/readyz")
			if err != nil {
				return false
			}
			res.Body.Close()
			return res.StatusCode == http.StatusOK
		}, "%s (killed: pids %v) did not come back: now %+v", name, pids, &last)
	}
	cluster.WaitForMetaLeader(30 * time.Second)

	// The invariants of `rideshare check`, with the platform at rest.
	rep := p.awaitCheck(ctx, max(time.Until(faultsStopped.Add(replicasSettle)), 15*time.Second))
	if rep.Rides.Total != len(owner) {
		t.Errorf("rides holds %d rides; the riders were given %d (a retried Idempotency-Key made a second ride?)", rep.Rides.Total, len(owner))
	}

	// Each ride's money, as the rider and the card network see it.
	fares := map[string]int64{}
	var slowest time.Duration // from a ride's request to its end
	var slowestID string
	for id, rider := range owner {
		ride := rider.ride(id)
		created, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(ride["created_at"]))
		ended, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(ride["updated_at"]))
		if d := ended.Sub(created); d > slowest {
			slowest, slowestID = d, id
		}
		fareObj, _ := ride["fare"].(map[string]any) // none when the card declined before a quote was held
		fare, _ := fareObj["amount"].(float64)
		rc := rider.receipt(id)
		switch st := ride["status"]; {
		case st == "completed":
			fares[id] = int64(fare)
			if rc["status"] != "captured" || rc["amount"] != fare {
				t.Errorf("completed ride %s (fare %v): receipt %v", id, fare, rc)
			}
		case rc["status"] != "not_charged" || rc["amount"] != float64(0):
			t.Errorf("ride %s ended %s: receipt %v, want not_charged", id, st, rc)
		}
		switch st := ride["status"]; {
		case declinedCard[id] && st == "completed":
			t.Errorf("ride %s paid with a declining card, yet completed", id)
		case !declinedCard[id] && st == "payment_declined":
			t.Errorf("ride %s paid with a good card, yet ended payment_declined", id)
		}
	}
	doubleCharged := p.assertNetworkCaptures(ctx, owner, fares)
	for _, st := range []string{"completed", "cancelled", "payment_declined"} {
		if byStatus[st] == 0 {
			t.Errorf("no ride ended %s: the test proved nothing about that path (%v)", st, byStatus)
		}
	}

	p.assertNoCrashes()

	fs := drivers.Stats()
	t.Logf("replicas report (seed %d):\n"+
		"  %d rides accepted over %s of faults (%d SIGKILLs of %d processes, %d NATS member stop(s)); all terminal %s after the faults stopped; the slowest ride took %s (%s)\n"+
		"  by status %v; lost 0; double-charged %d\n"+
		"  check: %d rides, %d captured once, %d fees, holds released %d (voided %d, declined %d, never held %d); ledger %d entries, debits %d = credits %d\n"+
		"  retries: %d ride requests, %d cancels; fleet: %d rides completed, %d request errors\n"+
		"  replay: %s",
		seed, len(owner), faultsStopped.Sub(start).Round(100*time.Millisecond), len(plan)-2*natsStops, len(processes), natsStops,
		terminalAt.Sub(faultsStopped).Round(100*time.Millisecond), slowest.Round(100*time.Millisecond), slowestID,
		byStatus, doubleCharged,
		rep.Rides.Total, rep.Payments.CapturedOnce, rep.Payments.FeesCaptured, rep.Payments.Released(), rep.Payments.Voided,
		rep.Payments.Declined, rep.Payments.NeverHeld, rep.Ledger.Entries, rep.Ledger.Debits, rep.Ledger.Credits,
		got.retries, got.cancelRetries, fs.Completed, fs.Errors, replay)
}

// awaitCheck runs `rideshare check --settled` (the audit of every process,
// read where the platform's state file says each is now) until the
// platform is at rest with every invariant holding, and fails the test if
// it is not within timeout.
func (p *runningPlatform) awaitCheck(ctx context.Context, timeout time.Duration) check.Report {
	p.t.Helper()
	src := p.checkSource()
	var rep check.Report
	var err error
	testenv.Eventually(p.t, timeout, func() bool {
		rep, err = check.Run(ctx, src, check.Options{Settled: true})
		return err == nil && rep.OK()
	}, "the invariants of `rideshare check` do not hold with the platform at rest: %v %v", &err, violations{&rep})
	return rep
}

// violations prints a report's broken invariants, one a line.
type violations struct{ rep *check.Report }

func (v violations) String() string {
	var b strings.Builder
	for _, x := range v.rep.Violations {
		fmt.Fprintf(&b, "\n  [%s] %s", x.Invariant, x.Message)
	}
	return b.String()
}

// assertNetworkCaptures reads, from payments' own database as an auditor
// would, the captures the card network approved for each ride: exactly one
// for the fare of each completed ride (fares), none for any other ride. It
// returns how many rides were charged twice, or charged at all without
// being completed.
func (p *runningPlatform) assertNetworkCaptures(ctx context.Context, owner map[string]*user, fares map[string]int64) int {
	p.t.Helper()
	db, err := sqldb.Open(ctx, p.state.Databases["payments"])
	if err != nil {
		p.t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Reader().QueryContext(ctx, `SELECT p.ride_id, count(*), COALESCE(SUM(o.amount), 0)
		FROM payments p JOIN cardnet_operations o ON o.auth_ref = p.auth_ref AND o.operation = 'capture' AND o.approved
		WHERE p.auth_ref <> ''
		GROUP BY p.ride_id`)
	if err != nil {
		p.t.Fatalf("payments' database: %v", err)
	}
	defer rows.Close()
	type captures struct{ n, amount int64 }
	got := map[string]captures{}
	for rows.Next() {
		var id string
		var c captures
		if err := rows.Scan(&id, &c.n, &c.amount); err != nil {
			p.t.Fatalf("payments' database: %v", err)
		}
		got[id] = c
	}
	if err := rows.Err(); err != nil {
		p.t.Fatalf("payments' database: %v", err)
	}
	bad := 0
	for id, c := range got {
		if owner[id] == nil {
			bad++
			p.t.Errorf("the card network captured %d for ride %s, which no rider asked for", c.amount, id)
		}
	}
	for id := range owner {
		c, want := got[id], captures{}
		if fare, ok := fares[id]; ok {
			want = captures{1, fare}
		}
		if c != want {
			if c.n > want.n || c.amount > want.amount {
				bad++
			}
			p.t.Errorf("ride %s: the card network captured %d time(s), %d in all; want %d time(s), %d", id, c.n, c.amount, want.n, want.amount)
		}
	}
	return bad
}
