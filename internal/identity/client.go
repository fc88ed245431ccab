package identity

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	"github.com/rideshare-platform/rideshare/internal/auth"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// The clients identity knows from the start.
const (
	// CLIClientID is the first-party public client (the rideshare command
	// line, and the test drivers): no secret, PKCE for the code flow, and the
	// password grant in development mode.
	CLIClientID = "rideshare-cli"
	// OperatorClientID is the confidential client operators and tools use
	// with client_credentials; its tokens carry the admin role.
	OperatorClientID = "rideshare-operator"
	// OperatorSecretName is the Config.Secrets entry holding its secret.
	OperatorSecretName = "operator_client_secret"
)

// grantTypePassword is the resource owner password grant, which oidc does
// not name because the library does not implement it (grant_password.go).
const grantTypePassword oidc.GrantType = "password"

// cliRedirectURI is where the command line receives the authorization code:
// a loopback listener on any port (RFC 8252, section 7.3; see
// client.redirectAllowed).
const cliRedirectURI = "http://127.0.0.1/callback"

// client is an OAuth client as the library sees it (op.Client).
type client struct {
	id           string
	secretHash   string // "" for a public client
	grantTypes   []oidc.GrantType
	redirectURIs []string
	role         string // role claim of tokens the client gets for itself
	// service marks a platform service's client (serviceClients): its
	// secret is derived, not stored.
	service bool
}

var _ op.Client = (*client)(nil)

// The methods below are the op.Client interface.

func (c *client) GetID() string                    { return c.id }
func (c *client) RedirectURIs() []string           { return c.redirectURIs }
func (c *client) PostLogoutRedirectURIs() []string { return nil }

// ApplicationType: a client without a secret is a native app; the library
// then allows loopback redirects and requires PKCE.
func (c *client) ApplicationType() op.ApplicationType {
	if c.public() {
		return op.ApplicationTypeNative
	}
	return op.ApplicationTypeWeb
}

func (c *client) AuthMethod() oidc.AuthMethod {
	if c.public() {
		return oidc.AuthMethodNone
	}
	return oidc.AuthMethodBasic
}

func (c *client) ResponseTypes() []oidc.ResponseType {
	if slices.Contains(c.grantTypes, oidc.GrantTypeCode) {
		return []oidc.ResponseType{oidc.ResponseTypeCode}
	}
	return nil
}

func (c *client) GrantTypes() []oidc.GrantType { return c.grantTypes }

// LoginURL is where /oauth2/authorize sends the browser to sign in. It is
// relative so that it resolves against the public host (the gateway).
func (c *client) LoginURL(authRequestID string) string {
	return loginPath + "?authRequestID=" + url.QueryEscape(authRequestID)
}

// AccessTokenType: JWTs, so the gateway validates tokens locally against the
// JWKS without a call to identity per request.
func (c *client) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeJWT }
func (c *client) IDTokenLifetime() time.Duration      { return idTokenLifetime }
func (c *client) DevMode() bool                       { return false }

func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

// IsScopeAllowed is asked about scopes beyond the OpenID ones; there are none.
func (c *client) IsScopeAllowed(string) bool           { return false }
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return false }
func (c *client) ClockSkew() time.Duration             { return 0 }

func (c *client) public() bool { return c.secretHash == "" && !c.service }

// redirectAllowed reports whether the authorization response may go to
// uri. The rule is exact string comparison with a registered URI (OAuth
// 2.1, section 2.3.1; RFC 9700, section 4.1.3): no prefix or pattern
// matching, no normalisation, so another port, path, case or a trailing
// slash is refused. The one exception is RFC 8252's for native apps (section
// 7.3): a public client registered with a loopback IP literal redirect may
// use any port on it, since a command line listens on whatever port is
// free. Only the port may vary: scheme, host (127.0.0.1, never "localhost",
// which DNS or a hosts file could point elsewhere), path and query stay
// exact, and a fragment or user info is never allowed.
func (c *client) redirectAllowed(uri string) bool {
	if strings.Contains(uri, "#") {
		return false
	}
	if slices.Contains(c.redirectURIs, uri) {
		return true
	}
	if !c.public() {
		return false
	}
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "http" || u.User != nil || u.Opaque != "" || u.ForceQuery || !validPort(u.Port()) {
		return false
	}
	for _, registered := range c.redirectURIs {
		reg, err := url.Parse(registered)
		if err != nil || reg.Scheme != "http" || reg.Port() != "" {
			continue
		}
		ip := net.ParseIP(reg.Hostname())
		if ip == nil || !ip.IsLoopback() {
			continue
		}
		if u.Host == reg.Hostname()+":"+u.Port() && u.EscapedPath() == reg.EscapedPath() && u.RawQuery == reg.RawQuery {
			return true
		}
	}
	return false
}

