package payments

import (
	"context"
	"log/slog"

	"connectrpc.com/connect"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	paymentsv1 "github.com/rideshare-platform/rideshare/api/payments/v1"
	"github.com/rideshare-platform/rideshare/api/payments/v1/paymentsv1connect"
	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// handler serves PaymentsService: it authorizes the caller, validates the
// request's shape and hands it to the processor.
type handler struct {
	paymentsv1connect.UnimplementedPaymentsServiceHandler
	pr  *processor
	log *slog.Logger
}

// platformOnly is the rule for every RPC here: payments is called by the
// saga and by operators, never by users (riders see receipts through rides).
func platformOnly(c *authv1.Caller) bool {
	r := c.GetRole()
	return r == authv1.Role_ROLE_SERVICE || r == authv1.Role_ROLE_ADMIN
}

// checkWrite is what every write needs before anything else.
func checkWrite(m keyedRequest) error {
	if !platformOnly(m.GetCaller()) {
		return apperr.E(apperr.Forbidden, "", "only the platform moves money")
	}
	return checkKey(m.GetIdempotencyKey())
}

// checkID validates a required identifier.
func checkID(field, v string) error {
	switch {
	case v == "":
		return apperr.E(apperr.Invalid, "", "%s is required", field)
	case len(v) > 200:
		return apperr.E(apperr.Invalid, "", "%s is at most 200 bytes", field)
	}
	return nil
}

func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (h *handler) Authorize(ctx context.Context, req *connect.Request[paymentsv1.AuthorizeRequest]) (*connect.Response[paymentsv1.AuthorizeResponse], error) {
	m := req.Msg
	if err := firstError(checkWrite(m), checkID("ride_id", m.GetRideId()), checkID("rider_id", m.GetRiderId()), checkMoney("amount", m.GetAmount())); err != nil {
		return nil, err
	}
	if len(m.GetPaymentMethod()) > 200 {
		return nil, apperr.E(apperr.Invalid, "", "payment_method is at most 200 bytes")
	}
	p, err := h.pr.authorize(ctx, m)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&paymentsv1.AuthorizeResponse{Payment: p}), nil
}

func (h *handler) Capture(ctx context.Context, req *connect.Request[paymentsv1.CaptureRequest]) (*connect.Response[paymentsv1.CaptureResponse], error) {
	m := req.Msg
	if err := firstError(checkWrite(m), checkID("payment_id", m.GetPaymentId()), checkMoney("amount", m.GetAmount())); err != nil {
		return nil, err
	}
	p, err := h.pr.capture(ctx, m)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&paymentsv1.CaptureResponse{Payment: p}), nil
}

func (h *handler) Void(ctx context.Context, req *connect.Request[paymentsv1.VoidRequest]) (*connect.Response[paymentsv1.VoidResponse], error) {
	m := req.Msg
	if err := firstError(checkWrite(m), checkID("payment_id", m.GetPaymentId())); err != nil {
		return nil, err
	}
	p, err := h.pr.void(ctx, m)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&paymentsv1.VoidResponse{Payment: p}), nil
}

func (h *handler) Refund(ctx context.Context, req *connect.Request[paymentsv1.RefundRequest]) (*connect.Response[paymentsv1.RefundResponse], error) {
	m := req.Msg
	if err := firstError(checkWrite(m), checkID("payment_id", m.GetPaymentId()), checkMoney("amount", m.GetAmount())); err != nil {
		return nil, err
	}
	p, err := h.pr.refund(ctx, m)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&paymentsv1.RefundResponse{Payment: p}), nil
}

// GetPayment reads a payment by id or by ride. Anyone but the platform is
// told it does not exist. A payment whose authorization is still in flight
// does not exist yet either (code payment_pending): it has no status to
// show until the network answered.
func (h *handler) GetPayment(ctx context.Context, req *connect.Request[paymentsv1.GetPaymentRequest]) (*connect.Response[paymentsv1.GetPaymentResponse], error) {
	m := req.Msg
	if !platformOnly(m.GetCaller()) {
		return nil, apperr.E(apperr.NotFound, "", "payment not found")
	}
	var p Payment
	var err error
	st, q := h.pr.store, h.pr.store.db.Reader()
	switch l := m.GetLookup().(type) {
	case *paymentsv1.GetPaymentRequest_PaymentId:
		p, err = st.payment(ctx, q, l.PaymentId)
	case *paymentsv1.GetPaymentRequest_RideId:
		p, err = st.paymentByRide(ctx, q, l.RideId)
	default:
		return nil, apperr.E(apperr.Invalid, "", "payment_id or ride_id is required")
	}
	if err != nil {
		return nil, err
	}
	if p.Status == Authorizing {
		return nil, apperr.E(apperr.NotFound, "payment_pending", "the payment's authorization is still in progress")
	}
	return connect.NewResponse(&paymentsv1.GetPaymentResponse{Payment: p.toProto()}), nil
}

// CheckLedger verifies the ledger. balanced is true only when debits equal
// credits overall and in every transaction AND every payment agrees with
// the ledger (captured at most once, totals equal, refunds within captures):
// a drill's "ledger balanced" verdict must fail on any of these. The
// details of a failure go to the log.
func (h *handler) CheckLedger(ctx context.Context, req *connect.Request[paymentsv1.CheckLedgerRequest]) (*connect.Response[paymentsv1.CheckLedgerResponse], error) {
	if !platformOnly(req.Msg.GetCaller()) {
		return nil, apperr.E(apperr.Forbidden, "", "only operators and services check the ledger")
	}
	r, err := h.pr.store.checkLedger(ctx)
	if err != nil {
		return nil, err
	}
	if !r.OK() {
		h.log.Error("payments: ledger check failed", "debits", r.Debits, "credits", r.Credits,
			"unbalanced_transactions", r.Unbalanced, "violations", r.Violations)
	}
	return connect.NewResponse(&paymentsv1.CheckLedgerResponse{
		Balanced: r.OK(), Entries: r.Entries, Debits: r.Debits, Credits: r.Credits,
	}), nil
}
