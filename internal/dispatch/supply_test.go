package dispatch

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	"github.com/rideshare-platform/rideshare/internal/geo"
)

func (e *env) supply(p geo.Point) *dispatchv1.GetSupplyResponse {
	e.t.Helper()
	res, err := e.h.GetSupply(context.Background(), connect.NewRequest(&dispatchv1.GetSupplyRequest{Caller: rides, Location: p.Proto()}))
	if err != nil {
		e.t.Fatal(err)
	}
	return res.Msg
}

// TestSupplyCountsAZone: free drivers and searching rides in the point's
// zone, and nothing from the zone next door; a booked driver is not
// available.
func TestSupplyCountsAZone(t *testing.T) {
	onEngines(t, func(t *testing.T, e *env) {
		e.online("a", north(100))
		e.online("b", north(200))
		e.search(e.searchReq("r1", 1)) // offered to a: a is held
		e.search(e.searchReq("r2", 1)) // offered to b
		e.search(e.searchReq("r3", 1)) // waits
		e.online("elsewhere", north(5000))
		got := e.supply(center)
		if got.GetZone() != ZoneOf(center) || got.GetAvailableDrivers() != 0 || got.GetOpenRequests() != 3 {
			t.Fatalf("supply at center = %v, want 0 drivers and 3 requests in %s", got, ZoneOf(center))
		}
		if ZoneOf(north(5000)) == ZoneOf(center) {
			t.Fatal("test points share a zone")
		}
		if far := e.supply(north(5000)); far.GetAvailableDrivers() != 1 || far.GetOpenRequests() != 0 {
			t.Fatalf("supply 5 km north = %v, want 1 driver, 0 requests", far)
		}
	})
}

// TestSupplyChangedAnnouncedOnChange: a zone is announced when its counts
// change, not otherwise; re-announced after supplyRepeat; and announced
// once with zeros when it empties.
func TestSupplyChangedAnnouncedOnChange(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	last := map[string]announced{}
	announce := func() []*dispatchv1.SupplyChanged {
		t.Helper()
		before := len(supplyEvents(e))
		if err := e.d.announceSupply(ctx, last); err != nil {
			t.Fatal(err)
		}
		return supplyEvents(e)[before:]
	}
	e.online("a", north(100))
	e.online("b", north(200))
	if ev := announce(); len(ev) != 1 || ev[0].GetZone() != ZoneOf(center) || ev[0].GetAvailableDrivers() != 2 || ev[0].GetOpenRequests() != 0 {
		t.Fatalf("first announcement = %v", ev)
	}
	e.ping("a", north(150), time.Time{}) // moves within the zone
	if ev := announce(); len(ev) != 0 {
		t.Fatalf("announced %v with no change in counts", ev)
	}
	e.search(e.searchReq("r1", 1))
	if ev := announce(); len(ev) != 1 || ev[0].GetAvailableDrivers() != 1 || ev[0].GetOpenRequests() != 1 {
		t.Fatalf("after a search = %v, want 1 driver and 1 request", ev)
	}
	e.clock.Advance(defaultConfig.supplyRepeat)
	if ev := announce(); len(ev) != 1 {
		t.Fatalf("no re-announcement after supplyRepeat: %v", ev)
	}
	e.offline("b")
	if _, err := e.h.CancelSearch(ctx, connect.NewRequest(&dispatchv1.CancelSearchRequest{Caller: rides, RideId: "r1"})); err != nil {
		t.Fatal(err)
	}
	e.offline("a")
	if ev := announce(); len(ev) != 1 || ev[0].GetAvailableDrivers() != 0 || ev[0].GetOpenRequests() != 0 {
		t.Fatalf("emptied zone = %v, want one announcement of zeros", ev)
	}
	if ev := announce(); len(ev) != 0 {
		t.Fatalf("empty zone announced again: %v", ev)
	}
}

func TestZoneIDs(t *testing.T) {
	cases := []struct {
		p    geo.Point
		want string
	}{
		{geo.Point{Lat: 37.7650, Lng: -122.4350}, "z1888_-4898"},
		{geo.Point{Lat: 0.001, Lng: 0.001}, "z0_0"},
		{geo.Point{Lat: -0.001, Lng: -0.001}, "z-1_-1"},
	}
	for _, c := range cases {
		if got := ZoneOf(c.p); got != c.want {
			t.Errorf("ZoneOf(%v) = %s, want %s", c.p, got, c.want)
		}
	}
	// A zone's cells are exactly the grid cells that map to it.
	z := zoneOfCell(fineCell(center))
	for _, c := range z.cells() {
		if zoneOfCell(c) != z {
			t.Fatalf("cell %v of zone %v maps to %v", c, z, zoneOfCell(c))
		}
	}
}
