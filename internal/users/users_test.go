package users

import (
	"context"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/anypb"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	eventsv1 "github.com/rideshare-platform/rideshare/api/events/v1"
	identityv1 "github.com/rideshare-platform/rideshare/api/identity/v1"
	ridesv1 "github.com/rideshare-platform/rideshare/api/rides/v1"
	usersv1 "github.com/rideshare-platform/rideshare/api/users/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

func newHandler(t *testing.T) (*handler, *sqldb.DB) {
	db := testenv.DB(t, Service.Migrations)
	return &handler{store: &store{db: db, outbox: outbox.New(db, "users", outbox.Options{})}}, db
}

var service = &authv1.Caller{UserId: "gateway", Role: authv1.Role_ROLE_SERVICE}

func TestCreateProfileValidation(t *testing.T) {
	h, _ := newHandler(t)
	car := &usersv1.Vehicle{Make: "Kia", Model: "Niro", Plate: "8XYZ001", Color: "red"}
	cases := []struct {
		name string
		req  *usersv1.CreateProfileRequest
		kind apperr.Kind
	}{
		{"rider", &usersv1.CreateProfileRequest{Caller: service, AccountId: "r1", Role: authv1.Role_ROLE_RIDER, Name: "Ada", Email: "a@x.io"}, 0},
		{"driver", &usersv1.CreateProfileRequest{Caller: service, AccountId: "d1", Role: authv1.Role_ROLE_DRIVER, Name: "Bo", Email: "b@x.io", Vehicle: car}, 0},
		{"no account", &usersv1.CreateProfileRequest{Caller: service, Role: authv1.Role_ROLE_RIDER, Name: "Ada"}, apperr.Invalid},
		{"admin role", &usersv1.CreateProfileRequest{Caller: service, AccountId: "x", Role: authv1.Role_ROLE_ADMIN, Name: "Ada"}, apperr.Invalid},
		{"blank name", &usersv1.CreateProfileRequest{Caller: service, AccountId: "x", Role: authv1.Role_ROLE_RIDER, Name: "  "}, apperr.Invalid},
		{"driver without plate", &usersv1.CreateProfileRequest{Caller: service, AccountId: "x", Role: authv1.Role_ROLE_DRIVER, Name: "Bo"}, apperr.Invalid},
		{"rider with car", &usersv1.CreateProfileRequest{Caller: service, AccountId: "x", Role: authv1.Role_ROLE_RIDER, Name: "Bo", Vehicle: car}, apperr.Invalid},
		{"rider caller", &usersv1.CreateProfileRequest{Caller: &authv1.Caller{UserId: "x", Role: authv1.Role_ROLE_RIDER}, AccountId: "x", Role: authv1.Role_ROLE_RIDER, Name: "Bo"}, apperr.Forbidden},
	}
	for _, c := range cases {
		_, err := h.CreateProfile(context.Background(), connect.NewRequest(c.req))
		switch {
		case c.kind == 0 && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.kind != 0 && !apperr.Is(err, c.kind):
			t.Errorf("%s: got %v, want %s", c.name, err, c.kind)
		}
	}
	if _, err := h.store.get(context.Background(), "x"); !apperr.Is(err, apperr.NotFound) {
		t.Errorf("a refused profile was stored: %v", err)
	}
}

// TestProfileOnceWhicheverPathArrives: the gateway's direct call and the
// account event (delivered twice) all lead to one profile and one event.
func TestProfileOnceWhicheverPathArrives(t *testing.T) {
	ctx := context.Background()
	h, db := newHandler(t)
	req := &usersv1.CreateProfileRequest{Caller: service, AccountId: "acc-1", Role: authv1.Role_ROLE_RIDER, Name: "Ada", Email: "a@x.io"}
	if _, err := h.CreateProfile(ctx, connect.NewRequest(req)); err != nil {
		t.Fatal(err)
	}
	payload, _ := anypb.New(&identityv1.AccountCreated{AccountId: "acc-1", Role: authv1.Role_ROLE_RIDER, Name: "Ada", Email: "a@x.io"})
	env := &eventsv1.Envelope{Id: "ev-1", Type: "identity.account.created", Payload: payload}
	for range 2 {
		if err := db.InTx(ctx, func(tx *sqldb.Tx) error { return h.onAccountCreated(ctx, tx, env) }); err != nil {
			t.Fatal(err)
		}
	}
	var profiles, events int
	_ = db.Reader().QueryRowContext(ctx, `SELECT count(*) FROM profiles`).Scan(&profiles)
	_ = db.Reader().QueryRowContext(ctx, `SELECT count(*) FROM outbox WHERE subject = 'users.profile.created'`).Scan(&events)
	if profiles != 1 || events != 1 {
		t.Fatalf("%d profiles and %d profile.created events, want 1 and 1", profiles, events)
	}
}

func TestGetProfileOwnerOnly(t *testing.T) {
	ctx := context.Background()
	h, _ := newHandler(t)
	if _, err := h.CreateProfile(ctx, connect.NewRequest(&usersv1.CreateProfileRequest{Caller: service, AccountId: "a", Role: authv1.Role_ROLE_RIDER, Name: "A"})); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		caller *authv1.Caller
		userID string
		ok     bool
	}{
		{&authv1.Caller{UserId: "a", Role: authv1.Role_ROLE_RIDER}, "", true},
		{&authv1.Caller{UserId: "a", Role: authv1.Role_ROLE_RIDER}, "a", true},
		{&authv1.Caller{UserId: "b", Role: authv1.Role_ROLE_RIDER}, "a", false},
		{&authv1.Caller{UserId: "b", Role: authv1.Role_ROLE_DRIVER}, "a", false},
		{&authv1.Caller{UserId: "ops", Role: authv1.Role_ROLE_ADMIN}, "a", true},
		{nil, "a", false},
	}
	for _, c := range cases {
		_, err := h.GetProfile(ctx, connect.NewRequest(&usersv1.GetProfileRequest{Caller: c.caller, UserId: c.userID}))
		if c.ok != (err == nil) || (!c.ok && !apperr.Is(err, apperr.NotFound)) {
			t.Errorf("caller %v reading %q: %v (want ok=%v, refusals are NotFound)", c.caller, c.userID, err, c.ok)
		}
	}
}

