package rides

import (
	"context"
	"strings"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	ridesv1 "github.com/rideshare-platform/rideshare/api/rides/v1"
	"github.com/rideshare-platform/rideshare/api/rides/v1/ridesv1connect"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// server serves RidesService. It authorizes every ride by its Caller: a ride
// the caller may not see is NotFound, so ride ids cannot be probed.
type server struct {
	store    *store
	dispatch dispatcher
	policy   policy
	area     geo.Area
	now      func() time.Time
}

var _ ridesv1connect.RidesServiceHandler = (*server)(nil)

// List page sizes.
const (
	defaultPageSize = 20
	maxPageSize     = 100
)

func (s *server) RequestRide(ctx context.Context, req *connect.Request[ridesv1.RequestRideRequest]) (*connect.Response[ridesv1.RequestRideResponse], error) {
	m := req.Msg
	caller := m.GetCaller()
	if caller.GetRole() != authv1.Role_ROLE_RIDER || caller.GetUserId() == "" {
		return nil, apperr.E(apperr.Forbidden, "", "only riders request rides")
	}
	if err := validateRequest(m, s.area); err != nil {
		return nil, err
	}
	hash, err := requestHash(m)
	if err != nil {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	var resp *ridesv1.RequestRideResponse
	err = s.store.db.InTx(ctx, func(tx *sqldb.Tx) error {
		now := s.now()
		first, err := reserveKey(ctx, tx, caller.GetUserId(), m.GetIdempotencyKey(), hash, now)
		if err != nil || first != nil {
			resp = first
			return err
		}
		r := newRide(id.String(), caller.GetUserId(), geo.FromProto(m.GetPickup()), geo.FromProto(m.GetDropoff()),
			m.GetQuoteId(), m.GetPaymentMethod(), now)
		if err := s.store.insert(ctx, tx, r); err != nil {
			return err
		}
		resp = &ridesv1.RequestRideResponse{Ride: rideProto(r)}
		return completeKey(ctx, tx, caller.GetUserId(), m.GetIdempotencyKey(), r.id, resp)
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// validateRequest checks a ride request before anything is stored.
func validateRequest(m *ridesv1.RequestRideRequest, area geo.Area) error {
	switch key := m.GetIdempotencyKey(); {
	case strings.TrimSpace(key) == "":
		return apperr.E(apperr.Invalid, "idempotency_key_required", "an Idempotency-Key is required to request a ride")
	case len(key) > maxKeyLen || !utf8.ValidString(key):
		return apperr.E(apperr.Invalid, "", "the Idempotency-Key must be at most %d bytes of UTF-8", maxKeyLen)
	}
	if m.GetPickup() == nil || m.GetDropoff() == nil {
		return apperr.E(apperr.Invalid, "", "pickup and dropoff are required")
	}
	if err := geo.Check("pickup", geo.FromProto(m.GetPickup()), area); err != nil {
		return err
	}
	if err := geo.Check("dropoff", geo.FromProto(m.GetDropoff()), area); err != nil {
		return err
	}
	if len(m.GetQuoteId()) > 4096 || len(m.GetPaymentMethod()) > 255 {
		return apperr.E(apperr.Invalid, "", "quote_id or payment_method is too long")
	}
	return nil
}

func (s *server) GetRide(ctx context.Context, req *connect.Request[ridesv1.GetRideRequest]) (*connect.Response[ridesv1.GetRideResponse], error) {
	r, err := s.visible(ctx, req.Msg.GetCaller(), req.Msg.GetRideId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&ridesv1.GetRideResponse{Ride: rideProto(r)}), nil
}

// visible reads a ride the caller may see.
func (s *server) visible(ctx context.Context, caller *authv1.Caller, id string) (*Ride, error) {
	r, err := s.store.get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !canSee(caller, r) {
		return nil, notFound()
	}
	return r, nil
}

// canSee is the owner rule: the ride's rider, its assigned driver,
// operators and platform services.
func canSee(c *authv1.Caller, r *Ride) bool {
	uid := c.GetUserId()
	switch c.GetRole() {
	case authv1.Role_ROLE_ADMIN, authv1.Role_ROLE_SERVICE:
		return true
	case authv1.Role_ROLE_RIDER:
		return uid != "" && uid == r.riderID
	case authv1.Role_ROLE_DRIVER:
		return uid != "" && uid == r.driverID
	}
	return false
}

func (s *server) ListRides(ctx context.Context, req *connect.Request[ridesv1.ListRidesRequest]) (*connect.Response[ridesv1.ListRidesResponse], error) {
	m := req.Msg
	var f listFilter
	switch c := m.GetCaller(); c.GetRole() {
	case authv1.Role_ROLE_RIDER, authv1.Role_ROLE_DRIVER:
		if c.GetUserId() == "" {
			return nil, apperr.E(apperr.Forbidden, "", "the caller has no user id")
		}
		if c.GetRole() == authv1.Role_ROLE_RIDER {
			f.riderID = c.GetUserId()
		} else {
			f.driverID = c.GetUserId()
		}
	case authv1.Role_ROLE_ADMIN, authv1.Role_ROLE_SERVICE:
		// every ride
	default:
		return nil, apperr.E(apperr.Forbidden, "", "only riders, drivers and operators list rides")
	}
	size := int(m.GetPageSize())
	switch {
	case size < 0:
		return nil, apperr.E(apperr.Invalid, "", "page_size must not be negative")
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	cur, err := decodeCursor(m.GetCursor())
	if err != nil {
		return nil, err
	}
	page, err := s.store.list(ctx, f, cur, size+1)
	if err != nil {
		return nil, err
	}
	out := &ridesv1.ListRidesResponse{}
	if len(page) > size {
		page = page[:size]
		last := page[size-1]
		out.NextCursor = cursor{createdAt: sqldb.Micros(last.createdAt), id: last.id}.encode()
	}
	for _, r := range page {
		out.Rides = append(out.Rides, rideProto(r))
	}
	return connect.NewResponse(out), nil
}

func (s *server) CancelRide(ctx context.Context, req *connect.Request[ridesv1.CancelRideRequest]) (*connect.Response[ridesv1.CancelRideResponse], error) {
	m := req.Msg
	if utf8.RuneCountInString(m.GetReason()) > 500 {
		return nil, apperr.E(apperr.Invalid, "", "reason is at most 500 characters")
	}
	c := m.GetCaller()
	uid := c.GetUserId()
	r, err := s.store.update(ctx, m.GetRideId(), func(r *Ride) error {
		now := s.now()
		switch {
		case c.GetRole() == authv1.Role_ROLE_RIDER && uid != "" && uid == r.riderID:
			return r.cancelByRider(s.policy, because("rider cancelled", m.GetReason()), now)
		case c.GetRole() == authv1.Role_ROLE_ADMIN || c.GetRole() == authv1.Role_ROLE_SERVICE:
			return r.cancelByRider(s.policy, because("cancelled by an operator", m.GetReason()), now)
		case c.GetRole() == authv1.Role_ROLE_DRIVER && uid != "" && uid == r.driverID:
			return r.cancelByDriver(uid, because("driver gave the ride up", m.GetReason()), now.Add(s.policy.searchTimeout), now)
		}
		return notFound()
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&ridesv1.CancelRideResponse{Ride: rideProto(r)}), nil
}

func because(who, why string) string {
	if why = strings.TrimSpace(why); why == "" {
		return who
	}
	return who + ": " + why
}

func (s *server) AcceptRide(ctx context.Context, req *connect.Request[ridesv1.AcceptRideRequest]) (*connect.Response[ridesv1.AcceptRideResponse], error) {
	c := req.Msg.GetCaller()
	uid := c.GetUserId()
	if c.GetRole() != authv1.Role_ROLE_DRIVER || uid == "" {
		return nil, notFound()
	}
	r, err := s.store.get(ctx, req.Msg.GetRideId())
	if err != nil {
		return nil, err
	}
	if r.driverID == uid {
		return connect.NewResponse(&ridesv1.AcceptRideResponse{Ride: rideProto(r)}), nil // accepted already
	}
	expired := apperr.E(apperr.Conflict, "offer_expired", "the offer for this ride is no longer open")
	if r.status != StatusSearching {
		// Past searching, only the assigned driver may know the ride exists;
		// a driver whose offer went elsewhere sees it gone, like a stranger.
		return nil, notFound()
	}
	// Dispatch decides who gets the ride (it holds the offers and the
	// driver's lock); the call is made outside any transaction.
	res, err := s.dispatch.RespondToOffer(ctx, &dispatchv1.RespondToOfferRequest{Caller: c, RideId: r.id, Accept: true})
	if err != nil {
		return nil, err
	}
	if !res.GetAssigned() {
		return nil, expired
	}
	r, err = s.store.update(ctx, r.id, func(r *Ride) error { return r.assign(uid, r.attempt, s.now()) })
	if err != nil {
		return nil, err
	}
	if r.driverID != uid {
		// The ride ended while dispatch booked the driver; assign queued
		// their release.
		return nil, expired
	}
	return connect.NewResponse(&ridesv1.AcceptRideResponse{Ride: rideProto(r)}), nil
}

func (s *server) ArriveRide(ctx context.Context, req *connect.Request[ridesv1.ArriveRideRequest]) (*connect.Response[ridesv1.ArriveRideResponse], error) {
	r, err := s.driverStep(ctx, req.Msg.GetCaller(), req.Msg.GetRideId(), (*Ride).arrive)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&ridesv1.ArriveRideResponse{Ride: rideProto(r)}), nil
}

func (s *server) StartRide(ctx context.Context, req *connect.Request[ridesv1.StartRideRequest]) (*connect.Response[ridesv1.StartRideResponse], error) {
	r, err := s.driverStep(ctx, req.Msg.GetCaller(), req.Msg.GetRideId(), (*Ride).start)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&ridesv1.StartRideResponse{Ride: rideProto(r)}), nil
}

func (s *server) CompleteRide(ctx context.Context, req *connect.Request[ridesv1.CompleteRideRequest]) (*connect.Response[ridesv1.CompleteRideResponse], error) {
	r, err := s.driverStep(ctx, req.Msg.GetCaller(), req.Msg.GetRideId(), (*Ride).complete)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&ridesv1.CompleteRideResponse{Ride: rideProto(r)}), nil
}

// driverStep applies a trip step for the ride's assigned driver; anyone
// else is told the ride does not exist.
func (s *server) driverStep(ctx context.Context, c *authv1.Caller, id string, step func(*Ride, string, time.Time) error) (*Ride, error) {
	if c.GetRole() != authv1.Role_ROLE_DRIVER || c.GetUserId() == "" {
		return nil, notFound()
	}
	return s.store.update(ctx, id, func(r *Ride) error {
		if r.driverID != c.GetUserId() {
			return notFound()
		}
		return step(r, c.GetUserId(), s.now())
	})
}

func (s *server) GetReceipt(ctx context.Context, req *connect.Request[ridesv1.GetReceiptRequest]) (*connect.Response[ridesv1.GetReceiptResponse], error) {
	c := req.Msg.GetCaller()
	if c.GetRole() == authv1.Role_ROLE_DRIVER {
		return nil, notFound() // drivers see rides, not what riders paid
	}
	r, err := s.visible(ctx, c, req.Msg.GetRideId())
	if err != nil {
		return nil, err
	}
	status, amount, at := r.receipt()
	rc := &ridesv1.Receipt{RideId: r.id, Amount: moneyProto(amount), Status: receiptProto(status)}
	if !at.IsZero() {
		rc.CapturedAt = timestamppb.New(at)
	}
	return connect.NewResponse(&ridesv1.GetReceiptResponse{Receipt: rc}), nil
}

func rideProto(r *Ride) *ridesv1.Ride {
	out := &ridesv1.Ride{
		Id: r.id, Status: statusProto(r.status), RiderId: r.riderID, DriverId: r.driverID,
		Pickup: pointProto(r.pickup), Dropoff: pointProto(r.dropoff),
		CreatedAt: timestamppb.New(r.createdAt), UpdatedAt: timestamppb.New(r.updatedAt),
	}
	if !r.fare.IsZero() {
		out.Fare = moneyProto(r.fare)
	}
	return out
}

var statusProtos = map[Status]ridesv1.RideStatus{
	StatusRequested:       ridesv1.RideStatus_RIDE_STATUS_REQUESTED,
	StatusSearching:       ridesv1.RideStatus_RIDE_STATUS_SEARCHING,
	StatusDriverAssigned:  ridesv1.RideStatus_RIDE_STATUS_DRIVER_ASSIGNED,
	StatusDriverArrived:   ridesv1.RideStatus_RIDE_STATUS_DRIVER_ARRIVED,
	StatusInProgress:      ridesv1.RideStatus_RIDE_STATUS_IN_PROGRESS,
	StatusCompleted:       ridesv1.RideStatus_RIDE_STATUS_COMPLETED,
	StatusCancelled:       ridesv1.RideStatus_RIDE_STATUS_CANCELLED,
	StatusPaymentDeclined: ridesv1.RideStatus_RIDE_STATUS_PAYMENT_DECLINED,
	StatusNoDriver:        ridesv1.RideStatus_RIDE_STATUS_NO_DRIVER,
}

func statusProto(s Status) ridesv1.RideStatus { return statusProtos[s] }

func receiptProto(s receiptStatus) ridesv1.ReceiptStatus {
	switch s {
	case receiptCaptured:
		return ridesv1.ReceiptStatus_RECEIPT_STATUS_CAPTURED
	case receiptNotCharged:
		return ridesv1.ReceiptStatus_RECEIPT_STATUS_NOT_CHARGED
	}
	return ridesv1.ReceiptStatus_RECEIPT_STATUS_PENDING
}
