package identity

import (
	"fmt"
	"net"
	"net/http"
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

// loginUnavailable is the sign-in page until the browser login is built:
// the authorization code flow works up to here (the request is stored and
// the browser is sent to this page), and the command line signs in with the
// password grant in development mode meanwhile.
func loginUnavailable(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'")
	w.WriteHeader(http.StatusNotImplemented)
	_, _ = fmt.Fprint(w, `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in: rideshare</title></head>
<body><h1>Sign-in is not available yet</h1>
<p>Signing in with a browser is coming. Meanwhile the rideshare command line signs in for you.</p>
</body></html>
`)
}
