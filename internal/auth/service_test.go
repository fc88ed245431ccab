package auth

import (
	"context"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// serviceClaims are what identity puts in the token of service "rides".
func serviceClaims(now time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"iss": testIssuer, "sub": "client:service-rides", "aud": []string{ServiceAudience, "service-rides"},
		"exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix(), "nbf": now.Unix(),
		"jti": "token-2", "role": ServiceRole, "client_id": "service-rides",
	}
}

// TestVerifyService proves that a service token and a user's token never
// pass for one another, and that a service token gets every check a user's
// token gets.
func TestVerifyService(t *testing.T) {
	now := time.Now()
	key := newSigner(t, "key-1")
	forger := newSigner(t, key.kid)
	v := staticVerifier(t, Config{}, key)
	good := serviceClaims(now)

	cases := []struct {
		name  string
		token string
		ok    bool
	}{
		{"valid", key.sign(t, good), true},
		{"a rider's access token", key.sign(t, accessClaims(now)), false},
		{"the operator's token (admin, not a service)", key.sign(t, with(accessClaims(now),
			"sub", "client:rideshare-operator", "role", "admin", "client_id", "rideshare-operator")), false},
		{"user audience", key.sign(t, with(good, "aud", []string{Audience, "service-rides"})), false},
		{"no audience", key.sign(t, with(good, "aud", nil)), false},
		{"a user's role", key.sign(t, with(good, "role", "admin")), false},
		{"no role", key.sign(t, with(good, "role", nil)), false},
		{"role as a list", key.sign(t, with(good, "role", []string{ServiceRole})), false},
		{"subject is an account", key.sign(t, with(good, "sub", "user-1")), false},
		{"subject is another client", key.sign(t, with(good, "sub", "client:rideshare-operator")), false},
		{"subject names no service", key.sign(t, with(good, "sub", "client:service-")), false},
		{"no jti", key.sign(t, with(good, "jti", nil)), false},
		{"expired", key.sign(t, with(good, "exp", now.Add(-time.Minute).Unix())), false},
		{"wrong issuer", key.sign(t, with(good, "iss", "https://evil.test")), false},
		{"forged: another key under the same kid", forger.sign(t, good), false},
		{"unknown kid", newSigner(t, "key-3").sign(t, good), false},
		{"garbage", "not-a-jwt", false},
	}
	for _, c := range cases {
		name, exp, err := v.VerifyService(context.Background(), c.token)
		switch {
		case c.ok && (err != nil || name != "rides" || exp.Unix() != good["exp"]):
			t.Errorf("%s: %q until %v, %v; want rides until %v", c.name, name, exp, err, time.Unix(good["exp"].(int64), 0))
		case !c.ok && err == nil:
			t.Errorf("%s: accepted as service %q", c.name, name)
		case !c.ok:
			if e := apperr.As(err); e.Kind != apperr.Unauthenticated || e.Code != "invalid_token" {
				t.Errorf("%s: %s %q, want unauthenticated invalid_token", c.name, e.Kind, e.Code)
			}
		}
	}
	// The other way round: the gateway refuses a valid service token.
	if c, err := v.Verify(context.Background(), key.sign(t, good)); err == nil {
		t.Errorf("a service token passed as a user's token: %v", c)
	}
}

func TestServiceSecret(t *testing.T) {
	a := ServiceSecret("master-1", "payments")
	if a != ServiceSecret("master-1", "payments") {
		t.Fatal("the derivation is not deterministic")
	}
	for _, other := range []string{ServiceSecret("master-1", "rides"), ServiceSecret("master-2", "payments")} {
		if other == a {
			t.Errorf("two services or two masters share the secret %q", a)
		}
	}
	if len(a) < 43 {
		t.Errorf("secret %q is shorter than 256 bits", a)
	}
}

func TestServiceOfClient(t *testing.T) {
	for id, want := range map[string]string{
		ServiceClientID("payments"): "payments",
		"service-":                  "",
		"rideshare-operator":        "",
		"rideshare-cli":             "",
	} {
		got, ok := ServiceOfClient(id)
		if got != want || ok != (want != "") {
			t.Errorf("ServiceOfClient(%q) = %q, %v; want %q", id, got, ok, want)
		}
	}
}
