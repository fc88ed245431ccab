package rides

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	paymentsv1 "github.com/rideshare-platform/rideshare/api/payments/v1"
	pricingv1 "github.com/rideshare-platform/rideshare/api/pricing/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// saga is the orchestrator of DESIGN.md section 3. Its state lives in the
// rides table (each ride's plan of steps), so any number of crashes, of rides
// or of its peers, only delay it: a worker claims a ride whose first step is
// due, makes that step's one RPC outside any transaction, and records the
// result and the next step in a transaction. A crash between the RPC and the
// record leaves the lease to run out and the step to run again; every RPC is
// idempotent (payments by the keys "<ride>:authorize", "<ride>:void",
// "<ride>:capture"; dispatch by (ride, attempt) or by nature), so running it
// twice has one effect.
type saga struct {
	store    *store
	pricing  pricer
	payments payer
	dispatch dispatcher
	policy   policy
	now      func() time.Time
	log      *slog.Logger
	metrics  *metrics
	wake     chan struct{}

	// lease is how long a claimed step is its worker's: well above
	// stepTimeout, so a live worker never loses a ride to another replica.
	lease time.Duration
	// stepTimeout bounds one step's RPC.
	stepTimeout time.Duration
	// poll is how often the worker looks for due steps without being woken:
	// for steps scheduled by other replicas.
	poll time.Duration
	// parallel is how many steps run at once, so that one slow peer does
	// not hold up every ride.
	parallel int
}

func newSaga(st *store, pr pricer, pay payer, disp dispatcher, pol policy, now func() time.Time, log *slog.Logger, m *metrics) *saga {
	s := &saga{
		store: st, pricing: pr, payments: pay, dispatch: disp, policy: pol, now: now, log: log, metrics: m,
		wake:  make(chan struct{}, 1),
		lease: 30 * time.Second, stepTimeout: 10 * time.Second, poll: time.Second, parallel: 16,
	}
	st.kick = s.kick
	return s
}

