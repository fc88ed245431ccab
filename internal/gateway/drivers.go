package gateway

import (
	"net/http"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
)

func (g *Gateway) availability(w http.ResponseWriter, r *http.Request, c *authv1.Caller) error {
	var in struct {
		Online   *bool      `json:"online"`
		Location *pointJSON `json:"location,omitempty"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.Online == nil {
		return apperr.E(apperr.Invalid, "", "online (true or false) is required")
	}
	req := &dispatchv1.SetAvailabilityRequest{Caller: c, Online: *in.Online}
	if in.Location != nil {
		p, err := in.Location.proto("location")
		if err != nil {
			return err
		}
		req.Location = p
	}
	res, err := g.dispatch.SetAvailability(r.Context(), connect.NewRequest(req))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		Online bool `json:"online"`
	}{res.Msg.GetOnline()})
}

// locationJSON is the body of a position ping.
type locationJSON struct {
	pointJSON
	RecordedAt *time.Time `json:"recorded_at,omitempty"`
}

// location takes a position ping: the platform's most frequent request,
// kept to one small RPC and an empty 204.
func (g *Gateway) location(w http.ResponseWriter, r *http.Request, c *authv1.Caller) error {
	var in locationJSON
	if err := decode(r, &in); err != nil {
		return err
	}
	p, err := in.pointJSON.proto("location")
	if err != nil {
		return err
	}
	req := &dispatchv1.UpdateLocationRequest{Caller: c, Location: p}
	if in.RecordedAt != nil {
		req.RecordedAt = timestamppb.New(*in.RecordedAt)
	}
	if _, err := g.dispatch.UpdateLocation(r.Context(), connect.NewRequest(req)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type offerJSON struct {
	RideID    string     `json:"ride_id"`
	Pickup    *latLng    `json:"pickup"`
	Dropoff   *latLng    `json:"dropoff"`
	Fare      *moneyJSON `json:"fare"`
	ExpiresAt time.Time  `json:"expires_at"`
}

func (g *Gateway) offers(w http.ResponseWriter, r *http.Request, c *authv1.Caller) error {
	res, err := g.dispatch.ListOffers(r.Context(), connect.NewRequest(&dispatchv1.ListOffersRequest{Caller: c}))
	if err != nil {
		return err
	}
	items := make([]offerJSON, 0, len(res.Msg.GetOffers()))
	for _, o := range res.Msg.GetOffers() {
		items = append(items, offerJSON{RideID: o.GetRideId(), Pickup: pointOut(o.GetPickup()), Dropoff: pointOut(o.GetDropoff()),
			Fare: moneyOut(o.GetFare()), ExpiresAt: o.GetExpiresAt().AsTime()})
	}
	return writeJSON(w, http.StatusOK, struct {
		Items []offerJSON `json:"items"`
	}{items})
}

// decline turns down an offer; dispatch passes the ride to the next nearest
// driver. Offers belong to dispatch, so this is the one trip route that does
// not go through rides.
func (g *Gateway) decline(w http.ResponseWriter, r *http.Request, c *authv1.Caller) error {
	if _, err := g.dispatch.RespondToOffer(r.Context(), connect.NewRequest(&dispatchv1.RespondToOfferRequest{Caller: c, RideId: r.PathValue("id"), Accept: false})); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
