package rides

import (
	"context"

	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	eventsv1 "github.com/rideshare-platform/rideshare/api/events/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// Dispatch's search is asynchronous: StartSearch returns at once and the
// outcome arrives as one of these events.
const (
	eventDriverAssigned = "dispatch.ride.driver_assigned"
	eventSearchFailed   = "dispatch.ride.search_failed"
)

// searchOutcomes is the durable consumer of those events.
func (s *saga) searchOutcomes() outbox.Subscription {
	return outbox.Subscription{
		Name:   "rides-search-outcomes",
		Owner:  "dispatch",
		Types:  []string{eventDriverAssigned, eventSearchFailed},
		Handle: s.onSearchOutcome,
	}
}

// onSearchOutcome applies a search outcome to its ride, in the consumer's
// transaction and through the same domain methods as the RPCs. An outcome of
// an earlier attempt, or for a ride that moved on (AcceptRide already
// assigned it, the rider cancelled), changes nothing and is acknowledged.
func (s *saga) onSearchOutcome(ctx context.Context, tx *sqldb.Tx, env *eventsv1.Envelope) error {
	var rideID string
	var apply func(*Ride) error
	switch env.GetType() {
	case eventDriverAssigned:
		var ev dispatchv1.DriverAssigned
		if err := env.GetPayload().UnmarshalTo(&ev); err != nil {
			return apperr.Wrap(err, apperr.Invalid, "", "malformed "+eventDriverAssigned)
		}
		rideID = ev.GetRideId()
		apply = func(r *Ride) error { return r.assign(ev.GetDriverId(), ev.GetAttempt(), s.now()) }
	case eventSearchFailed:
		var ev dispatchv1.SearchFailed
		if err := env.GetPayload().UnmarshalTo(&ev); err != nil {
			return apperr.Wrap(err, apperr.Invalid, "", "malformed "+eventSearchFailed)
		}
		rideID = ev.GetRideId()
		apply = func(r *Ride) error { return r.searchFailed(ev.GetAttempt(), ev.GetReason(), s.now()) }
	default:
		return apperr.E(apperr.Invalid, "", "rides does not consume %s", env.GetType())
	}
	_, err := s.store.updateTx(ctx, tx, rideID, apply)
	switch {
	case err == nil:
		return nil
	case apperr.Is(err, apperr.NotFound):
		// Dispatch only learns of a ride from the saga, after it was
		// committed: an unknown ride can never appear, so drop the event.
		return apperr.Wrap(err, apperr.Invalid, "", "event for an unknown ride "+rideID)
	case apperr.CodeOf(err) == "illegal_transition":
		s.log.Warn("saga: ignoring a search outcome the ride cannot take", "ride", rideID, "event", env.GetId(), "type", env.GetType(), "err", err)
		return nil
	}
	return err // Invalid is dropped by the consumer; anything else is retried
}
