package dispatch

import (
	"context"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// TestOfferToNearestFreeDriver: the ride goes to the nearest online driver,
// who sees it in their offers with what the public API shows.
func TestOfferToNearestFreeDriver(t *testing.T) {
	onEngines(t, func(t *testing.T, e *env) {
		e.online("far", north(3000))
		e.online("near", north(300))
		e.online("mid", north(1000))
		e.online("gone", north(100))
		e.offline("gone")
		e.search(e.searchReq("r1", 1))
		if got := e.holder("r1"); got != "near" {
			t.Fatalf("offered to %q, want the nearest online driver", got)
		}
		res, err := e.h.ListOffers(context.Background(), connect.NewRequest(&dispatchv1.ListOffersRequest{Caller: driverCaller("near")}))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Msg.GetOffers()) != 1 {
			t.Fatalf("near has %d offers, want 1", len(res.Msg.GetOffers()))
		}
		o := res.Msg.GetOffers()[0]
		wantExpiry := e.clock.Now().Add(defaultConfig.offerTTL)
		if o.GetRideId() != "r1" || o.GetFare().GetAmount() != 1850 || o.GetFare().GetCurrency() != "USD" ||
			!o.GetExpiresAt().AsTime().Equal(wantExpiry) || e6(o.GetPickup().GetLat()) != e6(center.Lat) || e6(o.GetDropoff().GetLat()) != e6(north(2000).Lat) {
			t.Fatalf("offer = %v, want ride r1 from center, fare 1850 USD, expiring at %v", o, wantExpiry)
		}
		if got := e.offers("mid"); len(got) != 0 {
			t.Fatalf("mid has offers %v", got)
		}
	})
}

// TestDeclinePassesToNextDriver: a declined offer goes to the next nearest
// driver; the decline is announced; the decliner can no longer accept and
// is not offered the ride again.
func TestDeclinePassesToNextDriver(t *testing.T) {
	onEngines(t, func(t *testing.T, e *env) {
		e.online("a", north(100))
		e.online("b", north(200))
		e.search(e.searchReq("r1", 1))
		if res, err := e.respond("a", "r1", false); err != nil || res.GetAssigned() {
			t.Fatalf("decline: %v %v", res, err)
		}
		if got := e.holder("r1"); got != "b" {
			t.Fatalf("after a declined, offered to %q, want b", got)
		}
		if _, err := e.respond("a", "r1", false); err != nil {
			t.Fatalf("repeating a decline: %v", err)
		}
		if _, err := e.respond("a", "r1", true); apperr.CodeOf(err) != "offer_expired" || !apperr.Is(err, apperr.Conflict) {
			t.Fatalf("accepting a declined offer: %v, want Conflict offer_expired", err)
		}
		// b declines too: a declined this ride, so nobody is left.
		if _, err := e.respond("b", "r1", false); err != nil {
			t.Fatal(err)
		}
		if got := e.holder("r1"); got != "" {
			t.Fatalf("offered again to %q after everyone declined", got)
		}
		ev := declinedEvents(e)
		if len(ev) != 2 || ev[0].GetDriverId() != "a" || ev[0].GetReason() != "declined" || ev[1].GetDriverId() != "b" {
			t.Fatalf("OfferDeclined events = %v", ev)
		}
	})
}

// TestExpiredOfferPassesToNextDriver: an unanswered offer expires after the
// TTL (the timer, driven by the injected clock) and goes to the next driver.
func TestExpiredOfferPassesToNextDriver(t *testing.T) {
	onEngines(t, func(t *testing.T, e *env) {
		e.online("a", north(100))
		e.online("b", north(200))
		e.search(e.searchReq("r1", 1))
		e.clock.Advance(defaultConfig.offerTTL - time.Millisecond)
		e.tick()
		if got := e.holder("r1"); got != "a" {
			t.Fatalf("before the TTL, offered to %q, want still a", got)
		}
		e.clock.Advance(time.Millisecond)
		e.tick()
		if got := e.holder("r1"); got != "b" {
			t.Fatalf("after the TTL, offered to %q, want b", got)
		}
		if _, err := e.respond("a", "r1", true); apperr.CodeOf(err) != "offer_expired" {
			t.Fatalf("accepting an expired offer: %v, want offer_expired", err)
		}
		if got := e.offers("a"); len(got) != 0 {
			t.Fatalf("a still lists %v", got)
		}
		ev := declinedEvents(e)
		if len(ev) != 1 || ev[0].GetDriverId() != "a" || ev[0].GetReason() != "expired" {
			t.Fatalf("OfferDeclined events = %v", ev)
		}
	})
}

