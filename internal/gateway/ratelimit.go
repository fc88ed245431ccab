package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Rate-limit policies. A route names one in the route table; a route that
// names none gets policyUser when it takes a token (keyed by the token's
// subject) and policyAnon when it does not (keyed by client address).
const (
	policyUser   = "user"
	policyAnon   = "anon"
	policySignup = "signup"
	policyToken  = "token"
)

// policy is one token bucket shape: rate tokens a second, up to burst.
type policy struct {
	rate  rate.Limit
	burst int
}

// policyDefaults are far above what a person (a few requests a second), the
// simulated fleet (about 2 a second per driver) or the test suite (a poll
// every 10 ms per caller, a thousand sign-ups in seconds from one address)
// ever does, so out of the box only a runaway client meets them; operators
// lower them for production with --set. Sign-up and the token endpoint are
// the stricter ones because each costs an argon2 hash (tens of milliseconds
// of a core and 19 MiB) and they are what credential stuffing and account
// farming hammer.
var policyDefaults = map[string]policy{
	policyUser:   {rate: 200, burst: 1000},
	policyAnon:   {rate: 500, burst: 2000},
	policySignup: {rate: 50, burst: 2000},
	policyToken:  {rate: 50, burst: 2000},
}

// settingNames are the settings of a policy: gateway.rate and gateway.burst
// for the per-user policy, gateway.<name>_rate and _burst for the others.
func settingNames(name string) (rateKey, burstKey string) {
	if name == policyUser {
		return "gateway.rate", "gateway.burst"
	}
	return "gateway." + name + "_rate", "gateway." + name + "_burst"
}

// loadPolicies reads every policy's settings through setting (d.Setting).
func loadPolicies(setting func(key, def string) string) (map[string]policy, error) {
	out := map[string]policy{}
	for name, def := range policyDefaults {
		rk, bk := settingNames(name)
		r, err := parseRate(setting(rk, ""), def.rate)
		if err != nil {
			return nil, fmt.Errorf("gateway: %s: %w", rk, err)
		}
		b := def.burst
		if v := setting(bk, ""); v != "" {
			if b, err = strconv.Atoi(v); err != nil || b < 1 {
				return nil, fmt.Errorf("gateway: %s: want a whole number of requests, at least 1, got %q", bk, v)
			}
		}
		out[name] = policy{rate: r, burst: b}
	}
	return out, nil
}

// parseRate reads a rate: requests a second ("20", "0.5"), or per unit
// ("20/s", "600/m", "100/h"), or "off" for no limit.
func parseRate(s string, def rate.Limit) (rate.Limit, error) {
	if s == "" {
		return def, nil
	}
	if s == "off" {
		return rate.Inf, nil
	}
	num, unit, _ := strings.Cut(s, "/")
	per := map[string]float64{"": 1, "s": 1, "m": 60, "h": 3600}[unit]
	n, err := strconv.ParseFloat(num, 64)
	if per == 0 || err != nil || n <= 0 || math.IsInf(n, 0) || math.IsNaN(n) {
		return 0, fmt.Errorf(`want requests a second ("20", "0.5"), per unit ("600/m") or "off", got %q`, s)
	}
	return rate.Limit(n / per), nil
}

// Sharing the limits among replicas. Every gateway replica enforces its
// share, 1/N of each policy's rate and burst, where N is the number of live
// gateway replicas in the registry: a caller whose requests are spread over
// the replicas gets the configured limit in all, with no coordination on
// the request path. The price: a caller pinned to one replica (one
// keep-alive connection) gets only its 1/N, and after a change of N the
// platform-wide limit is off until the buckets' next refill. Counting every
// request in a shared store (NATS KV, Redis) would be exact but puts a
// round trip to the store on every request, for limits that exist to keep
// runaway clients out, not to meter anyone.

// limiter holds one token bucket per (policy, caller). Its memory is
// bounded two ways: a bucket idle long enough to have refilled is
// indistinguishable from a new one and is dropped at the next sweep, and
// the number of buckets is capped, beyond which the sweep drops buckets
// whatever their state (a flood of distinct callers then meets full
// buckets, which is the price of not growing without bound).
type limiter struct {
	policies map[string]policy
	now      func() time.Time
	maxKeys  int
	limited  *prometheus.CounterVec // nil in unit tests
	// replicas is how many gateway replicas share the limits, and since
	// when (see followReplicas).
	replicas atomic.Pointer[share]

	mu        sync.Mutex
	buckets   map[bucketKey]*bucket
	lastSweep time.Time
}

