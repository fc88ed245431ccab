package fleet

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// testArea is a 2 km patch of the demo city, so that test trips are short.
var testArea = geo.Area{Name: "test", Min: geo.Point{Lat: 37.770, Lng: -122.430}, Max: geo.Point{Lat: 37.788, Lng: -122.410}}

const wait = 10 * time.Second

// testConfig is a fast fleet: frequent pings and polls, a short pause
// before accepting, and driving 300 times faster than real time (a 2 km
// trip takes under a second).
func testConfig(gateway string, drivers int) Config {
	return Config{
		Gateway: gateway, Drivers: drivers, Area: testArea, Seed: 7, Password: "fleet-secret",
		TimeScale: 300, AcceptDelay: [2]time.Duration{50 * time.Millisecond, 100 * time.Millisecond},
		PingEvery: 20 * time.Millisecond, PollEvery: 20 * time.Millisecond, Stagger: 20 * time.Millisecond,
	}
}

// runFleet starts a fleet and returns it with a stop function that cancels
// it and waits for Run to return nil. The test also stops it at cleanup.
func runFleet(t *testing.T, c Config) (*Fleet, func()) {
	t.Helper()
	f := New(c)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	stopped := false
	stop := func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after its context ended; want nil", err)
			}
		case <-time.After(wait):
			t.Fatal("Run did not return after its context ended")
		}
	}
	t.Cleanup(stop)
	return f, stop
}

func online(gw *fakeGateway, n int) bool {
	a := gw.account(EmailFor(n))
	return a != nil && a.online
}

func pings(gw *fakeGateway, n int) []fakePing {
	if a := gw.account(EmailFor(n)); a != nil {
		return a.pings
	}
	return nil
}

func polls(gw *fakeGateway, n int) int {
	if a := gw.account(EmailFor(n)); a != nil {
		return a.polls
	}
	return 0
}

func TestSignsUpThenLogsInOnTheNextRun(t *testing.T) {
	t.Parallel()
	gw := newFakeGateway(t)
	for run := 1; run <= 2; run++ {
		_, stop := runFleet(t, testConfig(gw.srv.URL, 2))
		testenv.Eventually(t, wait, func() bool { return online(gw, 1) && online(gw, 2) }, "run %d: both drivers online", run)
		stop()
		if online(gw, 1) || online(gw, 2) {
			t.Errorf("run %d: a driver is still online after the fleet stopped", run)
		}
	}
	accounts, signups, logins, _ := gw.counts()
	if accounts != 2 || signups != 4 || logins != 4 {
		t.Errorf("after two runs: %d accounts, %d sign-ups, %d logins; want 2 accounts (the second run's sign-ups refused as taken), 4 sign-ups, 4 logins", accounts, signups, logins)
	}
	if gw.account("fleet-driver-001@fleet.rideshare.invalid") == nil || gw.account("fleet-driver-002@fleet.rideshare.invalid") == nil {
		t.Errorf("the fleet accounts are not fleet-driver-001 and -002")
	}
}

func TestGoesOnlineAndPingsInsideTheArea(t *testing.T) {
	t.Parallel()
	gw := newFakeGateway(t)
	c := testConfig(gw.srv.URL, 3)
	// A 200 m patch at 100× speed: a roaming car covers it in well under a
	// second, so the walk meets every edge many times.
	c.Area = geo.Area{Name: "tiny", Min: geo.Point{Lat: 37.7800, Lng: -122.4200}, Max: geo.Point{Lat: 37.7818, Lng: -122.4177}}
	c.TimeScale = 100
	f, _ := runFleet(t, c)
	testenv.Eventually(t, wait, func() bool {
		for n := 1; n <= 3; n++ {
			if len(pings(gw, n)) < 50 {
				return false
			}
		}
		return true
	}, "three drivers pinging")
	for n := 1; n <= 3; n++ {
		a := gw.account(EmailFor(n))
		if !c.Area.Contains(a.onlineAt) {
			t.Errorf("driver %d went online at %v, outside the area", n, a.onlineAt)
		}
		distinct := map[geo.Point]bool{}
		for _, p := range a.pings {
			if !c.Area.Contains(p.at) {
				t.Errorf("driver %d pinged %v, outside the area", n, p.at)
			}
			distinct[p.at] = true
		}
		if len(distinct) < len(a.pings)/2 {
			t.Errorf("driver %d: %d distinct positions in %d pings; a roaming car moves", n, len(distinct), len(a.pings))
		}
	}
	if s := f.Stats(); s.Online != 3 || s.Errors != 0 {
		t.Errorf("stats %+v; want 3 online, no errors", s)
	}
}