// TestAcceptAssignsOnce: accepting books the driver and announces it once;
// a repeat answers the same; the booked driver gets no other offer until
// released.
func TestAcceptAssignsOnce(t *testing.T) {
	onEngines(t, func(t *testing.T, e *env) {
		e.online("a", north(1000))
		e.online("b", north(2000))
		e.search(e.searchReq("r1", 1))
		first, err := e.respond("a", "r1", true)
		if err != nil || !first.GetAssigned() {
			t.Fatalf("accept: %v %v", first, err)
		}
		// 1000 m × 1.3 at 25 km/h.
		if first.GetEtaSeconds() != 188 {
			t.Fatalf("eta %d s, want 188", first.GetEtaSeconds())
		}
		e.clock.Advance(time.Hour) // a repeat long after still answers the same
		again, err := e.respond("a", "r1", true)
		if err != nil || !again.GetAssigned() || again.GetEtaSeconds() != first.GetEtaSeconds() {
			t.Fatalf("repeated accept: %v %v, want %v", again, err, first)
		}
		ev := assignedEvents(e)
		if len(ev) != 1 || ev[0].GetRideId() != "r1" || ev[0].GetDriverId() != "a" || ev[0].GetEtaSeconds() != 188 || ev[0].GetAttempt() != 1 {
			t.Fatalf("DriverAssigned events = %v", ev)
		}
		if _, err := e.respond("b", "r1", true); !apperr.Is(err, apperr.NotFound) {
			t.Fatalf("b accepting a ride never offered to them: %v, want NotFound", err)
		}
		if _, err := e.respond("a", "r1", false); apperr.CodeOf(err) != "offer_accepted" {
			t.Fatalf("declining after accepting: %v, want offer_accepted", err)
		}
		// a is booked: the next ride goes to b although a is nearer.
		e.search(e.searchReq("r2", 1))
		if got := e.holder("r2"); got != "b" {
			t.Fatalf("r2 offered to %q, want b (a is booked)", got)
		}
		if _, err := e.h.ReleaseDriver(context.Background(), connect.NewRequest(&dispatchv1.ReleaseDriverRequest{Caller: rides, RideId: "r1"})); err != nil {
			t.Fatal(err)
		}
		if _, err := e.h.ReleaseDriver(context.Background(), connect.NewRequest(&dispatchv1.ReleaseDriverRequest{Caller: rides, RideId: "r1"})); err != nil {
			t.Fatalf("releasing twice: %v", err)
		}
		e.search(e.searchReq("r3", 1))
		if got := e.holder("r3"); got != "a" {
			t.Fatalf("r3 offered to %q, want a (released)", got)
		}
	})
}

