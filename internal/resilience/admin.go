package resilience

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// DependencyState is one dependency as GET /admin/resilience shows it.
type DependencyState struct {
	Peer        string        `json:"peer"`
	Policy      PolicyState   `json:"policy"`
	Breaker     BreakerState  `json:"breaker"`
	Bulkhead    BulkheadState `json:"bulkhead"`
	RetryBudget BudgetState   `json:"retry_budget"`
}

// PolicyState is the configured policy, durations in milliseconds.
type PolicyState struct {
	TimeoutMS   int64 `json:"timeout_ms"`
	MaxAttempts int   `json:"max_attempts"`
}

// BreakerState is the circuit breaker now.
type BreakerState struct {
	// State is closed, open or half-open.
	State string `json:"state"`
	// FailureRate and Calls are over the current window (closed), the
	// probes so far (half-open), or the window that opened it (open).
	FailureRate float64 `json:"failure_rate"`
	Calls       uint    `json:"calls"`
	// RemainingOpenMS is how long an open breaker still fails fast.
	RemainingOpenMS int64 `json:"remaining_open_ms,omitempty"`

	stateValue int // 0 closed, 1 open, 2 half-open, for the metric
}

// BulkheadState is the bulkhead now.
type BulkheadState struct {
	InUse int64 `json:"in_use"`
	Limit uint  `json:"limit"`
}

// BudgetState is the retry budget now.
type BudgetState struct {
	// Left is how many retries the budget allows now, of Allowed per
	// Window calls.
	Left    int `json:"left"`
	Allowed int `json:"allowed"`
	Window  int `json:"window"`
}

// Snapshot is every dependency's state, by name.
func (t *Table) Snapshot() []DependencyState {
	deps := t.sorted()
	out := make([]DependencyState, 0, len(deps))
	for _, d := range deps {
		m := d.breaker.Metrics()
		st := d.breaker.State()
		out = append(out, DependencyState{
			Peer: d.peer,
			Policy: PolicyState{
				TimeoutMS:   d.policy.Timeout.Milliseconds(),
				MaxAttempts: d.policy.Retry.MaxAttempts,
			},
			Breaker: BreakerState{
				State:           st.String(),
				FailureRate:     m.FailureRate(),
				Calls:           m.Executions(),
				RemainingOpenMS: d.breaker.RemainingDelay().Round(time.Millisecond).Milliseconds(),
				stateValue:      int(st),
			},
			Bulkhead: BulkheadState{InUse: d.inUse.Load(), Limit: d.policy.Bulkhead.MaxConcurrent},
			RetryBudget: BudgetState{
				Left: d.budget.left(), Allowed: d.budget.allowed, Window: len(d.budget.charged),
			},
		})
	}
	return out
}

// AdminHandler serves GET /admin/resilience: every dependency's breaker,
// bulkhead and retry budget, as JSON. The server in front of it checks
// the admin token.
func (t *Table) AdminHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			apperr.WriteMethodNotAllowed(w, r, "GET, HEAD", r.Method+" is not supported: the resilience view is read with GET")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(struct {
			Dependencies []DependencyState `json:"dependencies"`
		}{t.Snapshot()})
	})
}