// tripFor is a trip across testArea for driver n: the pickup in the
// corner farthest from where the driver is now (so there is a drive to
// watch), the dropoff in the opposite corner, about 2 km apart.
func tripFor(gw *fakeGateway, n int) (pickup, dropoff geo.Point) {
	ps := pings(gw, n)
	from := gw.account(EmailFor(n)).onlineAt
	if len(ps) > 0 {
		from = ps[len(ps)-1].at
	}
	in := inner(testArea)
	corners := []geo.Point{in.Min, {Lat: in.Min.Lat, Lng: in.Max.Lng}, in.Max, {Lat: in.Max.Lat, Lng: in.Min.Lng}}
	far := 0
	for i, c := range corners {
		if geo.Distance(from, c) > geo.Distance(from, corners[far]) {
			far = i
		}
	}
	return corners[far], corners[(far+2)%4]
}

func TestTakesAnOfferToCompletion(t *testing.T) {
	t.Parallel()
	gw := newFakeGateway(t)
	c := testConfig(gw.srv.URL, 1)
	f, _ := runFleet(t, c)
	testenv.Eventually(t, wait, func() bool { return online(gw, 1) }, "driver online")
	pickup, dropoff := tripFor(gw, 1)
	gw.offer("ride-1", pickup, dropoff)
	testenv.Eventually(t, wait, func() bool { return gw.ride("ride-1").status == "completed" }, "the ride completed")
	pollsAtEnd := polls(gw, 1)

	rd := gw.ride("ride-1")
	var order []string
	for _, s := range rd.steps {
		order = append(order, s.action)
	}
	if got := order; len(got) != 4 || got[0] != "accept" || got[1] != "arrive" || got[2] != "start" || got[3] != "complete" {
		t.Fatalf("steps %v; want accept, arrive, start, complete", got)
	}
	accept, arrive, start, complete := rd.steps[0], rd.steps[1], rd.steps[2], rd.steps[3]
	if d := accept.when.Sub(rd.offeredAt); d < c.AcceptDelay[0] {
		t.Errorf("accepted %s after the offer; want a pause of at least %s", d, c.AcceptDelay[0])
	}
	if d := start.when.Sub(arrive.when); d < time.Duration(float64(boarding)/c.TimeScale) {
		t.Errorf("started %s after arriving; want a wait for the rider to board", d)
	}
	if geo.Distance(arrive.at, pickup) > 1 {
		t.Errorf("arrived while last seen %.0f m from the pickup", geo.Distance(arrive.at, pickup))
	}
	if geo.Distance(complete.at, dropoff) > 1 {
		t.Errorf("completed while last seen %.0f m from the dropoff", geo.Distance(complete.at, dropoff))
	}
	ps := pings(gw, 1)
	closingIn(t, "pickup", ps[accept.pings:arrive.pings], pickup)
	closingIn(t, "dropoff", ps[start.pings:complete.pings], dropoff)

	// Back to roaming: it asks for offers again.
	testenv.Eventually(t, wait, func() bool { return polls(gw, 1) > pollsAtEnd+3 }, "the driver polls for offers after the ride")
	if s := f.Stats(); s.Offers != 1 || s.Accepted != 1 || s.Completed != 1 || s.Errors != 0 {
		t.Errorf("stats %+v; want 1 offer, 1 accepted, 1 completed, no errors", s)
	}
}

// closingIn checks that the pings move toward dest and end there.
func closingIn(t *testing.T, what string, ps []fakePing, dest geo.Point) {
	t.Helper()
	if len(ps) < 3 {
		t.Fatalf("only %d pings on the way to the %s", len(ps), what)
	}
	for i := 1; i < len(ps); i++ {
		before, after := geo.Distance(ps[i-1].at, dest), geo.Distance(ps[i].at, dest)
		if after > before+0.5 {
			t.Errorf("on the way to the %s, ping %d moved away: %.0f m → %.0f m", what, i, before, after)
		}
	}
	if first, last := geo.Distance(ps[0].at, dest), geo.Distance(ps[len(ps)-1].at, dest); last > 1 || first <= last {
		t.Errorf("on the way to the %s: %.0f m → %.0f m; want to end there", what, first, last)
	}
}

