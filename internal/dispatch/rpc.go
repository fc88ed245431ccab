package dispatch

import (
	"context"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	"github.com/rideshare-platform/rideshare/api/dispatch/v1/dispatchv1connect"
	geov1 "github.com/rideshare-platform/rideshare/api/geo/v1"
	moneyv1 "github.com/rideshare-platform/rideshare/api/money/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/geo"
)

// handler serves DispatchService: it checks who is calling and what they
// sent, and leaves the rest to the dispatcher.
type handler struct {
	dispatchv1connect.UnimplementedDispatchServiceHandler
	d *dispatcher
}

// area is where pickups, drop-offs and drivers must be.
var area = geo.SanFrancisco

// driverOf is the calling driver's id; other callers are refused.
func driverOf(c *authv1.Caller) (string, error) {
	if c.GetUserId() == "" {
		return "", apperr.E(apperr.Unauthenticated, "", "no caller")
	}
	if c.GetRole() != authv1.Role_ROLE_DRIVER {
		return "", apperr.E(apperr.Forbidden, "", "only drivers may do this")
	}
	return c.GetUserId(), nil
}

// platformOnly admits the ride saga (and operators).
func platformOnly(c *authv1.Caller) error {
	if c.GetUserId() == "" {
		return apperr.E(apperr.Unauthenticated, "", "no caller")
	}
	if r := c.GetRole(); r != authv1.Role_ROLE_SERVICE && r != authv1.Role_ROLE_ADMIN {
		return apperr.E(apperr.Forbidden, "", "only the platform may do this")
	}
	return nil
}

// anyCaller admits any identified caller.
func anyCaller(c *authv1.Caller) error {
	if c.GetUserId() == "" || c.GetRole() == authv1.Role_ROLE_UNSPECIFIED {
		return apperr.E(apperr.Unauthenticated, "", "no caller")
	}
	return nil
}

// point validates a required point.
func point(field string, p *geov1.Point) (geo.Point, error) {
	if p == nil {
		return geo.Point{}, apperr.E(apperr.Invalid, "", "%s is required", field)
	}
	g := geo.FromProto(p)
	return g, geo.Check(field, g, area)
}

func rideID(id string) (string, error) {
	id = strings.TrimSpace(id)
	if id == "" {
		return "", apperr.E(apperr.Invalid, "", "ride_id is required")
	}
	return id, nil
}

func (h *handler) SetAvailability(ctx context.Context, req *connect.Request[dispatchv1.SetAvailabilityRequest]) (*connect.Response[dispatchv1.SetAvailabilityResponse], error) {
	id, err := driverOf(req.Msg.GetCaller())
	if err != nil {
		return nil, err
	}
	var at *geo.Point
	if req.Msg.GetLocation() != nil {
		p, err := point("location", req.Msg.GetLocation())
		if err != nil {
			return nil, err
		}
		at = &p
	}
	if err := h.d.setAvailability(ctx, id, req.Msg.GetOnline(), at); err != nil {
		return nil, err
	}
	return connect.NewResponse(&dispatchv1.SetAvailabilityResponse{Online: req.Msg.GetOnline()}), nil
}

func (h *handler) UpdateLocation(_ context.Context, req *connect.Request[dispatchv1.UpdateLocationRequest]) (*connect.Response[dispatchv1.UpdateLocationResponse], error) {
	id, err := driverOf(req.Msg.GetCaller())
	if err != nil {
		return nil, err
	}
	p, err := point("location", req.Msg.GetLocation())
	if err != nil {
		return nil, err
	}
	var recorded time.Time // zero: now
	if ts := req.Msg.GetRecordedAt(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return nil, apperr.E(apperr.Invalid, "", "recorded_at is not a valid time")
		}
		recorded = ts.AsTime()
	}
	h.d.locate(id, p, recorded)
	return connect.NewResponse(&dispatchv1.UpdateLocationResponse{}), nil
}

func (h *handler) ListOffers(ctx context.Context, req *connect.Request[dispatchv1.ListOffersRequest]) (*connect.Response[dispatchv1.ListOffersResponse], error) {
	id, err := driverOf(req.Msg.GetCaller())
	if err != nil {
		return nil, err
	}
	offers, err := h.d.listOffers(ctx, id)
	if err != nil {
		return nil, err
	}
	out := &dispatchv1.ListOffersResponse{Offers: make([]*dispatchv1.Offer, 0, len(offers))}
	for _, o := range offers {
		out.Offers = append(out.Offers, &dispatchv1.Offer{
			RideId:    o.RideID,
			Pickup:    o.Pickup.Proto(),
			Dropoff:   o.Dropoff.Proto(),
			Fare:      &moneyv1.Money{Amount: o.Fare.Amount, Currency: o.Fare.Currency},
			ExpiresAt: timestamppb.New(o.ExpiresAt),
		})
	}
	return connect.NewResponse(out), nil
}

func (h *handler) StartSearch(ctx context.Context, req *connect.Request[dispatchv1.StartSearchRequest]) (*connect.Response[dispatchv1.StartSearchResponse], error) {
	m := req.Msg
	if err := platformOnly(m.GetCaller()); err != nil {
		return nil, err
	}
	se, err := h.searchOf(m)
	if err != nil {
		return nil, err
	}
	if err := h.d.startSearch(ctx, se); err != nil {
		return nil, err
	}
	return connect.NewResponse(&dispatchv1.StartSearchResponse{}), nil
}

