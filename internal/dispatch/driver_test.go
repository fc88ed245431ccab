package dispatch

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/timestamppb"

	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

func (e *env) ping(id string, p geo.Point, recorded time.Time) {
	e.t.Helper()
	req := &dispatchv1.UpdateLocationRequest{Caller: driverCaller(id), Location: p.Proto()}
	if !recorded.IsZero() {
		req.RecordedAt = timestamppb.New(recorded)
	}
	if _, err := e.h.UpdateLocation(context.Background(), connect.NewRequest(req)); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) at(id string) geo.Point {
	e.t.Helper()
	p, _, ok := e.d.fleet.position(id)
	if !ok {
		e.t.Fatalf("no position for %s", id)
	}
	return p
}

// TestOlderPingIgnored: a ping recorded before the position held never
// moves the driver back; a ping stamped in the future counts as now.
func TestOlderPingIgnored(t *testing.T) {
	e := newEnv(t)
	e.online("a", north(0))
	now := e.clock.Now()
	newer, older := north(500), north(900)
	e.clock.Advance(10 * time.Second)
	e.ping("a", newer, now.Add(8*time.Second))
	e.ping("a", older, now.Add(5*time.Second)) // delivered late
	e.ping("a", older, now.Add(8*time.Second)) // same instant: not newer
	if got := e.at("a"); got != newer {
		t.Fatalf("a at %v, want %v (the newest fix)", got, newer)
	}
	if n := counterValue(t, e.d.metrics.pings.WithLabelValues("stale")); n != 2 {
		t.Fatalf("%v stale pings counted, want 2", n)
	}
	// A fast device clock: the fix counts as taken now, so the next honest
	// ping still applies.
	e.ping("a", north(1000), e.clock.Now().Add(time.Hour))
	e.clock.Advance(time.Second)
	e.ping("a", north(1100), time.Time{})
	if got := e.at("a"); got != north(1100) {
		t.Fatalf("a at %v after an honest ping following a future-stamped one", got)
	}
	// Matching follows the pings.
	e.online("b", north(700))
	e.search(e.searchReq("r1", 1))
	if got := e.holder("r1"); got != "b" {
		t.Fatalf("offered to %q, want b (a moved away)", got)
	}
}

// TestTimersResumeAfterRestart: a search and its open offer outlive the
// process. A new service on the same database file expires the offer,
// passes the ride to the next driver (positions from the stored rows), and
// fails the search at its deadline, once.
func TestTimersResumeAfterRestart(t *testing.T) {
	path := t.TempDir() + "/dispatch.db"
	clock := newClock()
	db := testenv.MigratedDB(t, path, Service.Migrations)
	first := newEnvOn(t, db, clock)
	first.online("a", north(100))
	first.online("b", north(200))
	first.ping("b", north(150), time.Time{}) // never flushed: b restarts at 200 m
	first.search(first.searchReq("r1", 1))
	if got := first.holder("r1"); got != "a" {
		t.Fatalf("offered to %q", got)
	}
	db.Close() // the process dies; nothing in memory survives

	clock.Advance(defaultConfig.offerTTL)
	second := newEnvOn(t, testenv.MigratedDB(t, path, Service.Migrations), clock)
	if got := second.at("b"); e6(got.Lat) != e6(north(200).Lat) {
		t.Fatalf("b restored at %v, want the stored %v", got, north(200))
	}
	second.tick()
	if got := second.holder("r1"); got != "b" {
		t.Fatalf("after the restart and the TTL, offered to %q, want b", got)
	}
	clock.Advance(time.Minute)
	second.tick()
	second.tick()
	if ev := failedEvents(second); len(ev) != 1 || ev[0].GetRideId() != "r1" {
		t.Fatalf("SearchFailed events = %v, want one for r1", ev)
	}
	if got := second.holder("r1"); got != "" {
		t.Fatalf("offer still open after the deadline: %q", got)
	}
}

// TestPositionsPersistLazily: pings reach the database only when the
// flusher runs, and a restarted service starts from there.
func TestPositionsPersistLazily(t *testing.T) {
	path := t.TempDir() + "/dispatch.db"
	clock := newClock()
	db := testenv.MigratedDB(t, path, Service.Migrations)
	first := newEnvOn(t, db, clock)
	first.online("a", north(0))
	clock.Advance(time.Second)
	first.ping("a", north(800), time.Time{})
	stored := func() int64 {
		var lat int64
		if err := db.Reader().QueryRowContext(context.Background(), `SELECT lat_e6 FROM drivers WHERE driver_id = 'a'`).Scan(&lat); err != nil {
			t.Fatal(err)
		}
		return lat
	}
	if stored() != e6(north(0).Lat) {
		t.Fatal("a ping was written on the request path")
	}
	if err := first.d.flushPositions(context.Background()); err != nil {
		t.Fatal(err)
	}
	if stored() != e6(north(800).Lat) {
		t.Fatalf("flushed position %d, want %d", stored(), e6(north(800).Lat))
	}
	second := newEnvOn(t, db, clock)
	if got := second.at("a"); e6(got.Lat) != e6(north(800).Lat) {
		t.Fatalf("restarted at %v", got)
	}
}

// TestReplicasConverge: two replicas on one database. What one learns
// (a driver online, a lock taken) reaches the other at its next refresh,
// and the database lock still keeps a driver to one ride when the second
// replica's picture is stale.
func TestReplicasConverge(t *testing.T) {
	db := testenv.MigratedDB(t, t.TempDir()+"/dispatch.db", Service.Migrations)
	clock := newClock()
	a := newEnvOn(t, db, clock)
	b := newEnvOn(t, db, clock)
	a.online("d1", north(100))
	b.search(b.searchReq("r0", 1))
	if got := b.holder("r0"); got != "" {
		t.Fatalf("b offered r0 to %q before learning of d1", got)
	}
	clock.Advance(time.Second)
	if _, err := b.d.refreshFleet(context.Background(), clock.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	clock.Advance(defaultConfig.retryEvery)
	b.tick()
	if got := b.holder("r0"); got != "d1" {
		t.Fatalf("after refreshing, b offered r0 to %q, want d1", got)
	}
	// a does not know d1 is held; the lock stops it anyway.
	a.search(a.searchReq("r1", 1))
	if got := a.holder("r1"); got != "" {
		t.Fatalf("a offered r1 to %q, who already holds r0", got)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
