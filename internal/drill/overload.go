package drill

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rideshare-platform/rideshare/internal/fleet"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/load"
)

// The overload drill: measure what the platform can take, offer twice
// that, and see whether load shedding keeps the work getting done.

const (
	// overloadCallers is how many riders measure the capacity, each
	// asking again as soon as answered: enough to keep two cores busy,
	// and each its own account, so the per-caller rate limit (200/s by
	// default) is not what is measured.
	overloadCallers = 16
	capacityWarmup  = time.Second
	capacityMeasure = 5 * time.Second
	// minCapacity is the least capacity worth overloading: below it the
	// platform is broken, not busy.
	minCapacity = 10.0
	// minGoodput is the share of its capacity the platform must still
	// answer under twice the load; without shedding, queues grow until
	// every answer comes too late and goodput collapses.
	minGoodput = 0.8
	// fastRefusal bounds a shed request's time from its arrival at the
	// gateway to its refusal: at once, or after the short wait for a slot
	// (shed.max_queue_wait, 250 ms by default), not after queueing until
	// its deadline. It is the largest bound of the gateway's histogram
	// below +Inf; minFastRefusals of the refusals must be within it. It
	// is timed in the gateway, since the drill's own client, sending twice
	// what the machine can serve from the same two cores, adds seconds of
	// its own scheduling to what it sees.
	fastRefusal     = 500 * time.Millisecond
	minFastRefusals = 0.99
	// maxOtherFailures is the share of requests that may fail otherwise
	// than by a refusal (a timeout, a 500): the platform under load
	// refuses cleanly or answers.
	maxOtherFailures = 0.01
	// maxInFlight bounds the drill's own requests outstanding: past it,
	// an arrival is not sent, and counted as the drill's saturation.
	maxInFlight = 4096
	// graceAfter is how long after the window an answer still counts as
	// goodput.
	graceAfter = time.Second
)

// overloadTrip is the estimate every caller asks for: a ride across the
// middle of the demo city.
var overloadTrip = func() []byte {
	c := geo.SanFrancisco.Center()
	b, _ := json.Marshal(map[string]any{
		"pickup":  map[string]float64{"lat": c.Lat - 0.005, "lng": c.Lng - 0.005},
		"dropoff": map[string]float64{"lat": c.Lat + 0.005, "lng": c.Lng + 0.005},
	})
	return b
}()

// estimateCall is one estimate the overload drill asked for.
type estimateCall struct {
	sent     time.Time
	took     time.Duration
	status   int // 0: no answer
	degraded bool
}

type estimateLog struct {
	mu    sync.Mutex
	calls []estimateCall
}

func (l *estimateLog) add(c estimateCall) {
	l.mu.Lock()
	l.calls = append(l.calls, c)
	l.mu.Unlock()
}

func overload(ctx context.Context, r *run) error {
	hc := r.httpClient()
	r.say("signing in %d riders", overloadCallers)
	tokens, err := r.signIn(ctx, hc, overloadCallers)
	if err != nil {
		return err
	}
	log := &estimateLog{}
	r.res.Start = time.Now()
	r.say("capacity: %d riders ask for fare estimates back to back (closed loop) for %s, after %s of warm-up",
		overloadCallers, capacityMeasure, capacityWarmup)
	closedLoop(ctx, hc, r.p.Gateway, tokens, capacityWarmup, nil)
	measured := closedLoop(ctx, hc, r.p.Gateway, tokens, capacityMeasure, log)
	capacity := float64(measured) / capacityMeasure.Seconds()
	r.say("capacity: %.0f estimates/s", capacity)
	if capacity < minCapacity {
		r.find(Finding{What: "fare-estimate capacity (closed loop)", Got: fmt.Sprintf("%.1f/s", capacity),
			Want: fmt.Sprintf("≥ %.0f/s to be worth overloading", minCapacity)})
		r.res.Timeline = log.timeline(r.res.Start, time.Now())
		return nil
	}
	offered := 2 * capacity
	gateways, err := r.instances(ctx, "gateway")
	if err != nil {
		return err
	}
	shed0, err := r.shedRefusals(ctx, gateways)
	if err != nil {
		return err
	}
	from := time.Now()
	r.faultFrom(from)
	r.say("overload: estimates arrive at %.0f/s (twice the capacity, open loop) for %s", offered, r.o.Window)
	skipped := openLoop(ctx, hc, r.p.Gateway, tokens, offered, r.o.Window, log)
	r.faultTo(from.Add(r.o.Window))
	r.res.Timeline = log.timeline(r.res.Start, time.Now())
	if err := ctx.Err(); err != nil {
		return err
	}
	shed1, err := r.shedRefusals(ctx, gateways)
	if err != nil {
		return err
	}
	log.mu.Lock()
	calls := append([]estimateCall(nil), log.calls...)
	log.mu.Unlock()
	r.find(overloadFindings(capacity, offered, calls, span{from, from.Add(r.o.Window)}, skipped, shed1.minus(shed0))...)
	r.settle(ctx)
	return nil
}

