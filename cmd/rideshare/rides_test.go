package main

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// Points in the demo city.
var (
	ferryBuilding = map[string]float64{"lat": 37.7955, "lng": -122.3937}
	twinPeaks     = map[string]float64{"lat": 37.7544, "lng": -122.4477}
	missionDolo   = map[string]float64{"lat": 37.7596, "lng": -122.4269}
	nearFerry     = map[string]float64{"lat": 37.7950, "lng": -122.3945}
	nearFerry2    = map[string]float64{"lat": 37.7900, "lng": -122.4000}
)

// fastRides are settings that make searches short enough for a test to
// watch them run out, and the grace period long enough never to. An offer
// lasts as long as its search: the tests' drivers poll for it and accept
// through the gateway, which on a busy machine can take seconds, and no
// test waits for an offer to expire.
var fastRides = []string{"--set", "dispatch.offer_ttl=8s,rides.search_timeout=8s,rides.cancel_grace=1h"}

type user struct {
	p     *runningPlatform
	id    string
	token string
}

func (p *runningPlatform) newRider(email string) *user {
	id := p.signup("rider", email, "correct horse battery", nil)
	return &user{p: p, id: id, token: p.token(email, "correct horse battery")["access_token"].(string)}
}

// newDriver signs a driver up and puts them online at where.
func (p *runningPlatform) newDriver(email string, where map[string]float64) *user {
	id := p.signup("driver", email, "correct horse battery", map[string]string{"make": "Tesla", "model": "3", "plate": strings.ToUpper(email[:6]), "color": "white"})
	u := &user{p: p, id: id, token: p.token(email, "correct horse battery")["access_token"].(string)}
	if r := u.do("PUT", "/v1/drivers/me/availability", map[string]any{"online": true, "location": where}); r.status != http.StatusOK {
		p.t.Fatalf("driver online: %d %s", r.status, r.body)
	}
	return u
}

func (u *user) do(method, path string, body any, header ...string) response {
	u.p.t.Helper()
	return u.p.do(method, path, u.token, body, header...)
}

// request asks for a ride and returns it.
func (u *user) request(key string, body map[string]any) map[string]any {
	u.p.t.Helper()
	r := u.do("POST", "/v1/rides", body, "Idempotency-Key", key)
	if r.status != http.StatusAccepted {
		u.p.t.Fatalf("request ride: %d %s", r.status, r.body)
	}
	ride := r.json(u.p.t)
	if r.header.Get("Location") != "/v1/rides/"+ride["id"].(string) {
		u.p.t.Errorf("Location %q for ride %v", r.header.Get("Location"), ride["id"])
	}
	return ride
}

func (u *user) ride(id string) map[string]any {
	u.p.t.Helper()
	r := u.read("/v1/rides/" + id)
	if r.status != http.StatusOK {
		u.p.t.Fatalf("GET ride %s: %d %s", id, r.status, r.body)
	}
	return r.json(u.p.t)
}

// read GETs path as a polling client should: a 429 means wait as long as
// Retry-After says and ask again. Tests poll fast, and without the race
// detector slowing them a poll loop can outrun a rider's rate limit.
func (u *user) read(path string) response {
	u.p.t.Helper()
	for range 10 {
		r := u.do("GET", path, nil)
		if r.status != http.StatusTooManyRequests {
			return r
		}
		wait, err := strconv.Atoi(r.header.Get("Retry-After"))
		if err != nil || wait < 1 {
			wait = 1
		}
		time.Sleep(time.Duration(wait) * time.Second)
	}
	return u.do("GET", path, nil)
}

// await waits until the ride's status is want.
func (u *user) await(id, want string) map[string]any {
	u.p.t.Helper()
	var last map[string]any
	testenv.Eventually(u.p.t, 30*time.Second, func() bool {
		last = u.ride(id)
		return last["status"] == want
	}, "ride %s never became %s (last: %v)", id, want, &last)
	return last
}

// awaitOffer waits until the driver is offered the ride.
func (u *user) awaitOffer(rideID string) map[string]any {
	u.p.t.Helper()
	var offer map[string]any
	testenv.Eventually(u.p.t, 20*time.Second, func() bool {
		r := u.do("GET", "/v1/drivers/me/offers", nil)
		items, _ := r.json(u.p.t)["items"].([]any)
		for _, it := range items {
			if o := it.(map[string]any); o["ride_id"] == rideID {
				offer = o
				return true
			}
		}
		return false
	}, "driver %s was never offered ride %s", u.id, rideID)
	return offer
}

func (u *user) step(rideID, step string) map[string]any {
	u.p.t.Helper()
	r := u.do("POST", "/v1/rides/"+rideID+"/"+step, nil)
	if r.status != http.StatusOK {
		u.p.t.Fatalf("%s %s: %d %s", step, rideID, r.status, r.body)
	}
	return r.json(u.p.t)
}

func (u *user) receipt(id string) map[string]any {
	u.p.t.Helper()
	r := u.read("/v1/rides/" + id + "/receipt")
	if r.status != http.StatusOK {
		u.p.t.Fatalf("receipt %s: %d %s", id, r.status, r.body)
	}
	return r.json(u.p.t)
}

