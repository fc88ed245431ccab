// Package auth verifies the platform's access tokens and names its roles.
// The gateway verifies every public request with it; services use it for
// their admin endpoints. Tokens are checked locally against the issuer's
// published keys (JWKS), so no request costs a call to identity.
package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
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

// leeway absorbs clock skew between the issuer and the gateway.
const leeway = 30 * time.Second

// Verifier validates access tokens against the issuer's JWKS.
type Verifier struct {
	keys   keyfunc.Keyfunc
	parser *jwt.Parser
	log    *slog.Logger
}

type claims struct {
	jwt.RegisteredClaims
	Role string `json:"role"`
}

// NewVerifier trusts tokens from issuer signed with a key from jwksURL. The
// keys are fetched in the background and again when an unknown key id shows
// up, until ctx ends.
func NewVerifier(ctx context.Context, client *http.Client, jwksURL, issuer string, log *slog.Logger) (*Verifier, error) {
	noErr := true
	keys, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{jwksURL}, keyfunc.Override{
		Client:      client,
		HTTPTimeout: 5 * time.Second,
		// identity may still be starting: fetch in the background rather
		// than refusing to start, and again whenever an unknown kid shows up.
		NoErrorReturnFirstHTTPReq: &noErr,
		RefreshInterval:           5 * time.Minute,
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(_ context.Context, err error) { log.Warn("jwks refresh failed", "url", u, "err", err) }
		},
	})
	if err != nil {
		return nil, fmt.Errorf("auth: jwks %s: %w", jwksURL, err)
	}
	return &Verifier{
		keys: keys,
		log:  log,
		parser: jwt.NewParser(
			jwt.WithValidMethods(allowedAlgs),
			jwt.WithIssuer(issuer),
			jwt.WithAudience(Audience),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(leeway),
		),
	}, nil
}

// Caller authenticates r's bearer token and returns who is calling.
func (a *Verifier) Caller(r *http.Request) (*authv1.Caller, error) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if h == "" || !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return nil, apperr.E(apperr.Unauthenticated, "", "a bearer access token is required")
	}
	return a.Verify(r.Context(), token)
}

// Verify checks token and returns who it speaks for.
func (a *Verifier) Verify(ctx context.Context, token string) (*authv1.Caller, error) {
	var c claims
	if _, err := a.parser.ParseWithClaims(token, &c, a.keys.KeyfuncCtx(ctx)); err != nil {
		a.log.InfoContext(ctx, "token refused", "reason", tokenFailure(err))
		return nil, apperr.Wrap(err, apperr.Unauthenticated, "invalid_token", "the access token is invalid or expired")
	}
	role := RoleOf(c.Role)
	if c.Subject == "" || role == authv1.Role_ROLE_UNSPECIFIED {
		return nil, apperr.E(apperr.Unauthenticated, "invalid_token", "the access token has no subject or role")
	}
	return &authv1.Caller{UserId: c.Subject, Role: role}, nil
}

// tokenFailure names why a token failed, for the log only: the caller is
// told nothing more than "invalid".
func tokenFailure(err error) string {
	for _, e := range []struct {
		err  error
		name string
	}{
		{jwt.ErrTokenExpired, "expired"}, {jwt.ErrTokenNotValidYet, "not yet valid"},
		{jwt.ErrTokenInvalidIssuer, "issuer"}, {jwt.ErrTokenInvalidAudience, "audience"},
		{jwt.ErrTokenSignatureInvalid, "signature"}, {jwt.ErrTokenMalformed, "malformed"},
		{jwt.ErrTokenUnverifiable, "unverifiable"}, {keyfunc.ErrKeyfunc, "key"},
	} {
		if errors.Is(err, e.err) {
			return e.name
		}
	}
	return "other"
}

// RoleOf reads a role's public spelling; unknown spellings are
// ROLE_UNSPECIFIED, which no route admits.
func RoleOf(s string) authv1.Role {
	switch s {
	case "rider":
		return authv1.Role_ROLE_RIDER
	case "driver":
		return authv1.Role_ROLE_DRIVER
	case "admin":
		return authv1.Role_ROLE_ADMIN
	}
	return authv1.Role_ROLE_UNSPECIFIED
}

// RoleName is the public spelling of a role ("rider"), as tokens and the
// API carry it.
func RoleName(r authv1.Role) string {
	switch r {
	case authv1.Role_ROLE_RIDER:
		return "rider"
	case authv1.Role_ROLE_DRIVER:
		return "driver"
	case authv1.Role_ROLE_ADMIN:
		return "admin"
	}
	return ""
}
