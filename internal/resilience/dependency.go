package resilience

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/budget"
	"github.com/failsafe-go/failsafe-go/bulkhead"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/retrypolicy"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// Error codes of the calls this package refuses before they leave the
// process. Both are Unavailable: the caller treats them like a dependency
// that is down, which it is, for now.
const (
	CodeCircuitOpen  = "circuit_open"
	CodeBulkheadFull = "bulkhead_full"
)

type response = connect.AnyResponse

// dependency is one peer's policies, shared by every client of that peer in
// the process: one breaker sees all the calls, one bulkhead bounds them all.
type dependency struct {
	peer     string
	policy   Policy
	breaker  circuitbreaker.CircuitBreaker[response]
	bulkhead bulkhead.Bulkhead[response]
	budget   *retryBudget
	inUse    atomic.Int64 // bulkhead slots held
	metrics  peerMetrics

	// The composition, outermost first: retries (idempotent calls only)
	// around the bulkhead around the breaker around one attempt.
	//   - Retries outside the breaker: every attempt is one call the
	//     breaker judges, and an open breaker ends the retries.
	//   - Retries outside the bulkhead: a call waiting out its backoff
	//     holds no slot.
	//   - The bulkhead outside the breaker: a call the bulkhead refuses
	//     never reaches the breaker, which would otherwise count the
	//     refusal (not a failure of the peer) as a success.
	once     failsafe.Executor[response]
	retrying failsafe.Executor[response]
}

func newDependency(peer string, p Policy, m peerMetrics) *dependency {
	d := &dependency{peer: peer, policy: p, metrics: m}
	d.budget = newRetryBudget(p.Retry.BudgetRatio, p.Retry.BudgetWindow, func() { m.budgetExhausted.Inc() })
	d.breaker = circuitbreaker.NewBuilder[response]().
		HandleIf(func(_ response, err error) bool { return classOf(err).failure }).
		WithFailureRateThreshold(p.Breaker.FailureRate, p.Breaker.MinCalls, p.Breaker.Window).
		WithDelay(p.Breaker.OpenFor).
		WithSuccessThreshold(p.Breaker.Probes).
		Build()
	d.bulkhead = bulkhead.NewBuilder[response](p.Bulkhead.MaxConcurrent).
		WithMaxWaitTime(p.Bulkhead.MaxWait).
		OnAcquired(func(failsafe.ExecutionEvent[response]) { d.inUse.Add(1) }).
		OnReleased(func(failsafe.ExecutionEvent[response]) { d.inUse.Add(-1) }).
		Build()
	retry := retrypolicy.NewBuilder[response]().
		HandleIf(func(_ response, err error) bool { return classOf(err).retryable }).
		WithMaxAttempts(p.Retry.MaxAttempts).
		ReturnLastFailure().
		WithBudget(d.budget).
		OnRetry(func(failsafe.ExecutionEvent[response]) { m.retries.Inc() })
	if p.Retry.Backoff > 0 {
		retry = retry.WithBackoff(p.Retry.Backoff, p.Retry.MaxBackoff).WithJitterFactor(p.Retry.Jitter)
	}
	d.once = failsafe.With[response](d.bulkhead, d.breaker)
	d.retrying = failsafe.With[response](retry.Build(), d.bulkhead, d.breaker)
	return d
}

