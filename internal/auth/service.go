package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// Service tokens are what a platform service presents on every RPC it
// makes: an access token it gets for itself from identity with the
// client_credentials grant, as client "service-NAME". They are told apart
// from users' tokens three ways, so that neither passes for the other:
// their audience is ServiceAudience and never Audience (so the gateway, and
// every check of a user's token, refuses them), their role claim is
// ServiceRole, which RoleOf does not know, and their subject names a
// service client.
const (
	// ServiceAudience is the audience of service tokens, and only of them.
	ServiceAudience = "rideshare-internal"
	// ServiceRole is the role claim of a service token.
	ServiceRole = "service"
	// serviceClientPrefix begins every service's client id; identity
	// reserves it for service clients.
	serviceClientPrefix = "service-"
	// serviceSubjectPrefix begins the subject of a service token: identity
	// names a client's tokens for itself "client:" + its client id.
	serviceSubjectPrefix = "client:" + serviceClientPrefix
)

// ServiceClientID is service's client id at identity ("service-payments").
func ServiceClientID(service string) string { return serviceClientPrefix + service }

// ServiceOfClient is the service a client id belongs to, if it is a
// service's client.
func ServiceOfClient(clientID string) (string, bool) {
	name, ok := strings.CutPrefix(clientID, serviceClientPrefix)
	if !ok || name == "" {
		return "", false
	}
	return name, true
}

// ServiceSecret is service's client secret, derived from the master secret
// that only identity holds: HMAC-SHA256(master, client id). Identity checks
// a presented secret by deriving it again, so no secret is stored, and each
// service is given its own secret only, never the master: one service's
// secret leaking lets nobody act as another.
func ServiceSecret(master, service string) string {
	mac := hmac.New(sha256.New, []byte(master))
	mac.Write([]byte(ServiceClientID(service)))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// VerifyService checks a service token and returns the name of the service
// it speaks for and when the token expires. It checks what Verify checks
// (signature by a published key, the algorithm allow-list, issuer, expiry,
// a token id), but with the internal audience, the service role and a
// service client's subject. Every refusal is the same Unauthenticated
// invalid_token, as in Verify.
func (a *Verifier) VerifyService(ctx context.Context, token string) (string, time.Time, error) {
	var none time.Time
	keys, err := a.currentKeys()
	if err != nil {
		return "", none, apperr.Wrap(err, apperr.Unavailable, "", "the token issuer's keys are not available yet")
	}
	if len(token) > maxTokenBytes {
		return "", none, a.refuse(ctx, "too large", nil)
	}
	claims := jwt.MapClaims{}
	if _, err := a.services.ParseWithClaims(token, claims, requireKID(keys.KeyfuncCtx(ctx))); err != nil {
		return "", none, a.refuse(ctx, "service token: "+tokenFailure(err), err)
	}
	if jti, _ := claims["jti"].(string); jti == "" {
		return "", none, a.refuse(ctx, "service token: no token id (jti)", nil)
	}
	if role, _ := claims[DefaultRoleClaim].(string); role != ServiceRole {
		return "", none, a.refuse(ctx, "service token: not the service role", nil)
	}
	sub, _ := claims["sub"].(string)
	name, ok := strings.CutPrefix(sub, serviceSubjectPrefix)
	if !ok || name == "" {
		return "", none, a.refuse(ctx, "service token: subject is not a service", nil)
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return "", none, a.refuse(ctx, "service token: no expiry", err)
	}
	return name, exp.Time, nil
}
