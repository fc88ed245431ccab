package drill

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rideshare-platform/rideshare/internal/faults"
	"github.com/rideshare-platform/rideshare/internal/rides"
)

// The drills of a slow or broken dependency: payments slow, payments
// failing, pricing failing.

// slowLatency is what slow-payments adds to every call: as long as rides'
// per-attempt timeout for payments, so every attempt during the fault
// times out.
const slowLatency = 5 * time.Second

// fastAnswer bounds an answer that did not wait on a slow dependency: a
// route that waited on payments would take seconds.
const fastAnswer = time.Second

// unaffectedMargin is how much worse a route untouched by the fault may
// do during it than before or after: twice its p99, or 250 ms more,
// whichever is larger. On a two-core machine that also runs the load (and
// whatever else), the p99 of a few dozen requests moves by a hundred
// milliseconds or more from one stretch to the next with no fault at all;
// what a slow dependency does to a route that waits on it is seconds.
func unaffectedMargin(base time.Duration) time.Duration {
	return max(2*base, base+250*time.Millisecond)
}

func slowPayments(ctx context.Context, r *run) error {
	rep, calls, err := r.underFault(ctx, r.loadConfig(0), act{
		inject: func(ctx context.Context) error {
			return r.setFault(ctx, "payments", faults.Fault{Latency: slowLatency})
		},
		heal: func(ctx context.Context) error { return r.clearFault(ctx, "payments", "") },
	})
	if err != nil {
		return err
	}
	during, err := r.ridesIn(ctx, r.window())
	if err != nil {
		return err
	}
	r.find(fastRequestFinding(calls, r.window(), "payments slow"))
	r.find(unaffectedFindings(calls, r.baseline(), r.window(), r.recovery(rep), "payments slow",
		routeEstimate, routeRide)...)
	r.find(endedFinding(during, "requested while payments was slow", rides.StatusCompleted, rides.StatusCancelled))
	r.find(loadFindings(rep)...)
	r.settle(ctx)
	return nil
}

// fastRequestFinding judges POST /v1/rides during the fault: the request
// is accepted before the saga calls anyone, so it stays fast.
func fastRequestFinding(calls []call, window span, fault string) Finding {
	st := stats(calls, window, routeRequestRide)
	f := Finding{What: fmt.Sprintf("%s p99 with %s", routeRequestRide, fault), Want: "< " + roundDur(fastAnswer)}
	if st.Calls == 0 {
		f.Got = "no ride was requested during the fault"
		return f
	}
	f.Got = fmt.Sprintf("%s over %d requests (max %s)", roundDur(st.P99), st.Calls, roundDur(st.Max))
	f.OK = st.P99 < fastAnswer
	return f
}

// unaffectedFindings judge routes the fault does not touch: their p99
// during the fault stays within unaffectedMargin of the worse of before
// and after (so that the machine's load changing meanwhile is not blamed
// on the fault).
func unaffectedFindings(calls []call, before, window, after span, fault string, routes ...string) []Finding {
	var out []Finding
	for _, route := range routes {
		b, d, a := stats(calls, before, route), stats(calls, window, route), stats(calls, after, route)
		base := max(b.P99, a.P99)
		limit := unaffectedMargin(base)
		f := Finding{What: fmt.Sprintf("%s p99 with %s", route, fault),
			Want: fmt.Sprintf("≤ %s (p99 before %s, after %s)", roundDur(limit), roundDur(b.P99), roundDur(a.P99))}
		switch {
		case d.Calls == 0:
			f.Got = "no request during the fault"
		case b.Calls+a.Calls == 0:
			f.Got = fmt.Sprintf("%s over %d requests, with none before or after to compare", roundDur(d.P99), d.Calls)
		default:
			f.Got = fmt.Sprintf("%s over %d requests", roundDur(d.P99), d.Calls)
			f.OK = d.P99 <= limit
		}
		out = append(out, f)
	}
	return out
}

