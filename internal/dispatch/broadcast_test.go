package dispatch

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/rideshare-platform/rideshare/internal/broker"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// broadcasting gives e a broadcaster on its own connection to srv, as a
// separate process would have, and runs it until t ends. It returns once
// the replica is listening, so nothing sent afterwards is missed.
func (e *env) broadcasting(t *testing.T, srv *server.Server) *broadcaster {
	t.Helper()
	nc, _ := testenv.Connect(t, srv)
	b, err := newBroadcaster(nc, e.d.fleet, 5*time.Millisecond, nil, e.d.log)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := b.listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.sendLoop(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = sub.Unsubscribe()
	})
	e.d.cast = b
	return b
}

// busy says whether e's fleet holds driver id as busy.
func (e *env) busy(id string) bool {
	e.d.fleet.mu.Lock()
	defer e.d.fleet.mu.Unlock()
	d := e.d.fleet.drivers[id]
	return d != nil && d.busy
}

// near says whether e's fleet has driver id within a meter of p.
func (e *env) near(id string, p geo.Point) bool {
	got, _, ok := e.d.fleet.position(id)
	return ok && geo.Distance(got, p) < 1
}

// TestReplicasShareTheFleet: two replicas on one database and one broker,
// neither refreshing from the database within the test. A driver who comes
// online and pings through replica a is matched by a search on replica b
// at the position of the ping (which a has not even written yet); b's lock
// and a's availability changes cross over too, and neither replica applies
// its own broadcasts.
func TestReplicasShareTheFleet(t *testing.T) {
	srv := testenv.Broker(t)
	_, js := testenv.Connect(t, srv)
	if err := broker.EnsureStreams(context.Background(), js, 1); err != nil {
		t.Fatal(err)
	}
	for _, eng := range testenv.Engines() {
		t.Run(eng.Name, func(t *testing.T) {
			db := testenv.Migrate(t, eng.Open(t), Service.Migrations)
			clock := newClock()
			a, b := newEnvOn(t, db, clock), newEnvOn(t, db, clock)
			for _, e := range []*env{a, b} {
				// The refresh, the other way replicas converge, stays out of
				// the way: only the broadcast can bring b what a learned.
				e.d.cfg.refreshEvery = time.Hour
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- e.d.runRefresh(ctx) }()
				t.Cleanup(func() { cancel(); <-done })
			}
			castA, castB := a.broadcasting(t, srv), b.broadcasting(t, srv)
			// Only a give-up limit: with the refresh an hour away, nothing
			// but the broadcast can bring a replica what the other learned.
			const wait = 10 * time.Second

			a.online("far", north(3000))
			a.online("near", north(1500))
			testenv.Eventually(t, wait, func() bool { return b.near("far", north(3000)) && b.d.fleet.onlineCount() == 2 },
				"replica b never learned of the drivers who came online through a")
			clock.Advance(time.Second)
			a.ping("far", north(100), time.Time{})
			testenv.Eventually(t, wait, func() bool { return b.near("far", north(100)) },
				"replica b never saw the ping taken by a")

			b.search(b.searchReq("r1", 1))
			if got := b.holder("r1"); got != "far" {
				t.Fatalf("b offered r1 to %q, want far, who pinged 100 m away through a", got)
			}
			testenv.Eventually(t, wait, func() bool { return a.busy("far") },
				"replica a never learned that b's offer holds far")

			a.offline("near")
			testenv.Eventually(t, wait, func() bool { return b.d.fleet.onlineCount() == 1 },
				"replica b still counts near online after near went offline through a")
			b.search(b.searchReq("r2", 1))
			if got := b.holder("r2"); got != "" {
				t.Fatalf("b offered r2 to %q with nobody free", got)
			}

			// Each replica received exactly what the other sent, and counted
			// every one of its own messages as its own instead of applying it.
			for _, c := range []struct {
				name     string
				self, to *broadcaster
			}{{"a", castA, castB}, {"b", castB, castA}} {
				sent := func(b *broadcaster) float64 { return counterValue(t, b.records.WithLabelValues("sent")) }
				testenv.Eventually(t, wait, func() bool {
					return counterValue(t, c.to.records.WithLabelValues("received")) == sent(c.self) &&
						counterValue(t, c.self.messages.WithLabelValues("own")) == counterValue(t, c.self.messages.WithLabelValues("sent"))
				}, "replica %s: sent %v facts in %v messages; the other received %v, it ignored %v of its own messages", c.name,
					sent(c.self), counterValue(t, c.self.messages.WithLabelValues("sent")),
					counterValue(t, c.to.records.WithLabelValues("received")), counterValue(t, c.self.messages.WithLabelValues("own")))
				if counterValue(t, c.self.messages.WithLabelValues("own")) == 0 {
					t.Fatalf("replica %s never saw its own broadcast", c.name)
				}
			}
		})
	}
	// Positions are not events: the broker stored none of them.
	st, err := js.Stream(context.Background(), broker.StreamName("dispatch"))
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(context.Background()); err != nil || info.State.Msgs != 0 {
		t.Fatalf("the dispatch stream holds %v messages (err %v): the broadcast subject is inside a stream", info.State.Msgs, err)
	}
}

