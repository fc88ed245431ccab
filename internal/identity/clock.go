package identity

import "time"

// now is the service's clock, truncated to what the database keeps so that
// a value read back equals the value written.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// clock is a time source for what tests need to move through hours:
// signing-key rotation and token expiry. The zero value is the system
// clock.
type clock func() time.Time

func (c clock) now() time.Time {
	if c == nil {
		return now()
	}
	return c().UTC().Truncate(time.Microsecond)
}
