// Package identity is rideshare's identity service: accounts and their
// credentials (the IdentityService RPC), and an OAuth 2.1 / OpenID Connect
// provider built on zitadel/oidc's op package, which issues the JWT access
// tokens the gateway checks. The library runs the protocol; this package
// supplies its storage (storage.go, over identity's own database), its keys
// (keys.go) and the dev-only password grant (grant_password.go).
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
	// One hash per core at a time: hashing is CPU-bound, so more would only
	// hold more 19 MiB buffers without finishing sooner.
	h, err := newHasher(runtime.GOMAXPROCS(0))
	if err != nil {
		return nil, err
	}
	accts := &accounts{db: d.DB, outbox: d.Outbox, hasher: h}
	cls := &clients{db: d.DB, hasher: h}
	if err := cls.seed(ctx, d.Config.Secrets[OperatorSecretName]); err != nil {
		return nil, err
	}
	keys := &keyring{db: d.DB}
	if err := keys.load(ctx); err != nil {
		return nil, err
	}
	st := &storage{
		db: d.DB, accounts: accts, clients: cls, keys: keys,
		tokens:       &tokens{db: d.DB, log: log},
		authRequests: &authRequests{db: d.DB},
	}
	provider, err := newProvider(issuer, d.Config.Dev, st)
	if err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	mux.Handle(identityv1connect.NewIdentityServiceHandler(&rpc{accounts: accts}, d.HandlerOptions()...))
	mux.Handle("/oauth2/", provider)
	mux.Handle(oidc.DiscoveryEndpoint, provider)
	mux.Handle(tokenPath, &tokenEndpoint{
		next: provider, creator: provider, clients: cls, accounts: accts,
		issuer: issuer, dev: d.Config.Dev, log: log,
	})
	mux.HandleFunc(loginPath, loginUnavailable)

	sw := &sweeper{db: d.DB}
	return &platform.Component{
		Handler: mux,
		Workers: []platform.Worker{{Name: "identity-sweeper", Run: func(ctx context.Context) error {
			return sw.run(ctx, sweepEvery)
		}}},
	}, nil
}