// endedFinding judges how the rides requested during the fault ended:
// each ended, in one of the statuses allowed.
func endedFinding(rs []rides.RideFacts, when string, allowed ...rides.Status) Finding {
	var names []string
	for _, s := range allowed {
		names = append(names, string(s))
	}
	f := Finding{What: "rides " + when + ", by how they ended", Want: "every one " + strings.Join(names, " or ")}
	if len(rs) == 0 {
		f.Got = "no ride was requested during the fault"
		return f
	}
	by := map[rides.Status]int{}
	bad := 0
	for _, r := range rs {
		by[r.Status]++
		ok := false
		for _, s := range allowed {
			ok = ok || r.Status == s
		}
		if !ok {
			bad++
		}
	}
	f.Got = fmt.Sprintf("%d: %s", len(rs), countStatuses(by))
	f.OK = bad == 0
	return f
}

// countStatuses is "40 completed, 2 cancelled", in lifecycle order.
func countStatuses(by map[rides.Status]int) string {
	var parts []string
	for _, s := range rides.Statuses {
		if n := by[s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, s))
		}
	}
	return strings.Join(parts, ", ")
}

// paymentsCalls are the counters payments-down reads: what rides asked of
// payments, and what reached it.
type paymentsCalls struct {
	calls, refused, reached, succeeded float64
}

func (r *run) paymentsCalls(ctx context.Context) (paymentsCalls, error) {
	var c paymentsCalls
	rs, err := r.instances(ctx, "rides")
	if err != nil {
		return c, err
	}
	ps, err := r.instances(ctx, "payments")
	if err != nil {
		return c, err
	}
	if c.calls, err = r.scrape(ctx, rs, "rideshare_dependency_calls_total", "peer=payments"); err != nil {
		return c, err
	}
	if c.refused, err = r.scrape(ctx, rs, "rideshare_dependency_calls_total", "peer=payments", "result=circuit_open"); err != nil {
		return c, err
	}
	if c.succeeded, err = r.scrape(ctx, rs, "rideshare_dependency_calls_total", "peer=payments", "result=success"); err != nil {
		return c, err
	}
	// With every call failing on purpose, each attempt that reached
	// payments is one injected error.
	c.reached, err = r.scrape(ctx, ps, "rideshare_faults_injected_total", "kind=error")
	return c, err
}

// breakerWatch is what payments-down saw of rides' breakers for payments.
type breakerWatch struct {
	mu       sync.Mutex
	states   []string      // distinct states in the order seen
	openedAt time.Duration // since the fault began; -1: never seen open
	closedAt time.Duration // since the fault was healed; -1: not seen closed again
}

func (b *breakerWatch) saw(state string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n := len(b.states); n == 0 || b.states[n-1] != state {
		b.states = append(b.states, state)
	}
}

// breakerState is the most telling state of rides' breakers for payments
// across rides' instances: open if any is, else half-open if any is.
func (r *run) breakerState(ctx context.Context) (string, error) {
	rs, err := r.instances(ctx, "rides")
	if err != nil {
		return "", err
	}
	rank := map[string]int{"closed": 0, "half-open": 1, "open": 2}
	best, seen := "", false
	var lastErr error
	for _, name := range rs {
		deps, err := r.p.Admin.Resilience(ctx, name)
		if err != nil {
			lastErr = err
			continue
		}
		for _, d := range deps {
			if d.Peer == "payments" && (!seen || rank[d.Breaker.State] > rank[best]) {
				best, seen = d.Breaker.State, true
			}
		}
	}
	if !seen {
		if lastErr == nil {
			lastErr = fmt.Errorf("rides lists no policy for payments at /admin/resilience")
		}
		return "", lastErr
	}
	return best, nil
}

// breakerPoll is how often payments-down reads the breakers.
const breakerPoll = 250 * time.Millisecond

// recoverWithin bounds how long a healed dependency's breaker may stay
// open: its open delay (5 s by default) and a round of probes.
const recoverWithin = 30 * time.Second

