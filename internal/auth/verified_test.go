package auth

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
)

// countingKeys counts the key lookups, one per signature checked.
type countingKeys struct {
	keys
	lookups atomic.Int64
}

// keys names the embedded key set (a field named Keyfunc would hide the
// method of the same name).
type keys = keyfunc.Keyfunc

func (k *countingKeys) KeyfuncCtx(ctx context.Context) jwt.Keyfunc {
	next := k.keys.KeyfuncCtx(ctx)
	return func(t *jwt.Token) (any, error) {
		k.lookups.Add(1)
		return next(t)
	}
}

// TestVerifyRemembers: a token that passed is not checked again for a
// while, but never past its expiry or verifiedFor, and a refused token is
// checked every time.
func TestVerifyRemembers(t *testing.T) {
	start := time.Now()
	key, other := newSigner(t, "k"), newSigner(t, "k")
	set, err := keyfunc.NewJWKSetJSON(jwks(t, key))
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingKeys{keys: set}
	var now atomic.Pointer[time.Time]
	now.Store(&start)
	v, err := New(context.Background(), Config{Issuer: testIssuer, Keys: counted, Log: quiet, Now: func() time.Time { return *now.Load() }})
	if err != nil {
		t.Fatal(err)
	}
	longLived := key.sign(t, accessClaims(start))
	shortLived := key.sign(t, with(accessClaims(start), "exp", start.Add(20*time.Second).Unix()))
	forged := other.sign(t, accessClaims(start))

	for _, step := range []struct {
		name    string
		after   time.Duration // since start
		token   string
		ok      bool
		checked bool // the signature was checked (not taken from memory)
	}{
		{"first use", 0, longLived, true, true},
		{"again", time.Second, longLived, true, false},
		{"short-lived, first use", time.Second, shortLived, true, true},
		{"short-lived, before it expires", 10 * time.Second, shortLived, true, false},
		{"short-lived, expired within the leeway", 25 * time.Second, shortLived, true, true},
		{"short-lived, again within the leeway", 26 * time.Second, shortLived, true, true},
		{"just before verifiedFor", verifiedFor - time.Second, longLived, true, false},
		{"after verifiedFor", verifiedFor, longLived, true, true},
		{"short-lived, expired", verifiedFor, shortLived, false, true},
		{"forged", verifiedFor, forged, false, true},
		{"forged again", verifiedFor, forged, false, true},
	} {
		at := start.Add(step.after)
		now.Store(&at)
		before := counted.lookups.Load()
		c, err := v.Verify(context.Background(), step.token)
		if (err == nil) != step.ok {
			t.Errorf("%s: err %v, want ok=%v", step.name, err, step.ok)
		}
		if step.ok && (c.GetUserId() != "user-1" || c.GetRole() != authv1.Role_ROLE_RIDER) {
			t.Errorf("%s: caller %v", step.name, c)
		}
		if checked := counted.lookups.Load() > before; checked != step.checked {
			t.Errorf("%s: signature checked=%v, want %v", step.name, checked, step.checked)
		}
	}
}

// TestVerifiedTokensBounded: the memory stays bounded, expired tokens
// going first.
func TestVerifiedTokensBounded(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	var vt verifiedTokens
	c := &authv1.Caller{UserId: "u", Role: authv1.Role_ROLE_RIDER}
	for i := range maxVerified {
		vt.put(strconv.Itoa(i), c, now.Add(time.Duration(1+i%2)*time.Second), now)
	}
	later := now.Add(1500 * time.Millisecond) // the odd half has expired
	vt.put("new", c, later.Add(time.Hour), later)
	if n := len(vt.m); n > maxVerified || n < maxVerified/2 {
		t.Errorf("%d tokens after overflowing %d; want the expired half dropped", n, maxVerified)
	}
	if _, ok := vt.get("new", later); !ok {
		t.Error("the token put on overflow is not remembered")
	}
	if _, ok := vt.get("1", later); !ok {
		t.Error("an unexpired token was dropped while expired ones were there")
	}
}
