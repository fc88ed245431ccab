package rides

import (
	"context"

	"connectrpc.com/connect"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	"github.com/rideshare-platform/rideshare/api/dispatch/v1/dispatchv1connect"
	paymentsv1 "github.com/rideshare-platform/rideshare/api/payments/v1"
	"github.com/rideshare-platform/rideshare/api/payments/v1/paymentsv1connect"
	pricingv1 "github.com/rideshare-platform/rideshare/api/pricing/v1"
	"github.com/rideshare-platform/rideshare/api/pricing/v1/pricingv1connect"
)

// What rides needs from its peers, declared here by the consumer: only the
// calls the saga makes. The wiring hands in the connect clients below; tests
// hand in fakes.

// pricer quotes fares.
type pricer interface {
	Estimate(ctx context.Context, req *pricingv1.EstimateRequest) (*pricingv1.Estimate, error)
}

// payer holds, charges and releases ride payments. Every call carries an
// idempotency key, so the saga may repeat any of them.
type payer interface {
	Authorize(ctx context.Context, req *paymentsv1.AuthorizeRequest) (*paymentsv1.Payment, error)
	Capture(ctx context.Context, req *paymentsv1.CaptureRequest) (*paymentsv1.Payment, error)
	Void(ctx context.Context, req *paymentsv1.VoidRequest) (*paymentsv1.Payment, error)
}

// dispatcher finds, books and frees drivers.
type dispatcher interface {
	StartSearch(ctx context.Context, req *dispatchv1.StartSearchRequest) error
	CancelSearch(ctx context.Context, req *dispatchv1.CancelSearchRequest) error
	ReleaseDriver(ctx context.Context, req *dispatchv1.ReleaseDriverRequest) error
	RespondToOffer(ctx context.Context, req *dispatchv1.RespondToOfferRequest) (*dispatchv1.RespondToOfferResponse, error)
}

// sagaCaller is who the saga's calls are for: rides itself.
var sagaCaller = &authv1.Caller{UserId: "rides", Role: authv1.Role_ROLE_SERVICE}

// pricingRPC is pricer over PricingService.
type pricingRPC struct {
	c pricingv1connect.PricingServiceClient
}

func (p pricingRPC) Estimate(ctx context.Context, req *pricingv1.EstimateRequest) (*pricingv1.Estimate, error) {
	res, err := p.c.Estimate(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetEstimate(), nil
}

// paymentsRPC is payer over PaymentsService.
type paymentsRPC struct {
	c paymentsv1connect.PaymentsServiceClient
}

func (p paymentsRPC) Authorize(ctx context.Context, req *paymentsv1.AuthorizeRequest) (*paymentsv1.Payment, error) {
	res, err := p.c.Authorize(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetPayment(), nil
}

func (p paymentsRPC) Capture(ctx context.Context, req *paymentsv1.CaptureRequest) (*paymentsv1.Payment, error) {
	res, err := p.c.Capture(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetPayment(), nil
}

func (p paymentsRPC) Void(ctx context.Context, req *paymentsv1.VoidRequest) (*paymentsv1.Payment, error) {
	res, err := p.c.Void(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetPayment(), nil
}

// dispatchRPC is dispatcher over DispatchService.
type dispatchRPC struct {
	c dispatchv1connect.DispatchServiceClient
}

func (d dispatchRPC) StartSearch(ctx context.Context, req *dispatchv1.StartSearchRequest) error {
	_, err := d.c.StartSearch(ctx, connect.NewRequest(req))
	return err
}

func (d dispatchRPC) CancelSearch(ctx context.Context, req *dispatchv1.CancelSearchRequest) error {
	_, err := d.c.CancelSearch(ctx, connect.NewRequest(req))
	return err
}

func (d dispatchRPC) ReleaseDriver(ctx context.Context, req *dispatchv1.ReleaseDriverRequest) error {
	_, err := d.c.ReleaseDriver(ctx, connect.NewRequest(req))
	return err
}

func (d dispatchRPC) RespondToOffer(ctx context.Context, req *dispatchv1.RespondToOfferRequest) (*dispatchv1.RespondToOfferResponse, error) {
	res, err := d.c.RespondToOffer(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}