func paymentsDown(ctx context.Context, r *run) error {
	w := &breakerWatch{openedAt: -1, closedAt: -1}
	var before, at paymentsCalls
	var injected, healed time.Time
	rep, _, err := r.underFault(ctx, r.loadConfig(0), act{
		inject: func(ctx context.Context) error {
			if st, err := r.breakerState(ctx); err != nil {
				return fmt.Errorf("reading rides' breaker for payments: %w", err)
			} else if st != "closed" {
				r.say("rides' breaker for payments is %s before the fault", st)
			}
			var err error
			if before, err = r.paymentsCalls(ctx); err != nil {
				return fmt.Errorf("reading the calls to payments: %w", err)
			}
			injected = time.Now()
			return r.setFault(ctx, "payments", faults.Fault{ErrorRate: 1})
		},
		during: func(ctx context.Context) {
			for ctx.Err() == nil {
				if st, err := r.breakerState(ctx); err == nil {
					w.saw(st)
					if st == "open" && w.openedAt < 0 {
						w.openedAt = time.Since(injected)
						r.say("rides' breaker for payments opened")
					}
				}
				_ = sleep(ctx, breakerPoll)
			}
		},
		heal: func(ctx context.Context) error {
			var err error
			if at, err = r.paymentsCalls(ctx); err != nil {
				return fmt.Errorf("reading the calls to payments: %w", err)
			}
			healed = time.Now()
			return r.clearFault(ctx, "payments", "")
		},
		after: func(ctx context.Context) {
			for time.Since(healed) < recoverWithin && ctx.Err() == nil {
				if st, err := r.breakerState(ctx); err == nil {
					w.saw(st)
					if st == "closed" {
						w.closedAt = time.Since(healed)
						r.say("rides' breaker for payments closed again")
						return
					}
				}
				_ = sleep(ctx, breakerPoll)
			}
		},
	})
	if err != nil {
		return err
	}
	after, err := r.paymentsCalls(ctx)
	if err != nil {
		return err
	}
	during, err := r.ridesIn(ctx, r.window())
	if err != nil {
		return err
	}
	r.find(paymentsDownFindings(w, sub(at, before), after.succeeded-at.succeeded)...)
	r.find(endedFinding(during, "requested while payments was failing", rides.StatusCompleted, rides.StatusCancelled))
	r.find(loadFindings(rep)...)
	r.settle(ctx)
	return nil
}

func sub(a, b paymentsCalls) paymentsCalls {
	return paymentsCalls{calls: a.calls - b.calls, refused: a.refused - b.refused, reached: a.reached - b.reached, succeeded: a.succeeded - b.succeeded}
}

// maxReachedPerCall bounds the attempts that reach a failing payments
// per call rides makes over the fault: below one, the breaker sheds more
// than the retries add (each call is tried up to three times while the
// breaker is closed, none while it is open).
const maxReachedPerCall = 1.0

// paymentsDownFindings judges the breaker: it opened, it kept the calls
// that reached payments below one per call, and it closed again once
// payments was back, letting calls succeed.
func paymentsDownFindings(w *breakerWatch, during paymentsCalls, succeededAfter float64) []Finding {
	w.mu.Lock()
	defer w.mu.Unlock()
	opened := Finding{What: "rides' circuit breaker for payments", Want: "opens during the fault"}
	if w.openedAt >= 0 {
		opened.Got, opened.OK = fmt.Sprintf("opened %s into the fault (states seen: %s)", roundDur(w.openedAt), strings.Join(w.states, " → ")), true
	} else {
		opened.Got = fmt.Sprintf("never seen open (states seen: %s)", strings.Join(w.states, " → "))
	}
	shed := Finding{What: "attempts that reached payments per call rides made during the fault",
		Want: fmt.Sprintf("< %.1f: retries do not multiply the load on a failing service, the open breaker sheds it", maxReachedPerCall)}
	if during.calls > 0 {
		per := during.reached / during.calls
		shed.Got = fmt.Sprintf("%.2f (%.0f reached payments for %.0f calls, %.0f refused at once by the open breaker)",
			per, during.reached, during.calls, during.refused)
		shed.OK = per < maxReachedPerCall
	} else {
		shed.Got = "rides made no call to payments during the fault"
	}
	closed := Finding{What: "rides' breaker for payments once payments recovered",
		Want: fmt.Sprintf("closed within %s, calls succeeding", roundDur(recoverWithin))}
	switch {
	case w.closedAt < 0:
		closed.Got = fmt.Sprintf("still not closed after %s", roundDur(recoverWithin))
	case succeededAfter <= 0:
		closed.Got = fmt.Sprintf("closed after %s, but no call to payments succeeded since", roundDur(w.closedAt))
	default:
		closed.Got = fmt.Sprintf("closed after %s; %.0f calls succeeded since", roundDur(w.closedAt), succeededAfter)
		closed.OK = true
	}
	return []Finding{opened, shed, closed}
}

