package identity

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"

	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestKeyringIsSharedAndDurable starts two keyrings on one database, as two
// replicas (or one restarted process) would: the first start generates the
// key, and every later one signs with that same key.
func TestKeyringIsSharedAndDurable(t *testing.T) {
	db := newTestDB(t)
	ctx := context.Background()
	first, second := &keyring{db: db}, &keyring{db: db}
	if err := first.load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := second.load(ctx); err != nil {
		t.Fatal(err)
	}
	k1, err := first.current()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := second.current()
	if err != nil {
		t.Fatal(err)
	}
	if k1.ID() != k2.ID() || !k1.priv.Equal(k2.priv) {
		t.Fatalf("replicas sign with different keys: %s and %s", k1.ID(), k2.ID())
	}
	if pub := second.published(); len(pub) != 1 || pub[0].ID() != k1.ID() || pub[0].Use() != "sig" {
		t.Fatalf("published keys = %v", pub)
	}
	if n := count(t, db, "signing_keys"); n != 1 {
		t.Fatalf("%d signing keys stored, want 1", n)
	}
}

// TestSigningKeyRotation moves a clock through three rotations, issuing a
// token every few minutes and reading the JWKS over HTTP as a verifier
// would. At every step every token that has not expired verifies; each new
// key is published before it signs; a retired key leaves the JWKS (and
// the database) only once the last token it signed has expired.
func TestSigningKeyRotation(t *testing.T) {
	const rotation = time.Hour
	// Ahead of the real time: iat comes from the real clock and must not
	// be after the test's now.
	clk := testenv.NewClock(time.Now().Add(time.Minute))
	ti := startIdentityWith(t, testConfig{opts: options{rotation: rotation, now: clk.Now}})
	ctx := context.Background()
	ahead := publishAhead(rotation)

	type issued struct {
		token, kid string
		exp        time.Time
	}
	var tokens []issued
	issue := func() issued {
		t.Helper()
		status, tok := ti.token(t, url.Values{"grant_type": {"client_credentials"}}, OperatorClientID, testOperatorSecret)
		if status != http.StatusOK {
			t.Fatalf("client_credentials: %d %+v", status, tok)
		}
		parsed, _, err := jwt.NewParser().ParseUnverified(tok.AccessToken, &jwt.RegisteredClaims{})
		if err != nil {
			t.Fatal(err)
		}
		exp, _ := parsed.Claims.GetExpirationTime()
		kid, _ := parsed.Header["kid"].(string)
		is := issued{token: tok.AccessToken, kid: kid, exp: exp.Time}
		tokens = append(tokens, is)
		return is
	}
	jwks := func() jose.JSONWebKeySet {
		t.Helper()
		res, err := ti.http.Get(ti.issuer + jwksPath)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var set jose.JSONWebKeySet
		if err := json.NewDecoder(res.Body).Decode(&set); err != nil {
			t.Fatal(err)
		}
		return set
	}
	published := func(set jose.JSONWebKeySet, kid string) bool { return len(set.Key(kid)) == 1 }
	// verify checks a token as the gateway does, at the test's time,
	// against the JWKS as it is published now.
	verify := func(set jose.JSONWebKeySet, token string) error {
		_, err := jwt.NewParser(jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer(ti.issuer), jwt.WithAudience(APIAudience),
			jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithTimeFunc(clk.Now)).
			Parse(token, func(tok *jwt.Token) (any, error) {
				kid, _ := tok.Header["kid"].(string)
				if keys := set.Key(kid); len(keys) == 1 {
					return keys[0].Key, nil
				}
				return nil, fmt.Errorf("kid %s is not in the JWKS", kid)
			})
		return err
	}
	check := func() jose.JSONWebKeySet {
		t.Helper()
		if err := ti.svc.keys.check(ctx); err != nil {
			t.Fatal(err)
		}
		set := jwks()
		for _, tok := range tokens {
			if clk.Now().Before(tok.exp) {
				if err := verify(set, tok.token); err != nil {
					t.Fatalf("at %v a token signed by %s, live until %v, no longer verifies: %v", clk.Now(), tok.kid, tok.exp, err)
				}
			}
		}
		return set
	}

	first := issue()
	check()

	// Just before the next key is due, nothing has changed.
	clk.Advance(rotation - ahead - time.Second)
	if set := check(); len(set.Keys) != 1 {
		t.Fatalf("%d keys published before any rotation was due", len(set.Keys))
	}
	// The next key is published ahead of signing: tokens are still signed
	// by the first.
	clk.Advance(time.Second)
	set := check()
	if len(set.Keys) != 2 {
		t.Fatalf("%d keys published once the rotation is due, want 2", len(set.Keys))
	}
	if tok := issue(); tok.kid != first.kid {
		t.Fatalf("the new key signs before its publish-ahead time has passed")
	}
	var second string
	for _, k := range set.Keys {
		if k.KeyID != first.kid {
			second = k.KeyID
		}
	}
	// Once it activates, new tokens carry the new kid; the old key stays
	// published for the tokens it signed.
	clk.Advance(ahead - time.Second)
	lastOld := issue()
	clk.Advance(time.Second)
	check()
	if tok := issue(); tok.kid != second {
		t.Fatalf("after the rotation tokens carry kid %s, want the new key %s", tok.kid, second)
	}
	if lastOld.kid != first.kid {
		t.Fatalf("token issued a second before the switch carries %s", lastOld.kid)
	}
	// The last token the old key signed verifies until it expires...
	clk.Advance(accessTokenLifetime - 2*time.Second)
	if set := check(); !published(set, first.kid) || verify(set, lastOld.token) != nil {
		t.Fatalf("the old key left the JWKS while its last token was alive")
	}
	// ...and once it has, with the leeway, the old key is gone, from the
	// JWKS and from the database.
	clk.Advance(keyLeeway + 3*time.Second)
	if set := check(); published(set, first.kid) || !published(set, second) {
		t.Fatalf("after the retention the JWKS holds %v", set.Keys)
	}
	var n int
	if err := ti.db.Reader().QueryRow(`SELECT count(*) FROM signing_keys WHERE kid = $1`, first.kid).Scan(&n); err != nil || n != 0 {
		t.Fatalf("retired key still stored (%d, %v)", n, err)
	}

	// Two more rotations in ten-minute steps: the invariant in check
	// holds at every step, and the JWKS never grows past the keys that
	// overlap.
	kids := map[string]bool{}
	for range 2 * int(rotation/(10*time.Minute)) {
		clk.Advance(10 * time.Minute)
		set := check()
		if len(set.Keys) > 2 {
			t.Fatalf("%d keys published at once", len(set.Keys))
		}
		kids[issue().kid] = true
	}
	if len(kids) < 2 {
		t.Fatalf("tokens over two rotation periods were signed by %d keys", len(kids))
	}
}

