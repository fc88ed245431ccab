// Package resilience answers "what happens when B is slow?" in one place
// (DESIGN section 4). Every RPC a process makes goes through the policies of
// the dependency it calls: a per-attempt timeout derived from the caller's
// deadline, retries for idempotent calls only (capped exponential backoff,
// jitter, a retry budget), a circuit breaker and a bulkhead. Every server
// sheds load it cannot serve in time. The policies are failsafe-go's; this
// package only chooses them, per dependency, and wires them into Connect.
package resilience

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Policy is how calls to one dependency are protected.
type Policy struct {
	// Timeout bounds one attempt. The caller's remaining deadline, when it
	// is sooner, bounds it instead: an attempt never outlives its caller.
	Timeout  time.Duration
	Retry    RetryPolicy
	Breaker  BreakerPolicy
	Bulkhead BulkheadPolicy
}

// RetryPolicy says how idempotent calls are retried. Calls with side effects
// and no idempotency key are never retried, whatever it says.
type RetryPolicy struct {
	// MaxAttempts counts the first attempt too; 1 turns retries off.
	MaxAttempts int
	// Backoff is the delay before the first retry; each later one doubles,
	// up to MaxBackoff.
	Backoff    time.Duration
	MaxBackoff time.Duration
	// Jitter varies each delay by up to ± this fraction, so that callers
	// that failed together do not retry together.
	Jitter float64
	// BudgetRatio is the retries allowed per call to the dependency,
	// counted over its last BudgetWindow calls: with 0.1 and 100, at most
	// 10 of any 100 consecutive calls' retries, so a dependency that is
	// down sees at most 10% more calls than callers make, never 3×.
	BudgetRatio  float64
	BudgetWindow int
}

// BreakerPolicy says when calls to a failing dependency stop for a while.
type BreakerPolicy struct {
	// FailureRate opens the breaker when at least this share of the calls
	// in the last Window failed, once at least MinCalls were made in it (so
	// that two failures out of three calls at night do not open it).
	FailureRate float64
	MinCalls    uint
	Window      time.Duration
	// OpenFor is how long an open breaker fails calls at once before it
	// half-opens.
	OpenFor time.Duration
	// Probes is how many calls a half-open breaker lets through; all of
	// them must succeed to close it, and any failure opens it again.
	Probes uint
}

// BulkheadPolicy bounds concurrent calls to a dependency, so that one slow
// dependency holds at most MaxConcurrent of the caller's goroutines.
type BulkheadPolicy struct {
	MaxConcurrent uint
	// MaxWait is how long a call waits for a free slot before it is
	// rejected: short, to absorb a burst, not to queue.
	MaxWait time.Duration
}

// Defaults is the policy of a dependency without an override.
//
//   - 3 s per attempt: every RPC in the platform answers in milliseconds;
//     three seconds is already a sick dependency, and the default call
//     deadline (5 s) still leaves room for a retry of a quick failure.
//   - 3 attempts, 25 ms doubling to at most 250 ms, ±50% jitter, and a
//     budget of 10 retries per 100 calls.
//   - breaker: 50% failures over 10 s once 20 calls were made; open for
//     5 s; 3 probes.
//   - bulkhead: 64 concurrent calls per dependency, 10 ms wait.
var Defaults = Policy{
	Timeout: 3 * time.Second,
	Retry: RetryPolicy{
		MaxAttempts: 3, Backoff: 25 * time.Millisecond, MaxBackoff: 250 * time.Millisecond,
		Jitter: 0.5, BudgetRatio: 0.1, BudgetWindow: 100,
	},
	Breaker: BreakerPolicy{
		FailureRate: 0.5, MinCalls: 20, Window: 10 * time.Second,
		OpenFor: 5 * time.Second, Probes: 3,
	},
	Bulkhead: BulkheadPolicy{MaxConcurrent: 64, MaxWait: 10 * time.Millisecond},
}

