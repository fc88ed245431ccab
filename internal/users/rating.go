package users

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	ridesv1 "github.com/rideshare-platform/rideshare/api/rides/v1"
	usersv1 "github.com/rideshare-platform/rideshare/api/users/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// rideLookup is what rating needs of the rides service: the ride as the
// rater may see it. Rides owns rides, so it decides who the parties are.
type rideLookup interface {
	GetRide(ctx context.Context, caller *authv1.Caller, rideID string) (*ridesv1.Ride, error)
}

// RateUser records the caller's stars for the other party of a completed
// ride. The rater must be the ride's rider or driver (rides answers
// NotFound otherwise); each rates once per ride.
func (h *handler) RateUser(ctx context.Context, req *connect.Request[usersv1.RateUserRequest]) (*connect.Response[usersv1.RateUserResponse], error) {
	m := req.Msg
	c := m.GetCaller()
	if r := c.GetRole(); (r != authv1.Role_ROLE_RIDER && r != authv1.Role_ROLE_DRIVER) || c.GetUserId() == "" {
		return nil, apperr.E(apperr.Forbidden, "", "only a ride's rider or driver rates it")
	}
	if m.GetStars() < 1 || m.GetStars() > 5 {
		return nil, apperr.E(apperr.Invalid, "", "stars must be 1 to 5")
	}
	ride, err := h.rides.GetRide(ctx, c, m.GetRideId())
	if err != nil {
		return nil, err
	}
	if ride.GetStatus() != ridesv1.RideStatus_RIDE_STATUS_COMPLETED {
		return nil, apperr.E(apperr.Conflict, "ride_not_completed", "a ride is rated once it is completed")
	}
	other := ride.GetDriverId()
	if c.GetUserId() == ride.GetDriverId() {
		other = ride.GetRiderId()
	}
	if m.GetUserId() != "" && m.GetUserId() != other {
		return nil, apperr.E(apperr.Invalid, "", "user_id is not the other party of this ride")
	}
	if err := h.store.rate(ctx, m.GetRideId(), c.GetUserId(), other, int64(m.GetStars())); err != nil {
		return nil, err
	}
	return connect.NewResponse(&usersv1.RateUserResponse{}), nil
}

// rate stores one rating and adds it to the rated user's average, once:
// the same stars again change nothing, other stars are a conflict.
func (s *store) rate(ctx context.Context, rideID, raterID, userID string, stars int64) error {
	return s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO ratings (ride_id, rater_id, user_id, stars, created_at) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (ride_id, rater_id) DO NOTHING`, rideID, raterID, userID, stars, sqldb.Micros(now()))
		if err != nil {
			return fmt.Errorf("users: rate: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			var before int64
			if err := tx.QueryRowContext(ctx, `SELECT stars FROM ratings WHERE ride_id = $1 AND rater_id = $2`, rideID, raterID).Scan(&before); err != nil {
				return fmt.Errorf("users: rate: %w", err)
			}
			if before != stars {
				return apperr.E(apperr.Conflict, "already_rated", "you rated this ride %d stars already", before)
			}
			return nil
		}
		res, err = tx.ExecContext(ctx, `UPDATE profiles SET rating_sum = rating_sum + $1, rating_count = rating_count + 1 WHERE user_id = $2`, stars, userID)
		if err != nil {
			return fmt.Errorf("users: rate: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return apperr.E(apperr.NotFound, "", "the rated user has no profile")
		}
		return nil
	})
}

// ridesRPC reaches the rides service.
type ridesRPC struct {
	client interface {
		GetRide(context.Context, *connect.Request[ridesv1.GetRideRequest]) (*connect.Response[ridesv1.GetRideResponse], error)
	}
}

func (r ridesRPC) GetRide(ctx context.Context, caller *authv1.Caller, rideID string) (*ridesv1.Ride, error) {
	res, err := r.client.GetRide(ctx, connect.NewRequest(&ridesv1.GetRideRequest{Caller: caller, RideId: rideID}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetRide(), nil
}
