package pricing

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	"github.com/rideshare-platform/rideshare/api/dispatch/v1/dispatchv1connect"
	"github.com/rideshare-platform/rideshare/internal/geo"
)

// router estimates driving routes. Dispatch owns routing (its built-in
// estimator, or a routing engine when configured).
type router interface {
	Route(ctx context.Context, from, to geo.Point) (Route, error)
}

// zoner names the surge zone a point lies in: the same opaque grid cell ids
// dispatch puts in dispatch.supply.changed. Dispatch owns the zoning and
// does not document it, so pricing asks rather than recomputing it; should
// dispatch publish its grid, a local zoner can replace the RPC here.
type zoner interface {
	Zone(ctx context.Context, p geo.Point) (string, error)
}

// dispatchClient is router and zoner over dispatch's RPC.
type dispatchClient struct {
	rpc dispatchv1connect.DispatchServiceClient
}

// self is who pricing calls dispatch as.
var self = &authv1.Caller{UserId: "pricing", Role: authv1.Role_ROLE_SERVICE}

var errBadAnswer = errors.New("pricing: dispatch answered nonsense")

func (c dispatchClient) Route(ctx context.Context, from, to geo.Point) (Route, error) {
	res, err := c.rpc.EstimateRoute(ctx, connect.NewRequest(&dispatchv1.EstimateRouteRequest{
		Caller: self, From: from.Proto(), To: to.Proto(),
	}))
	if err != nil {
		return Route{}, err
	}
	r := Route{Meters: int64(res.Msg.GetDistanceMeters()), Seconds: int64(res.Msg.GetDurationSeconds())}
	if r.Meters < 0 || r.Seconds < 0 {
		return Route{}, errBadAnswer
	}
	return r, nil
}

func (c dispatchClient) Zone(ctx context.Context, p geo.Point) (string, error) {
	res, err := c.rpc.GetSupply(ctx, connect.NewRequest(&dispatchv1.GetSupplyRequest{Caller: self, Location: p.Proto()}))
	if err != nil {
		return "", err
	}
	if res.Msg.GetZone() == "" {
		return "", errBadAnswer
	}
	return res.Msg.GetZone(), nil
}
