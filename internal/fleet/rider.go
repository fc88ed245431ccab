package fleet

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/rideshare-platform/rideshare/internal/geo"
)

// Rider is a rider's phone app: the public routes a rider uses (sign up,
// log in, estimate a fare, request a ride, follow it) with the rider's
// credentials. It shares the drivers' HTTP plumbing, so simulated riders
// (a load run's) and simulated drivers talk to the gateway the same way:
// a 5 s timeout per request, a new token on a 401, problem+json errors.
// A Rider is not safe for concurrent use: one goroutine at a time.
type Rider struct{ p *phone }

// NewRider is the app of the rider with this email and password on the
// platform at gateway, making its requests with client.
func NewRider(gateway string, client *http.Client, email, password string) *Rider {
	if client == nil {
		client = http.DefaultClient
	}
	return &Rider{p: &phone{base: trimSlash(gateway), hc: client, email: email, password: password}}
}

// Email is the rider's account.
func (r *Rider) Email() string { return r.p.email }

// SignIn logs the rider in, signing the account up first if it does not
// exist yet. Logging in first costs an account an earlier run created one
// password hash instead of two (a sign-up of an existing account verifies
// the password too), which is most of a repeated run's warm-up. It makes
// one attempt; Transient says whether another may succeed.
func (r *Rider) SignIn(ctx context.Context, name string) error {
	err := r.p.logIn(ctx)
	if err == nil || transient(err) {
		return err
	}
	in := struct {
		Role     string `json:"role"`
		Name     string `json:"name"`
		Email    string `json:"email"`
		Password string `json:"password"`
	}{"rider", name, r.p.email, r.p.password}
	err = r.p.send(ctx, http.MethodPost, "/v1/accounts", "", nil, in, nil)
	if err != nil && statusOf(err) != http.StatusConflict {
		return err
	}
	return r.p.logIn(ctx)
}

// Money is an amount in minor units of an ISO 4217 currency.
type Money struct {
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

// Estimate is a fare estimate as the gateway answers it. QuoteID is empty
// when the estimate is degraded (pricing was down).
type Estimate struct {
	Fare            *Money  `json:"fare"`
	DistanceMeters  int32   `json:"distance_meters"`
	DurationSeconds int32   `json:"duration_seconds"`
	Surge           float64 `json:"surge"`
	Degraded        bool    `json:"degraded"`
	QuoteID         string  `json:"quote_id"`
}

// RideState is what a rider follows of a ride: its id and status (and
// who drives it, once someone does).
type RideState struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	DriverID string `json:"driver_id"`
	Fare     *Money `json:"fare"`
}

// Estimate asks the fare from pickup to dropoff.
func (r *Rider) Estimate(ctx context.Context, pickup, dropoff geo.Point) (Estimate, error) {
	var out Estimate
	err := r.p.call(ctx, http.MethodPost, "/v1/fares/estimate", tripBody{Pickup: latLngOf(pickup), Dropoff: latLngOf(dropoff)}, &out)
	return out, err
}

// RideRequest is a ride to ask for. QuoteID redeems an estimate's quote
// (optional); PaymentMethod is a test card such as "card_declined"
// (optional).
type RideRequest struct {
	Pickup, Dropoff geo.Point
	QuoteID         string
	PaymentMethod   string
}

type tripBody struct {
	Pickup        latLng `json:"pickup"`
	Dropoff       latLng `json:"dropoff"`
	QuoteID       string `json:"quote_id,omitempty"`
	PaymentMethod string `json:"payment_method,omitempty"`
}

// RequestRide asks for a ride once under the idempotency key. Repeating a
// call with the same key and request after a lost answer is safe: the
// platform answers with the first ride (or 409 while the first attempt
// still runs).
func (r *Rider) RequestRide(ctx context.Context, key string, in RideRequest) (RideState, error) {
	var out RideState
	body := tripBody{Pickup: latLngOf(in.Pickup), Dropoff: latLngOf(in.Dropoff), QuoteID: in.QuoteID, PaymentMethod: in.PaymentMethod}
	err := r.p.callWith(ctx, http.MethodPost, "/v1/rides", http.Header{"Idempotency-Key": {key}}, body, &out)
	return out, err
}

// Ride reads one of the rider's rides.
func (r *Rider) Ride(ctx context.Context, id string) (RideState, error) {
	var out RideState
	err := r.p.call(ctx, http.MethodGet, "/v1/rides/"+url.PathEscape(id), nil, &out)
	return out, err
}

// Cancel cancels one of the rider's rides.
func (r *Rider) Cancel(ctx context.Context, id string) (RideState, error) {
	var out RideState
	err := r.p.call(ctx, http.MethodPost, "/v1/rides/"+url.PathEscape(id)+"/cancel", struct{}{}, &out)
	return out, err
}

// StatusOf is the HTTP status of an error a Rider returned, or 0 when the
// gateway gave no answer (a refused connection, a timeout).
func StatusOf(err error) int { return statusOf(err) }

// Transient reports whether a failed call may succeed if repeated
// unchanged: no answer, a 5xx, a 408 or a 429.
func Transient(err error) bool { return transient(err) }

// RetryAfter is how long the gateway asked the caller to wait before
// trying again (a 429's or 503's Retry-After), or 0.
func RetryAfter(err error) time.Duration { return retryAfter(err) }