type bucketKey struct{ policy, caller string }

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
	// share is the replica count lim's rate and burst were cut for.
	share int64
}

// share is the number of replicas sharing the limits since a time.
type share struct {
	n     int64
	since time.Time
}

// Sweep cadence and the bucket cap; a bucket is about 150 bytes, so the
// cap holds the limiter under 20 MiB.
const (
	sweepEvery = time.Minute
	maxBuckets = 100_000
)

func newLimiter(policies map[string]policy, now func() time.Time) *limiter {
	l := &limiter{policies: policies, now: now, maxKeys: maxBuckets, buckets: map[bucketKey]*bucket{}, lastSweep: now()}
	l.replicas.Store(&share{n: 1})
	return l
}

// among is this replica's part of p when n replicas share it: 1/n of the
// rate and of the burst, which stays at least one request so that a
// caller is never refused outright.
func (p policy) among(n int64) (rate.Limit, int) {
	return p.rate / rate.Limit(n), max(1, int(math.Ceil(float64(p.burst)/float64(n))))
}

// setReplicas makes the limits this replica's share among n from now on.
// Buckets adopt it on their next request, as from now, so a bucket idle
// meanwhile refills at the new rate, as if it had changed at once.
func (l *limiter) setReplicas(n int) {
	l.replicas.Store(&share{n: int64(max(n, 1)), since: l.now()})
}

// countReplicas counts the live gateway replicas, this one included.
type countReplicas func(ctx context.Context) (int, error)

// replicaPoll is how often followReplicas counts the replicas: a replica
// leaving or joining changes the shares within about a second.
const replicaPoll = time.Second

// followReplicas keeps the limiter's share in step with the number of live
// replicas until ctx ends. A count that fails keeps the last one.
func (l *limiter) followReplicas(count countReplicas, every time.Duration, log *slog.Logger) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			cctx, cancel := context.WithTimeout(ctx, every)
			n, err := count(cctx)
			cancel()
			switch {
			case err != nil && ctx.Err() == nil:
				log.Debug("counting gateway replicas", "err", err)
			case err == nil && int64(max(n, 1)) != l.replicas.Load().n:
				log.Info("rate limits shared among gateway replicas", "replicas", max(n, 1))
				l.setReplicas(n)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	}
}

// take spends one token of caller's bucket under policy. When the bucket is
// empty it spends nothing and says how long until a token is there.
func (l *limiter) take(name, caller string) (ok bool, retryAfter time.Duration) {
	p, known := l.policies[name]
	if !known || p.rate == rate.Inf {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= sweepEvery || len(l.buckets) >= l.maxKeys {
		l.sweep(now)
	}
	sh := l.replicas.Load()
	k := bucketKey{name, caller}
	b := l.buckets[k]
	if b == nil {
		r, burst := p.among(sh.n)
		b = &bucket{lim: rate.NewLimiter(r, burst), share: sh.n}
		l.buckets[k] = b
	} else if b.share != sh.n {
		// Tokens accrue at the old share up to the change and at the new
		// one after it (never before the bucket's last use, which a change
		// racing this request may precede).
		at := sh.since
		if at.Before(b.seen) {
			at = b.seen
		}
		r, burst := p.among(sh.n)
		b.lim.SetLimitAt(at, r)
		b.lim.SetBurstAt(at, burst)
		b.share = sh.n
	}
	b.seen = now
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		if l.limited != nil {
			l.limited.WithLabelValues(name).Inc()
		}
		return false, d
	}
	return true, 0
}

// sweep drops refilled buckets, then, if still at the cap, any tenth of
// them (map order is random, so no caller can arrange to be spared).
func (l *limiter) sweep(now time.Time) {
	l.lastSweep = now
	for k, b := range l.buckets {
		p := l.policies[k.policy]
		if now.Sub(b.seen) >= refillTime(p) {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) < l.maxKeys {
		return
	}
	drop := l.maxKeys / 10
	for k := range l.buckets {
		if drop == 0 {
			break
		}
		delete(l.buckets, k)
		drop--
	}
}

// refillTime is how long an empty bucket of p takes to fill, capped at a
// day so a very slow rate cannot overflow the arithmetic.
func refillTime(p policy) time.Duration {
	secs := float64(p.burst) / float64(p.rate)
	if secs > 24*3600 {
		return 24 * time.Hour
	}
	return time.Duration(secs * float64(time.Second))
}

// size is the number of buckets held.
func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
