package payments

import "context"

// Network is the card network (payment provider) as payments uses it: the
// simulated one by default, a real provider's client later. Every call
// carries an idempotency key; a network answers a repeated key with its
// first answer and never moves money twice for it, as real providers do.
// payments derives the keys from the payment (and the refund), so a retry
// after a crash reaches the network with the same key.
//
// An error means "no answer": the call may or may not have taken effect,
// and is retried with the same key. A refusal of a hold is an answer, not an
// error: Authorization.Approved is false with a reason.
type Network interface {
	Authorize(ctx context.Context, key string, h Hold) (Authorization, error)
	// Capture charges amount of the hold authRef and releases the rest.
	Capture(ctx context.Context, key, authRef string, amount int64) (ref string, err error)
	// Void releases the hold authRef.
	Void(ctx context.Context, key, authRef string) (ref string, err error)
	// Refund returns amount of what was captured on authRef.
	Refund(ctx context.Context, key, authRef string, amount int64) (ref string, err error)
}

// Hold is a request to reserve an amount on a payment method.
type Hold struct {
	RiderID       string
	PaymentMethod string
	Currency      string
	Amount        int64
}

// Authorization is the network's answer to a Hold.
type Authorization struct {
	Approved bool
	// Ref identifies the hold at the network (also for a decline).
	Ref string
	// DeclineReason is why it was refused, e.g. "insufficient_funds".
	DeclineReason string
}
