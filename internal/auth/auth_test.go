package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

const testIssuer = "https://rideshare.test"

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// signer is an issuer's key pair, as identity (or a fake OIDC provider)
// holds it.
type signer struct {
	kid  string
	priv *ecdsa.PrivateKey
}

func newSigner(t testing.TB, kid string) signer {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: kid, priv: priv}
}

// jwk is the public key as a JWKS publishes it.
func (s signer) jwk() map[string]string {
	pt, _ := s.priv.PublicKey.ECDH()
	b := pt.Bytes() // 0x04 || X || Y
	enc := base64.RawURLEncoding.EncodeToString
	return map[string]string{"kty": "EC", "crv": "P-256", "x": enc(b[1:33]), "y": enc(b[33:]), "kid": s.kid, "alg": "ES256", "use": "sig"}
}

func jwks(t testing.TB, signers ...signer) []byte {
	t.Helper()
	var keys []map[string]string
	for _, s := range signers {
		keys = append(keys, s.jwk())
	}
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (s signer) sign(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = s.kid
	out, err := tok.SignedString(s.priv)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// accessClaims are what identity puts in an access token.
func accessClaims(now time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"iss": testIssuer, "sub": "user-1", "aud": []string{"rideshare", "rideshare-cli"},
		"exp": now.Add(15 * time.Minute).Unix(), "iat": now.Unix(), "nbf": now.Unix(),
		"jti": "token-1", "role": "rider", "client_id": "rideshare-cli",
	}
}

func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

func staticVerifier(t testing.TB, cfg Config, signers ...signer) *Verifier {
	t.Helper()
	keys, err := keyfunc.NewJWKSetJSON(jwks(t, signers...))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Keys = keys
	if cfg.Issuer == "" {
		cfg.Issuer = testIssuer
	}
	cfg.Log = quiet
	v, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// TestVerify proves each check on its own: every refused token differs from
// the accepted one in exactly one respect, and is signed by the real key
// unless the signature is what is under test.
func TestVerify(t *testing.T) {
	now := time.Now()
	key := newSigner(t, "key-1")
	other := newSigner(t, "key-2")
	v := staticVerifier(t, Config{}, key)
	good := accessClaims(now)
	goodToken := key.sign(t, good)
	parts := strings.Split(goodToken, ".")
	pubDER, _ := x509.MarshalPKIXPublicKey(&key.priv.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, good)
	hs.Header["kid"] = key.kid
	hsToken, _ := hs.SignedString(pubPEM)
	noKID := jwt.NewWithClaims(jwt.SigningMethodES256, good)
	noKIDToken, _ := noKID.SignedString(key.priv)
	sigBytes, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sigBytes[7] ^= 1
	flipped := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sigBytes)
	tampered := parts[0] + "." + b64(with(good, "role", "admin")) + "." + parts[2]

	cases := []struct {
		name  string
		token string
		ok    bool
	}{
		{"valid", goodToken, true},
		{"expired within the leeway", key.sign(t, with(good, "exp", now.Add(-10*time.Second).Unix())), true},
		{"expired", key.sign(t, with(good, "exp", now.Add(-time.Minute).Unix())), false},
		{"no expiry", key.sign(t, with(good, "exp", nil)), false},
		{"not before, within the leeway", key.sign(t, with(good, "nbf", now.Add(10*time.Second).Unix())), true},
		{"not before, in the future", key.sign(t, with(good, "nbf", now.Add(time.Hour).Unix())), false},
		{"issued in the future", key.sign(t, with(good, "iat", now.Add(time.Hour).Unix())), false},
		{"wrong issuer", key.sign(t, with(good, "iss", "https://evil.test")), false},
		{"no issuer", key.sign(t, with(good, "iss", nil)), false},
		{"wrong audience", key.sign(t, with(good, "aud", []string{"rideshare-cli"})), false},
		{"audience as a string", key.sign(t, with(good, "aud", "rideshare")), true},
		{"no audience", key.sign(t, with(good, "aud", nil)), false},
		{"no jti", key.sign(t, with(good, "jti", nil)), false},
		{"empty jti", key.sign(t, with(good, "jti", "")), false},
		{"no role", key.sign(t, with(good, "role", nil)), false},
		{"unknown role", key.sign(t, with(good, "role", "superuser")), false},
		{"service role", key.sign(t, with(good, "role", "service")), false},
		{"no subject", key.sign(t, with(good, "sub", nil)), false},
		{"an ID token", key.sign(t, jwt.MapClaims{"iss": testIssuer, "sub": "user-1", "aud": []string{"rideshare-cli", "rideshare"},
			"exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "auth_time": now.Unix(), "amr": []string{"pwd"}, "at_hash": "x"}), false},
		{"an ID token carrying a role", key.sign(t, jwt.MapClaims{"iss": testIssuer, "sub": "user-1", "aud": []string{"rideshare"},
			"exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "role": "rider"}), false},
		{"signed by another key under the same kid", func() string { s := other; s.kid = key.kid; return s.sign(t, good) }(), false},
		{"unknown kid", other.sign(t, good), false},
		{"no kid", noKIDToken, false},
		{"alg none", b64(map[string]string{"alg": "none", "typ": "JWT"}) + "." + parts[1] + ".", false},
		{"alg none with kid", b64(map[string]string{"alg": "none", "kid": key.kid}) + "." + parts[1] + ".", false},
		{"HS256 keyed with the public key", hsToken, false},
		{"tampered payload", tampered, false},
		{"flipped signature bit", flipped, false},
		{"signature cut", parts[0] + "." + parts[1] + "." + parts[2][:20], false},
		{"no signature", parts[0] + "." + parts[1] + ".", false},
		{"two parts", parts[0] + "." + parts[1], false},
		{"garbage", "not-a-jwt", false},
		{"padded base64", parts[0] + "." + parts[1] + "." + parts[2] + "==", false},
		{"huge", parts[0] + "." + parts[1] + strings.Repeat("A", 9000) + "." + parts[2], false},
	}
	for _, c := range cases {
		caller, err := v.Verify(context.Background(), c.token)
		if c.ok {
			if err != nil {
				t.Errorf("%s: refused: %v", c.name, err)
			} else if caller.GetUserId() != "user-1" || caller.GetRole() != authv1.Role_ROLE_RIDER {
				t.Errorf("%s: caller %v", c.name, caller)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: accepted as %v", c.name, caller)
			continue
		}
		if e := apperr.As(err); e.Kind != apperr.Unauthenticated || e.Code != "invalid_token" {
			t.Errorf("%s: %s %q, want unauthenticated invalid_token", c.name, e.Kind, e.Code)
		}
	}
}

func TestCaller(t *testing.T) {
	key := newSigner(t, "k")
	v := staticVerifier(t, Config{}, key)
	tok := key.sign(t, accessClaims(time.Now()))
	for _, c := range []struct {
		header string
		ok     bool
	}{
		{"Bearer " + tok, true},
		{"bearer " + tok, true},
		{"Basic " + tok, false},
		{"Bearer", false},
		{"Bearer ", false},
		{tok, false},
		{"", false},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		if c.header != "" {
			r.Header.Set("Authorization", c.header)
		}
		_, err := v.Caller(r)
		if (err == nil) != c.ok {
			t.Errorf("Authorization %.20q: err %v, want ok=%v", c.header, err, c.ok)
		}
		if err != nil && apperr.KindOf(err) != apperr.Unauthenticated {
			t.Errorf("Authorization %.20q: %v", c.header, err)
		}
	}
}

func TestRoleClaim(t *testing.T) {
	cases := []struct {
		path   string
		claims jwt.MapClaims
		want   authv1.Role
	}{
		{"role", jwt.MapClaims{"role": "driver"}, authv1.Role_ROLE_DRIVER},
		{"role", jwt.MapClaims{"role": []any{"offline_access", "admin"}}, authv1.Role_ROLE_ADMIN},
		{"role", jwt.MapClaims{"role": 7}, authv1.Role_ROLE_UNSPECIFIED},
		{"realm_access.roles", jwt.MapClaims{"realm_access": map[string]any{"roles": []any{"default-roles-rideshare", "offline_access", "rider", "admin"}}}, authv1.Role_ROLE_RIDER},
		{"realm_access.roles", jwt.MapClaims{"realm_access": map[string]any{"roles": []any{"uma_authorization"}}}, authv1.Role_ROLE_UNSPECIFIED},
		{"realm_access.roles", jwt.MapClaims{"realm_access": "rider"}, authv1.Role_ROLE_UNSPECIFIED},
		{"realm_access.roles", jwt.MapClaims{}, authv1.Role_ROLE_UNSPECIFIED},
		{"resource_access.rideshare.roles", jwt.MapClaims{"resource_access": map[string]any{"rideshare": map[string]any{"roles": []any{"driver"}}}}, authv1.Role_ROLE_DRIVER},
		{"https://rideshare.dev/role", jwt.MapClaims{"https://rideshare.dev/role": "rider"}, authv1.Role_ROLE_RIDER},
		{"https://rideshare.dev/roles", jwt.MapClaims{"https://rideshare.dev/roles": []any{1, "driver"}}, authv1.Role_ROLE_DRIVER},
	}
	for _, c := range cases {
		if got := roleFromClaims(c.claims, c.path); got != c.want {
			t.Errorf("%s in %v: %v, want %v", c.path, c.claims, got, c.want)
		}
	}
}

// fakeIssuer is a standard OpenID Connect provider in the test process:
// discovery and JWKS over HTTP, its own signing key, and Keycloak's way of
// carrying roles.
type fakeIssuer struct {
	srv        *httptest.Server
	key        signer
	down       atomic.Bool
	keysDown   atomic.Bool // the key set fails while discovery works
	jwksFetch  atomic.Int32
	issuerSays string // the issuer the discovery document names; default its URL
}

func newFakeIssuer(t *testing.T) *fakeIssuer {
	f := &fakeIssuer{key: newSigner(t, "kc-1")}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /realms/rideshare/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		if f.down.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		iss := f.issuerSays
		if iss == "" {
			iss = f.issuer()
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer": iss, "jwks_uri": f.issuer() + "/protocol/openid-connect/certs",
			"id_token_signing_alg_values_supported": []string{"ES256"},
		})
	})
	mux.HandleFunc("GET /realms/rideshare/protocol/openid-connect/certs", func(w http.ResponseWriter, r *http.Request) {
		f.jwksFetch.Add(1)
		if f.keysDown.Load() {
			http.Error(w, "restarting", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write(jwks(t, f.key))
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeIssuer) issuer() string { return f.srv.URL + "/realms/rideshare" }

// token is what Keycloak issues for a user with realm roles.
func (f *fakeIssuer) token(t *testing.T, aud string, roles ...any) string {
	now := time.Now()
	return f.key.sign(t, jwt.MapClaims{
		"iss": f.issuer(), "sub": "kc-user", "aud": aud, "typ": "Bearer", "azp": "rideshare-web",
		"exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix(), "jti": "kc-jti",
		"realm_access": map[string]any{"roles": roles},
	})
}

func TestExternalIssuer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newFakeIssuer(t)
	v, err := New(ctx, Config{Issuer: f.issuer(), Audience: "rideshare-api", RoleClaim: "realm_access.roles", Client: f.srv.Client(), Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Ready(); err != nil {
		t.Fatalf("not ready after discovery: %v", err)
	}
	var caller *authv1.Caller
	testenv.Eventually(t, 5*time.Second, func() bool {
		caller, err = v.Verify(ctx, f.token(t, "rideshare-api", "offline_access", "driver"))
		return err == nil
	}, "a Keycloak-shaped token was refused: %v", &err)
	if caller.GetUserId() != "kc-user" || caller.GetRole() != authv1.Role_ROLE_DRIVER {
		t.Fatalf("caller %v", caller)
	}
	for name, tok := range map[string]string{
		"no known role":             f.token(t, "rideshare-api", "offline_access"),
		"another audience":          f.token(t, "account", "driver"),
		"the built-in audience":     f.token(t, "rideshare", "driver"),
		"signed by a stranger":      newSigner(t, "kc-1").sign(t, jwt.MapClaims{"iss": f.issuer(), "sub": "x", "aud": "rideshare-api", "exp": time.Now().Add(time.Minute).Unix(), "jti": "j", "realm_access": map[string]any{"roles": []any{"admin"}}}),
		"the built-in issuer's":     newSigner(t, "kc-1").sign(t, with(accessClaims(time.Now()), "aud", "rideshare-api")),
		"issued by the test issuer": f.key.sign(t, with(accessClaims(time.Now()), "aud", "rideshare-api")),
	} {
		if c, err := v.Verify(ctx, tok); err == nil {
			t.Errorf("%s: accepted as %v", name, c)
		}
	}
}

func TestExternalIssuerWithoutJTI(t *testing.T) {
	key := newSigner(t, "auth0")
	now := time.Now()
	claims := jwt.MapClaims{"iss": testIssuer, "sub": "auth0|1", "aud": []string{"rideshare"}, "exp": now.Add(time.Minute).Unix(), "iat": now.Unix(), "https://rideshare.dev/role": "admin"}
	strict := staticVerifier(t, Config{RoleClaim: "https://rideshare.dev/role"}, key)
	if _, err := strict.Verify(context.Background(), key.sign(t, claims)); err == nil {
		t.Fatal("a token without jti passed although jti is required")
	}
	lax := staticVerifier(t, Config{RoleClaim: "https://rideshare.dev/role", AllowMissingJTI: true}, key)
	c, err := lax.Verify(context.Background(), key.sign(t, claims))
	if err != nil || c.GetRole() != authv1.Role_ROLE_ADMIN {
		t.Fatalf("Auth0-shaped token: %v %v", c, err)
	}
}

// TestExternalIssuerLate: the provider is down when the gateway starts; the
// gateway starts anyway, is not ready and answers Unavailable (not "bad
// token"), then finds the provider when it comes up.
func TestExternalIssuerLate(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newFakeIssuer(t)
	f.down.Store(true)
	v, err := New(ctx, Config{Issuer: f.issuer(), Audience: "rideshare-api", RoleClaim: "realm_access.roles", Client: f.srv.Client(), Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if v.Ready() == nil {
		t.Fatal("ready before the issuer's keys were found")
	}
	tok := f.token(t, "rideshare-api", "rider")
	if _, err := v.Verify(ctx, tok); apperr.KindOf(err) != apperr.Unavailable {
		t.Fatalf("verify before discovery: %v, want unavailable", err)
	}
	f.down.Store(false)
	testenv.Eventually(t, 10*time.Second, func() bool {
		_, err := v.Verify(ctx, tok)
		return v.Ready() == nil && err == nil
	}, "the verifier never found the issuer once it was up")
}

// TestKeysLate: the key set cannot be fetched when a process starts (the
// issuer is restarting), with the key set's URL configured directly as the
// platform's services have it. Valid tokens must meet Unavailable, which
// callers retry, never "invalid token", and pass within seconds of the
// keys coming back, not at the next periodic refresh minutes later.
func TestKeysLate(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newFakeIssuer(t)
	f.keysDown.Store(true)
	v, err := New(ctx, Config{Issuer: f.issuer(), JWKSURL: f.issuer() + "/protocol/openid-connect/certs",
		Audience: "rideshare-api", RoleClaim: "realm_access.roles", Client: f.srv.Client(), Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	tok := f.token(t, "rideshare-api", "rider")
	if v.Ready() == nil {
		t.Fatal("ready without keys")
	}
	if _, err := v.Verify(ctx, tok); apperr.KindOf(err) != apperr.Unavailable {
		t.Fatalf("verify without keys: %v, want unavailable", err)
	}
	f.keysDown.Store(false)
	testenv.Eventually(t, 10*time.Second, func() bool {
		_, err = v.Verify(ctx, tok)
		return v.Ready() == nil && err == nil
	}, "a valid token still refused once the keys were back: %v", &err)
}

func TestDiscoveryRefusals(t *testing.T) {
	f := newFakeIssuer(t)
	f.issuerSays = "https://impostor.test/realms/rideshare"
	if _, err := Discover(context.Background(), f.srv.Client(), f.issuer()); err == nil || !strings.Contains(err.Error(), "impostor") {
		t.Errorf("a discovery document naming another issuer: %v", err)
	}
	for _, iss := range []string{"http://idp.example.com/realms/x", "ftp://127.0.0.1/", "not a url", "/relative"} {
		if _, err := Discover(context.Background(), http.DefaultClient, iss); err == nil {
			t.Errorf("issuer %q accepted", iss)
		}
	}
}

// TestUnknownKIDRefetchIsBounded: tokens naming keys nobody published make
// the verifier fetch the JWKS again at most once per period, not once per
// token.
func TestUnknownKIDRefetchIsBounded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newFakeIssuer(t)
	v, err := New(ctx, Config{Issuer: f.issuer(), Audience: "rideshare-api", RoleClaim: "realm_access.roles", Client: f.srv.Client(), Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		_, err := v.Verify(ctx, f.token(t, "rideshare-api", "rider"))
		return err == nil
	}, "keys never loaded")
	before := f.jwksFetch.Load()
	for i := range 50 {
		s := newSigner(t, fmt.Sprintf("forged-%d", i))
		tok := s.sign(t, jwt.MapClaims{"iss": f.issuer(), "sub": "x", "aud": "rideshare-api", "exp": time.Now().Add(time.Minute).Unix(), "jti": "j", "realm_access": map[string]any{"roles": []any{"admin"}}})
		if _, err := v.Verify(ctx, tok); err == nil {
			t.Fatal("a token under an unknown kid passed")
		}
	}
	if n := f.jwksFetch.Load() - before; n > 1 {
		t.Errorf("50 unknown kids caused %d JWKS fetches, want at most 1", n)
	}
}