// validPort is a decimal port 1..65535 without leading zeros.
func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535 && strconv.Itoa(n) == p
}

func (c *client) allows(g oidc.GrantType) bool { return slices.Contains(c.grantTypes, g) }

// clients keeps the OAuth clients.
type clients struct {
	db       *sqldb.DB
	hasher   *hasher
	services serviceClients
}

// errUnknownClient is an invalid_client error rather than a plain one: the
// library turns plain storage errors into server_error (500) on some paths,
// while an unknown client is the caller's fault.
func errUnknownClient() error { return oidc.ErrInvalidClient().WithDescription("unknown client") }

// get reads one client.
func (cs *clients) get(ctx context.Context, id string) (*client, error) {
	if name, ok := auth.ServiceOfClient(id); ok {
		return cs.services.get(name)
	}
	var grants, redirects string
	c := &client{id: id}
	err := cs.db.Reader().QueryRowContext(ctx,
		`SELECT secret_hash, grant_types, redirect_uris, role FROM clients WHERE id = $1`, id).
		Scan(&c.secretHash, &grants, &redirects, &c.role)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errUnknownClient()
	}
	if err != nil {
		return nil, oidc.ErrServerError().WithParent(fmt.Errorf("identity: read client: %w", err))
	}
	for _, g := range strings.Fields(grants) {
		c.grantTypes = append(c.grantTypes, oidc.GrantType(g))
	}
	c.redirectURIs = strings.Fields(redirects)
	return c, nil
}

// authenticate returns the confidential client id if secret is its secret.
func (cs *clients) authenticate(ctx context.Context, id, secret string) (*client, error) {
	c, err := cs.get(ctx, id)
	if err != nil {
		return nil, err
	}
	if c.public() || secret == "" {
		return nil, oidc.ErrInvalidClient().WithDescription("client authentication failed")
	}
	if c.service {
		if !cs.services.authenticate(c.id, secret) {
			return nil, oidc.ErrInvalidClient().WithDescription("client authentication failed")
		}
		return c, nil
	}
	ok, err := cs.hasher.verify(ctx, c.secretHash, secret)
	if err != nil {
		return nil, oidc.ErrServerError().WithParent(err)
	}
	if !ok {
		return nil, oidc.ErrInvalidClient().WithDescription("client authentication failed")
	}
	return c, nil
}

// upsert writes c, replacing any client with its id: configuration is the
// source of truth for the seeded clients.
func (cs *clients) upsert(ctx context.Context, c *client) error {
	grants := make([]string, len(c.grantTypes))
	for i, g := range c.grantTypes {
		grants[i] = string(g)
	}
	t := sqldb.Micros(now())
	return cs.db.InTx(ctx, func(tx *sqldb.Tx) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO clients (id, secret_hash, grant_types, redirect_uris, role, created_at, updated_at)
			 VALUES ($1, $2, $3, $4, $5, $6, $6)
			 ON CONFLICT (id) DO UPDATE SET secret_hash = excluded.secret_hash, grant_types = excluded.grant_types,
			   redirect_uris = excluded.redirect_uris, role = excluded.role, updated_at = excluded.updated_at`,
			c.id, c.secretHash, strings.Join(grants, " "), strings.Join(c.redirectURIs, " "), c.role, t)
		if err != nil {
			return fmt.Errorf("identity: store client %s: %w", c.id, err)
		}
		return nil
	})
}

// seed writes the clients the platform needs: the first-party CLI always,
// and the operator client when its secret is configured. Without a secret
// the operator client is left as stored (absent on a fresh database), so a
// process started without it, such as a one-off debugging run, does not lock
// out the operators who hold the secret; a new secret replaces the old one.
func (cs *clients) seed(ctx context.Context, operatorSecret string) error {
	cli := &client{
		id:           CLIClientID,
		grantTypes:   []oidc.GrantType{grantTypePassword, oidc.GrantTypeRefreshToken, oidc.GrantTypeCode},
		redirectURIs: []string{cliRedirectURI},
	}
	if err := cs.upsert(ctx, cli); err != nil {
		return err
	}
	if operatorSecret == "" {
		return nil
	}
	hash, err := cs.hasher.hash(ctx, operatorSecret)
	if err != nil {
		return err
	}
	return cs.upsert(ctx, &client{
		id:         OperatorClientID,
		secretHash: hash,
		grantTypes: []oidc.GrantType{oidc.GrantTypeClientCredentials},
		role:       auth.RoleName(authv1.Role_ROLE_ADMIN),
	})
}
