// Package auth verifies the platform's access tokens and names its roles.
// The gateway verifies every public request with it; services use it for
// their admin endpoints. Tokens are checked locally against the issuer's
// published keys (JWKS), so no request costs a call to identity.
package auth

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// Audience is the API audience every access token must name.
const Audience = "rideshare"

// allowedAlgs are the signature algorithms a token may use: asymmetric only,
// so that nobody holding the public key can mint a token (the HS256
// key-confusion attack), and never "none".
var allowedAlgs = []string{"ES256", "ES384", "RS256", "PS256", "EdDSA"}

// leeway absorbs clock skew between the issuer and the gateway, for expiry,
// not-before and issued-at alike.
const leeway = 30 * time.Second

// maxTokenBytes bounds what is parsed at all: the platform's tokens are
// under 1 KiB, and a Keycloak token with many roles stays under 4 KiB.
const maxTokenBytes = 8 << 10

// Verifier validates access tokens against the issuer's JWKS.
type Verifier struct {
	cfg    Config
	parser *jwt.Parser
	// services parses service tokens (service.go): the same checks,
	// but the internal audience.
	services *jwt.Parser
	log      *slog.Logger
	// verified are the tokens Verify accepted recently (verified.go).
	verified verifiedTokens

	mu      sync.RWMutex
	keys    keyfunc.Keyfunc // nil until the issuer's keys are located
	keysErr error           // why keys is still nil
}

var errNoKID = errors.New("auth: the token names no key (kid)")

// NewVerifier trusts tokens from the built-in issuer, signed with a key from
// jwksURL, with the audience "rideshare" and the role in the "role" claim.
// The keys are fetched in the background and again when an unknown key id
// shows up, until ctx ends.
func NewVerifier(ctx context.Context, client *http.Client, jwksURL, issuer string, log *slog.Logger) (*Verifier, error) {
	return New(ctx, Config{Issuer: issuer, JWKSURL: jwksURL, Client: client, Log: log})
}

// Caller authenticates r's bearer token and returns who is calling.
func (a *Verifier) Caller(r *http.Request) (*authv1.Caller, error) {
	token, ok := BearerToken(r.Header)
	if !ok {
		return nil, apperr.E(apperr.Unauthenticated, "", "a bearer access token is required")
	}
	return a.Verify(r.Context(), token)
}

// Verify checks token and returns who it speaks for. Every refusal is the
// same Unauthenticated invalid_token: the caller learns nothing about which
// check failed (the log says, at info level). A token that passed is taken
// on trust for up to a minute (verified.go), so the Caller returned may be
// shared between requests: callers must not modify it.
func (a *Verifier) Verify(ctx context.Context, token string) (*authv1.Caller, error) {
	now := a.now()
	if c, ok := a.verified.get(token, now); ok {
		return c, nil
	}
	c, exp, err := a.VerifyUntil(ctx, token)
	if err != nil {
		return nil, err
	}
	a.verified.put(token, c, exp, now)
	return c, nil
}

// now is the clock tokens are checked against.
func (a *Verifier) now() time.Time {
	if a.cfg.Now != nil {
		return a.cfg.Now()
	}
	return time.Now()
}

// VerifyUntil is Verify, and also returns when the token expires, for a
// caller that remembers the tokens it has checked.
func (a *Verifier) VerifyUntil(ctx context.Context, token string) (*authv1.Caller, time.Time, error) {
	var none time.Time
	keys, err := a.currentKeys()
	if err != nil {
		return nil, none, apperr.Wrap(err, apperr.Unavailable, "", "the token issuer's keys are not available yet")
	}
	if len(token) > maxTokenBytes {
		return nil, none, a.refuse(ctx, "too large", nil)
	}
	claims := jwt.MapClaims{}
	if _, err := a.parser.ParseWithClaims(token, claims, requireKID(keys.KeyfuncCtx(ctx))); err != nil {
		return nil, none, a.refuse(ctx, tokenFailure(err), err)
	}
	sub, _ := claims["sub"].(string)
	if sub == "" {
		return nil, none, a.refuse(ctx, "no subject", nil)
	}
	// An ID token is signed by the same keys and, from the built-in issuer,
	// names the same audience; it has no token id. Requiring jti is what
	// keeps it from passing as an access token.
	if jti, _ := claims["jti"].(string); jti == "" && !a.cfg.AllowMissingJTI {
		return nil, none, a.refuse(ctx, "no token id (jti)", nil)
	}
	role := roleFromClaims(claims, a.cfg.RoleClaim)
	if role == authv1.Role_ROLE_UNSPECIFIED {
		return nil, none, a.refuse(ctx, "no known role", nil)
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return nil, none, a.refuse(ctx, "no expiry", err) // the parser required one
	}
	return &authv1.Caller{UserId: sub, Role: role}, exp.Time, nil
}

func (a *Verifier) refuse(ctx context.Context, reason string, err error) error {
	a.log.InfoContext(ctx, "token refused", "reason", reason)
	if err == nil {
		err = errors.New("auth: " + reason)
	}
	return apperr.Wrap(err, apperr.Unauthenticated, "invalid_token", "the access token is invalid or expired")
}

// requireKID refuses a token without a key id before the key lookup: given
// no kid, keyfunc would try every published key, which turns a retired or
// foreign key's signature into a guessing game the gateway need not play.
func requireKID(next jwt.Keyfunc) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid == "" {
			return nil, errNoKID
		}
		return next(t)
	}
}

// Ready reports whether the issuer's keys have been located (an external
// issuer's discovery document fetched); the gateway is not ready before.
func (a *Verifier) Ready() error {
	_, err := a.currentKeys()
	return err
}

func (a *Verifier) currentKeys() (keyfunc.Keyfunc, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.keys == nil {
		if a.keysErr != nil {
			return nil, a.keysErr
		}
		return nil, errors.New("auth: the issuer's keys are being located")
	}
	return a.keys, nil
}

// tokenFailure names why a token failed, for the log only: the caller is
// told nothing more than "invalid".
func tokenFailure(err error) string {
	for _, e := range []struct {
		err  error
		name string
	}{
		{jwt.ErrTokenExpired, "expired"}, {jwt.ErrTokenNotValidYet, "not yet valid"},
		{jwt.ErrTokenUsedBeforeIssued, "issued in the future"},
		{jwt.ErrTokenInvalidIssuer, "issuer"}, {jwt.ErrTokenInvalidAudience, "audience"},
		{jwt.ErrTokenSignatureInvalid, "signature"}, {jwt.ErrTokenMalformed, "malformed"},
		{errNoKID, "no kid"}, {keyfunc.ErrKeyfunc, "key"}, {jwt.ErrTokenUnverifiable, "unverifiable"},
		{jwt.ErrTokenRequiredClaimMissing, "required claim missing"},
	} {
		if errors.Is(err, e.err) {
			return e.name
		}
	}
	return "other"
}