// kick wakes the worker; a wake already pending is enough.
func (s *saga) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run is the saga worker: it runs due steps until ctx ends, then waits for
// the steps it started.
func (s *saga) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, s.parallel)
	for {
		wait := s.poll
		if free := cap(slots) - len(slots); free > 0 {
			claimed, err := s.store.claim(ctx, s.now(), free, s.lease)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("saga: claiming due steps failed", "err", err)
			}
			for _, r := range claimed {
				slots <- struct{}{}
				wg.Add(1)
				go func() {
					defer wg.Done()
					s.execute(ctx, r)
					<-slots
					s.kick()
				}()
			}
			if err == nil && len(claimed) == free {
				continue // there may be more due
			}
			if t, ok, err := s.store.nextDue(ctx); err == nil && ok {
				wait = min(wait, max(t.Sub(s.now()), time.Millisecond))
			}
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-s.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// runDue runs, one at a time, every step that is due now and every step that
// becomes due by running them, until none is. Tests drive the saga with it
// under an injected clock.
func (s *saga) runDue(ctx context.Context) error {
	for range 10_000 {
		claimed, err := s.store.claim(ctx, s.now(), 100, s.lease)
		if err != nil || len(claimed) == 0 {
			return err
		}
		for _, r := range claimed {
			if err := ctx.Err(); err != nil {
				return err
			}
			s.execute(ctx, r)
		}
	}
	return errors.New("saga: steps keep coming due")
}

// outcome applies a step's result to the ride as it is when recorded.
type outcome func(r *Ride, now time.Time) error

// execute runs the first step of snap, a ride this worker claimed, and
// records what happened.
func (s *saga) execute(ctx context.Context, snap *Ride) {
	st := snap.plan.head()
	started := time.Now()
	timeout := s.stepTimeout
	if by, ok := snap.holdDeadline(s.policy); ok {
		// The last try of a hold ends at the deadline. Past it (a step
		// that last ran in a process that died) it gets a whole step, so
		// that a restart does not end every ride it was holding.
		if left := by.Sub(s.now()); left > 0 {
			timeout = min(timeout, left)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	apply, callErr := s.call(cctx, snap, st)
	cancel()
	if ctx.Err() != nil {
		return // stopping: the lease runs out and the step runs again
	}
	now := s.now()
	var result string
	var failure error
	r, err := s.store.record(ctx, snap.id, func(r *Ride) error {
		result, failure = "ok", nil
		if r.plan.head() != st || r.attempt != snap.attempt {
			// A cancel or an assignment rewrote the plan while the RPC ran.
			result = "superseded"
			return nil
		}
		if callErr == nil {
			err := apply(r, now)
			if err == nil {
				return nil
			}
			// The peer answered something the ride cannot take (a bug on
			// one side): keep retrying, visibly, rather than guess.
			failure, result = err, "retry"
			r.stepFailed(st, err, now)
			return nil
		}
		failure = callErr
		if !transient(callErr) && r.stepRefused(st, callErr, now) {
			result = "ended"
			return nil
		}
		result = "retry"
		r.stepFailed(st, callErr, now)
		r.retryHoldBy(s.policy)
		return nil
	})
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("saga: recording a step failed; it will run again", "ride", snap.id, "step", st, "err", err)
		}
		return
	}
	s.metrics.stepDuration.WithLabelValues(string(st), result).Observe(time.Since(started).Seconds())
	switch result {
	case "retry":
		s.metrics.stepRetries.WithLabelValues(string(st)).Inc()
		level := slog.LevelInfo
		if !transient(failure) {
			level = slog.LevelError // a refusal that retrying will not fix: an operator must look
		}
		s.log.Log(ctx, level, "saga: step failed; retrying", "ride", snap.id, "step", st, "tries", r.plan.tries,
			"retry_at", r.plan.due, "err", failure)
	case "ended":
		s.log.Info("saga: step refused; ride ended", "ride", snap.id, "step", st, "status", r.status, "err", failure)
	case "ok":
		if r.status.Terminal() && !snap.status.Terminal() { // a decline, the search watchdog, the hold deadline
			s.log.Info("saga: ride ended", "ride", snap.id, "step", st, "status", r.status, "reason", r.reason)
		}
	}
}

// transient reports whether a failed call may succeed if repeated: the peer
// was down, slow, overloaded, not yet deployed, or still running the same
// idempotent request. Anything else is a refusal.
func transient(err error) bool {
	e := apperr.As(err)
	switch e.Kind {
	case apperr.Internal, apperr.Unavailable, apperr.Timeout, apperr.RateLimited, apperr.Unimplemented:
		return true
	case apperr.Conflict:
		// The same request still running: our own API's code, and payments'
		// for a key another attempt holds (one that failed over from a
		// replica that died mid-call). Refusing there would end the ride
		// with no void while that attempt may still place the hold.
		return e.Code == "idempotency_key_in_flight" || e.Code == "request_in_progress"
	}
	return false
}

// call makes step st's RPC for snap, outside any transaction, and returns
// how to record its result.
func (s *saga) call(ctx context.Context, snap *Ride, st step) (outcome, error) {
	switch st {
	case stepQuote:
		est, err := s.pricing.Estimate(ctx, &pricingv1.EstimateRequest{
			Caller: sagaCaller, Pickup: pointProto(snap.pickup), Dropoff: pointProto(snap.dropoff), QuoteId: snap.quoteID,
		})
		if err != nil {
			return nil, err
		}
		fare := Money{Amount: est.GetFare().GetAmount(), Currency: est.GetFare().GetCurrency()}
		return func(r *Ride, now time.Time) error { return r.quoted(fare, now) }, nil

	case stepAuthorize:
		if by, ok := snap.holdDeadline(s.policy); ok && snap.plan.lastError != "" && !s.now().Before(by) {
			// Tried and failed until the deadline: end the ride without
			// another call. (A hold whose last try never came back is
			// tried once more first.)
			return func(r *Ride, now time.Time) error { return r.holdTimedOut(s.policy, now) }, nil
		}
		p, err := s.payments.Authorize(ctx, &paymentsv1.AuthorizeRequest{
			Caller: sagaCaller, IdempotencyKey: snap.id + ":authorize", RideId: snap.id, RiderId: snap.riderID,
			Amount: moneyProto(snap.fare), PaymentMethod: snap.paymentMethod,
		})
		if err != nil {
			return nil, err
		}
		if p.GetStatus() == paymentsv1.PaymentStatus_PAYMENT_STATUS_DECLINED {
			reason := p.GetDeclineReason()
			if reason == "" {
				reason = "declined"
			}
			return func(r *Ride, now time.Time) error { return r.declined(reason, now) }, nil
		}
		id := p.GetId()
		return func(r *Ride, now time.Time) error { return r.authorized(id, now.Add(s.policy.searchTimeout), now) }, nil

	case stepSearch:
		err := s.dispatch.StartSearch(ctx, &dispatchv1.StartSearchRequest{
			Caller: sagaCaller, RideId: snap.id, RiderId: snap.riderID, Pickup: pointProto(snap.pickup), Dropoff: pointProto(snap.dropoff),
			Fare: moneyProto(snap.fare), Deadline: timestamppb.New(snap.searchDeadline), Attempt: snap.attempt,
			ExcludeDriverIds: snap.excluded,
		})
		if err != nil {
			return nil, err
		}
		return func(r *Ride, now time.Time) error { r.searchStarted(now); return nil }, nil

	case stepAwaitDriver:
		return func(r *Ride, now time.Time) error { return r.searchTimedOut(now) }, nil

	case stepCancelSearch:
		err := s.dispatch.CancelSearch(ctx, &dispatchv1.CancelSearchRequest{Caller: sagaCaller, RideId: snap.id})
		if err != nil && !apperr.Is(err, apperr.NotFound) { // no search to cancel is the goal reached
			return nil, err
		}
		return done(st), nil

	case stepRelease:
		err := s.dispatch.ReleaseDriver(ctx, &dispatchv1.ReleaseDriverRequest{Caller: sagaCaller, RideId: snap.id})
		if err != nil && !apperr.Is(err, apperr.NotFound) {
			return nil, err
		}
		return done(st), nil

	case stepVoid:
		if snap.paymentID == "" {
			return done(st), nil // nothing was held
		}
		if _, err := s.payments.Void(ctx, &paymentsv1.VoidRequest{
			Caller: sagaCaller, IdempotencyKey: snap.id + ":void", PaymentId: snap.paymentID,
		}); err != nil {
			return nil, err
		}
		return done(st), nil

	case stepCapture:
		if snap.charge.amount.Amount <= 0 {
			return done(st), nil
		}
		if snap.paymentID == "" {
			return nil, apperr.E(apperr.Internal, "", "ride %s owes a capture but has no payment", snap.id)
		}
		p, err := s.payments.Capture(ctx, &paymentsv1.CaptureRequest{
			Caller: sagaCaller, IdempotencyKey: snap.id + ":capture", PaymentId: snap.paymentID, Amount: moneyProto(snap.charge.amount),
		})
		if err != nil {
			return nil, err
		}
		amount := snap.charge.amount
		if c := p.GetCaptured(); c.GetAmount() > 0 {
			amount = Money{Amount: c.GetAmount(), Currency: c.GetCurrency()}
		}
		at := p.GetCapturedAt()
		return func(r *Ride, now time.Time) error {
			when := now
			if at.IsValid() && at.GetSeconds() > 0 {
				when = at.AsTime().UTC().Truncate(time.Microsecond)
			}
			r.captured(amount, when, now)
			return nil
		}, nil
	}
	return nil, apperr.E(apperr.Internal, "", "unknown saga step %q", st)
}

// done records a step whose result needs nothing else.
func done(st step) outcome {
	return func(r *Ride, now time.Time) error { r.stepDone(st, now); return nil }
}
