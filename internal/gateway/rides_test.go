package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	ridesv1 "github.com/rideshare-platform/rideshare/api/rides/v1"
	"github.com/rideshare-platform/rideshare/api/rides/v1/ridesv1connect"
	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// refusingRides answers every trip step with err, as rides does for a ride
// the caller may not see.
type refusingRides struct {
	ridesv1connect.RidesServiceClient
	err error
}

func (f refusingRides) AcceptRide(context.Context, *connect.Request[ridesv1.AcceptRideRequest]) (*connect.Response[ridesv1.AcceptRideResponse], error) {
	return nil, f.err
}

func (f refusingRides) ArriveRide(context.Context, *connect.Request[ridesv1.ArriveRideRequest]) (*connect.Response[ridesv1.ArriveRideResponse], error) {
	return nil, f.err
}

func (f refusingRides) StartRide(context.Context, *connect.Request[ridesv1.StartRideRequest]) (*connect.Response[ridesv1.StartRideResponse], error) {
	return nil, f.err
}

func (f refusingRides) CompleteRide(context.Context, *connect.Request[ridesv1.CompleteRideRequest]) (*connect.Response[ridesv1.CompleteRideResponse], error) {
	return nil, f.err
}

// TestTripStepErrors: a refused trip step is the refusal (404 for another
// driver's ride), not a panic and a dropped connection.
func TestTripStepErrors(t *testing.T) {
	c := newClock()
	g := newTestGateway(t, onePolicy(100, 100), c)
	g.rides = refusingRides{err: apperr.E(apperr.NotFound, "", "ride not found")}
	tok := g.token(t, "driver-b", "driver")
	for _, step := range []func(*Gateway, *http.Request, *authv1.Caller, string) (*ridesv1.Ride, error){accept, arrive, start, complete} {
		h := g.endpoint(route{method: "POST", path: "/v1/rides/{id}/x", roles: drivers, handle: g.tripStep(step)})
		w := serve(h, "10.0.0.1:1", tok)
		if w.Code != http.StatusNotFound {
			t.Errorf("refused trip step: %d %s, want 404", w.Code, w.Body)
		}
	}
}

func TestPanicIsA500(t *testing.T) {
	g := newTestGateway(t, onePolicy(100, 100), newClock())
	h := g.endpoint(route{method: "GET", path: "/x", handle: func(http.ResponseWriter, *http.Request, *authv1.Caller) error {
		var m map[string]int
		m["boom"]++ // a bug
		return nil
	}})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/x", nil))
	if w.Code != http.StatusInternalServerError || w.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("a panicking handler: %d %q %s", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
}