// overrides are the dependencies that differ from Defaults, and why.
var overrides = map[string]func(*Policy){
	// A hold or capture goes to a card network with its own latency
	// (payments.latency in drills): give it time, and since every saga
	// worker may be waiting on it, fewer slots, so a slow card network
	// cannot take every worker of rides.
	"payments": func(p *Policy) {
		p.Timeout = 5 * time.Second
		p.Bulkhead.MaxConcurrent = 24
	},
	// A fare estimate has a fallback (a straight-line estimate without
	// surge, answered by pricing itself when dispatch is slow), so pricing
	// answers within its 300 ms dispatch budget: waiting long for it buys
	// nothing.
	"pricing": func(p *Policy) {
		p.Timeout = time.Second
	},
	// Sign-up hashes the password with a memory-hard function on purpose:
	// slow by design, and slower on a loaded two-core machine.
	"identity": func(p *Policy) {
		p.Timeout = 5 * time.Second
	},
}

// SettingPrefix starts every setting this package reads:
// resilience.<peer>.<key>, or resilience.default.<key> for every peer.
const SettingPrefix = "resilience."

// defaultPeer names the settings that apply to every dependency.
const defaultPeer = "default"

// settingKeys are the keys a resilience setting may have, each with how it
// sets its field.
var settingKeys = map[string]func(p *Policy, v string) error{
	"timeout":              durationField(func(p *Policy) *time.Duration { return &p.Timeout }),
	"max_attempts":         intField(func(p *Policy) *int { return &p.Retry.MaxAttempts }),
	"backoff":              durationField(func(p *Policy) *time.Duration { return &p.Retry.Backoff }),
	"max_backoff":          durationField(func(p *Policy) *time.Duration { return &p.Retry.MaxBackoff }),
	"jitter":               floatField(func(p *Policy) *float64 { return &p.Retry.Jitter }),
	"retry_budget":         floatField(func(p *Policy) *float64 { return &p.Retry.BudgetRatio }),
	"retry_budget_window":  intField(func(p *Policy) *int { return &p.Retry.BudgetWindow }),
	"breaker_failure_rate": floatField(func(p *Policy) *float64 { return &p.Breaker.FailureRate }),
	"breaker_min_calls":    uintField(func(p *Policy) *uint { return &p.Breaker.MinCalls }),
	"breaker_window":       durationField(func(p *Policy) *time.Duration { return &p.Breaker.Window }),
	"breaker_open_for":     durationField(func(p *Policy) *time.Duration { return &p.Breaker.OpenFor }),
	"breaker_probes":       uintField(func(p *Policy) *uint { return &p.Breaker.Probes }),
	"bulkhead":             uintField(func(p *Policy) *uint { return &p.Bulkhead.MaxConcurrent }),
	"bulkhead_wait":        durationField(func(p *Policy) *time.Duration { return &p.Bulkhead.MaxWait }),
}

// SettingKeys lists the keys resilience.<peer>.<key> takes, for help texts.
func SettingKeys() []string { return slices.Sorted(maps.Keys(settingKeys)) }

// Policies is the policy table: the built-in defaults and overrides, with
// the process's settings applied.
type Policies struct {
	settings map[string]string // the resilience.* settings
}

// ParsePolicies reads the resilience.* settings and checks every one of
// them, so that a typo fails the process at start, not silently later.
// Precedence, lowest first: Defaults, the built-in override for the peer,
// resilience.default.<key>, resilience.<peer>.<key>.
func ParsePolicies(settings map[string]string) (*Policies, error) {
	ps := &Policies{settings: map[string]string{}}
	peers := map[string]bool{}
	for k, v := range settings {
		rest, ok := strings.CutPrefix(k, SettingPrefix)
		if !ok {
			continue
		}
		peer, key, ok := strings.Cut(rest, ".")
		if !ok || peer == "" || settingKeys[key] == nil {
			return nil, fmt.Errorf("setting %s: want resilience.<peer>.<key> with a key among %s", k, strings.Join(SettingKeys(), ", "))
		}
		ps.settings[k] = v
		peers[peer] = true
	}
	peers[defaultPeer] = true
	for peer := range peers {
		if _, err := ps.For(peer); err != nil {
			return nil, err
		}
	}
	for peer := range overrides {
		if _, err := ps.For(peer); err != nil {
			return nil, err
		}
	}
	return ps, nil
}

