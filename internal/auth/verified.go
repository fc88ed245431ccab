package auth

import (
	"maps"
	"sync"
	"time"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
)

// verifiedTokens remembers the access tokens that passed Verify, so that a
// client sending the same token for minutes pays for one ES256 signature
// check, not one per request: that check was a third of the gateway's CPU
// per request (BenchmarkGatewayHop, docs/performance.md).
//
// Only tokens that passed enter; a token is remembered until it expires,
// and at most verifiedFor, so that a key the issuer withdraws stops
// vouching for its tokens here within that time, as it does once the keys
// are fetched again (keysRefresh). The memory is bounded: when full, the
// expired tokens go, and if that is not enough, all of them (they are
// checked again).
type verifiedTokens struct {
	mu sync.RWMutex
	m  map[string]verifiedToken
}

type verifiedToken struct {
	caller *authv1.Caller
	until  time.Time
}

const (
	// verifiedFor bounds how long a checked token is taken on trust.
	verifiedFor = time.Minute
	// maxVerified bounds the tokens remembered: the users active within
	// verifiedFor on one gateway, at about 1 KiB a token, a few MiB.
	maxVerified = 8192
)

// get is whom tok speaks for, if it passed within verifiedFor and has not
// expired since.
func (vt *verifiedTokens) get(tok string, now time.Time) (*authv1.Caller, bool) {
	vt.mu.RLock()
	e, ok := vt.m[tok]
	vt.mu.RUnlock()
	if !ok || !now.Before(e.until) {
		return nil, false
	}
	return e.caller, true
}

// put remembers that tok, expiring at expires, speaks for c.
func (vt *verifiedTokens) put(tok string, c *authv1.Caller, expires, now time.Time) {
	until := now.Add(verifiedFor)
	if expires.Before(until) {
		until = expires
	}
	if !now.Before(until) {
		return // accepted within the leeway past its expiry: check it again next time
	}
	vt.mu.Lock()
	defer vt.mu.Unlock()
	if len(vt.m) >= maxVerified {
		maps.DeleteFunc(vt.m, func(_ string, e verifiedToken) bool { return !now.Before(e.until) })
	}
	if vt.m == nil || len(vt.m) >= maxVerified {
		vt.m = map[string]verifiedToken{}
	}
	vt.m[tok] = verifiedToken{caller: c, until: until}
}
