package gateway

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	geov1 "github.com/rideshare-platform/rideshare/api/geo/v1"
	moneyv1 "github.com/rideshare-platform/rideshare/api/money/v1"
	pricingv1 "github.com/rideshare-platform/rideshare/api/pricing/v1"
	ridesv1 "github.com/rideshare-platform/rideshare/api/rides/v1"
	usersv1 "github.com/rideshare-platform/rideshare/api/users/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// pointJSON is a coordinate. Pointers tell a missing field from 0.
type pointJSON struct {
	Lat *float64 `json:"lat"`
	Lng *float64 `json:"lng"`
}

func (p *pointJSON) proto(field string) (*geov1.Point, error) {
	if p == nil || p.Lat == nil || p.Lng == nil {
		return nil, apperr.E(apperr.Invalid, "", "%s needs lat and lng", field)
	}
	return &geov1.Point{Lat: *p.Lat, Lng: *p.Lng}, nil
}

type latLng struct {
	Lat float64 `json:"lat"`
	Lng float64 `json:"lng"`
}

func pointOut(p *geov1.Point) *latLng {
	if p == nil {
		return nil
	}
	return &latLng{Lat: p.GetLat(), Lng: p.GetLng()}
}

type moneyJSON struct {
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

func moneyOut(m *moneyv1.Money) *moneyJSON {
	if m == nil || m.GetCurrency() == "" {
		return nil
	}
	return &moneyJSON{Amount: m.GetAmount(), Currency: m.GetCurrency()}
}

// rideJSON is a ride as DESIGN.md section 7 shows it.
type rideJSON struct {
	ID        string     `json:"id"`
	Status    string     `json:"status"`
	RiderID   string     `json:"rider_id"`
	DriverID  string     `json:"driver_id,omitempty"`
	Pickup    *latLng    `json:"pickup"`
	Dropoff   *latLng    `json:"dropoff"`
	Fare      *moneyJSON `json:"fare,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
}

// statusName is the public spelling of a ride status: the enum name in
// lower case without its prefix (RIDE_STATUS_NO_DRIVER → no_driver).
func statusName(s ridesv1.RideStatus) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "RIDE_STATUS_"))
}

func rideOut(r *ridesv1.Ride) rideJSON {
	return rideJSON{
		ID: r.GetId(), Status: statusName(r.GetStatus()), RiderID: r.GetRiderId(), DriverID: r.GetDriverId(),
		Pickup: pointOut(r.GetPickup()), Dropoff: pointOut(r.GetDropoff()), Fare: moneyOut(r.GetFare()),
		CreatedAt: r.GetCreatedAt().AsTime(), UpdatedAt: r.GetUpdatedAt().AsTime(),
	}
}

type tripJSON struct {
	Pickup  *pointJSON `json:"pickup"`
	Dropoff *pointJSON `json:"dropoff"`
}

func (t tripJSON) points() (*geov1.Point, *geov1.Point, error) {
	p, err := t.Pickup.proto("pickup")
	if err != nil {
		return nil, nil, err
	}
	d, err := t.Dropoff.proto("dropoff")
	return p, d, err
}

func (g *Gateway) estimate(w http.ResponseWriter, r *http.Request, c *authv1.Caller) error {
	var in struct {
		tripJSON
		QuoteID string `json:"quote_id,omitempty"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if err := checkText("quote_id", in.QuoteID, maxRef, false); err != nil {
		return err
	}
	pickup, dropoff, err := in.points()
	if err != nil {
		return err
	}
	res, err := g.pricing.Estimate(r.Context(), connect.NewRequest(&pricingv1.EstimateRequest{Caller: c, Pickup: pickup, Dropoff: dropoff, QuoteId: in.QuoteID}))
	if err != nil {
		if !dependencyDown(r.Context(), err) {
			return err // the caller's mistake, or pricing's answer: not ours to replace
		}
		return g.estimateWithoutPricing(w, r, pickup, dropoff, err)
	}
	e := res.Msg.GetEstimate()
	return writeJSON(w, http.StatusOK, estimateJSON{moneyOut(e.GetFare()), e.GetDistanceMeters(), e.GetDurationSeconds(), e.GetSurgeMultiplier(),
		e.GetDegraded(), e.GetQuoteId(), optTime(e.GetExpiresAt().AsTime(), e.GetExpiresAt() != nil)})
}

// estimateJSON is a fare estimate as the public API shows it.
type estimateJSON struct {
	Fare            *moneyJSON `json:"fare"`
	DistanceMeters  int32      `json:"distance_meters"`
	DurationSeconds int32      `json:"duration_seconds"`
	Surge           float64    `json:"surge"`
	Degraded        bool       `json:"degraded"`
	QuoteID         string     `json:"quote_id,omitempty"`
	ExpiresAt       *time.Time `json:"expires_at,omitempty"`
}

func optTime(t time.Time, ok bool) *time.Time {
	if !ok {
		return nil
	}
	return &t
}

// maxRef bounds the references a client passes through (quote ids, payment
// methods): long enough for any id, short enough to index. A signed quote
// id from pricing is 149 bytes.
const maxRef = 256

// idempotencyKeyMax bounds the header so keys stay cheap to store and index.
const idempotencyKeyMax = 255

func idempotencyKey(r *http.Request) (string, error) {
	k := r.Header.Get("Idempotency-Key")
	if k == "" {
		return "", apperr.E(apperr.Invalid, "idempotency_key_required", "an Idempotency-Key header is required")
	}
	if len(k) > idempotencyKeyMax {
		return "", apperr.E(apperr.Invalid, "", "Idempotency-Key is at most %d bytes", idempotencyKeyMax)
	}
	for _, ch := range k {
		if ch < 0x21 || ch > 0x7e {
			return "", apperr.E(apperr.Invalid, "", "Idempotency-Key must be printable ASCII without spaces")
		}
	}
	return k, nil
}

// rideRequestJSON is the body of POST /v1/rides.
type rideRequestJSON struct {
	tripJSON
	QuoteID       string `json:"quote_id,omitempty"`
	PaymentMethod string `json:"payment_method,omitempty"`
}

// check validates the request's text and returns its points.
func (in rideRequestJSON) check() (pickup, dropoff *geov1.Point, err error) {
	if err := checkText("quote_id", in.QuoteID, maxRef, false); err != nil {
		return nil, nil, err
	}
	if err := checkText("payment_method", in.PaymentMethod, maxRef, false); err != nil {
		return nil, nil, err
	}
	return in.points()
}

func (g *Gateway) requestRide(w http.ResponseWriter, r *http.Request, c *authv1.Caller) error {
	key, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	var in rideRequestJSON
	if err := decode(r, &in); err != nil {
		return err
	}
	pickup, dropoff, err := in.check()
	if err != nil {
		return err
	}
	res, err := g.rides.RequestRide(r.Context(), connect.NewRequest(&ridesv1.RequestRideRequest{
		Caller: c, IdempotencyKey: key, Pickup: pickup, Dropoff: dropoff, QuoteId: in.QuoteID, PaymentMethod: in.PaymentMethod,
	}))
	if err != nil {
		return err
	}
	ride := res.Msg.GetRide()
	w.Header().Set("Location", "/v1/rides/"+ride.GetId())
	return writeJSON(w, http.StatusAccepted, rideOut(ride))
}

func (g *Gateway) getRide(w http.ResponseWriter, r *http.Request, c *authv1.Caller) error {
	res, err := g.rides.GetRide(r.Context(), connect.NewRequest(&ridesv1.GetRideRequest{Caller: c, RideId: r.PathValue("id")}))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rideOut(res.Msg.GetRide()))
}

