package pricing

import (
	"context"
	"math"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	moneyv1 "github.com/rideshare-platform/rideshare/api/money/v1"
	pricingv1 "github.com/rideshare-platform/rideshare/api/pricing/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/geo"
)

// rpcServer serves PricingService over the handler.
type rpcServer struct {
	h *handler
}

func (s rpcServer) Estimate(ctx context.Context, req *connect.Request[pricingv1.EstimateRequest]) (*connect.Response[pricingv1.EstimateResponse], error) {
	m := req.Msg
	if err := requireCaller(m.GetCaller()); err != nil {
		return nil, err
	}
	q, id, err := s.h.estimate(ctx, geo.FromProto(m.GetPickup()), geo.FromProto(m.GetDropoff()), m.GetQuoteId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pricingv1.EstimateResponse{Estimate: &pricingv1.Estimate{
		Fare:            &moneyv1.Money{Amount: q.Fare, Currency: q.Currency},
		DistanceMeters:  clampInt32(q.Route.Meters),
		DurationSeconds: clampInt32(q.Route.Seconds),
		SurgeMultiplier: q.Surge.Float(),
		Degraded:        q.Degraded,
		QuoteId:         id,
		ExpiresAt:       timestamppb.New(q.Expires),
	}}), nil
}

func (s rpcServer) GetSurge(ctx context.Context, req *connect.Request[pricingv1.GetSurgeRequest]) (*connect.Response[pricingv1.GetSurgeResponse], error) {
	if err := requireCaller(req.Msg.GetCaller()); err != nil {
		return nil, err
	}
	surge, zone, err := s.h.surgeAt(ctx, geo.FromProto(req.Msg.GetLocation()))
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pricingv1.GetSurgeResponse{Multiplier: surge.Float(), Zone: zone}), nil
}

// requireCaller accepts any role: prices are not private. A request that
// names nobody is a wiring bug upstream, refused rather than served blind.
func requireCaller(c *authv1.Caller) error {
	if c.GetRole() == authv1.Role_ROLE_UNSPECIFIED {
		return apperr.E(apperr.Unauthenticated, "", "the request names no caller")
	}
	return nil
}

func clampInt32(v int64) int32 { return int32(min(max(v, 0), math.MaxInt32)) }
