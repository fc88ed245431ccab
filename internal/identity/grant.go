package identity

import (
	"slices"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/rideshare-platform/rideshare/internal/auth"
)

// grant is what tokens are issued for: a subject, a client, scopes and an
// audience. It is the op.TokenRequest (and op.IDTokenRequest) of the
// password and client_credentials grants; the library's own grants bring
// their own (an auth request, a stored refresh token).
type grant struct {
	subject  string
	clientID string
	scopes   []string
	audience []string
	amr      []string
	authTime time.Time
}

var (
	_ op.TokenRequest   = (*grant)(nil)
	_ op.IDTokenRequest = (*grant)(nil)
)

func (g *grant) GetSubject() string     { return g.subject }
func (g *grant) GetClientID() string    { return g.clientID }
func (g *grant) GetScopes() []string    { return g.scopes }
func (g *grant) GetAudience() []string  { return g.audience }
func (g *grant) GetAMR() []string       { return g.amr }
func (g *grant) GetAuthTime() time.Time { return g.authTime }

// refreshable is a grant that carries a refresh token. Being an
// op.RefreshTokenRequest is what makes the library's CreateAccessToken ask
// the storage for a refresh token too (CreateAccessAndRefreshTokens), so the
// password grant gets one exactly when it wraps its grant in this type.
type refreshable struct {
	*grant
}

var _ op.RefreshTokenRequest = (*refreshable)(nil)

// SetCurrentScopes narrows the scopes of the tokens being issued, when a
// refresh request asks for fewer than were granted.
func (r *refreshable) SetCurrentScopes(scopes []string) { r.scopes = scopes }

// audienceFor is the audience of every token issued to clientID: the API
// (the gateway refuses tokens without it) and the client itself; for a
// service's client, the internal audience instead of the API, so that a
// service token is never accepted as a user's.
func audienceFor(clientID string) []string {
	if _, ok := auth.ServiceOfClient(clientID); ok {
		return []string{auth.ServiceAudience, clientID}
	}
	return []string{APIAudience, clientID}
}

// clientSubject is the subject of a token a client gets for itself: a
// prefix no account id (a UUID) can have, so the two never collide.
func clientSubject(clientID string) string { return clientSubjectPrefix + clientID }

const clientSubjectPrefix = "client:"

// isUserScope reports whether a user's token may carry scope s.
func isUserScope(s string) bool {
	switch s {
	case oidc.ScopeOpenID, oidc.ScopeOfflineAccess, oidc.ScopeProfile, oidc.ScopeEmail:
		return true
	}
	return false
}

// userScopesFrom validates the scopes a password grant asks for, and reports
// false if any is unknown. None means openid and offline_access: a signed-in
// command line wants an ID token and to stay signed in.
func userScopesFrom(requested []string) ([]string, bool) {
	if len(requested) == 0 {
		return []string{oidc.ScopeOpenID, oidc.ScopeOfflineAccess}, true
	}
	out := make([]string, 0, len(requested))
	for _, s := range requested {
		if !isUserScope(s) {
			return nil, false
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, true
}
