package dispatch

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	eventsv1 "github.com/rideshare-platform/rideshare/api/events/v1"
	moneyv1 "github.com/rideshare-platform/rideshare/api/money/v1"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// newClock is the tests' clock, moved by hand.
func newClock() *testenv.Clock { return testenv.NewClock(time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC)) }

// env is one dispatch service over a database, driven through its handler.
type env struct {
	t     testing.TB
	db    *sqldb.DB
	clock *testenv.Clock
	d     *dispatcher
	h     *handler
}

// newEnv is a dispatch service on a fresh SQLite database.
func newEnv(t testing.TB) *env {
	return newEnvOn(t, testenv.DB(t, Service.Migrations), newClock())
}

// newEnvOn builds a dispatch service on db, as a process starting would.
func newEnvOn(t testing.TB, db *sqldb.DB, clock *testenv.Clock) *env {
	t.Helper()
	d, err := newDispatcher(context.Background(), db, outbox.New(db, "dispatch", outbox.Options{}), DefaultEstimator, clock.Now, defaultConfig, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, db: db, clock: clock, d: d, h: &handler{d: d}}
}

// onEngines runs fn on SQLite and, when configured, PostgreSQL.
func onEngines(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, eng := range testenv.Engines() {
		t.Run(eng.Name, func(t *testing.T) {
			fn(t, newEnvOn(t, testenv.Migrate(t, eng.Open(t), Service.Migrations), newClock()))
		})
	}
}

var (
	rides  = &authv1.Caller{UserId: "rides", Role: authv1.Role_ROLE_SERVICE}
	center = geo.Point{Lat: 37.7650, Lng: -122.4350}
	fare   = &moneyv1.Money{Amount: 1850, Currency: "USD"}
)

func driverCaller(id string) *authv1.Caller {
	return &authv1.Caller{UserId: id, Role: authv1.Role_ROLE_DRIVER}
}

// north is a point about meters north of center.
func north(meters float64) geo.Point {
	return geo.Point{Lat: center.Lat + meters/111_195, Lng: center.Lng}
}

func (e *env) online(id string, at geo.Point) {
	e.t.Helper()
	if _, err := e.h.SetAvailability(context.Background(), connect.NewRequest(&dispatchv1.SetAvailabilityRequest{
		Caller: driverCaller(id), Online: true, Location: at.Proto(),
	})); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) offline(id string) {
	e.t.Helper()
	if _, err := e.h.SetAvailability(context.Background(), connect.NewRequest(&dispatchv1.SetAvailabilityRequest{
		Caller: driverCaller(id), Online: false,
	})); err != nil {
		e.t.Fatal(err)
	}
}

// searchReq is a StartSearch from center to a point 2 km away, due in a
// minute.
func (e *env) searchReq(ride string, attempt uint32, exclude ...string) *dispatchv1.StartSearchRequest {
	return &dispatchv1.StartSearchRequest{
		Caller: rides, RideId: ride, RiderId: "rider-" + ride,
		Pickup: center.Proto(), Dropoff: north(2000).Proto(), Fare: fare,
		Deadline: timestamppb.New(e.clock.Now().Add(time.Minute)),
		Attempt:  attempt, ExcludeDriverIds: exclude,
	}
}

func (e *env) search(req *dispatchv1.StartSearchRequest) {
	e.t.Helper()
	if _, err := e.h.StartSearch(context.Background(), connect.NewRequest(req)); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) respond(driver, ride string, accept bool) (*dispatchv1.RespondToOfferResponse, error) {
	res, err := e.h.RespondToOffer(context.Background(), connect.NewRequest(&dispatchv1.RespondToOfferRequest{
		Caller: driverCaller(driver), RideId: ride, Accept: accept,
	}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// offers lists the rides offered to driver.
func (e *env) offers(driver string) []string {
	e.t.Helper()
	res, err := e.h.ListOffers(context.Background(), connect.NewRequest(&dispatchv1.ListOffersRequest{Caller: driverCaller(driver)}))
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, o := range res.Msg.GetOffers() {
		out = append(out, o.GetRideId())
	}
	return out
}

// holder is the driver the ride is offered to now, or "".
func (e *env) holder(ride string) string {
	e.t.Helper()
	open, err := e.d.store.openOffers(context.Background(), e.db.Reader(), ride, "")
	if err != nil {
		e.t.Fatal(err)
	}
	switch len(open) {
	case 0:
		return ""
	case 1:
		return open[0].DriverID
	}
	e.t.Fatalf("ride %s has %d open offers", ride, len(open))
	return ""
}

func (e *env) tick() {
	e.t.Helper()
	if _, err := e.d.tick(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

// events returns the payloads of the outbox events of type typ (e.g.
// "dispatch.ride.search_failed"), oldest first.
func events[T proto.Message](e *env, typ string, newT func() T) []T {
	e.t.Helper()
	rows, err := e.db.Reader().QueryContext(context.Background(), `SELECT envelope FROM outbox WHERE subject = $1 ORDER BY id`, typ)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			e.t.Fatal(err)
		}
		var env eventsv1.Envelope
		if err := proto.Unmarshal(data, &env); err != nil {
			e.t.Fatal(err)
		}
		m := newT()
		if err := env.GetPayload().UnmarshalTo(m); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func assignedEvents(e *env) []*dispatchv1.DriverAssigned {
	return events(e, "dispatch.ride.driver_assigned", func() *dispatchv1.DriverAssigned { return &dispatchv1.DriverAssigned{} })
}

func failedEvents(e *env) []*dispatchv1.SearchFailed {
	return events(e, "dispatch.ride.search_failed", func() *dispatchv1.SearchFailed { return &dispatchv1.SearchFailed{} })
}

func declinedEvents(e *env) []*dispatchv1.OfferDeclined {
	return events(e, "dispatch.offer.declined", func() *dispatchv1.OfferDeclined { return &dispatchv1.OfferDeclined{} })
}

func supplyEvents(e *env) []*dispatchv1.SupplyChanged {
	return events(e, "dispatch.supply.changed", func() *dispatchv1.SupplyChanged { return &dispatchv1.SupplyChanged{} })
}