// TestAbsorb: a broadcast fact applies only if newer than what the fleet
// holds, and a fix from another replica is never written by this one.
func TestAbsorb(t *testing.T) {
	t0 := time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	for _, c := range []struct {
		name       string
		local      func(f *fleet)
		facts      []fact
		online     bool
		pos        geo.Point
		busy, free bool
	}{
		{"a newer fix moves the driver", func(f *fleet) { f.setOnline("d", true, at(0)); f.locate("d", north(0), at(1), false) },
			[]fact{{kind: factFix, driver: "d", at: at(2), pos: north(500)}}, true, north(500), false, true},
		{"an older fix does not", func(f *fleet) { f.setOnline("d", true, at(0)); f.locate("d", north(0), at(3), false) },
			[]fact{{kind: factFix, driver: "d", at: at(2), pos: north(500)}}, true, north(0), false, true},
		{"an unknown driver comes online where it pinged", func(*fleet) {},
			[]fact{{kind: factFix, driver: "d", at: at(1), pos: north(200)}, {kind: factOnline, driver: "d", at: at(1)}}, true, north(200), false, true},
		{"a late online does not undo a newer offline", func(f *fleet) { f.locate("d", north(0), at(0), true); f.setOnline("d", false, at(5)) },
			[]fact{{kind: factOnline, driver: "d", at: at(4)}}, false, north(0), false, false},
		{"a lock taken elsewhere makes the driver busy", func(f *fleet) { f.setOnline("d", true, at(0)); f.locate("d", north(0), at(0), true) },
			[]fact{{kind: factBusy, driver: "d", at: at(1)}}, true, north(0), true, false},
		{"a stale release does not free a newer lock", func(f *fleet) {
			f.setOnline("d", true, at(0))
			f.locate("d", north(0), at(0), true)
			f.setBusy("d", true, at(6))
		}, []fact{{kind: factFree, driver: "d", at: at(5)}}, true, north(0), true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFleet()
			c.local(f)
			f.absorb(c.facts)
			d := f.drivers["d"]
			if d.online != c.online || d.pos != c.pos || d.busy != c.busy {
				t.Fatalf("online %v at %v busy %v; want online %v at %v busy %v", d.online, d.pos, d.busy, c.online, c.pos, c.busy)
			}
			free := f.nearestFree(north(0), 1, nil)
			if (len(free) == 1) != c.free {
				t.Fatalf("matchable = %v, want %v", len(free) == 1, c.free)
			}
		})
	}
	// The replica that took a fix writes it; the others only hold it.
	f := newFleet()
	f.locate("d", north(0), at(0), false)
	f.absorb([]fact{{kind: factFix, driver: "d", at: at(1), pos: north(100)}})
	if dirty := f.takeDirty(); len(dirty) != 0 {
		t.Fatalf("a fix from another replica is queued for writing here: %v", dirty)
	}
}

func TestFactsEncoding(t *testing.T) {
	t0 := time.Date(2026, 11, 2, 8, 0, 0, 123456000, time.UTC)
	facts := []fact{
		{kind: factFix, driver: "driver-1", at: t0, pos: geo.Point{Lat: 37.765012, Lng: -122.435001}},
		{kind: factOnline, driver: "driver-2", at: t0.Add(time.Microsecond)},
		{kind: factOffline, driver: "driver-2", at: t0.Add(time.Second)},
		{kind: factBusy, driver: "d", at: t0},
		{kind: factFree, driver: "d", at: t0},
	}
	data := encodeFacts("replica-a", facts)
	origin, got, err := decodeFacts(data)
	if err != nil || origin != "replica-a" || len(got) != len(facts) {
		t.Fatalf("decoded %q %v %v", origin, got, err)
	}
	for i := range facts {
		if got[i].kind != facts[i].kind || got[i].driver != facts[i].driver || !got[i].at.Equal(facts[i].at) || got[i].pos != facts[i].pos {
			t.Errorf("fact %d: %+v, want %+v", i, got[i], facts[i])
		}
	}
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"unknown version", append([]byte{9}, data[1:]...)},
		{"truncated", data[:len(data)-1]},
		{"unknown kind", encodeFacts("x", []fact{{kind: 77, driver: "d", at: t0}})},
		{"no driver", encodeFacts("x", []fact{{kind: factOnline, at: t0}})},
		{"no time", encodeFacts("x", []fact{{kind: factOnline, driver: "d"}})},
		{"off the globe", encodeFacts("x", []fact{{kind: factFix, driver: "d", at: t0, pos: geo.Point{Lat: 91}}})},
		{"length past the end", []byte{castVersion, 200, 'a'}},
	} {
		if _, _, err := decodeFacts(c.data); !errors.Is(err, errMalformed) {
			t.Errorf("%s: err %v, want malformed", c.name, err)
		}
	}
}

// FuzzDecodeFacts: whatever arrives on the subject, decoding neither panics
// nor yields a fact the fleet could not hold, and what decodes re-encodes
// to the same facts.
func FuzzDecodeFacts(f *testing.F) {
	t0 := time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC)
	f.Add(encodeFacts("a", []fact{{kind: factFix, driver: "d", at: t0, pos: north(10)}, {kind: factBusy, driver: "e", at: t0}}))
	f.Add([]byte{castVersion, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		origin, facts, err := decodeFacts(data)
		if err != nil {
			return
		}
		for _, x := range facts {
			if x.driver == "" || x.at.IsZero() || !x.pos.Valid() || x.kind < factFix || x.kind > factFree {
				t.Fatalf("decoded an impossible fact %+v", x)
			}
		}
		o2, again, err := decodeFacts(encodeFacts(origin, facts))
		if err != nil || o2 != origin || len(again) != len(facts) {
			t.Fatalf("re-encoding: %q %v %v", o2, again, err)
		}
	})
}
