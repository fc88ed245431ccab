// Package identity is rideshare's identity service: accounts and their
// credentials (the IdentityService RPC), and an OAuth 2.1 / OpenID Connect
// provider built on zitadel/oidc's op package, which issues the JWT access
// tokens the gateway checks. The library runs the protocol; this package
// supplies its storage (storage.go, over identity's own database), its
// rotating signing keys (keys.go), the login page of the authorization code
// flow (login.go), the dev-only password grant (grant_password.go), the
// admin role changes (role.go, checked against the caller's own token in
// bearer.go) and an audit log of security events (audit.go).
package identity

import (
	"context"
	"embed"
	"errors"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/rideshare-platform/rideshare/api/identity/v1/identityv1connect"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Service declares the identity service.
var Service = platform.Service{
	Name:       "identity",
	Summary:    "accounts, credentials and the OAuth 2.1 / OpenID Connect provider",
	Database:   true,
	Migrations: sqldb.Sub(migrations, "migrations"),
	New:        newService,
}

// sweepEvery is how often expired auth requests and tokens are deleted:
// they are refused on read anyway, so this only bounds the tables' size.
const sweepEvery = 10 * time.Minute

func newService(ctx context.Context, d platform.Deps) (*platform.Component, error) {
	rotation, err := keyRotationFrom(d.Setting("identity.key_rotation", defaultKeyRotation.String()))
	if err != nil {
		return nil, err
	}
	return build(ctx, d, options{rotation: rotation})
}

// options are what tests vary beyond platform.Deps.
type options struct {
	// rotation is how long each signing key signs (identity.key_rotation).
	rotation time.Duration
	// now is the clock of key rotation and token expiry; nil is the
	// system clock.
	now clock
}

// service is the built identity component's parts, for tests to reach.
type service struct {
	component *platform.Component
	keys      *keyring
}

func build(ctx context.Context, d platform.Deps, o options) (*platform.Component, error) {
	s, err := assemble(ctx, d, o)
	if err != nil {
		return nil, err
	}
	return s.component, nil
}

func assemble(ctx context.Context, d platform.Deps, o options) (*service, error) {
	if d.DB == nil || d.Outbox == nil {
		return nil, errors.New("identity: a database and its outbox are required")
	}
	issuer := strings.TrimRight(d.Config.PublicURL, "/")
	if issuer == "" {
		return nil, errors.New("identity: the public URL (the OAuth issuer) is not configured")
	}
	log := d.Log
	if log == nil {
		log = slog.Default()
	}
	audit := auditor{log: log}
	// One hash per core at a time: hashing is CPU-bound, so more would only
	// hold more 19 MiB buffers without finishing sooner.
	h, err := newHasher(runtime.GOMAXPROCS(0))
	if err != nil {
		return nil, err
	}
	accts := &accounts{db: d.DB, outbox: d.Outbox, hasher: h}
	cls := &clients{db: d.DB, hasher: h,
		services: newServiceClients(d.Config.Secrets[platform.ServiceMasterSecretName], d.Config.CallGraph)}
	if len(d.Config.CallGraph) > 0 && cls.services.master == "" {
		log.Warn("no service master secret: services cannot get tokens, so every call between them is refused")
	}
	if err := cls.seed(ctx, d.Config.Secrets[OperatorSecretName]); err != nil {
		return nil, err
	}
	keys := &keyring{db: d.DB, now: o.now, rotation: o.rotation, log: log}
	if err := keys.load(ctx); err != nil {
		return nil, err
	}
	toks := &tokens{db: d.DB, audit: audit, now: o.now}
	ars := &authRequests{db: d.DB, audit: audit}
	st := &storage{db: d.DB, accounts: accts, clients: cls, keys: keys, tokens: toks, authRequests: ars}
	provider, err := newProvider(issuer, d.Config.Dev, st)
	if err != nil {
		return nil, err
	}
	login := &loginPage{requests: ars, accounts: accts, audit: audit, log: log, secure: strings.HasPrefix(issuer, "https://")}

	mux := http.NewServeMux()
	// SetRole is exempt from the service-token check: operators call it
	// directly, and it checks their admin token itself (bearer.go).
	mux.Handle(identityv1connect.NewIdentityServiceHandler(&rpc{
		accounts: accts, audit: audit,
		bearer: &bearerVerifier{keys: keys, tokens: toks, issuer: issuer},
	}, d.HandlerOptions(identityv1connect.IdentityServiceSetRoleProcedure)...))
	mux.Handle("/oauth2/", provider)
	mux.Handle(oidc.DiscoveryEndpoint, provider)
	mux.Handle(tokenPath, &tokenEndpoint{
		next: provider, creator: provider, clients: cls, accounts: accts,
		issuer: issuer, dev: d.Config.Dev, audit: audit,
	})
	mux.Handle(loginPath, login)
	mux.Handle(callbackPath, login.guardCallback(provider))

	sw := &sweeper{db: d.DB}
	return &service{keys: keys, component: &platform.Component{
		Handler: mux,
		Workers: []platform.Worker{
			{Name: "identity-sweeper", Run: func(ctx context.Context) error { return sw.run(ctx, sweepEvery) }},
			// Reloads the keys, rotates when due, deletes retired keys.
			{Name: "identity-keys", Run: func(ctx context.Context) error { return keys.run(ctx, keyCheckEvery) }},
		},
	}}, nil
}
