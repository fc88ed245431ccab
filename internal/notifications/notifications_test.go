package notifications

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"
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
	db := testenv.DB(t, Service.Migrations)
	h := &handler{log: &deliveryLog{db: db}, hub: newHub()}
	mux := http.NewServeMux()
	mux.Handle(notificationsv1connect.NewNotificationsServiceHandler(h))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client := notificationsv1connect.NewNotificationsServiceClient(srv.Client(), srv.URL)
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