// refusals counts the gateway's load-shedding refusals: all of them, and
// those that came within fastRefusal of the request's arrival.
type refusals struct{ all, fast float64 }

func (a refusals) minus(b refusals) refusals { return refusals{a.all - b.all, a.fast - b.fast} }

func (r *run) shedRefusals(ctx context.Context, gateways []string) (refusals, error) {
	var out refusals
	for _, g := range gateways {
		m, err := r.p.Admin.Metrics(ctx, g)
		if err != nil {
			return out, fmt.Errorf("reading the gateway's metrics: %w", err)
		}
		out.all += m.Sum("rideshare_shed_refusal_seconds_count")
		out.fast += m.Sum("rideshare_shed_refusal_seconds_bucket", "le="+formatLE(fastRefusal.Seconds()))
	}
	return out, nil
}

// signIn makes sure n overload riders have accounts and gets each a token.
func (r *run) signIn(ctx context.Context, hc *http.Client, n int) ([]string, error) {
	tokens := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			email := load.RiderEmail(r.o.Accounts+"-overload", i+1)
			// SignIn signs the rider up the first time.
			if err := fleet.NewRider(r.p.Gateway, hc, email, r.o.Password).SignIn(ctx, fmt.Sprintf("Overload Rider %04d", i+1)); err != nil {
				errs[i] = err
				return
			}
			tokens[i], errs[i] = passwordToken(ctx, hc, r.p.Gateway, email, r.o.Password)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("signing in the overload riders: %w", err)
		}
	}
	return tokens, nil
}