func TestRefusedAcceptIsTolerated(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusConflict, http.StatusNotFound, http.StatusUnprocessableEntity} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			t.Parallel()
			gw := newFakeGateway(t)
			f, _ := runFleet(t, testConfig(gw.srv.URL, 1))
			testenv.Eventually(t, wait, func() bool { return online(gw, 1) }, "driver online")
			pickup, dropoff := tripFor(gw, 1)
			gw.refuseAccept("ride-1", status)
			gw.offer("ride-1", pickup, dropoff)
			testenv.Eventually(t, wait, func() bool { return gw.ride("ride-1").accepts > 0 }, "the driver tried to accept")
			n := len(pings(gw, 1))
			testenv.Eventually(t, wait, func() bool { return len(pings(gw, 1)) > n+5 }, "the driver roams on")

			gw.offer("ride-2", pickup, dropoff)
			testenv.Eventually(t, wait, func() bool { return gw.ride("ride-2").status == "driver_assigned" }, "the next offer is accepted")
			// The gateway records the accept before the driver reads the answer and counts it.
			testenv.Eventually(t, wait, func() bool { return f.Stats().Accepted > 0 }, "the fleet counts the accepted ride")
			if got := gw.ride("ride-1").accepts; got != 1 {
				t.Errorf("the refused offer was accepted %d times; want once", got)
			}
			if s := f.Stats(); s.Offers != 2 || s.Accepted != 1 || s.Errors != 0 {
				t.Errorf("stats %+v; want 2 offers, 1 accepted, no errors: a refused accept is normal", s)
			}
		})
	}
}

func TestCancelledRideSendsDriverBackToRoaming(t *testing.T) {
	t.Parallel()
	gw := newFakeGateway(t)
	c := testConfig(gw.srv.URL, 1)
	c.TimeScale = 5 // slow enough that the driver is still on the way when the rider cancels
	_, _ = runFleet(t, c)
	testenv.Eventually(t, wait, func() bool { return online(gw, 1) }, "driver online")
	pickup, dropoff := tripFor(gw, 1)
	gw.offer("ride-1", pickup, dropoff)
	testenv.Eventually(t, wait, func() bool { return gw.ride("ride-1").status == "driver_assigned" }, "the driver accepted")
	n := len(pings(gw, 1))
	testenv.Eventually(t, wait, func() bool { return len(pings(gw, 1)) > n+3 }, "the driver is on the way")
	gw.cancel("ride-1")

	gw.offer("ride-2", pickup, dropoff)
	testenv.Eventually(t, wait, func() bool { return gw.ride("ride-2").status == "driver_assigned" }, "the driver, roaming again, accepts the next offer")
	for _, s := range gw.ride("ride-1").steps {
		if s.action != "accept" {
			t.Errorf("the cancelled ride got a %s step", s.action)
		}
	}
}

func TestARefusedStepOnACancelledRideEndsTheTrip(t *testing.T) {
	t.Parallel()
	gw := newFakeGateway(t)
	_, _ = runFleet(t, testConfig(gw.srv.URL, 1))
	testenv.Eventually(t, wait, func() bool { return online(gw, 1) }, "driver online")
	pickup, dropoff := tripFor(gw, 1)
	gw.cancelWhen("ride-1", "arrive")
	gw.offer("ride-1", pickup, dropoff)
	testenv.Eventually(t, wait, func() bool { return gw.ride("ride-1").attempts["arrive"] > 0 }, "the driver arrived")
	gw.offer("ride-2", pickup, dropoff)
	testenv.Eventually(t, wait, func() bool { return gw.ride("ride-2").status == "driver_assigned" }, "the driver, roaming again, accepts the next offer")
	if got := gw.ride("ride-1").attempts; got["arrive"] != 1 || got["start"] != 0 {
		t.Errorf("steps tried on the cancelled ride: %v; want one arrive (refused) and nothing after", got)
	}
}

func TestRetriesAStepThatFails(t *testing.T) {
	t.Parallel()
	gw := newFakeGateway(t)
	f, _ := runFleet(t, testConfig(gw.srv.URL, 1))
	testenv.Eventually(t, wait, func() bool { return online(gw, 1) }, "driver online")
	gw.failStep("arrive", http.StatusServiceUnavailable, 2)
	pickup, dropoff := tripFor(gw, 1)
	gw.offer("ride-1", pickup, dropoff)
	testenv.Eventually(t, wait, func() bool { return gw.ride("ride-1").status == "completed" }, "the ride completed despite two failed arrivals")
	// The driver counts the ride once the gateway's answer reaches it,
	// a moment after the gateway recorded it.
	var s Stats
	testenv.Eventually(t, wait, func() bool { s = f.Stats(); return s.Completed == 1 }, "the driver never counted the ride: %+v", &s)
	if s.Errors != 2 {
		t.Errorf("stats %+v; want the 2 failures counted", s)
	}
}

