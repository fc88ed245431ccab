package payments

import (
	"regexp"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	moneyv1 "github.com/rideshare-platform/rideshare/api/money/v1"
	paymentsv1 "github.com/rideshare-platform/rideshare/api/payments/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/outbox"
)

// Status is where a payment has settled. An operation in flight does not
// change it until its result is recorded; see Payment.Pending.
type Status string

// The statuses. Authorizing exists only between recording an authorization
// intent and recording the network's answer; it is never shown to callers.
const (
	Authorizing Status = "authorizing"
	Authorized  Status = "authorized"
	Declined    Status = "declined"
	Captured    Status = "captured"
	Voided      Status = "voided"
	Refunded    Status = "refunded"
)

// The operations, which also name idempotency scopes: a key used for a
// capture is unrelated to the same key used for a refund.
const (
	opAuthorize = "authorize"
	opCapture   = "capture"
	opVoid      = "void"
	opRefund    = "refund"
)

// Payment is one ride's payment intent.
type Payment struct {
	ID, RideID, RiderID string
	// Currency is the one currency of every amount of the payment.
	Currency string
	// Authorized is the amount held (the amount asked for, if declined);
	// Captured and Refunded are totals, in minor units.
	Authorized, Captured, Refunded int64
	Status                         Status
	PaymentMethod                  string
	DeclineReason                  string
	// AuthRef is the network's reference of the hold.
	AuthRef string
	// Pending is the operation recorded but not yet finished, if any.
	Pending    Pending
	CapturedAt time.Time // zero until captured
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// Pending is an operation whose intent is recorded and whose network call
// may have happened: only the request that recorded it (RequestID, an
// idempotency key row) may finish it.
type Pending struct {
	Op        string
	RequestID string
	Amount    int64
}

// maxAmount bounds any amount so that sums and the commission split can
// never overflow an int64 (10 billion units of any currency).
const maxAmount = 1_000_000_000_000

var currencyCode = regexp.MustCompile(`^[A-Z]{3}$`)

// checkMoney validates a positive amount in an ISO 4217 currency.
func checkMoney(field string, m *moneyv1.Money) error {
	switch {
	case m == nil:
		return apperr.E(apperr.Invalid, "", "%s is required", field)
	case !currencyCode.MatchString(m.GetCurrency()):
		return apperr.E(apperr.Invalid, "", "%s.currency must be an ISO 4217 code such as USD", field)
	case m.GetAmount() <= 0:
		return apperr.E(apperr.Invalid, "", "%s.amount must be positive", field)
	case m.GetAmount() > maxAmount:
		return apperr.E(apperr.Invalid, "", "%s.amount is too large", field)
	}
	return nil
}

// busy refuses any operation while another one is in flight: one network
// movement per payment at a time is what makes "at most one capture" and
// "refunds never exceed captures" hold without reasoning about overlaps.
func (p Payment) busy() error {
	switch {
	case p.Status == Authorizing:
		return apperr.E(apperr.Conflict, "authorization_pending", "the payment's authorization is still in progress")
	case p.Pending.Op != "":
		return apperr.E(apperr.Conflict, "operation_in_progress", "a %s of this payment is in progress", p.Pending.Op)
	}
	return nil
}

// checkCapture says whether amount may be captured now. Capture happens at
// most once: a partial capture (a cancellation fee) releases the rest.
func (p Payment) checkCapture(amount *moneyv1.Money) error {
	if err := p.busy(); err != nil {
		return err
	}
	switch p.Status {
	case Declined:
		return apperr.E(apperr.Conflict, "payment_declined", "the payment was declined; there is nothing to capture")
	case Voided:
		return apperr.E(apperr.Conflict, "payment_voided", "the payment was voided; there is nothing to capture")
	case Captured, Refunded:
		return apperr.E(apperr.Conflict, "already_captured", "the payment was already captured")
	}
	if amount.GetCurrency() != p.Currency {
		return apperr.E(apperr.Invalid, "currency_mismatch", "amount must be in %s, the authorized currency", p.Currency)
	}
	if amount.GetAmount() > p.Authorized {
		return apperr.E(apperr.Unprocessable, "amount_exceeds_authorized", "cannot capture %d, only %d is authorized", amount.GetAmount(), p.Authorized)
	}
	return nil
}

// checkVoid says whether the hold may be released now.
func (p Payment) checkVoid() error {
	if err := p.busy(); err != nil {
		return err
	}
	switch p.Status {
	case Declined:
		return apperr.E(apperr.Conflict, "payment_declined", "the payment was declined; there is no hold to void")
	case Voided:
		return apperr.E(apperr.Conflict, "already_voided", "the payment was already voided")
	case Captured, Refunded:
		return apperr.E(apperr.Conflict, "payment_captured", "the payment was captured; refund it instead")
	}
	return nil
}

// checkRefund says whether amount may be refunded now: never more, in
// total, than was captured.
func (p Payment) checkRefund(amount *moneyv1.Money) error {
	if err := p.busy(); err != nil {
		return err
	}
	switch p.Status {
	case Authorized:
		return apperr.E(apperr.Conflict, "payment_not_captured", "the payment was not captured; void it instead")
	case Declined:
		return apperr.E(apperr.Conflict, "payment_declined", "the payment was declined; there is nothing to refund")
	case Voided:
		return apperr.E(apperr.Conflict, "payment_voided", "the payment was voided; there is nothing to refund")
	}
	if amount.GetCurrency() != p.Currency {
		return apperr.E(apperr.Invalid, "currency_mismatch", "amount must be in %s, the captured currency", p.Currency)
	}
	if left := p.Captured - p.Refunded; amount.GetAmount() > left {
		return apperr.E(apperr.Unprocessable, "refund_exceeds_captured", "cannot refund %d, only %d of the captured amount is left", amount.GetAmount(), left)
	}
	return nil
}

func money(amount int64, currency string) *moneyv1.Money {
	return &moneyv1.Money{Amount: amount, Currency: currency}
}

// toProto is the payment as callers see it.
func (p Payment) toProto() *paymentsv1.Payment {
	out := &paymentsv1.Payment{
		Id:            p.ID,
		RideId:        p.RideID,
		RiderId:       p.RiderID,
		Status:        statusProto(p.Status),
		Authorized:    money(p.Authorized, p.Currency),
		Captured:      money(p.Captured, p.Currency),
		Refunded:      money(p.Refunded, p.Currency),
		DeclineReason: p.DeclineReason,
		CreatedAt:     timestamppb.New(p.CreatedAt),
	}
	if !p.CapturedAt.IsZero() {
		out.CapturedAt = timestamppb.New(p.CapturedAt)
	}
	return out
}

func statusProto(s Status) paymentsv1.PaymentStatus {
	switch s {
	case Authorized:
		return paymentsv1.PaymentStatus_PAYMENT_STATUS_AUTHORIZED
	case Declined:
		return paymentsv1.PaymentStatus_PAYMENT_STATUS_DECLINED
	case Captured:
		return paymentsv1.PaymentStatus_PAYMENT_STATUS_CAPTURED
	case Voided:
		return paymentsv1.PaymentStatus_PAYMENT_STATUS_VOIDED
	case Refunded:
		return paymentsv1.PaymentStatus_PAYMENT_STATUS_REFUNDED
	}
	return paymentsv1.PaymentStatus_PAYMENT_STATUS_UNSPECIFIED
}

// settle applies the network's answer to p's pending operation: the
// payment's next state, the ledger posting of the money that moved (nil for
// a decline: nothing moved) and the event announcing it.
func (p Payment) settle(res netResult, now time.Time) (Payment, *Posting, outbox.Event) {
	next := p
	next.Pending = Pending{}
	next.UpdatedAt = now
	var ps Posting
	ev := outbox.Event{Key: p.RideID}
	switch p.Pending.Op {
	case opAuthorize:
		next.AuthRef = res.auth.Ref
		if !res.auth.Approved {
			next.Status, next.DeclineReason = Declined, res.auth.DeclineReason
			ev.Type = "payment.declined"
			ev.Payload = &paymentsv1.PaymentDeclined{PaymentId: p.ID, RideId: p.RideID, RiderId: p.RiderID,
				Amount: money(p.Authorized, p.Currency), Reason: next.DeclineReason}
			return next, nil, ev
		}
		next.Status = Authorized
		ps = holdPosting(next)
		ev.Type = "payment.authorized"
		ev.Payload = &paymentsv1.PaymentAuthorized{PaymentId: p.ID, RideId: p.RideID, RiderId: p.RiderID, Amount: money(p.Authorized, p.Currency)}
	case opCapture:
		next.Status, next.Captured, next.CapturedAt = Captured, p.Pending.Amount, now
		ps = capturePosting(p, p.Pending.Amount)
		ev.Type = "payment.captured"
		ev.Payload = &paymentsv1.PaymentCaptured{PaymentId: p.ID, RideId: p.RideID, RiderId: p.RiderID, Amount: money(next.Captured, p.Currency)}
	case opVoid:
		next.Status = Voided
		ps = releasePosting(p)
		ev.Type = "payment.voided"
		ev.Payload = &paymentsv1.PaymentVoided{PaymentId: p.ID, RideId: p.RideID, RiderId: p.RiderID, Amount: money(p.Authorized, p.Currency)}
	case opRefund:
		next.Status, next.Refunded = Refunded, p.Refunded+p.Pending.Amount
		ps = refundPosting(p, p.Pending.Amount, p.Pending.RequestID)
		ev.Type = "payment.refunded"
		ev.Payload = &paymentsv1.PaymentRefunded{PaymentId: p.ID, RideId: p.RideID, RiderId: p.RiderID,
			Amount: money(p.Pending.Amount, p.Currency), RefundedTotal: money(next.Refunded, p.Currency)}
	}
	return next, &ps, ev
}