func pricingDown(ctx context.Context, r *run) error {
	rep, calls, err := r.underFault(ctx, r.loadConfig(0), act{
		inject: func(ctx context.Context) error { return r.setFault(ctx, "pricing", faults.Fault{ErrorRate: 1}) },
		heal:   func(ctx context.Context) error { return r.clearFault(ctx, "pricing", "") },
	})
	if err != nil {
		return err
	}
	r.find(pricingDownFindings(calls, r.window(), r.recovery(rep))...)
	r.find(loadFindings(rep)...)
	r.settle(ctx)
	return nil
}

// settleIn is how long after a fault is set the estimates in flight may
// still have been answered by pricing.
const settleIn = time.Second

// pricingDownFindings judges the estimates: all answered during the
// outage, degraded (the gateway's fallback: pricing's own rule without
// surge), fast; and normal again after it.
func pricingDownFindings(calls []call, window, after span) []Finding {
	all := stats(calls, window, routeEstimate)
	// Estimates sent in the fault's first second may have reached pricing
	// before the fault was in place everywhere, and in its last, after it
	// was lifted.
	edge := min(settleIn, window.To.Sub(window.From)/4)
	late := stats(calls, span{window.From.Add(edge), window.To.Add(-edge)}, routeEstimate)
	answered := Finding{What: "fare estimates answered 200 while pricing was down", Want: "all"}
	if all.Calls == 0 {
		answered.Got = "no estimate was asked for during the fault"
	} else {
		answered.Got = fmt.Sprintf("%d of %d%s", all.Statuses[200], all.Calls, otherStatuses(all.Statuses, 200))
		answered.OK = all.Statuses[200] == all.Calls
	}
	degraded := Finding{What: "of those, marked degraded (no surge, no quote)", Want: "all, but in the fault's first and last second"}
	surge := Finding{What: "surge on the estimates while pricing was down", Want: "none (×1.0)"}
	if late.Statuses[200] > 0 {
		degraded.Got = fmt.Sprintf("%d of %d", late.Degraded, late.Statuses[200])
		degraded.OK = late.Degraded == late.Statuses[200]
		surge.Got = fmt.Sprintf("highest ×%.2f", late.MaxSurge)
		surge.OK = late.MaxSurge <= 1
	} else {
		degraded.Got = "no estimate answered"
		surge.Got = "no estimate answered"
	}
	fast := Finding{What: "fare estimate p99 while pricing was down", Want: "< " + roundDur(fastAnswer)}
	if all.Calls > 0 {
		fast.Got = fmt.Sprintf("%s over %d", roundDur(all.P99), all.Calls)
		fast.OK = all.P99 < fastAnswer
	} else {
		fast.Got = "no estimate"
	}
	// After the fault the gateway's breaker for pricing needs its open
	// delay and a round of probes before it lets estimates through again.
	back := Finding{What: "first estimate priced normally (not degraded) after pricing recovered",
		Want: "within " + roundDur(recoverWithin)}
	back.Got = fmt.Sprintf("none in the %s of load after it", roundDur(after.To.Sub(after.From)))
	for _, c := range calls {
		if c.Route == routeEstimate && !c.At.Before(after.From) && c.Status == 200 && !c.Degraded {
			d := c.At.Sub(after.From)
			back.Got, back.OK = fmt.Sprintf("%s after", roundDur(d)), d <= recoverWithin
			break
		}
	}
	return []Finding{answered, degraded, surge, fast, back}
}

// otherStatuses is " (503: 2, no answer: 1)": the answers other than ok.
func otherStatuses(by map[int]int, ok int) string {
	var codes []int
	for c, n := range by {
		if c != ok && n > 0 {
			codes = append(codes, c)
		}
	}
	if len(codes) == 0 {
		return ""
	}
	sort.Ints(codes)
	var parts []string
	for _, c := range codes {
		name := strconv.Itoa(c)
		if c == 0 {
			name = "no answer"
		}
		parts = append(parts, fmt.Sprintf("%s: %d", name, by[c]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
