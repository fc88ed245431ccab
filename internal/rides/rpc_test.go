package rides

import (
	"testing"
	"time"

	"connectrpc.com/connect"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	geov1 "github.com/rideshare-platform/rideshare/api/geo/v1"
	ridesv1 "github.com/rideshare-platform/rideshare/api/rides/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

func TestRequestRideValidation(t *testing.T) {
	h := newHarness(t)
	outside := &geov1.Point{Lat: 48.8566, Lng: 2.3522}
	cases := []struct {
		name string
		req  *ridesv1.RequestRideRequest
		kind apperr.Kind
		code string
	}{
		{"no key", &ridesv1.RequestRideRequest{Caller: rider("a"), Pickup: pickup, Dropoff: dropoff}, apperr.Invalid, "idempotency_key_required"},
		{"no pickup", &ridesv1.RequestRideRequest{Caller: rider("a"), IdempotencyKey: "k", Dropoff: dropoff}, apperr.Invalid, ""},
		{"not a coordinate", &ridesv1.RequestRideRequest{Caller: rider("a"), IdempotencyKey: "k", Pickup: &geov1.Point{Lat: 91}, Dropoff: dropoff}, apperr.Invalid, ""},
		{"outside the area", &ridesv1.RequestRideRequest{Caller: rider("a"), IdempotencyKey: "k", Pickup: pickup, Dropoff: outside}, apperr.Unprocessable, "outside_service_area"},
		{"a driver", &ridesv1.RequestRideRequest{Caller: driver("d"), IdempotencyKey: "k", Pickup: pickup, Dropoff: dropoff}, apperr.Forbidden, ""},
		{"no caller", &ridesv1.RequestRideRequest{IdempotencyKey: "k", Pickup: pickup, Dropoff: dropoff}, apperr.Forbidden, ""},
	}
	for _, c := range cases {
		_, err := h.srv.RequestRide(h.ctx, connect.NewRequest(c.req))
		if apperr.KindOf(err) != c.kind || (c.code != "" && apperr.CodeOf(err) != c.code) {
			t.Errorf("%s: got %v (%s), want %s %s", c.name, err, apperr.CodeOf(err), c.kind, c.code)
		}
	}
	if rep, _ := Audit(h.ctx, h.db); rep.Total != 0 {
		t.Fatalf("a refused request stored a ride: %+v", rep)
	}
}

// TestIdempotencyKeys follows Stripe's rules, per caller.
func TestIdempotencyKeys(t *testing.T) {
	h := newHarness(t)
	req := func(who, key string, drop *geov1.Point) *ridesv1.RequestRideRequest {
		return &ridesv1.RequestRideRequest{Caller: rider(who), IdempotencyKey: key, Pickup: pickup, Dropoff: drop, PaymentMethod: "pm_visa"}
	}
	first := h.requestWith(req("alice", "k1", dropoff))
	h.drive() // the ride moves on; a retry still gets the first response
	h.clock.Advance(time.Hour)
	again := h.requestWith(req("alice", "k1", dropoff))
	if again.GetId() != first.GetId() || again.GetStatus() != ridesv1.RideStatus_RIDE_STATUS_REQUESTED ||
		!again.GetCreatedAt().AsTime().Equal(first.GetCreatedAt().AsTime()) {
		t.Fatalf("retry answered %v, want the first response %v", again, first)
	}

	other := &geov1.Point{Lat: 37.76, Lng: -122.43}
	_, err := h.srv.RequestRide(h.ctx, connect.NewRequest(req("alice", "k1", other)))
	if apperr.KindOf(err) != apperr.Unprocessable || apperr.CodeOf(err) != "idempotency_key_reused" {
		t.Fatalf("same key, another body: %v, want 422 idempotency_key_reused", err)
	}

	// Keys are scoped per caller: bob's k1 is his own.
	bobs := h.requestWith(req("bob", "k1", dropoff))
	if bobs.GetId() == first.GetId() || bobs.GetRiderId() != "bob" {
		t.Fatalf("bob's k1 returned %v", bobs)
	}

	// A request still running under a key (see idempotency.go for when that
	// is visible) makes a retry a conflict.
	if err := h.db.InTx(h.ctx, func(tx *sqldb.Tx) error {
		_, err := tx.ExecContext(h.ctx, `INSERT INTO ride_requests (caller_id, idem_key, request_hash, state, created_at) VALUES ($1, $2, $3, 'in_flight', $4)`,
			"carol", "k9", mustHash(t, req("carol", "k9", dropoff)), sqldb.Micros(h.clock.Now()))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	_, err = h.srv.RequestRide(h.ctx, connect.NewRequest(req("carol", "k9", dropoff)))
	if apperr.KindOf(err) != apperr.Conflict || apperr.CodeOf(err) != "idempotency_key_in_flight" {
		t.Fatalf("retry while in flight: %v, want 409 idempotency_key_in_flight", err)
	}

	rep, _ := Audit(h.ctx, h.db)
	var requested int
	_ = h.db.Reader().QueryRowContext(h.ctx, `SELECT count(*) FROM outbox WHERE subject = 'rides.ride.requested'`).Scan(&requested)
	if rep.Total != 2 || requested != 2 {
		t.Fatalf("%d rides, %d ride.requested events; want 2 and 2 (alice's and bob's)", rep.Total, requested)
	}

	// Kept at least 24 hours, then forgotten: the key makes a new ride.
	h.clock.Advance(keyRetention - 2*time.Hour)
	if n, err := pruneKeys(h.ctx, h.db, h.clock.Now()); err != nil || n != 0 {
		t.Fatalf("pruned %d keys within 24 h (%v)", n, err)
	}
	h.clock.Advance(3 * time.Hour)
	if n, err := pruneKeys(h.ctx, h.db, h.clock.Now()); err != nil || n != 3 {
		t.Fatalf("pruned %d keys after 24 h (%v), want 3", n, err)
	}
	if later := h.requestWith(req("alice", "k1", dropoff)); later.GetId() == first.GetId() {
		t.Fatal("a forgotten key still returned the old ride")
	}
}

func mustHash(t *testing.T, m *ridesv1.RequestRideRequest) string {
	t.Helper()
	s, err := requestHash(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestObjectAuthorization: a ride is visible to its rider, its assigned
// driver and operators; everyone else is told it does not exist.
func TestObjectAuthorization(t *testing.T) {
	h := newHarness(t)
	id := h.assigned("alice", "dave")
	get := func(c *authv1.Caller) error {
		_, err := h.srv.GetRide(h.ctx, connect.NewRequest(&ridesv1.GetRideRequest{Caller: c, RideId: id}))
		return err
	}
	receipt := func(c *authv1.Caller) error { _, err := h.receipt(id, c); return err }
	cases := []struct {
		name string
		call func(*authv1.Caller) error
		who  *authv1.Caller
		ok   bool
	}{
		{"owner reads", get, rider("alice"), true},
		{"assigned driver reads", get, driver("dave"), true},
		{"admin reads", get, admin, true},
		{"other rider reads", get, rider("bob"), false},
		{"other driver reads", get, driver("erin"), false},
		{"rider id as driver", get, driver("alice"), false},
		{"nobody reads", get, nil, false},
		{"owner's receipt", receipt, rider("alice"), true},
		{"admin's receipt", receipt, admin, true},
		{"driver's receipt", receipt, driver("dave"), false},
		{"other rider's receipt", receipt, rider("bob"), false},
		{"other driver arrives", func(c *authv1.Caller) error { return h.arrive(id, c.GetUserId()) }, driver("erin"), false},
		{"other rider cancels", func(c *authv1.Caller) error { _, err := h.cancel(id, c); return err }, rider("bob"), false},
		{"other driver cancels", func(c *authv1.Caller) error { _, err := h.cancel(id, c); return err }, driver("erin"), false},
		{"rider arrives", func(c *authv1.Caller) error {
			_, err := h.srv.ArriveRide(h.ctx, connect.NewRequest(&ridesv1.ArriveRideRequest{Caller: c, RideId: id}))
			return err
		}, rider("alice"), false},
	}
	for _, c := range cases {
		err := c.call(c.who)
		if c.ok != (err == nil) || (!c.ok && !apperr.Is(err, apperr.NotFound)) {
			t.Errorf("%s: %v (want ok=%v; refusals are NotFound)", c.name, err, c.ok)
		}
	}
	h.wantStatus(id, StatusDriverAssigned)
	if _, err := h.srv.GetRide(h.ctx, connect.NewRequest(&ridesv1.GetRideRequest{Caller: admin, RideId: "missing"})); !apperr.Is(err, apperr.NotFound) {
		t.Fatalf("a missing ride: %v", err)
	}
}

// TestAcceptRide: only an open offer books; accepting twice returns the
// ride; a driver whose offer went elsewhere is told it expired.
func TestAcceptRide(t *testing.T) {
	h := newHarness(t)
	id := h.searching("alice")
	if _, err := h.srv.AcceptRide(h.ctx, connect.NewRequest(&ridesv1.AcceptRideRequest{Caller: driver("erin"), RideId: id})); apperr.CodeOf(err) != "offer_expired" {
		t.Fatalf("accepting without an offer: %v, want offer_expired", err)
	}
	h.wantStatus(id, StatusSearching)
	for range 2 {
		got, err := h.accept(id, "dave")
		if err != nil || got.GetDriverId() != "dave" || got.GetStatus() != ridesv1.RideStatus_RIDE_STATUS_DRIVER_ASSIGNED {
			t.Fatalf("accept: %v %v", got, err)
		}
	}
	if _, err := h.accept(id, "erin"); !apperr.Is(err, apperr.NotFound) {
		t.Fatalf("a second driver once the ride is assigned: %v, want NotFound (no leak that it exists)", err)
	}
	if r := h.wantStatus(id, StatusDriverAssigned); r.driverID != "dave" || len(h.statusEvents(id)) != 2 {
		t.Fatalf("driver %q events %v", r.driverID, h.statusEvents(id))
	}
}

// TestListPagination pages through 45 rides newest first, some created in
// the same microsecond, without losing or repeating one.
func TestListPagination(t *testing.T) {
	h := newHarness(t)
	var want []string // newest first
	for i := range 45 {
		if i%3 != 0 {
			h.clock.Advance(time.Second) // every third ride shares its time with the one before
		}
		want = append([]string{h.request("alice").GetId()}, want...)
		if i%10 == 0 {
			h.request("bob")
		}
	}
	var got []string
	cur := ""
	var pages []int
	for {
		res, err := h.srv.ListRides(h.ctx, connect.NewRequest(&ridesv1.ListRidesRequest{Caller: rider("alice"), Cursor: cur}))
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, len(res.Msg.GetRides()))
		for _, r := range res.Msg.GetRides() {
			if r.GetRiderId() != "alice" {
				t.Fatalf("alice's list shows %s's ride", r.GetRiderId())
			}
			got = append(got, r.GetId())
		}
		if cur = res.Msg.GetNextCursor(); cur == "" {
			break
		}
		if len(pages) > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if len(pages) != 3 || pages[0] != 20 || pages[1] != 20 || pages[2] != 5 {
		t.Fatalf("pages of %v, want 20, 20, 5", pages)
	}
	if len(got) != len(want) {
		t.Fatalf("listed %d rides, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("position %d: %s, want %s (newest first)", i, got[i], want[i])
		}
	}

	list := func(c *authv1.Caller, size int32, cursor string) (*ridesv1.ListRidesResponse, error) {
		res, err := h.srv.ListRides(h.ctx, connect.NewRequest(&ridesv1.ListRidesRequest{Caller: c, PageSize: size, Cursor: cursor}))
		if err != nil {
			return nil, err
		}
		return res.Msg, nil
	}
	if res, _ := list(rider("alice"), 500, ""); len(res.GetRides()) != 45 || res.GetNextCursor() != "" {
		t.Fatalf("page_size 500 gave %d rides (max is 100, alice has 45)", len(res.GetRides()))
	}
	if res, _ := list(admin, 500, ""); len(res.GetRides()) != 50 {
		t.Fatalf("admin lists %d rides, want all 50", len(res.GetRides()))
	}
	for _, bad := range []string{"garbage", "cjE6MTIz", "!!!", cursor{createdAt: 1, id: "x"}.encode() + "x"} {
		if _, err := list(rider("alice"), 0, bad); !apperr.Is(err, apperr.Invalid) {
			t.Errorf("cursor %q: %v, want Invalid", bad, err)
		}
	}
	if _, err := list(rider("alice"), -1, ""); !apperr.Is(err, apperr.Invalid) {
		t.Errorf("negative page size: %v, want Invalid", err)
	}

	// A driver lists the rides assigned to them.
	id := h.searching("carol")
	if _, err := h.accept(id, "dave"); err != nil {
		t.Fatal(err)
	}
	if res, _ := list(driver("dave"), 0, ""); len(res.GetRides()) != 1 || res.GetRides()[0].GetId() != id {
		t.Fatalf("dave's list %v, want his one ride", res.GetRides())
	}
}