// call makes one RPC through the dependency's policies.
func (d *dependency) call(ctx context.Context, req connect.AnyRequest, next connect.UnaryFunc) (response, error) {
	exec := d.once
	if d.policy.Retry.MaxAttempts > 1 && Idempotent(req) {
		exec = d.retrying // which counts the call in the budget itself
	} else {
		d.budget.RecordExecution() // writes earn retry budget too: they are load
	}
	// Attempts run one after another (no hedging), so last needs no lock.
	// None of the policies gives an attempt a context of its own (there is
	// no failsafe timeout or hedge policy), so each attempt derives its
	// timeout from ctx itself, and failsafe need not copy its execution
	// state for every attempt (GetWithExecution does).
	var last error
	res, err := exec.WithContext(ctx).Get(func() (response, error) {
		actx, cancel := context.WithTimeout(ctx, d.policy.Timeout)
		defer cancel()
		res, err := next(actx, req)
		if err != nil {
			last = err
			return nil, d.classify(ctx, err)
		}
		return res, nil
	})
	if err == nil {
		d.metrics.result(resultSuccess)
		return res, nil
	}
	var ae *attemptError
	switch {
	case (errors.Is(err, circuitbreaker.ErrOpen) || errors.Is(err, bulkhead.ErrFull)) && last != nil:
		// An attempt reached the peer and failed, and the breaker (opened
		// by that failure, or another's) or the bulkhead refused the
		// retry. The call was not refused at once: like a retry the budget
		// refuses, the caller gets the peer's failure, and it counts as one.
		d.metrics.result(resultFailure)
		return nil, last
	case errors.Is(err, circuitbreaker.ErrOpen):
		d.metrics.result(resultCircuitOpen)
		if left := d.breaker.RemainingDelay(); left > 0 {
			return nil, apperr.E(apperr.Unavailable, CodeCircuitOpen,
				"%s is failing: calls to it are paused for %s", d.peer, left.Round(time.Millisecond))
		}
		return nil, apperr.E(apperr.Unavailable, CodeCircuitOpen,
			"%s is failing: calls to it are paused while a few probe it", d.peer)
	case errors.Is(err, bulkhead.ErrFull):
		d.metrics.result(resultBulkheadFull)
		return nil, apperr.E(apperr.Unavailable, CodeBulkheadFull,
			"%d calls to %s are in flight already", d.policy.Bulkhead.MaxConcurrent, d.peer)
	case errors.As(err, &ae):
		if ae.failure {
			d.metrics.result(resultFailure)
		} else {
			d.metrics.result(resultError)
		}
		return nil, ae.err
	case errors.Is(err, budget.ErrExceeded) && last != nil:
		// The budget refused a retry: the caller gets the failure itself.
		d.metrics.result(resultFailure)
		return nil, last
	case last != nil:
		// The caller's context ended during a backoff or an attempt:
		// what the peer answered says more than "context canceled".
		d.metrics.result(resultCanceled)
		return nil, last
	}
	d.metrics.result(resultCanceled)
	return nil, err
}

// attemptError is an attempt's error as the policies see it: classified
// once, with the contexts at hand, so that the breaker and the retry policy
// judge the same facts.
type attemptError struct {
	err error
	attemptClass
}

type attemptClass struct {
	// retryable: a transient failure worth trying again, with time left.
	retryable bool
	// failure: the peer is unhealthy (the breaker counts it). An answer
	// such as NotFound is the peer working, not failing.
	failure bool
}

func (e *attemptError) Error() string { return e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

func classOf(err error) attemptClass {
	if err == nil {
		return attemptClass{} // the breaker asks after every success: errors.As would allocate
	}
	var ae *attemptError
	if errors.As(err, &ae) {
		return ae.attemptClass
	}
	return attemptClass{}
}

// classify judges an attempt's error. Retried: Unavailable (connection
// refused or reset, a peer shedding load), ResourceExhausted, and
// DeadlineExceeded when it was this attempt's own timeout that expired,
// never when the caller's context is done (its caller has given up, or its
// deadline passed: a retry could not be waited for). Counted as failures by
// the breaker: those, a DeadlineExceeded of the caller's deadline too (the
// peer did not answer in the time it was given), and Internal, Unknown and
// DataLoss.
func (d *dependency) classify(ctx context.Context, err error) *attemptError {
	ae := &attemptError{err: err}
	code := connect.CodeOf(err)
	if code == connect.CodeUnavailable {
		switch apperr.CodeOf(err) {
		case CodeCircuitOpen, CodeBulkheadFull:
			// The peer answered at once that ITS dependency is down: the
			// peer is healthy (its breaker must not open on that) and a
			// retry in 50 ms would hear the same.
			return ae
		}
	}
	switch code {
	case connect.CodeUnavailable, connect.CodeResourceExhausted:
		ae.failure = true
		ae.retryable = ctx.Err() == nil
	case connect.CodeDeadlineExceeded:
		// With the caller's context alive, it was the attempt's deadline
		// that passed, here or (propagated) at the peer, whichever noticed
		// first.
		ae.failure = true
		ae.retryable = ctx.Err() == nil
	case connect.CodeInternal, connect.CodeUnknown, connect.CodeDataLoss:
		ae.failure = true
	}
	if ae.retryable {
		// A retry needs time for its backoff and an attempt of its own.
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < 2*d.policy.Retry.Backoff+time.Millisecond {
			ae.retryable = false
		}
	}
	return ae
}