// searchOf validates a StartSearch request. Attempt 0 (unset) counts as
// the first attempt; an absent deadline is dispatch.search_timeout away.
func (h *handler) searchOf(m *dispatchv1.StartSearchRequest) (*search, error) {
	id, err := rideID(m.GetRideId())
	if err != nil {
		return nil, err
	}
	pickup, err := point("pickup", m.GetPickup())
	if err != nil {
		return nil, err
	}
	dropoff, err := point("dropoff", m.GetDropoff())
	if err != nil {
		return nil, err
	}
	if m.GetFare().GetAmount() < 0 {
		return nil, apperr.E(apperr.Invalid, "", "fare must not be negative")
	}
	deadline := h.d.clock().Add(h.d.cfg.searchTimeout)
	if m.GetDeadline() != nil {
		if err := m.GetDeadline().CheckValid(); err != nil {
			return nil, apperr.E(apperr.Invalid, "", "deadline is not a valid time")
		}
		deadline = m.GetDeadline().AsTime().UTC().Truncate(time.Microsecond)
	}
	attempt := max(m.GetAttempt(), 1)
	var exclude []string
	for _, x := range m.GetExcludeDriverIds() {
		if x = strings.TrimSpace(x); x != "" {
			exclude = append(exclude, x)
		}
	}
	return &search{
		RideID: id, Attempt: attempt, RiderID: m.GetRiderId(),
		Pickup: pickup, Dropoff: dropoff, Zone: ZoneOf(pickup),
		Fare:     money{Amount: m.GetFare().GetAmount(), Currency: m.GetFare().GetCurrency()},
		Exclude:  exclude,
		Deadline: deadline,
	}, nil
}

func (h *handler) CancelSearch(ctx context.Context, req *connect.Request[dispatchv1.CancelSearchRequest]) (*connect.Response[dispatchv1.CancelSearchResponse], error) {
	if err := platformOnly(req.Msg.GetCaller()); err != nil {
		return nil, err
	}
	id, err := rideID(req.Msg.GetRideId())
	if err != nil {
		return nil, err
	}
	if err := h.d.cancelSearch(ctx, id); err != nil {
		return nil, err
	}
	return connect.NewResponse(&dispatchv1.CancelSearchResponse{}), nil
}

func (h *handler) RespondToOffer(ctx context.Context, req *connect.Request[dispatchv1.RespondToOfferRequest]) (*connect.Response[dispatchv1.RespondToOfferResponse], error) {
	driver, err := driverOf(req.Msg.GetCaller())
	if err != nil {
		return nil, err
	}
	id, err := rideID(req.Msg.GetRideId())
	if err != nil {
		return nil, err
	}
	if !req.Msg.GetAccept() {
		if err := h.d.decline(ctx, driver, id); err != nil {
			return nil, err
		}
		return connect.NewResponse(&dispatchv1.RespondToOfferResponse{}), nil
	}
	eta, err := h.d.accept(ctx, driver, id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&dispatchv1.RespondToOfferResponse{Assigned: true, EtaSeconds: int32(eta)}), nil
}

func (h *handler) ReleaseDriver(ctx context.Context, req *connect.Request[dispatchv1.ReleaseDriverRequest]) (*connect.Response[dispatchv1.ReleaseDriverResponse], error) {
	if err := platformOnly(req.Msg.GetCaller()); err != nil {
		return nil, err
	}
	id, err := rideID(req.Msg.GetRideId())
	if err != nil {
		return nil, err
	}
	if err := h.d.releaseDriver(ctx, id); err != nil {
		return nil, err
	}
	return connect.NewResponse(&dispatchv1.ReleaseDriverResponse{}), nil
}

func (h *handler) EstimateRoute(ctx context.Context, req *connect.Request[dispatchv1.EstimateRouteRequest]) (*connect.Response[dispatchv1.EstimateRouteResponse], error) {
	if err := anyCaller(req.Msg.GetCaller()); err != nil {
		return nil, err
	}
	from, err := point("from", req.Msg.GetFrom())
	if err != nil {
		return nil, err
	}
	to, err := point("to", req.Msg.GetTo())
	if err != nil {
		return nil, err
	}
	meters, secs, err := h.d.router.Route(ctx, from, to)
	if err != nil {
		return nil, apperr.Wrap(err, apperr.Unavailable, "", "route estimate unavailable")
	}
	return connect.NewResponse(&dispatchv1.EstimateRouteResponse{DistanceMeters: int32(meters), DurationSeconds: int32(secs)}), nil
}

func (h *handler) GetSupply(ctx context.Context, req *connect.Request[dispatchv1.GetSupplyRequest]) (*connect.Response[dispatchv1.GetSupplyResponse], error) {
	if err := anyCaller(req.Msg.GetCaller()); err != nil {
		return nil, err
	}
	p, err := point("location", req.Msg.GetLocation())
	if err != nil {
		return nil, err
	}
	zone, c, err := h.d.supplyAt(ctx, p)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&dispatchv1.GetSupplyResponse{AvailableDrivers: int32(c.Drivers), OpenRequests: int32(c.Requests), Zone: zone}), nil
}