// statusEvents reads the ride's server-sent events until the stream ends.
func (u *user) statusEvents(id string) []string {
	u.p.t.Helper()
	req, _ := http.NewRequest("GET", u.p.state.GatewayURL+"/v1/rides/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+u.token)
	res, err := u.p.client.Do(req)
	if err != nil {
		u.p.t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		u.p.t.Fatalf("events: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	var statuses []string
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			i := strings.Index(data, `"status":"`)
			if i >= 0 {
				rest := data[i+len(`"status":"`):]
				statuses = append(statuses, rest[:strings.IndexByte(rest, '"')])
			}
		}
	}
	return statuses
}

func trip(from, to map[string]float64) map[string]any {
	return map[string]any{"pickup": from, "dropoff": to}
}

// TestRides takes rides through the public API only: the happy path to a
// receipt and every failure path of the saga.
func TestRides(t *testing.T) {
	p := startPlatform(t, t.TempDir(), fastRides...)

	t.Run("happy path to a receipt", func(t *testing.T) {
		driver := p.newDriver("happy-driver@example.com", nearFerry)
		rider := p.newRider("happy-rider@example.com")
		est := rider.do("POST", "/v1/fares/estimate", trip(ferryBuilding, twinPeaks))
		if est.status != http.StatusOK {
			t.Fatalf("estimate: %d %s", est.status, est.body)
		}
		if fare, _ := est.json(t)["fare"].(map[string]any); fare["amount"].(float64) <= 0 || fare["currency"] != "USD" {
			t.Fatalf("estimate: %s", est.body)
		}

		ride := rider.request("happy-1", trip(ferryBuilding, twinPeaks))
		id := ride["id"].(string)
		if again := rider.request("happy-1", trip(ferryBuilding, twinPeaks)); again["id"] != id {
			t.Fatalf("replaying the Idempotency-Key made a second ride: %v then %v", id, again["id"])
		}
		if r := rider.do("POST", "/v1/rides", trip(ferryBuilding, missionDolo), "Idempotency-Key", "happy-1"); r.status != 422 || r.json(t)["code"] != "idempotency_key_reused" {
			t.Fatalf("same key, other body: %d %s", r.status, r.body)
		}

		offer := driver.awaitOffer(id)
		for _, f := range []string{"ride_id", "pickup", "dropoff", "fare", "expires_at"} {
			if _, ok := offer[f]; !ok {
				t.Errorf("offer lacks %q: %v", f, offer)
			}
		}
		if got := driver.step(id, "accept"); got["status"] != "driver_assigned" || got["driver_id"] != driver.id {
			t.Fatalf("after accept: %v", got)
		}
		if seen := rider.ride(id); seen["driver_id"] != driver.id {
			t.Fatalf("the rider does not see the driver: %v", seen)
		}
		stranger := p.newRider("stranger@example.com")
		if r := stranger.do("GET", "/v1/rides/"+id, nil); r.status != http.StatusNotFound {
			t.Errorf("another rider reading the ride: %d, want 404", r.status)
		}
		driver.step(id, "arrive")
		driver.step(id, "start")
		done := driver.step(id, "complete")
		if done["status"] != "completed" {
			t.Fatalf("after complete: %v", done)
		}
		fare := done["fare"].(map[string]any)
		var rc map[string]any
		testenv.Eventually(t, 20*time.Second, func() bool { rc = rider.receipt(id); return rc["status"] == "captured" }, "never captured: %v", &rc)
		if rc["amount"] != fare["amount"] || rc["currency"] != fare["currency"] || rc["captured_at"] == nil {
			t.Fatalf("receipt %v for fare %v", rc, fare)
		}
		if r := rider.do("POST", "/v1/rides/"+id+"/rating", map[string]any{"stars": 5}); r.status != http.StatusNoContent {
			t.Fatalf("rider rates: %d %s", r.status, r.body)
		}
		if r := rider.do("POST", "/v1/rides/"+id+"/rating", map[string]any{"stars": 2}); r.status != http.StatusConflict || r.json(t)["code"] != "already_rated" {
			t.Fatalf("rating twice with other stars: %d %s", r.status, r.body)
		}
		if r := driver.do("POST", "/v1/rides/"+id+"/rating", map[string]any{"stars": 4}); r.status != http.StatusNoContent {
			t.Fatalf("driver rates: %d %s", r.status, r.body)
		}
		if me := driver.do("GET", "/v1/me", nil).json(t); me["rating"] != 5.0 || me["rating_count"] != 1.0 {
			t.Fatalf("driver's rating after one 5-star ride: %v", me)
		}
		got := strings.Join(rider.statusEvents(id), ",")
		for _, s := range []string{"driver_assigned", "driver_arrived", "in_progress", "completed"} {
			if !strings.Contains(got, s) {
				t.Errorf("the event stream %q lacks %s", got, s)
			}
		}
		driver.do("PUT", "/v1/drivers/me/availability", map[string]any{"online": false})
	})

	t.Run("declined card", func(t *testing.T) {
		rider := p.newRider("declined@example.com")
		ride := rider.request("declined-1", map[string]any{"pickup": ferryBuilding, "dropoff": twinPeaks, "payment_method": "card_declined"})
		rider.await(ride["id"].(string), "payment_declined")
		if rc := rider.receipt(ride["id"].(string)); rc["status"] != "not_charged" || rc["amount"].(float64) != 0 {
			t.Fatalf("receipt after a decline: %v", rc)
		}
	})

	t.Run("no driver", func(t *testing.T) {
		rider := p.newRider("lonely@example.com")
		ride := rider.request("lonely-1", trip(ferryBuilding, twinPeaks))
		rider.await(ride["id"].(string), "no_driver")
		if rc := rider.receipt(ride["id"].(string)); rc["status"] != "not_charged" {
			t.Fatalf("receipt after no driver: %v", rc)
		}
	})

	t.Run("cancel before and after assignment", func(t *testing.T) {
		rider := p.newRider("cancel@example.com")
		early := rider.request("cancel-1", trip(ferryBuilding, twinPeaks))
		if r := rider.do("POST", "/v1/rides/"+early["id"].(string)+"/cancel", nil); r.status != http.StatusOK {
			t.Fatalf("cancel while searching: %d %s", r.status, r.body)
		}
		rider.await(early["id"].(string), "cancelled")

		driver := p.newDriver("cancel-driver@example.com", nearFerry)
		late := rider.request("cancel-2", trip(ferryBuilding, twinPeaks))
		id := late["id"].(string)
		driver.awaitOffer(id)
		driver.step(id, "accept")
		if r := rider.do("POST", "/v1/rides/"+id+"/cancel", map[string]any{"reason": "plans changed"}); r.status != http.StatusOK {
			t.Fatalf("cancel after assignment: %d %s", r.status, r.body)
		}
		rider.await(id, "cancelled")
		if rc := rider.receipt(id); rc["status"] == "captured" {
			t.Fatalf("cancelled inside the grace period yet charged: %v", rc)
		}
		// The driver was released: they can take the next ride.
		next := rider.request("cancel-3", trip(ferryBuilding, twinPeaks))
		driver.awaitOffer(next["id"].(string))
		driver.step(next["id"].(string), "accept")
		rider.do("POST", "/v1/rides/"+next["id"].(string)+"/cancel", nil)
		driver.do("PUT", "/v1/drivers/me/availability", map[string]any{"online": false})
	})

	t.Run("a declined offer goes to the next driver", func(t *testing.T) {
		near := p.newDriver("near@example.com", nearFerry)
		far := p.newDriver("far@example.com", nearFerry2)
		rider := p.newRider("decliner@example.com")
		ride := rider.request("decline-1", trip(ferryBuilding, twinPeaks))
		id := ride["id"].(string)
		near.awaitOffer(id)
		if r := near.do("POST", "/v1/rides/"+id+"/decline", nil); r.status != http.StatusNoContent {
			t.Fatalf("decline: %d %s", r.status, r.body)
		}
		far.awaitOffer(id)
		far.step(id, "accept")
		rider.await(id, "driver_assigned")
		rider.do("POST", "/v1/rides/"+id+"/cancel", nil)
		for _, d := range []*user{near, far} {
			d.do("PUT", "/v1/drivers/me/availability", map[string]any{"online": false})
		}
	})

	t.Run("two riders, one driver", func(t *testing.T) {
		driver := p.newDriver("only@example.com", nearFerry)
		riders := []*user{p.newRider("first@example.com"), p.newRider("second@example.com")}
		ids := make([]string, 2)
		var wg sync.WaitGroup
		for i, r := range riders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ids[i] = r.request(fmt.Sprintf("race-%d", i), trip(ferryBuilding, twinPeaks))["id"].(string)
			}()
		}
		wg.Wait()
		// The driver is never offered both at once, and can hold only one.
		var offered string
		testenv.Eventually(t, 20*time.Second, func() bool {
			items, _ := driver.do("GET", "/v1/drivers/me/offers", nil).json(t)["items"].([]any)
			if len(items) > 1 {
				t.Fatalf("one driver holds %d offers at once", len(items))
			}
			if len(items) == 1 {
				offered = items[0].(map[string]any)["ride_id"].(string)
			}
			return offered != ""
		}, "the driver was offered neither ride")
		driver.step(offered, "accept")
		other := ids[0]
		owner, otherOwner := riders[1], riders[0]
		if offered == ids[0] {
			other, owner, otherOwner = ids[1], riders[0], riders[1]
		}
		if got := owner.ride(offered); got["driver_id"] != driver.id {
			t.Fatalf("the accepted ride: %v", got)
		}
		if got := otherOwner.ride(other); got["driver_id"] == driver.id {
			t.Fatalf("both rides got the one driver: %v", got)
		}
		otherOwner.await(other, "no_driver")
	})
}
