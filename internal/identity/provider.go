package identity

import (
	"fmt"
	"net"
	"net/url"
	"slices"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// The public paths of the OAuth endpoints. The gateway forwards /oauth2/*
// and /.well-known/* unchanged, so identity serves them at exactly these
// paths, and the discovery document lists them under the issuer (the
// gateway's public URL).
const (
	authorizePath  = "/oauth2/authorize"
	tokenPath      = "/oauth2/token"
	jwksPath       = "/oauth2/jwks"
	userinfoPath   = "/oauth2/userinfo"
	revokePath     = "/oauth2/revoke"
	introspectPath = "/oauth2/introspect"
	logoutPath     = "/oauth2/logout"
	// devicePath is where the library mounts the device flow it always
	// advertises; the storage does not support it, so it answers with
	// unsupported_grant_type, but under /oauth2 the gateway at least routes it.
	devicePath = "/oauth2/device_authorization"
	// loginPath is the sign-in page /oauth2/authorize redirects to.
	loginPath = "/oauth2/login"
	// callbackPath is the library's "the user has signed in" endpoint,
	// which issues the code: its authorize endpoint plus "/callback".
	callbackPath = authorizePath + "/callback"
)

// newProvider builds the OpenID provider for issuer over st.
func newProvider(issuer string, dev bool, st *storage) (*op.Provider, error) {
	cfg := &op.Config{
		CodeMethodS256:        true,
		AuthMethodPost:        true,
		GrantTypeRefreshToken: true,
		SupportedScopes:       []string{oidc.ScopeOpenID, oidc.ScopeOfflineAccess, oidc.ScopeProfile, oidc.ScopeEmail},
		SupportedClaims:       append(slices.Clone(op.DefaultSupportedClaims), "role"),
	}
	opts := []op.Option{
		op.WithCustomEndpoints(
			op.NewEndpoint(authorizePath), op.NewEndpoint(tokenPath), op.NewEndpoint(userinfoPath),
			op.NewEndpoint(revokePath), op.NewEndpoint(logoutPath), op.NewEndpoint(jwksPath)),
		op.WithCustomIntrospectionEndpoint(op.NewEndpoint(introspectPath)),
		op.WithCustomDeviceAuthorizationEndpoint(op.NewEndpoint(devicePath)),
		op.WithCrypto(codes{}),
	}
	insecure, err := allowInsecureIssuer(issuer, dev)
	if err != nil {
		return nil, err
	}
	if insecure {
		opts = append(opts, op.WithAllowInsecure())
	}
	p, err := op.NewProvider(cfg, st, op.StaticIssuer(issuer), opts...)
	if err != nil {
		return nil, fmt.Errorf("identity: openid provider for issuer %q: %w", issuer, err)
	}
	return p, nil
}

// allowInsecureIssuer reports whether an http:// issuer is acceptable: on the
// laptop (development mode, or a loopback host such as the http://127.0.0.1
// that `rideshare up` uses). Anywhere else OpenID Connect requires https, and
// the library refuses to start with an http issuer.
func allowInsecureIssuer(issuer string, dev bool) (bool, error) {
	u, err := url.Parse(issuer)
	if err != nil {
		return false, fmt.Errorf("identity: issuer %q: %w", issuer, err)
	}
	if u.Scheme != "http" {
		return false, nil
	}
	host := u.Hostname()
	ip := net.ParseIP(host)
	return dev || host == "localhost" || (ip != nil && ip.IsLoopback()), nil
}
