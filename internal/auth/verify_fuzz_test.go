package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

// fuzzKeyPEM is a fixed P-256 key, so seeds signed with it stay valid from
// run to run. It signs nothing outside this test.
const fuzzKeyPEM = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg5FDLsruvBRzmI05k
Ld8UKyLb9yF/0J3F0rKJx1XoS9GhRANCAASeWupKvSk7GtzK1Iw7CvrgPNf1meIK
lWeJd7TI6lUQl2vDxkIQKqcPLkL6AAn9IW4ELrG4NgZu6ya1DHaEsLkt
-----END PRIVATE KEY-----`

func fuzzKey(t testing.TB) signer {
	t.Helper()
	block, _ := pem.Decode([]byte(fuzzKeyPEM))
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: "fuzz-key", priv: k.(*ecdsa.PrivateKey)}
}

// signedByKey checks a compact JWS against pub without the JWT library:
// the independent judge of what Verify accepted.
func signedByKey(token string, pub *ecdsa.PublicKey) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return false
	}
	head, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return false
	}
	var h struct{ Alg string }
	if json.Unmarshal(head, &h) != nil || h.Alg != "ES256" {
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return false
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	return ecdsa.Verify(pub, sum[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
}

// FuzzVerify: whatever the token, Verify never panics and never accepts one
// that the key did not sign, with a kid, and claims that pass every check.
func FuzzVerify(f *testing.F) {
	key := fuzzKey(f)
	keys, err := keyfunc.NewJWKSetJSON(jwks(f, key))
	if err != nil {
		f.Fatal(err)
	}
	v, err := New(context.Background(), Config{Issuer: testIssuer, Keys: keys, Log: quiet})
	if err != nil {
		f.Fatal(err)
	}
	far := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	claims := jwt.MapClaims{"iss": testIssuer, "sub": "u", "aud": "rideshare", "exp": far, "iat": 1_700_000_000, "jti": "j", "role": "rider"}
	good := key.sign(f, claims)
	parts := strings.Split(good, ".")
	for _, seed := range []string{
		good,
		key.sign(f, with(claims, "jti", nil)),
		key.sign(f, with(claims, "role", []any{"x", "admin"})),
		key.sign(f, with(claims, "aud", []any{"rideshare", 7})),
		key.sign(f, with(claims, "exp", "tomorrow")),
		key.sign(f, with(claims, "nbf", 1e300)),
		parts[0] + "." + parts[1] + ".",
		b64(map[string]string{"alg": "none"}) + "." + parts[1] + ".",
		b64(map[string]any{"alg": "ES256", "kid": 5}) + "." + parts[1] + "." + parts[2],
		b64(map[string]any{"alg": "HS256", "kid": "fuzz-key"}) + "." + parts[1] + "." + parts[2],
		"..", "a.b.c", "", strings.Repeat(".", 100),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(context.Background(), token)
		if err != nil {
			return
		}
		if !signedByKey(token, &key.priv.PublicKey) {
			t.Fatalf("accepted a token the key did not sign: %q as %v", token, c)
		}
		if c.GetUserId() == "" || c.GetRole() == 0 {
			t.Fatalf("accepted %q with caller %v", token, c)
		}
	})
}
