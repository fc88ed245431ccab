package identity

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/auth"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// storage is what the OpenID provider library persists through
// (op.Storage): it adapts the library's calls to identity's own stores.
// Methods that return one of the library's interfaces return a nil
// interface on error, never one holding a nil pointer, which the library
// would take for a value.
type storage struct {
	db           *sqldb.DB
	accounts     *accounts
	clients      *clients
	keys         *keyring
	tokens       *tokens
	authRequests *authRequests
}

var (
	_ op.Storage                   = (*storage)(nil)
	_ op.ClientCredentialsStorage  = (*storage)(nil)
	_ op.CanSetUserinfoFromRequest = (*storage)(nil)
)

// Authorization code flow.

func (s *storage) CreateAuthRequest(ctx context.Context, req *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	c, err := s.clients.get(ctx, req.ClientID)
	if err != nil {
		return nil, err
	}
	v, err := s.authRequests.create(ctx, c, req)
	if err != nil {
		return nil, err
	}
	return v, nil
}

func (s *storage) AuthRequestByID(ctx context.Context, id string) (op.AuthRequest, error) {
	v, err := s.authRequests.byID(ctx, id)
	if err != nil {
		return nil, err
	}
	return v, nil
}

func (s *storage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	v, err := s.authRequests.byCode(ctx, code)
	if err != nil {
		return nil, err
	}
	return v, nil
}

func (s *storage) SaveAuthCode(ctx context.Context, id, code string) error {
	return s.authRequests.saveCode(ctx, id, code)
}

func (s *storage) DeleteAuthRequest(ctx context.Context, id string) error {
	return s.authRequests.remove(ctx, id)
}

// Tokens.

// CreateAccessToken names an access token. For a code exchange without
// offline_access it also redeems the code, so that the code is used once.
func (s *storage) CreateAccessToken(ctx context.Context, req op.TokenRequest) (string, time.Time, error) {
	id, exp := s.tokens.accessToken(req)
	if ar, ok := req.(*authRequest); ok {
		if err := s.authRequests.redeemAccess(ctx, ar, id); err != nil {
			return "", time.Time{}, err
		}
	}
	return id, exp, nil
}

// CreateAccessAndRefreshTokens names an access token and stores a refresh
// token, redeeming a code or rotating a refresh token in the same
// transaction (tokens.issueRefresh).
func (s *storage) CreateAccessAndRefreshTokens(ctx context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	id, exp := s.tokens.accessToken(req)
	refresh, err := s.tokens.issueRefresh(ctx, req, current, id)
	if err != nil {
		return "", "", time.Time{}, err
	}
	return id, refresh, exp, nil
}

func (s *storage) TokenRequestByRefreshToken(ctx context.Context, token string) (op.RefreshTokenRequest, error) {
	v, err := s.tokens.byRefreshToken(ctx, token)
	if err != nil {
		return nil, err
	}
	return v, nil
}

func (s *storage) TerminateSession(ctx context.Context, userID, clientID string) error {
	return s.tokens.endSessions(ctx, userID, clientID)
}

func (s *storage) RevokeToken(ctx context.Context, tokenOrID, userID, clientID string) *oidc.Error {
	return s.tokens.revoke(ctx, tokenOrID, userID, clientID)
}

func (s *storage) GetRefreshTokenInfo(ctx context.Context, _ string, token string) (string, string, error) {
	return s.tokens.refreshInfo(ctx, token)
}

// Keys.

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) {
	k, err := s.keys.current()
	if err != nil {
		return nil, err
	}
	return k, nil
}

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{signingAlgorithm}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) { return s.keys.published(), nil }

// Clients.

func (s *storage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	v, err := s.clients.get(ctx, id)
	if err != nil {
		return nil, err
	}
	return v, nil
}

func (s *storage) AuthorizeClientIDSecret(ctx context.Context, id, secret string) error {
	_, err := s.clients.authenticate(ctx, id, secret)
	return err
}

// ClientCredentials authenticates a confidential client for the
// client_credentials grant.
func (s *storage) ClientCredentials(ctx context.Context, id, secret string) (op.Client, error) {
	v, err := s.clients.authenticate(ctx, id, secret)
	if err != nil {
		return nil, err
	}
	return v, nil
}