// For is the policy of calls to peer.
func (ps *Policies) For(peer string) (Policy, error) {
	p := Defaults
	if o := overrides[peer]; o != nil {
		o(&p)
	}
	if err := ps.apply(&p, defaultPeer); err != nil {
		return Policy{}, err
	}
	if peer != defaultPeer {
		if err := ps.apply(&p, peer); err != nil {
			return Policy{}, err
		}
	}
	if err := p.validate(); err != nil {
		return Policy{}, fmt.Errorf("resilience policy for %s: %w", peer, err)
	}
	return p, nil
}

func (ps *Policies) apply(p *Policy, peer string) error {
	for _, key := range SettingKeys() {
		name := SettingPrefix + peer + "." + key
		v, ok := ps.settings[name]
		if !ok {
			continue
		}
		if err := settingKeys[key](p, strings.TrimSpace(v)); err != nil {
			return fmt.Errorf("setting %s=%q: %w", name, v, err)
		}
	}
	return nil
}

func (p Policy) validate() error {
	switch {
	case p.Timeout <= 0:
		return fmt.Errorf("timeout must be positive")
	case p.Retry.MaxAttempts < 1 || p.Retry.MaxAttempts > 10:
		return fmt.Errorf("max_attempts must be 1 to 10")
	case p.Retry.Backoff < 0 || p.Retry.MaxBackoff < p.Retry.Backoff:
		return fmt.Errorf("backoff must be non-negative and at most max_backoff")
	case p.Retry.Jitter < 0 || p.Retry.Jitter > 1:
		return fmt.Errorf("jitter must be in [0, 1]")
	case p.Retry.BudgetRatio < 0 || p.Retry.BudgetRatio > 1:
		return fmt.Errorf("retry_budget must be in [0, 1]")
	case p.Retry.BudgetWindow < 1 || p.Retry.BudgetWindow > 10000:
		return fmt.Errorf("retry_budget_window must be 1 to 10000")
	case p.Breaker.FailureRate <= 0 || p.Breaker.FailureRate > 1:
		return fmt.Errorf("breaker_failure_rate must be in (0, 1]")
	case p.Breaker.MinCalls < 1:
		return fmt.Errorf("breaker_min_calls must be at least 1")
	case p.Breaker.Window <= 0 || p.Breaker.OpenFor <= 0:
		return fmt.Errorf("breaker_window and breaker_open_for must be positive")
	case p.Breaker.Probes < 1:
		return fmt.Errorf("breaker_probes must be at least 1")
	case p.Bulkhead.MaxConcurrent < 1:
		return fmt.Errorf("bulkhead must be at least 1")
	case p.Bulkhead.MaxWait < 0:
		return fmt.Errorf("bulkhead_wait must not be negative")
	}
	return nil
}

func durationField(f func(*Policy) *time.Duration) func(*Policy, string) error {
	return func(p *Policy, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("want a Go duration such as 250ms")
		}
		*f(p) = d
		return nil
	}
}

func intField(f func(*Policy) *int) func(*Policy, string) error {
	return func(p *Policy, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("want an integer")
		}
		*f(p) = n
		return nil
	}
}

func uintField(f func(*Policy) *uint) func(*Policy, string) error {
	return func(p *Policy, v string) error {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return fmt.Errorf("want a non-negative integer")
		}
		*f(p) = uint(n)
		return nil
	}
}

func floatField(f func(*Policy) *float64) func(*Policy, string) error {
	return func(p *Policy, v string) error {
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("want a number")
		}
		*f(p) = x
		return nil
	}
}
