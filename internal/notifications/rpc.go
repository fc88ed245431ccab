package notifications

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

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

// settleWindow is how long after its id was taken a notification may still
// become visible. An id is taken inside the transaction that inserts the
// row, and several replicas (or transactions) insert at once, so a row can
// commit after a row with a larger id has already been streamed: a stream
// that only ever read past its last id would skip it for good, and a ride's
// stream could miss its final status and never end. So a stream reads
// again from this far behind its position and sends what it has not sent.
const settleWindow = 10 * time.Second

// idBefore is the smallest notification id that could have been taken d
// before id (ids are UUIDv7: they begin with their creation time in
// milliseconds), or id itself when it is not a UUIDv7 (the "0" that
// replays from the start).
func idBefore(id string, d time.Duration) string {
	u, err := uuid.Parse(id)
	if err != nil || u.Version() != 7 {
		return id
	}
	var ms int64
	for _, b := range u[:6] {
		ms = ms<<8 | int64(b)
	}
	ms = max(ms-d.Milliseconds(), 0)
	var floor uuid.UUID // the rest zero: below every id of that millisecond
	for i := range 6 {
		floor[i] = byte(ms >> (40 - 8*i))
	}
	return floor.String()
}

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
	// Each round reads again from settleWindow behind the newest id sent
	// (never before the caller's own position) and sends what this stream
	// has not sent yet: sent holds the ids within the window.
	resume, sent := after, map[string]bool{}
	// A status older than one this stream already sent for its ride is
	// news no more: replicas apply a ride's events in parallel, so its
	// notifications can commit out of order, and a rider shown "your
	// driver has arrived" must not then read "a driver is on the way".
	// The delivery log (ListNotifications) keeps every one. A resumed
	// stream starts from the status its client last saw.
	newest := map[string]time.Time{}
	if ride, at, ok, err := h.log.statusAt(ctx, user, after); err != nil {
		return err
	} else if ok {
		newest[ride] = at
	}
	for {
		from := max(resume, idBefore(after, settleWindow))
		for {
			ns, err := h.log.list(ctx, user, req.Msg.GetRideId(), from, 200)
			if err != nil {
				return err
			}
			for _, n := range ns {
				from = n.Id
				if sent[n.Id] {
					continue
				}
				// A ride's end is always sent, whatever its time (clocks of
				// replicas on other machines may differ by a little): it is
				// what ends the ride's stream.
				at := n.GetTime().AsTime()
				if at.Before(newest[n.RideId]) && !n.GetRideStatus().Terminal() {
					sent[n.Id], after = true, max(after, n.Id) // superseded: never sent
					continue
				}
				newest[n.RideId] = at
				if err := stream.Send(&notificationsv1.SubscribeResponse{Notification: n}); err != nil {
					return err
				}
				sent[n.Id], after, lastSent = true, max(after, n.Id), time.Now()
			}
			if len(ns) < 200 {
				break
			}
		}
		floor := idBefore(after, settleWindow)
		for id := range sent {
			if id <= floor {
				delete(sent, id) // below every later round's reads
			}
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
