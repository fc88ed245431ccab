package testenv

import (
	"sync"
	"time"
)

// Clock is a clock that moves only when the test says, so timeouts, expiry,
// grace periods and backoff are tested without sleeping through them.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock starts at start.
func NewClock(start time.Time) *Clock { return &Clock{t: start} }

// Now is the current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