// passwordToken logs a rider in with the first-party password grant.
func passwordToken(ctx context.Context, hc *http.Client, gateway, email, password string) (string, error) {
	form := url.Values{"grant_type": {"password"}, "client_id": {"rideshare-cli"}, "username": {email}, "password": {password}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, gateway+"/oauth2/token", strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err := json.Unmarshal(b, &tok); err != nil || res.StatusCode != http.StatusOK || tok.AccessToken == "" {
		return "", fmt.Errorf("log-in of %s: %s: %.200s", email, res.Status, b)
	}
	return tok.AccessToken, nil
}

// estimate asks for one fare estimate.
func estimate(ctx context.Context, hc *http.Client, gateway, token string) estimateCall {
	c := estimateCall{sent: time.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, gateway+"/v1/fares/estimate", bytes.NewReader(overloadTrip))
	if err != nil {
		return c
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := hc.Do(req)
	if err != nil {
		c.took = time.Since(c.sent)
		return c
	}
	defer res.Body.Close()
	var e struct {
		Degraded bool `json:"degraded"`
	}
	b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	_ = json.Unmarshal(b, &e)
	c.took, c.status, c.degraded = time.Since(c.sent), res.StatusCode, e.Degraded
	return c
}

// closedLoop has every caller ask again as soon as answered, for d, and
// counts the answers (200) that came within it; each call goes to log
// when one is given.
func closedLoop(ctx context.Context, hc *http.Client, gateway string, tokens []string, d time.Duration, log *estimateLog) int {
	var ok atomic.Int64
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for _, tok := range tokens {
		wg.Go(func() {
			for time.Now().Before(end) && ctx.Err() == nil {
				c := estimate(ctx, hc, gateway, tok)
				if log != nil {
					log.add(c)
				}
				if c.status == http.StatusOK && !c.sent.Add(c.took).After(end) {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return int(ok.Load())
}

// openLoop sends estimates at rate for d, each on schedule whether or not
// earlier ones were answered, and waits for the answers. It returns how
// many arrivals it could not send (maxInFlight outstanding).
func openLoop(ctx context.Context, hc *http.Client, gateway string, tokens []string, rate float64, d time.Duration, log *estimateLog) int {
	start := time.Now()
	var wg sync.WaitGroup
	var inFlight atomic.Int64
	skipped := 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for i := 0; ; i++ {
		due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if !due.Before(start.Add(d)) {
			break
		}
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				wg.Wait()
				return skipped
			case <-timer.C:
			}
		}
		if inFlight.Load() >= maxInFlight {
			skipped++
			continue
		}
		inFlight.Add(1)
		tok := tokens[i%len(tokens)]
		wg.Go(func() {
			defer inFlight.Add(-1)
			log.add(estimate(ctx, hc, gateway, tok))
		})
	}
	wg.Wait()
	return skipped
}

// timeline is the log per second from start to end, as the load reports
// it: requests answered in each second, their errors and percentiles.
func (l *estimateLog) timeline(start, end time.Time) []load.Second {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := int(end.Sub(start)/time.Second) + 1
	out := make([]load.Second, n)
	took := make([][]time.Duration, n)
	for i := range out {
		out[i].At = i
	}
	for _, c := range l.calls {
		i := int(c.sent.Add(c.took).Sub(start) / time.Second)
		if i < 0 || i >= n {
			continue
		}
		out[i].Requests++
		if c.status != http.StatusOK {
			out[i].Errors++
		}
		if c.status != 0 {
			took[i] = append(took[i], c.took)
		}
	}
	for i := range out {
		out[i].P50, out[i].P99 = quantile(took[i], 0.5), quantile(took[i], 0.99)
	}
	return out
}

// overloadFindings judge the window of twice the capacity: goodput, how
// fast the gateway refused what it shed, and that nothing failed otherwise.
func overloadFindings(capacity, offered float64, calls []estimateCall, window span, skipped int, shed refusals) []Finding {
	var sent, good, degraded, other int
	var refused []time.Duration
	for _, c := range calls {
		if !window.contains(c.sent) {
			continue
		}
		sent++
		switch {
		case c.status == http.StatusOK:
			if !c.sent.Add(c.took).After(window.To.Add(graceAfter)) {
				good++
				if c.degraded {
					degraded++
				}
			}
		case c.status == http.StatusTooManyRequests || c.status == http.StatusServiceUnavailable:
			refused = append(refused, c.took)
		default:
			other++
		}
	}
	secs := window.To.Sub(window.From).Seconds()
	goodput := float64(good) / secs
	cap := Finding{What: "fare-estimate capacity (16 riders, closed loop)", Got: fmt.Sprintf("%.0f/s", capacity),
		Want: fmt.Sprintf("≥ %.0f/s to be worth overloading", minCapacity), OK: capacity >= minCapacity}
	gp := Finding{What: fmt.Sprintf("goodput with estimates offered at %.0f/s (twice the capacity)", offered),
		Want: fmt.Sprintf("≥ %.0f%% of capacity (%.0f/s)", 100*minGoodput, minGoodput*capacity)}
	gp.Got = fmt.Sprintf("%.0f/s, %.0f%% of capacity (%d answered of %d sent, %d of them degraded)", goodput, 100*goodput/capacity, good, sent, degraded)
	if skipped > 0 {
		gp.Got += fmt.Sprintf("; %d arrivals not sent, the drill's own client saturated", skipped)
	}
	gp.OK = goodput >= minGoodput*capacity
	fast := Finding{What: "requests the gateway shed, timed in the gateway from arrival to refusal",
		Want: fmt.Sprintf("≥ %.0f%% within %s", 100*minFastRefusals, roundDur(fastRefusal))}
	clientSide := "none refused"
	if len(refused) > 0 {
		clientSide = fmt.Sprintf("%d refused (429 or 503), p99 %s as the drill's client saw them", len(refused), roundDur(quantile(refused, 0.99)))
	}
	if shed.all > 0 {
		fast.Got = fmt.Sprintf("%.0f shed, %.1f%% within %s; %s", shed.all, 100*shed.fast/shed.all, roundDur(fastRefusal), clientSide)
		fast.OK = shed.fast >= minFastRefusals*shed.all
	} else {
		// Nothing shed: the platform answered all it was sent, or refused
		// it otherwise (rate limits), which the goodput judges.
		fast.Got, fast.OK = "none shed; "+clientSide, true
	}
	fails := Finding{What: "requests that failed otherwise (timeouts, errors other than a refusal)",
		Want: fmt.Sprintf("≤ %.0f%%", 100*maxOtherFailures)}
	if sent > 0 {
		fails.Got = fmt.Sprintf("%d of %d", other, sent)
		fails.OK = float64(other) <= maxOtherFailures*float64(sent)
	} else {
		fails.Got = "nothing sent"
	}
	return []Finding{cap, gp, fast, fails}
}
