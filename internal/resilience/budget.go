package resilience

import (
	"sync"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/budget"
)

// retryBudget caps the retries to one dependency at a share of the calls
// made to it: at most allowed retries are charged to any window of
// consecutive calls. Over N calls to a dependency that is down, that is at
// most allowed × ⌈N / window⌉ retries: about 10% more load, not the 3× that
// three attempts per call would be.
//
// It plugs into failsafe-go's retry policy through the policy's budget
// hook (retrypolicy.Builder.WithBudget), so the retry executor asks it at
// the exact moment it would retry and stops with budget.ErrExceeded.
// failsafe-go's own budget.Budget bounds something else: the share of
// *concurrently in-flight* executions that are retries, with a floor of a
// few. That keeps a burst from doubling, but lets a caller that makes one
// call at a time (or whose retries sit in backoff) retry every call, so
// retries can triple the load on a dependency that is down. A count of
// calls has no such gap and needs no clock.
//
// The retry executor type-asserts its budget to failsafe-go's internal
// budget interface (the methods below): the version is pinned exactly, and
// TestBudgetPluggedIntoFailsafe fails if that interface moves.
type retryBudget struct {
	mu      sync.Mutex
	charged []uint16 // retries charged to each of the last len(charged) calls
	head    int      // the newest call's slot
	used    int      // sum of charged
	allowed int      // retries allowed per window

	onExceeded func()
}

var _ budget.Budget = (*retryBudget)(nil)

func newRetryBudget(ratio float64, window int, onExceeded func()) *retryBudget {
	return &retryBudget{
		charged:    make([]uint16, window),
		allowed:    int(ratio * float64(window)),
		onExceeded: onExceeded,
	}
}

// RecordExecution counts a call: the oldest call leaves the window, and
// with it the retries charged to it.
func (b *retryBudget) RecordExecution() {
	b.mu.Lock()
	b.head = (b.head + 1) % len(b.charged)
	b.used -= int(b.charged[b.head])
	b.charged[b.head] = 0
	b.mu.Unlock()
}

// ReleaseExecution does nothing: the budget counts calls, not calls in
// flight.
func (b *retryBudget) ReleaseExecution() {}

// TryAcquirePermit allows one retry if the window has budget left, and
// charges it to the newest call.
func (b *retryBudget) TryAcquirePermit() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used >= b.allowed || b.charged[b.head] == ^uint16(0) {
		return false
	}
	b.charged[b.head]++
	b.used++
	return true
}

// ReleasePermit does nothing: a retry stays charged until its call leaves
// the window.
func (b *retryBudget) ReleasePermit() {}

// OnBudgetExceeded is failsafe-go's notice that a retry was refused.
func (b *retryBudget) OnBudgetExceeded(budget.ExecutionType, failsafe.ExecutionInfo) {
	if b.onExceeded != nil {
		b.onExceeded()
	}
}

// Rate is the share of the window's calls that were retried.
func (b *retryBudget) Rate() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return float64(b.used) / float64(len(b.charged))
}

// left is how many retries the window allows now.
func (b *retryBudget) left() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return max(0, b.allowed-b.used)
}
