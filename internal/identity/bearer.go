package identity

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/auth"
)

// bearerLeeway matches the gateway's allowance for clock skew.
const bearerLeeway = 30 * time.Second

// bearerVerifier authenticates an access token presented to identity
// itself, for the RPCs that act on a caller's say-so (SetRole). It checks
// what the gateway checks, against identity's own keys rather than the
// published JWKS: signature by a key identity publishes, ES256 only,
// issuer, the "rideshare" audience, expiry; and, since identity holds the
// list, that the token was not revoked.
type bearerVerifier struct {
	keys   *keyring
	tokens *tokens
	issuer string
}

type bearerClaims struct {
	jwt.RegisteredClaims
	Role string `json:"role"`
}

// caller returns who the request's "Authorization: Bearer" token speaks for.
func (v *bearerVerifier) caller(ctx context.Context, h http.Header) (*authv1.Caller, error) {
	scheme, token, ok := strings.Cut(h.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return nil, apperr.E(apperr.Unauthenticated, "", "a bearer access token is required")
	}
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{string(signingAlgorithm)}),
		jwt.WithIssuer(v.issuer),
		jwt.WithAudience(APIAudience),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(bearerLeeway),
		jwt.WithTimeFunc(v.keys.now.now),
	)
	var c bearerClaims
	_, err := parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if key, ok := v.keys.publicKeyByID(kid); ok {
			return key, nil
		}
		return nil, errors.New("identity: unknown signing key")
	})
	if err != nil {
		return nil, apperr.Wrap(err, apperr.Unauthenticated, "invalid_token", "the access token is invalid or expired")
	}
	if c.ID != "" {
		revoked, err := v.tokens.revoked(ctx, c.ID)
		if err != nil {
			return nil, err
		}
		if revoked {
			return nil, apperr.E(apperr.Unauthenticated, "invalid_token", "the access token is invalid or expired")
		}
	}
	role := auth.RoleOf(c.Role)
	if c.Subject == "" || role == authv1.Role_ROLE_UNSPECIFIED {
		return nil, apperr.E(apperr.Unauthenticated, "invalid_token", "the access token has no subject or role")
	}
	return &authv1.Caller{UserId: c.Subject, Role: role}, nil
}
