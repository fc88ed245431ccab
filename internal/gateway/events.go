package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	notificationsv1 "github.com/rideshare-platform/rideshare/api/notifications/v1"
	ridesv1 "github.com/rideshare-platform/rideshare/api/rides/v1"
)

// streamTimeout bounds one server-sent event stream; a client that still
// wants updates reconnects with Last-Event-ID and loses nothing.
const streamTimeout = 30 * time.Minute

// rideEvents streams a ride's status changes as server-sent events. Rides
// decides who may see the ride (others get 404); notifications supplies the
// caller's own messages about it. Without Last-Event-ID the stream replays
// the ride's history first, so a client that connects late misses nothing.
func (g *Gateway) rideEvents(w http.ResponseWriter, r *http.Request, c *authv1.Caller) error {
	id := r.PathValue("id")
	if _, err := g.rides.GetRide(r.Context(), connect.NewRequest(&ridesv1.GetRideRequest{Caller: c, RideId: id})); err != nil {
		return err
	}
	after := r.Header.Get("Last-Event-ID")
	if after == "" {
		after = "0" // sorts before every id: replay from the start
	}
	stream, err := g.notifications.Subscribe(r.Context(), connect.NewRequest(&notificationsv1.SubscribeRequest{Caller: c, RideId: id, AfterId: after}))
	if err != nil {
		return err
	}
	defer stream.Close()

	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{}) // the server's write timeout is for ordinary responses
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	for stream.Receive() {
		n := stream.Msg().GetNotification()
		if n == nil {
			fmt.Fprint(w, ": keepalive\n\n")
		} else {
			data, _ := json.Marshal(struct {
				RideID  string    `json:"ride_id"`
				Status  string    `json:"status"`
				Message string    `json:"message"`
				Time    time.Time `json:"time"`
			}{n.GetRideId(), statusName(n.GetRideStatus()), n.GetMessage(), n.GetTime().AsTime()})
			fmt.Fprintf(w, "id: %s\nevent: status\ndata: %s\n\n", n.GetId(), data)
		}
		if err := rc.Flush(); err != nil {
			return nil // the client went away
		}
		if n != nil && n.GetRideStatus().Terminal() {
			return nil
		}
	}
	// The headers are sent: an error can only end the stream; the client
	// reconnects with Last-Event-ID.
	return nil
}
