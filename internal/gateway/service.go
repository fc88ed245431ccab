// Package gateway is the platform's only public entry: the REST/JSON API of
// DESIGN.md section 7. It authenticates every request against the token
// issuer's published keys (identity's, or an external OpenID Connect
// provider's), rate-limits each caller, authorizes the route by role, turns
// JSON into RPCs with the caller attached (the owning services authorize
// each object), and maps every error to problem+json through apperr.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare-platform/rideshare/api/dispatch/v1/dispatchv1connect"
	"github.com/rideshare-platform/rideshare/api/identity/v1/identityv1connect"
	"github.com/rideshare-platform/rideshare/api/notifications/v1/notificationsv1connect"
	"github.com/rideshare-platform/rideshare/api/pricing/v1/pricingv1connect"
	"github.com/rideshare-platform/rideshare/api/rides/v1/ridesv1connect"
	"github.com/rideshare-platform/rideshare/api/users/v1/usersv1connect"
	"github.com/rideshare-platform/rideshare/internal/auth"
	"github.com/rideshare-platform/rideshare/internal/platform"
)

// Service declares the gateway.
var Service = platform.Service{
	Name:    "gateway",
	Summary: "public REST/JSON API: authentication, authorization, routing",
	Calls:   calls,
	New:     newGateway,
}

// calls are the services behind the gateway.
var calls = []string{"identity", "users", "rides", "dispatch", "payments", "pricing", "notifications"}

// Gateway serves the public API.
type Gateway struct {
	deps          platform.Deps
	auth          *auth.Verifier
	identity      identityv1connect.IdentityServiceClient
	users         usersv1connect.UsersServiceClient
	rides         ridesv1connect.RidesServiceClient
	dispatch      dispatchv1connect.DispatchServiceClient
	pricing       pricingv1connect.PricingServiceClient
	notifications notificationsv1connect.NotificationsServiceClient
	peers         map[string]string
	limits        *limiter
	clients       clientAddrs
	profiles      *profileCache
	fallbacks     *prometheus.CounterVec
}

func newGateway(ctx context.Context, d platform.Deps) (*platform.Component, error) {
	if d.Config.PublicURL == "" {
		return nil, errors.New("gateway: the public URL (token issuer) is not set")
	}
	g := &Gateway{deps: d, peers: map[string]string{},
		profiles: newProfileCache(profileCacheSize, profileCacheAge, time.Now), fallbacks: newFallbackCounter()}
	for _, name := range calls {
		u, err := d.Peer(name)
		if err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
		g.peers[name] = u
	}
	opts := d.ClientOptions()
	g.identity = identityv1connect.NewIdentityServiceClient(d.HTTP, g.peers["identity"], opts...)
	g.users = usersv1connect.NewUsersServiceClient(d.HTTP, g.peers["users"], opts...)
	g.rides = ridesv1connect.NewRidesServiceClient(d.HTTP, g.peers["rides"], opts...)
	g.dispatch = dispatchv1connect.NewDispatchServiceClient(d.HTTP, g.peers["dispatch"], opts...)
	g.pricing = pricingv1connect.NewPricingServiceClient(d.HTTP, g.peers["pricing"], opts...)
	g.notifications = notificationsv1connect.NewNotificationsServiceClient(d.HTTP, g.peers["notifications"], opts...)
	verifier, err := auth.New(ctx, issuerConfig(d, g.peers["identity"]))
	if err != nil {
		return nil, err
	}
	g.auth = verifier
	if g.clients, err = parseTrustedProxies(d.Setting("gateway.trusted_proxies", "")); err != nil {
		return nil, err
	}
	policies, err := loadPolicies(d.Setting)
	if err != nil {
		return nil, err
	}
	g.limits = newLimiter(policies, time.Now)
	if err := g.registerMetrics(d.Metrics); err != nil {
		return nil, err
	}
	var workers []platform.Worker
	if d.Replicas != nil {
		// Replicas each enforce their share of the limits (ratelimit.go).
		workers = append(workers, platform.Worker{Name: "gateway-rate-limit-share",
			Run: g.limits.followReplicas(d.Replicas, replicaPoll, d.Log)})
	}
	return &platform.Component{Handler: g.handler(), Ready: g.ready, Workers: workers}, nil
}

// issuerConfig is whose tokens the gateway trusts: the built-in identity
// service (keys fetched from it directly), or, with gateway.oidc_issuer set,
// any standard OpenID Connect provider, found through its discovery
// document. gateway.oidc_audience is the audience its access tokens name
// for this API, gateway.role_claim where it puts the role (a dotted path
// such as Keycloak's realm_access.roles), and gateway.oidc_require_jti=false
// accepts a provider whose access tokens carry no id (Auth0).
func issuerConfig(d platform.Deps, identityURL string) auth.Config {
	cfg := auth.Config{
		Issuer:    d.Config.PublicURL,
		JWKSURL:   identityURL + "/oauth2/jwks",
		Audience:  auth.Audience,
		RoleClaim: d.Setting("gateway.role_claim", auth.DefaultRoleClaim),
		Client:    d.HTTP,
		Log:       d.Log,
	}
	if iss := d.Setting("gateway.oidc_issuer", ""); iss != "" {
		cfg.Issuer, cfg.JWKSURL = iss, ""
		cfg.Audience = d.Setting("gateway.oidc_audience", auth.Audience)
		cfg.AllowMissingJTI = d.Setting("gateway.oidc_require_jti", "true") == "false"
		d.Log.Info("trusting an external token issuer", "issuer", iss, "audience", cfg.Audience, "role_claim", cfg.RoleClaim)
	}
	return cfg
}

// registerMetrics exposes how often callers are limited, how many
// buckets the limiter holds, and how often a route fell back.
func (g *Gateway) registerMetrics(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	g.limits.limited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rideshare_gateway_rate_limited_total",
		Help: "Requests refused with 429, by rate-limit policy.",
	}, []string{"policy"})
	buckets := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rideshare_gateway_rate_limit_buckets",
		Help: "Token buckets the gateway holds (one per active caller and policy).",
	}, func() float64 { return float64(g.limits.size()) })
	replicas := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rideshare_gateway_rate_limit_replicas",
		Help: "Gateway replicas the rate limits are shared among: each enforces 1/N of every limit.",
	}, func() float64 { return float64(g.limits.replicas.Load().n) })
	for _, c := range []prometheus.Collector{g.limits.limited, buckets, replicas, g.fallbacks} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("gateway: metrics: %w", err)
		}
	}
	return nil
}

// ready is true once the token issuer's keys are located: without them the
// gateway can refuse every request but serve none. It does not wait for the
// services behind it: each has its own readiness, and a gateway that left
// the load balancer whenever one of them was down would take away the
// fallbacks that keep the rest answering (see fallback.go).
func (g *Gateway) ready(context.Context) error {
	return g.auth.Ready()
}

// publicPath reports whether path belongs to the public surface the gateway
// forwards to identity unchanged (OAuth endpoints and discovery).
func publicPath(path string) bool {
	return strings.HasPrefix(path, "/oauth2/") || strings.HasPrefix(path, "/.well-known/")
}
