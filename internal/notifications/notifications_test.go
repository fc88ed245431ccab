package notifications

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	eventsv1 "github.com/rideshare-platform/rideshare/api/events/v1"
	notificationsv1 "github.com/rideshare-platform/rideshare/api/notifications/v1"
	"github.com/rideshare-platform/rideshare/api/notifications/v1/notificationsv1connect"
	ridesv1 "github.com/rideshare-platform/rideshare/api/rides/v1"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

func statusEvent(t *testing.T, from, to ridesv1.RideStatus, driver string) *eventsv1.Envelope {
	t.Helper()
	var msg proto.Message = &ridesv1.RideStatusChanged{RideId: "ride-1", RiderId: "rider-1", DriverId: driver, From: from, To: to}
	a, err := anypb.New(msg)
	if err != nil {
		t.Fatal(err)
	}
	return &eventsv1.Envelope{Id: to.String(), Type: "rides.ride.status_changed", Time: timestamppb.Now(), Payload: a}
}

func TestStreamReplaysThenFollows(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	db, h, client := newTestService(t)
	apply := func(env *eventsv1.Envelope) {
		if err := db.InTx(ctx, func(tx *sqldb.Tx) error { return h.onRideEvent(ctx, tx, env) }); err != nil {
			t.Fatal(err)
		}
	}

	apply(statusEvent(t, ridesv1.RideStatus_RIDE_STATUS_REQUESTED, ridesv1.RideStatus_RIDE_STATUS_SEARCHING, ""))
	rider := &authv1.Caller{UserId: "rider-1", Role: authv1.Role_ROLE_RIDER}
	stream, err := client.Subscribe(ctx, connect.NewRequest(&notificationsv1.SubscribeRequest{Caller: rider, RideId: "ride-1", AfterId: "0"}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	next := func() *notificationsv1.Notification {
		for stream.Receive() {
			if n := stream.Msg().GetNotification(); n != nil {
				return n
			}
		}
		t.Fatalf("stream ended: %v", stream.Err())
		return nil
	}
	if n := next(); n.GetRideStatus() != ridesv1.RideStatus_RIDE_STATUS_SEARCHING {
		t.Fatalf("replayed %v, want searching", n)
	}
	apply(statusEvent(t, ridesv1.RideStatus_RIDE_STATUS_SEARCHING, ridesv1.RideStatus_RIDE_STATUS_DRIVER_ASSIGNED, "driver-1"))
	if n := next(); n.GetRideStatus() != ridesv1.RideStatus_RIDE_STATUS_DRIVER_ASSIGNED || n.GetMessage() == "" {
		t.Fatalf("live %v, want driver_assigned", n)
	}

	// The driver got their own message; a stranger gets none.
	for _, c := range []struct {
		user string
		want int
	}{{"driver-1", 1}, {"someone-else", 0}, {"rider-1", 2}} {
		res, err := client.ListNotifications(ctx, connect.NewRequest(&notificationsv1.ListNotificationsRequest{
			Caller: &authv1.Caller{UserId: c.user, Role: authv1.Role_ROLE_DRIVER}, RideId: "ride-1"}))
		if err != nil {
			t.Fatal(err)
		}
		if got := len(res.Msg.GetNotifications()); got != c.want {
			t.Errorf("%s sees %d notifications, want %d", c.user, got, c.want)
		}
	}
}

// TestStreamSendsLateCommits: with several replicas writing, a notification
// can commit after one with a larger id was already streamed (its id was
// taken first, its transaction finished later). The stream must still send
// it; otherwise a ride's stream can miss its final status and never end.
func TestStreamSendsLateCommits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	db, _, client := newTestService(t)

	// Ids as two replicas take them: the completed ride's first, the
	// in-progress one a moment later, committed in the other order.
	completed, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	started, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	insert := func(id uuid.UUID, status ridesv1.RideStatus) { insertStatus(t, db, id, status, time.Now()) }
	insert(started, ridesv1.RideStatus_RIDE_STATUS_IN_PROGRESS)

	rider := &authv1.Caller{UserId: "rider-1", Role: authv1.Role_ROLE_RIDER}
	stream, err := client.Subscribe(ctx, connect.NewRequest(&notificationsv1.SubscribeRequest{Caller: rider, RideId: "ride-1", AfterId: "0"}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var got []ridesv1.RideStatus
	for len(got) < 2 && stream.Receive() {
		if n := stream.Msg().GetNotification(); n != nil {
			got = append(got, n.GetRideStatus())
			if len(got) == 1 {
				insert(completed, ridesv1.RideStatus_RIDE_STATUS_COMPLETED) // the late commit
			}
		}
	}
	want := []ridesv1.RideStatus{ridesv1.RideStatus_RIDE_STATUS_IN_PROGRESS, ridesv1.RideStatus_RIDE_STATUS_COMPLETED}
	if !slices.Equal(got, want) {
		t.Fatalf("streamed %v (%v), want %v", got, stream.Err(), want)
	}
}

// TestStreamDropsSupersededStatus: replicas apply a ride's events in
// parallel, so an older status can commit after a newer one. The stream
// sends statuses in the order they happened, leaving out one older than a
// status it already sent, also after a reconnect; the delivery log keeps
// them all. The ride's end is sent whatever its time: it ends the stream.
func TestStreamDropsSupersededStatus(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	db, _, client := newTestService(t)
	t0 := time.Now()
	ids := make([]uuid.UUID, 4)
	for i := range ids {
		var err error
		if ids[i], err = uuid.NewV7(); err != nil {
			t.Fatal(err)
		}
	}
	arrived, assigned, started, completed := ids[0], ids[1], ids[2], ids[3]
	insertStatus(t, db, arrived, ridesv1.RideStatus_RIDE_STATUS_DRIVER_ARRIVED, t0.Add(2*time.Second))

	rider := &authv1.Caller{UserId: "rider-1", Role: authv1.Role_ROLE_RIDER}
	follow := func(after string, until ridesv1.RideStatus, between func()) []ridesv1.RideStatus {
		t.Helper()
		stream, err := client.Subscribe(ctx, connect.NewRequest(&notificationsv1.SubscribeRequest{Caller: rider, RideId: "ride-1", AfterId: after}))
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		var got []ridesv1.RideStatus
		for stream.Receive() {
			n := stream.Msg().GetNotification()
			if n == nil {
				continue
			}
			got = append(got, n.GetRideStatus())
			if n.GetRideStatus() == until {
				return got
			}
			if between != nil {
				between()
				between = nil
			}
		}
		t.Fatalf("stream ended after %v: %v", got, stream.Err())
		return nil
	}
	const end = ridesv1.RideStatus_RIDE_STATUS_COMPLETED
	got := follow("0", end, func() {
		// The assignment, which happened first, commits late; then the
		// trip starts, and ends on a machine whose clock is behind.
		insertStatus(t, db, assigned, ridesv1.RideStatus_RIDE_STATUS_DRIVER_ASSIGNED, t0.Add(time.Second))
		insertStatus(t, db, started, ridesv1.RideStatus_RIDE_STATUS_IN_PROGRESS, t0.Add(3*time.Second))
		insertStatus(t, db, completed, end, t0.Add(2500*time.Millisecond))
	})
	want := []ridesv1.RideStatus{ridesv1.RideStatus_RIDE_STATUS_DRIVER_ARRIVED, ridesv1.RideStatus_RIDE_STATUS_IN_PROGRESS, end}
	if !slices.Equal(got, want) {
		t.Fatalf("streamed %v, want %v", got, want)
	}
	// A client that saw "arrived" and reconnects is not told of the
	// assignment either.
	if got := follow(arrived.String(), end, nil); !slices.Equal(got, want[1:]) {
		t.Fatalf("resumed after arrived: streamed %v, want %v", got, want[1:])
	}
	res, err := client.ListNotifications(ctx, connect.NewRequest(&notificationsv1.ListNotificationsRequest{Caller: rider, RideId: "ride-1"}))
	if err != nil || len(res.Msg.GetNotifications()) != len(ids) {
		t.Fatalf("the delivery log holds %d notifications (%v), want all %d", len(res.Msg.GetNotifications()), err, len(ids))
	}
}

// newTestService serves notifications over HTTP on its own database.
func newTestService(t *testing.T) (*sqldb.DB, *handler, notificationsv1connect.NotificationsServiceClient) {
	t.Helper()
	db := testenv.DB(t, Service.Migrations)
	h := &handler{log: &deliveryLog{db: db}, hub: newHub()}
	mux := http.NewServeMux()
	mux.Handle(notificationsv1connect.NewNotificationsServiceHandler(h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return db, h, notificationsv1connect.NewNotificationsServiceClient(srv.Client(), srv.URL)
}

// insertStatus writes a rider's notification of ride-1 with the id and time
// given, as a replica's delivery would.
func insertStatus(t *testing.T, db *sqldb.DB, id uuid.UUID, status ridesv1.RideStatus, at time.Time) {
	t.Helper()
	if err := db.InTx(context.Background(), func(tx *sqldb.Tx) error {
		_, err := tx.ExecContext(context.Background(), `INSERT INTO notifications (id, user_id, ride_id, type, ride_status, at, message) VALUES ($1, 'rider-1', 'ride-1', $2, $3, $4, 'm')`,
			id.String(), typeRideStatus, int64(status), sqldb.Micros(at))
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func TestIDBefore(t *testing.T) {
	id := "01a20ae6-98fc-76e6-a2cd-694aa4fd604c" // 0x01a20ae698fc ms
	for _, tc := range []struct {
		id   string
		d    time.Duration
		want string
	}{
		{id, 0, "01a20ae6-98fc-0000-0000-000000000000"},
		{id, time.Second, "01a20ae6-9514-0000-0000-000000000000"}, // 1000 ms = 0x3e8 earlier
		{id, 1 << 62, "00000000-0000-0000-0000-000000000000"},
		{"0", time.Second, "0"},
		{"", time.Second, ""},
		{"6ba7b810-9dad-11d1-80b4-00c04fd430c8", time.Second, "6ba7b810-9dad-11d1-80b4-00c04fd430c8"}, // not a UUIDv7
	} {
		if got := idBefore(tc.id, tc.d); got != tc.want {
			t.Errorf("idBefore(%q, %s) = %q, want %q", tc.id, tc.d, got, tc.want)
		}
	}
}
