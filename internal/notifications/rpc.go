package notifications

import (
	"context"
	"time"

	"connectrpc.com/connect"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	eventsv1 "github.com/rideshare-platform/rideshare/api/events/v1"
	notificationsv1 "github.com/rideshare-platform/rideshare/api/notifications/v1"
	ridesv1 "github.com/rideshare-platform/rideshare/api/rides/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// Stream pacing: poll the log at least this often (other replicas' writes),
// and send a heartbeat after this much silence so proxies keep it open.
var (
	pollEvery      = time.Second
	heartbeatAfter = 15 * time.Second
)

type handler struct {
	log *deliveryLog
	hub *hub
}

// onRideEvent records the notifications a ride event produces, in the
// transaction that marks the event applied, and wakes the recipients'
// streams once it commits.
func (h *handler) onRideEvent(ctx context.Context, tx *sqldb.Tx, env *eventsv1.Envelope) error {
	var rideID, riderID, driverID string
	var status ridesv1.RideStatus
	switch env.GetType() {
	case "rides.ride.requested":
		var ev ridesv1.RideRequested
		if err := env.GetPayload().UnmarshalTo(&ev); err != nil {
			return apperr.Wrap(err, apperr.Invalid, "", "malformed "+env.GetType())
		}
		rideID, riderID, status = ev.GetRideId(), ev.GetRiderId(), ridesv1.RideStatus_RIDE_STATUS_REQUESTED
	case "rides.ride.status_changed":
		var ev ridesv1.RideStatusChanged
		if err := env.GetPayload().UnmarshalTo(&ev); err != nil {
			return apperr.Wrap(err, apperr.Invalid, "", "malformed "+env.GetType())
		}
		rideID, riderID, driverID, status = ev.GetRideId(), ev.GetRiderId(), ev.GetDriverId(), ev.GetTo()
	default:
		return nil
	}
	for _, n := range statusNotifications(rideID, riderID, driverID, status, env.GetTime().AsTime()) {
		if err := h.log.add(ctx, tx, n); err != nil {
			return err
		}
		user := n.UserId
		tx.OnCommit(func() { h.hub.wake(user) })
	}
	return nil
}

// owner is the user whose notifications the caller may read: only their own.
func owner(c *authv1.Caller) (string, error) {
	switch c.GetRole() {
	case authv1.Role_ROLE_RIDER, authv1.Role_ROLE_DRIVER, authv1.Role_ROLE_ADMIN:
		if c.GetUserId() != "" {
			return c.GetUserId(), nil
		}
	}
	return "", apperr.E(apperr.Forbidden, "", "notifications are for riders and drivers")
}

func (h *handler) ListNotifications(ctx context.Context, req *connect.Request[notificationsv1.ListNotificationsRequest]) (*connect.Response[notificationsv1.ListNotificationsResponse], error) {
	user, err := owner(req.Msg.GetCaller())
	if err != nil {
		return nil, err
	}
	size := int(req.Msg.GetPageSize())
	switch {
	case size <= 0:
		size = 50
	case size > 200:
		size = 200
	}
	ns, err := h.log.list(ctx, user, req.Msg.GetRideId(), req.Msg.GetAfterId(), size)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&notificationsv1.ListNotificationsResponse{Notifications: ns}), nil
}

func (h *handler) Subscribe(ctx context.Context, req *connect.Request[notificationsv1.SubscribeRequest], stream *connect.ServerStream[notificationsv1.SubscribeResponse]) error {
	user, err := owner(req.Msg.GetCaller())
	if err != nil {
		return err
	}
	// Subscribe before reading the position, so nothing committed in between
	// is missed.
	wake, stop := h.hub.subscribe(user)
	defer stop()
	after := req.Msg.GetAfterId()
	if after == "" {
		if after, err = h.log.latestID(ctx, user); err != nil {
			return err
		}
	}
	poll := time.NewTicker(pollEvery)
	defer poll.Stop()
	// The zero time makes the first round send a heartbeat when there is
	// nothing to replay, so the caller sees the stream open at once.
	var lastSent time.Time
	for {
		ns, err := h.log.list(ctx, user, req.Msg.GetRideId(), after, 200)
		if err != nil {
			return err
		}
		for _, n := range ns {
			if err := stream.Send(&notificationsv1.SubscribeResponse{Notification: n}); err != nil {
				return err
			}
			after, lastSent = n.Id, time.Now()
		}
		if time.Since(lastSent) >= heartbeatAfter {
			if err := stream.Send(&notificationsv1.SubscribeResponse{}); err != nil {
				return err
			}
			lastSent = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-poll.C:
		}
	}
}