func TestGoesOnlineAgainWhenDispatchForgetsIt(t *testing.T) {
	t.Parallel()
	gw := newFakeGateway(t)
	_, _ = runFleet(t, testConfig(gw.srv.URL, 1))
	testenv.Eventually(t, wait, func() bool { return len(pings(gw, 1)) > 3 }, "driver pinging")
	gw.forceOffline(EmailFor(1))
	n := len(pings(gw, 1))
	testenv.Eventually(t, wait, func() bool { return online(gw, 1) && len(pings(gw, 1)) > n+3 }, "the driver online and pinging again")
}

func TestLogsInAgainAfter401(t *testing.T) {
	t.Parallel()
	gw := newFakeGateway(t)
	f, _ := runFleet(t, testConfig(gw.srv.URL, 1))
	testenv.Eventually(t, wait, func() bool { return len(pings(gw, 1)) > 3 }, "driver pinging")
	_, _, logins, _ := gw.counts()
	gw.expireTokens()
	n := len(pings(gw, 1))
	testenv.Eventually(t, wait, func() bool { return len(pings(gw, 1)) > n+5 }, "the driver pings on with a new token")
	if _, _, after, _ := gw.counts(); after != logins+1 {
		t.Errorf("%d logins after the token expired; want exactly one more than %d", after, logins)
	}
	if s := f.Stats(); s.Errors != 0 {
		t.Errorf("stats %+v; a re-login is not an error", s)
	}
}

func TestStopsPromptlyWhenTheGatewayHangs(t *testing.T) {
	t.Parallel()
	gw := newFakeGateway(t)
	_, stop := runFleet(t, testConfig(gw.srv.URL, 3))
	testenv.Eventually(t, wait, func() bool { return online(gw, 1) && online(gw, 2) && online(gw, 3) }, "drivers online")
	gw.setHangOffline(true)
	began := time.Now()
	stop()
	// The bound is the offline budget (1 s) plus slack for a loaded
	// machine, well under the 5 s request timeout it must not wait out.
	if took := time.Since(began); took > 4*time.Second {
		t.Errorf("Run took %s to return after cancel with a hung gateway; going offline must give up after %s", took, offlineBudget)
	}
	_, _, _, before := gw.counts()
	// Nothing to poll for: this checks that no driver goroutine outlived Run.
	time.Sleep(100 * time.Millisecond)
	if _, _, _, after := gw.counts(); after != before {
		t.Errorf("%d requests after Run returned", after-before)
	}
}

func TestRunRefusesAnUnworkableConfig(t *testing.T) {
	t.Parallel()
	good := testConfig("http://127.0.0.1:1", 1)
	for name, change := range map[string]func(*Config){
		"no gateway":       func(c *Config) { c.Gateway = "" },
		"no password":      func(c *Config) { c.Password = "" },
		"negative drivers": func(c *Config) { c.Drivers = -1 },
		"inverted area":    func(c *Config) { c.Area.Min, c.Area.Max = c.Area.Max, c.Area.Min },
		"negative accept":  func(c *Config) { c.AcceptDelay = [2]time.Duration{-time.Second, time.Second} },
		"not a coordinate": func(c *Config) { c.Area.Max.Lat = 91 },
	} {
		t.Run(name, func(t *testing.T) {
			c := good
			change(&c)
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			if err := Run(ctx, c); err == nil {
				t.Error("Run accepted it")
			}
		})
	}
}

func TestSameSeedSameDrivers(t *testing.T) {
	t.Parallel()
	a, b := New(Config{Seed: 42}), New(Config{Seed: 42})
	for n := 1; n <= 5; n++ {
		da, db := a.newDriver(n), b.newDriver(n)
		if da.car.pos != db.car.pos || profileFor(n, da.rng) != profileFor(n, db.rng) {
			t.Errorf("driver %d differs between two fleets with the same seed", n)
		}
	}
	if New(Config{Seed: 1}).newDriver(1).car.pos == New(Config{Seed: 2}).newDriver(1).car.pos {
		t.Error("different seeds start driver 1 at the same point")
	}
}
