package rides

import (
	"math/rand/v2"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// step is one unit of saga work: at most one RPC, made outside any
// transaction with an idempotency key derived from the ride, then recorded
// with the ride's next step in a transaction. A crash between the RPC and
// the record re-runs the RPC, which is why every step must be idempotent.
type step string

// The steps, named as stored.
const (
	// stepQuote asks pricing for the fare (redeeming the rider's quote).
	stepQuote step = "quote"
	// stepAuthorize holds the fare on the rider's payment method.
	stepAuthorize step = "authorize"
	// stepSearch asks dispatch to look for a driver for the current attempt.
	stepSearch step = "search"
	// stepAwaitDriver has no RPC: it waits for dispatch's outcome and, if
	// none came by the search deadline plus searchSlack, ends the ride.
	stepAwaitDriver step = "await_driver"
	// stepCancelSearch stops dispatch's search and frees a booked driver.
	stepCancelSearch step = "cancel_search"
	// stepVoid releases the hold.
	stepVoid step = "void"
	// stepCapture charges the ride's charge (the fare, or a cancellation fee).
	stepCapture step = "capture"
	// stepRelease frees the driver booked for the ride.
	stepRelease step = "release"
)

// searchSlack is how long past the search deadline the saga waits for
// dispatch's SearchFailed before ending the ride itself: long enough that
// dispatch normally answers first, short enough that a lost event does not
// leave a rider waiting.
const searchSlack = 30 * time.Second

// Retry spacing of a failing step: capped exponential backoff with jitter.
// The cap is what "retried until it succeeds" costs a down dependency per
// ride: one call every ~30 s.
const (
	backoffBase = 500 * time.Millisecond
	backoffCap  = 30 * time.Second
)

// plan is the saga state of a ride: the steps it still owes, in order, and
// when the first may run. Terminal rides with steps left have compensations
// (or a capture) pending.
type plan struct {
	steps     []step
	due       time.Time
	tries     int    // times the first step was started (counted when a worker claims it)
	lastError string // the first step's last failure
}

func (p plan) head() step {
	if len(p.steps) == 0 {
		return ""
	}
	return p.steps[0]
}

func (p plan) has(s step) bool { return slices.Contains(p.steps, s) }

// encode is the stored form: steps joined by commas.
func (p plan) encode() string {
	parts := make([]string, len(p.steps))
	for i, s := range p.steps {
		parts[i] = string(s)
	}
	return strings.Join(parts, ",")
}

func decodeSteps(s string) []step {
	if s == "" {
		return nil
	}
	var out []step
	for _, p := range strings.Split(s, ",") {
		out = append(out, step(p))
	}
	return out
}

// setSteps replaces the steps. A new first step (or restart) starts afresh:
// due now (the watchdog at the search deadline), no tries, no error.
func (r *Ride) setSteps(now time.Time, steps []step, restart bool) {
	old := r.plan.head()
	r.plan.steps = steps
	r.dirty = true
	if !restart && r.plan.head() == old {
		return
	}
	r.plan.tries = 0
	r.plan.lastError = ""
	r.plan.due = now
	if r.plan.head() == stepAwaitDriver {
		r.plan.due = r.searchDeadline.Add(searchSlack)
	}
}

// advance finishes s if it is the first step and puts next in front.
func (r *Ride) advance(now time.Time, s step, next ...step) {
	rest := r.plan.steps
	if len(rest) > 0 && rest[0] == s {
		rest = rest[1:]
	}
	r.setSteps(now, append(slices.Clone(next), rest...), true)
}

// dropSteps removes steps that no longer apply.
func (r *Ride) dropSteps(now time.Time, drop ...step) {
	kept := slices.DeleteFunc(slices.Clone(r.plan.steps), func(s step) bool { return slices.Contains(drop, s) })
	r.setSteps(now, kept, false)
}

// compensate replaces the forward steps of a ride that just ended with the
// compensations it needs. A release already owed (a driver gave the ride
// up) is kept: the driver must be freed whatever happens next.
func (r *Ride) compensate(now time.Time, steps ...step) {
	out := slices.Clone(steps)
	if r.plan.has(stepRelease) && !slices.Contains(out, stepRelease) {
		out = append([]step{stepRelease}, out...)
	}
	r.setSteps(now, out, true)
}

// stepFailed schedules s again after a backoff that grows with its tries.
func (r *Ride) stepFailed(s step, err error, now time.Time) {
	if r.plan.head() != s {
		return
	}
	msg := err.Error()
	if len(msg) > 500 {
		msg = msg[:500]
		for !utf8.ValidString(msg) {
			msg = msg[:len(msg)-1]
		}
	}
	r.plan.lastError = msg
	r.plan.due = now.Add(backoff(r.plan.tries))
	r.dirty = true
}

// backoff is the wait before try number tries+1: base·2^(tries-1), capped,
// with "equal jitter" (half fixed, half random) so that rides failing
// together do not retry in lockstep.
func backoff(tries int) time.Duration {
	d := backoffCap
	if tries < 1 {
		tries = 1
	}
	if tries < 20 {
		d = min(backoffBase<<(tries-1), backoffCap)
	}
	return d/2 + rand.N(d/2+1)
}