// fakeRides answers GetRide the way rides does: the ride to its rider and
// driver, NotFound to anyone else.
type fakeRides map[string]*ridesv1.Ride

func (f fakeRides) GetRide(_ context.Context, c *authv1.Caller, id string) (*ridesv1.Ride, error) {
	r, ok := f[id]
	if !ok || (c.GetUserId() != r.GetRiderId() && c.GetUserId() != r.GetDriverId()) {
		return nil, apperr.E(apperr.NotFound, "", "ride not found")
	}
	return r, nil
}

func TestRateUser(t *testing.T) {
	ctx := context.Background()
	h, _ := newHandler(t)
	for _, p := range []*usersv1.CreateProfileRequest{
		{Caller: service, AccountId: "rider", Role: authv1.Role_ROLE_RIDER, Name: "R"},
		{Caller: service, AccountId: "driver", Role: authv1.Role_ROLE_DRIVER, Name: "D", Vehicle: &usersv1.Vehicle{Plate: "P1"}},
	} {
		if _, err := h.CreateProfile(ctx, connect.NewRequest(p)); err != nil {
			t.Fatal(err)
		}
	}
	h.rides = fakeRides{
		"done":    {Id: "done", Status: ridesv1.RideStatus_RIDE_STATUS_COMPLETED, RiderId: "rider", DriverId: "driver"},
		"ongoing": {Id: "ongoing", Status: ridesv1.RideStatus_RIDE_STATUS_IN_PROGRESS, RiderId: "rider", DriverId: "driver"},
	}
	riderC := &authv1.Caller{UserId: "rider", Role: authv1.Role_ROLE_RIDER}
	driverC := &authv1.Caller{UserId: "driver", Role: authv1.Role_ROLE_DRIVER}
	cases := []struct {
		name   string
		caller *authv1.Caller
		ride   string
		user   string
		stars  int32
		code   string // "" means accepted
	}{
		{"rider rates driver", riderC, "done", "", 5, ""},
		{"same again is a no-op", riderC, "done", "driver", 5, ""},
		{"other stars conflict", riderC, "done", "", 3, "already_rated"},
		{"driver rates rider", driverC, "done", "rider", 4, ""},
		{"not completed", riderC, "ongoing", "", 5, "ride_not_completed"},
		{"not a party", &authv1.Caller{UserId: "x", Role: authv1.Role_ROLE_RIDER}, "done", "", 5, "not_found"},
		{"wrong other party", driverC, "done", "driver", 4, "invalid_argument"},
		{"six stars", riderC, "done", "", 6, "invalid_argument"},
	}
	for _, c := range cases {
		_, err := h.RateUser(ctx, connect.NewRequest(&usersv1.RateUserRequest{Caller: c.caller, RideId: c.ride, UserId: c.user, Stars: c.stars}))
		if (c.code == "" && err != nil) || (c.code != "" && apperr.CodeOf(err) != c.code) {
			t.Errorf("%s: %v, want %q", c.name, err, c.code)
		}
	}
	for id, want := range map[string][2]float64{"driver": {5, 1}, "rider": {4, 1}} {
		p, err := h.store.get(ctx, id)
		if err != nil || p.Rating() != want[0] || float64(p.RatingCount) != want[1] {
			t.Errorf("%s: rating %v over %d (%v), want %v over %v", id, p.Rating(), p.RatingCount, err, want[0], want[1])
		}
	}
}