// maxPageSize caps ?limit= so one request cannot ask for every ride.
const maxPageSize = 100

func (g *Gateway) listRides(w http.ResponseWriter, r *http.Request, c *authv1.Caller) error {
	q := r.URL.Query()
	size := 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageSize {
			return apperr.E(apperr.Invalid, "", "limit must be a whole number from 1 to %d", maxPageSize)
		}
		size = n
	}
	res, err := g.rides.ListRides(r.Context(), connect.NewRequest(&ridesv1.ListRidesRequest{Caller: c, PageSize: int32(size), Cursor: q.Get("cursor")}))
	if err != nil {
		return err
	}
	items := make([]rideJSON, 0, len(res.Msg.GetRides()))
	for _, ride := range res.Msg.GetRides() {
		items = append(items, rideOut(ride))
	}
	return writeJSON(w, http.StatusOK, struct {
		Items      []rideJSON `json:"items"`
		NextCursor string     `json:"next_cursor,omitempty"`
	}{items, res.Msg.GetNextCursor()})
}

func (g *Gateway) cancelRide(w http.ResponseWriter, r *http.Request, c *authv1.Caller) error {
	var in struct {
		Reason string `json:"reason,omitempty"`
	}
	if r.ContentLength != 0 {
		if err := decode(r, &in); err != nil {
			return err
		}
	}
	if err := checkText("reason", in.Reason, 500, true); err != nil {
		return err
	}
	res, err := g.rides.CancelRide(r.Context(), connect.NewRequest(&ridesv1.CancelRideRequest{Caller: c, RideId: r.PathValue("id"), Reason: in.Reason}))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rideOut(res.Msg.GetRide()))
}