// TestSearchDeadlineFailsOnce: with nobody to take the ride, the deadline
// ends the search with exactly one SearchFailed, however often the timers
// run; an offer open at the deadline is withdrawn.
func TestSearchDeadlineFailsOnce(t *testing.T) {
	onEngines(t, func(t *testing.T, e *env) {
		e.search(e.searchReq("lonely", 1)) // nobody online
		e.online("a", north(100))
		e.search(e.searchReq("offered", 2)) // a gets it and never answers
		if got := e.holder("offered"); got != "a" {
			t.Fatalf("offered to %q, want a", got)
		}
		for range 3 {
			e.clock.Advance(20 * time.Second)
			e.tick()
			e.tick()
		}
		ev := failedEvents(e)
		slices.SortFunc(ev, func(x, y *dispatchv1.SearchFailed) int { return compareStrings(x.GetRideId(), y.GetRideId()) })
		if len(ev) != 2 || ev[0].GetRideId() != "lonely" || ev[0].GetReason() != "no_driver" || ev[0].GetAttempt() != 1 ||
			ev[1].GetRideId() != "offered" || ev[1].GetAttempt() != 2 {
			t.Fatalf("SearchFailed events = %v, want one per ride", ev)
		}
		if got := e.holder("offered"); got != "" {
			t.Fatalf("offer still open after the deadline, held by %q", got)
		}
		// a, freed, gets the next ride.
		e.search(e.searchReq("next", 1))
		if got := e.holder("next"); got != "a" {
			t.Fatalf("next offered to %q, want a", got)
		}
	})
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestOfferWaitsForAFreeDriver: a search that found nobody looks again and
// offers the ride to a driver who came online meanwhile.
func TestOfferWaitsForAFreeDriver(t *testing.T) {
	e := newEnv(t)
	e.search(e.searchReq("r1", 1))
	e.online("late", north(500))
	e.clock.Advance(defaultConfig.retryEvery)
	e.tick()
	if got := e.holder("r1"); got != "late" {
		t.Fatalf("offered to %q, want late", got)
	}
}

// TestStartSearchIdempotentPerAttempt: a repeated StartSearch starts
// nothing; a new attempt releases the driver who gave the ride up and skips
// the excluded; a late repeat of the old attempt changes nothing.
func TestStartSearchIdempotentPerAttempt(t *testing.T) {
	onEngines(t, func(t *testing.T, e *env) {
		e.online("a", north(100))
		e.online("b", north(200))
		req := e.searchReq("r1", 1)
		e.search(req)
		e.search(req)
		if got := e.holder("r1"); got != "a" {
			t.Fatalf("offered to %q", got)
		}
		if _, err := e.respond("a", "r1", true); err != nil {
			t.Fatal(err)
		}
		e.search(e.searchReq("r1", 2, "a"))
		if got := e.holder("r1"); got != "b" {
			t.Fatalf("attempt 2 offered to %q, want b", got)
		}
		e.search(req) // the saga's late retry of attempt 1
		if got := e.holder("r1"); got != "b" {
			t.Fatalf("after a late attempt 1, offered to %q", got)
		}
		// a was released by attempt 2: another ride reaches them.
		e.search(e.searchReq("r2", 1))
		if got := e.holder("r2"); got != "a" {
			t.Fatalf("r2 offered to %q, want a (released by the new attempt)", got)
		}
		var n int
		if err := e.db.Reader().QueryRowContext(context.Background(), `SELECT COUNT(*) FROM searches WHERE ride_id = 'r1'`).Scan(&n); err != nil || n != 2 {
			t.Fatalf("%d searches for r1 (%v), want 2", n, err)
		}
	})
}

// TestCancelSearch: cancelling withdraws the open offer and frees the
// driver; cancelling again is fine; cancelling after assignment releases
// the driver.
func TestCancelSearch(t *testing.T) {
	onEngines(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		cancel := func(ride string) {
			t.Helper()
			if _, err := e.h.CancelSearch(ctx, connect.NewRequest(&dispatchv1.CancelSearchRequest{Caller: rides, RideId: ride})); err != nil {
				t.Fatal(err)
			}
		}
		e.online("a", north(100))
		e.search(e.searchReq("r1", 1))
		cancel("r1")
		cancel("r1")
		cancel("never-searched")
		if got := e.holder("r1"); got != "" {
			t.Fatalf("offer still held by %q", got)
		}
		if _, err := e.respond("a", "r1", true); apperr.CodeOf(err) != "offer_expired" {
			t.Fatalf("accepting a withdrawn offer: %v", err)
		}
		if ev := declinedEvents(e); len(ev) != 1 || ev[0].GetReason() != "withdrawn" {
			t.Fatalf("OfferDeclined events = %v", ev)
		}
		e.search(e.searchReq("r2", 1))
		if _, err := e.respond("a", "r2", true); err != nil {
			t.Fatal(err)
		}
		cancel("r2")
		e.search(e.searchReq("r3", 1))
		if got := e.holder("r3"); got != "a" {
			t.Fatalf("r3 offered to %q, want a (released by the cancel)", got)
		}
		e.clock.Advance(2 * time.Minute)
		e.tick()
		if ev := failedEvents(e); len(ev) != 1 || ev[0].GetRideId() != "r3" {
			t.Fatalf("SearchFailed events = %v, want only r3's", ev)
		}
	})
}

// TestGoingOfflinePassesOffers: a driver who goes offline with an open
// offer declines it; the ride moves on.
func TestGoingOfflinePassesOffers(t *testing.T) {
	onEngines(t, func(t *testing.T, e *env) {
		e.online("a", north(100))
		e.online("b", north(200))
		e.search(e.searchReq("r1", 1))
		e.offline("a")
		if got := e.holder("r1"); got != "b" {
			t.Fatalf("offered to %q, want b", got)
		}
		e.search(e.searchReq("r2", 1))
		if got := e.holder("r2"); got != "" {
			t.Fatalf("r2 offered to %q; a is offline and b busy", got)
		}
	})
}

// TestDeadlineCapsOfferExpiry: an offer never outlives its search.
func TestDeadlineCapsOfferExpiry(t *testing.T) {
	e := newEnv(t)
	e.online("a", north(100))
	req := e.searchReq("r1", 1)
	req.Deadline = timestamppb.New(e.clock.Now().Add(5 * time.Second))
	e.search(req)
	open, err := e.d.store.openOffers(context.Background(), e.db.Reader(), "r1", "")
	if err != nil || len(open) != 1 || !open[0].ExpiresAt.Equal(req.Deadline.AsTime()) {
		t.Fatalf("open offers %v (%v), want one expiring at the deadline", open, err)
	}
}