// ClientCredentialsTokenRequest is a client's grant for itself. Its tokens
// carry no OpenID scopes: there is no user to describe.
func (s *storage) ClientCredentialsTokenRequest(_ context.Context, clientID string, scopes []string) (op.TokenRequest, error) {
	if len(scopes) > 0 {
		return nil, oidc.ErrInvalidScope().WithDescription("client tokens take no scopes")
	}
	return &grant{subject: clientSubject(clientID), clientID: clientID, audience: audienceFor(clientID), authTime: now()}, nil
}

// Claims.

// GetPrivateClaimsFromScopes adds the role claim to every access token,
// read at issue time so that a refresh picks up a changed role. A client
// without a role gets no claim, and so no access through the gateway.
func (s *storage) GetPrivateClaimsFromScopes(ctx context.Context, subject, _ string, _ []string) (map[string]any, error) {
	role, err := s.roleOf(ctx, subject)
	if err != nil || role == "" {
		return nil, err
	}
	return map[string]any{"role": role}, nil
}

// roleOf is the role of a token's subject: an account, or a client acting
// for itself.
func (s *storage) roleOf(ctx context.Context, subject string) (string, error) {
	if id, ok := strings.CutPrefix(subject, clientSubjectPrefix); ok {
		c, err := s.clients.get(ctx, id)
		if err != nil {
			return "", err
		}
		return c.role, nil
	}
	acc, err := s.accounts.get(ctx, subject)
	if apperr.Is(err, apperr.NotFound) {
		return "", oidc.ErrInvalidGrant().WithDescription("the account no longer exists")
	}
	if err != nil {
		return "", oidc.ErrServerError().WithParent(err)
	}
	return auth.RoleName(acc.Role), nil
}

// SetUserinfoFromScopes is deprecated by the library in favour of
// SetUserinfoFromRequest and intentionally does nothing.
func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

// SetUserinfoFromRequest fills the ID token's claims.
func (s *storage) SetUserinfoFromRequest(ctx context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	return s.userinfo(ctx, info, req.GetSubject(), scopes)
}

// SetUserinfoFromToken answers /oauth2/userinfo. Access tokens are
// stateless, so their scopes are not known here: the endpoint tells a
// token's holder the subject's own email and name, which is what every
// first-party client may see.
func (s *storage) SetUserinfoFromToken(ctx context.Context, info *oidc.UserInfo, tokenID, subject, _ string) error {
	if err := s.checkNotRevoked(ctx, tokenID); err != nil {
		return err
	}
	return s.userinfo(ctx, info, subject, []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail})
}

// SetIntrospectionFromToken answers /oauth2/introspect for an
// authenticated client; the library has verified the token's signature and
// expiry already.
func (s *storage) SetIntrospectionFromToken(ctx context.Context, resp *oidc.IntrospectionResponse, tokenID, subject, _ string) error {
	if err := s.checkNotRevoked(ctx, tokenID); err != nil {
		return err
	}
	info := new(oidc.UserInfo)
	if err := s.userinfo(ctx, info, subject, []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail}); err != nil {
		return err
	}
	resp.SetUserInfo(info)
	return nil
}

func (s *storage) checkNotRevoked(ctx context.Context, tokenID string) error {
	revoked, err := s.tokens.revoked(ctx, tokenID)
	if err != nil {
		return err
	}
	if revoked {
		return errors.New("identity: token revoked")
	}
	return nil
}

// userinfo fills info for subject as far as scopes allow.
func (s *storage) userinfo(ctx context.Context, info *oidc.UserInfo, subject string, scopes []string) error {
	info.Subject = subject
	if strings.HasPrefix(subject, clientSubjectPrefix) {
		return nil
	}
	acc, err := s.accounts.get(ctx, subject)
	if err != nil {
		return err
	}
	if slices.Contains(scopes, oidc.ScopeEmail) {
		// Not verified: sign-up does not confirm addresses yet.
		info.Email, info.EmailVerified = acc.Email, false
	}
	if slices.Contains(scopes, oidc.ScopeProfile) {
		info.Name = acc.Name
	}
	return nil
}

// JWT profile (RFC 7523). No client has registered keys, so assertions are
// refused; the library advertises the grant regardless.

func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("identity: no client keys are registered")
}

func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("identity: the JWT profile grant is not supported")
}

// Health is the library's readiness probe.
func (s *storage) Health(ctx context.Context) error { return s.db.Ping(ctx) }
