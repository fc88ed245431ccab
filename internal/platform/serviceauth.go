package platform

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/auth"
	"github.com/rideshare-platform/rideshare/internal/server"
)

// Service-to-service authentication. The Caller in a request says whom the
// call is for, but anyone who can reach a service can write one; so every
// RPC between services also carries the calling service's own token, which
// it gets from identity with the client_credentials grant (servicetoken.go),
// and every service refuses an RPC that lacks one, or comes from a service
// that does not list it in its Calls (callcheck.go). A call the gateway
// makes for a user carries that user's token too, which the called service
// checks against the Caller.

// The Config.Secrets entries service authentication reads.
const (
	// ServiceSecretName is this service's client secret at identity
	// (RIDESHARE_SERVICE_SECRET).
	ServiceSecretName = "service_secret"
	// ServiceMasterSecretName is the secret every service's client secret
	// is derived from (auth.ServiceSecret); only identity is given it
	// (RIDESHARE_SERVICE_MASTER_SECRET).
	ServiceMasterSecretName = "service_master_secret"
)

// UserTokenHeader carries the access token of the user a call is made for,
// beside the calling service's own token in Authorization.
const UserTokenHeader = "Rideshare-User-Token"

// ServiceAuth is a process's part in service-to-service authentication: the
// token it presents on the RPCs it makes and the check of the RPCs it
// serves. Run builds it; ClientOptions and HandlerOptions apply it.
type ServiceAuth struct {
	tokens *tokenSource
	check  *callCheck
}

// CallGraph is the platform's call graph as Config.CallGraph takes it: each
// service's name and the services it calls.
func CallGraph(svcs []Service) map[string][]string {
	g := make(map[string][]string, len(svcs))
	for _, s := range svcs {
		g[s.Name] = slices.Clone(s.Calls)
	}
	return g
}

// callersOf are the services that list name among the services they call:
// the only ones whose calls name accepts.
func callersOf(graph map[string][]string, name string) map[string]bool {
	out := map[string]bool{}
	for caller, calls := range graph {
		if slices.Contains(calls, name) {
			out[caller] = true
		}
	}
	return out
}

type userTokenKey struct{}

// WithUserToken marks ctx as serving the user whose access token is token:
// every RPC made with ctx forwards it, so that the called service can check
// the request's Caller against it.
func WithUserToken(ctx context.Context, token string) context.Context {
	return context.WithValue(ctx, userTokenKey{}, token)
}

func userToken(ctx context.Context) string {
	s, _ := ctx.Value(userTokenKey{}).(string)
	return s
}

// authenticators builds what checks tokens in this process: the admin
// endpoints' authenticator and the service authentication. Both check
// tokens against identity's published keys with one verifier, built on
// first use. Identity itself reads its keys, and would fetch its own token,
// from its own listener: the registry never lists a process as its own
// peer.
func authenticators(ctx context.Context, d Deps, svc Service, ln net.Listener) (server.Authenticator, *ServiceAuth) {
	identity, err := d.Peer("identity")
	if svc.Name == "identity" {
		identity, err = selfURL(ln)
	}
	var keys *lazyVerifier
	if err == nil && d.Config.PublicURL != "" {
		keys = &lazyVerifier{build: func() (*auth.Verifier, error) {
			return auth.NewVerifier(ctx, d.HTTP, identity+"/oauth2/jwks", d.Config.PublicURL, d.Log)
		}}
	}
	sa := &ServiceAuth{check: &callCheck{
		service: svc.Name,
		callers: callersOf(d.Config.CallGraph, svc.Name),
		log:     d.Log,
		keys: func() (*auth.Verifier, error) {
			if keys == nil {
				return nil, errNoIdentity
			}
			return keys.get()
		},
	}}
	secret := d.Config.Secrets[ServiceSecretName]
	if master := d.Config.Secrets[ServiceMasterSecretName]; secret == "" && master != "" {
		secret = auth.ServiceSecret(master, svc.Name) // identity derives its own
	}
	switch {
	case len(svc.Calls) == 0:
		// Calls nobody: needs no token.
	case secret == "" || err != nil:
		d.Log.Warn("this service has no service credential: the services it calls will refuse it",
			"secret_set", secret != "", "identity", identity)
	default:
		sa.tokens = newTokenSource(ctx, clientCredentials(d.HTTP, identity+"/oauth2/token", auth.ServiceClientID(svc.Name), secret), d.Log)
	}
	if keys == nil {
		d.Log.Warn("no identity address or public URL: every RPC this service serves is refused, and the admin endpoints are off")
		return nil, sa
	}
	return keys, sa
}

var errNoIdentity = errors.New("platform: no identity address or public URL to check tokens against")

// selfURL is the base URL of this process's own listener; a wildcard
// address is reached on loopback.
func selfURL(ln net.Listener) (string, error) {
	addr, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		return "", errors.New("platform: not a TCP listener")
	}
	ip := addr.IP
	if ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return "http://" + net.JoinHostPort(ip.String(), strconv.Itoa(addr.Port)), nil
}

// lazyVerifier builds the token verifier on the first request that needs
// it. Building it fetches identity's keys, and at start-up identity may not
// serve yet (or be this very process): fetching then would hold every
// service's start for the fetch timeout.
type lazyVerifier struct {
	build func() (*auth.Verifier, error)
	v     atomic.Pointer[auth.Verifier] // the fast path of every RPC
	mu    sync.Mutex
}

// get returns the verifier, building it if needed; a failed build is
// retried on the next request.
func (l *lazyVerifier) get() (*auth.Verifier, error) {
	if v := l.v.Load(); v != nil {
		return v, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if v := l.v.Load(); v != nil {
		return v, nil
	}
	v, err := l.build()
	if err != nil {
		return nil, err
	}
	l.v.Store(v)
	return v, nil
}

// Caller verifies r's bearer token (server.Authenticator, for the admin
// endpoints).
func (l *lazyVerifier) Caller(r *http.Request) (*authv1.Caller, error) {
	v, err := l.get()
	if err != nil {
		return nil, apperr.Wrap(err, apperr.Unavailable, "", "admin tokens cannot be checked right now")
	}
	return v.Caller(r)
}

// logOrDiscard is log, or a logger that drops everything when nil (a Deps
// built by hand in a test).
func logOrDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}