// tripStep is a driver's step on an assigned ride; each RPC returns the
// ride after the step.
func (g *Gateway) tripStep(step func(*Gateway, *http.Request, *authv1.Caller, string) (*ridesv1.Ride, error)) func(http.ResponseWriter, *http.Request, *authv1.Caller) error {
	return func(w http.ResponseWriter, r *http.Request, c *authv1.Caller) error {
		ride, err := step(g, r, c, r.PathValue("id"))
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, rideOut(ride))
	}
}

func accept(g *Gateway, r *http.Request, c *authv1.Caller, id string) (*ridesv1.Ride, error) {
	res, err := g.rides.AcceptRide(r.Context(), connect.NewRequest(&ridesv1.AcceptRideRequest{Caller: c, RideId: id}))
	if err != nil {
		return nil, err // res is nil: reading it would panic
	}
	return res.Msg.GetRide(), nil
}

func arrive(g *Gateway, r *http.Request, c *authv1.Caller, id string) (*ridesv1.Ride, error) {
	res, err := g.rides.ArriveRide(r.Context(), connect.NewRequest(&ridesv1.ArriveRideRequest{Caller: c, RideId: id}))
	if err != nil {
		return nil, err // res is nil: reading it would panic
	}
	return res.Msg.GetRide(), nil
}

func start(g *Gateway, r *http.Request, c *authv1.Caller, id string) (*ridesv1.Ride, error) {
	res, err := g.rides.StartRide(r.Context(), connect.NewRequest(&ridesv1.StartRideRequest{Caller: c, RideId: id}))
	if err != nil {
		return nil, err // res is nil: reading it would panic
	}
	return res.Msg.GetRide(), nil
}

func complete(g *Gateway, r *http.Request, c *authv1.Caller, id string) (*ridesv1.Ride, error) {
	res, err := g.rides.CompleteRide(r.Context(), connect.NewRequest(&ridesv1.CompleteRideRequest{Caller: c, RideId: id}))
	if err != nil {
		return nil, err // res is nil: reading it would panic
	}
	return res.Msg.GetRide(), nil
}

func (g *Gateway) receipt(w http.ResponseWriter, r *http.Request, c *authv1.Caller) error {
	res, err := g.rides.GetReceipt(r.Context(), connect.NewRequest(&ridesv1.GetReceiptRequest{Caller: c, RideId: r.PathValue("id")}))
	if err != nil {
		return err
	}
	rc := res.Msg.GetReceipt()
	return writeJSON(w, http.StatusOK, struct {
		RideID     string     `json:"ride_id"`
		Amount     int64      `json:"amount"`
		Currency   string     `json:"currency"`
		Status     string     `json:"status"`
		CapturedAt *time.Time `json:"captured_at"`
	}{rc.GetRideId(), rc.GetAmount().GetAmount(), rc.GetAmount().GetCurrency(),
		strings.ToLower(strings.TrimPrefix(rc.GetStatus().String(), "RECEIPT_STATUS_")),
		optTime(rc.GetCapturedAt().AsTime(), rc.GetCapturedAt() != nil)})
}

// rate gives the other party of a completed ride 1 to 5 stars; users owns
// ratings and asks rides who the parties are.
func (g *Gateway) rate(w http.ResponseWriter, r *http.Request, c *authv1.Caller) error {
	var in struct {
		Stars *int32 `json:"stars"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.Stars == nil {
		return apperr.E(apperr.Invalid, "", "stars (1 to 5) is required")
	}
	if _, err := g.users.RateUser(r.Context(), connect.NewRequest(&usersv1.RateUserRequest{Caller: c, RideId: r.PathValue("id"), Stars: *in.Stars})); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