// TestKeyRotationAcrossReplicas runs two keyrings on one database, as two
// replicas: both find the rotation due at once, exactly one new key is
// stored, and both switch to it at the same moment.
func TestKeyRotationAcrossReplicas(t *testing.T) {
	db := newTestDB(t)
	ctx := context.Background()
	clk := testenv.NewClock(time.Now())
	const rotation = 2 * time.Hour
	a := &keyring{db: db, now: clk.Now, rotation: rotation}
	b := &keyring{db: db, now: clk.Now, rotation: rotation}
	for _, k := range []*keyring{a, b} {
		if err := k.load(ctx); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(rotation - publishAhead(rotation))
	var wg sync.WaitGroup
	for _, k := range []*keyring{a, b} {
		wg.Go(func() {
			if err := k.check(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, k := range []*keyring{a, b} {
		if err := k.check(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(t, db, "signing_keys"); n != 2 {
		t.Fatalf("%d keys stored after both replicas rotated, want 2", n)
	}
	before, _ := a.current()
	clk.Advance(publishAhead(rotation))
	ka, _ := a.current()
	kb, _ := b.current()
	if ka.ID() == before.ID() || ka.ID() != kb.ID() {
		t.Fatalf("after activation replicas sign with %s and %s (before: %s)", ka.ID(), kb.ID(), before.ID())
	}
}

func TestKeyRotationSetting(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"24h", 24 * time.Hour, true},
		{"90m", 90 * time.Minute, true},
		{"1m", time.Minute, true},
		{"30s", 0, false},
		{"-1h", 0, false},
		{"daily", 0, false},
	} {
		got, err := keyRotationFrom(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("keyRotationFrom(%q) = %v, %v", tc.in, got, err)
		}
	}
}
