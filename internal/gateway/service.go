// Package gateway is the platform's only public entry: the REST/JSON API of
// DESIGN.md section 7. It authenticates every request against the identity
// service's published keys, authorizes the route by role, turns JSON into
// RPCs with the caller attached (the owning services authorize each object),
// and maps every error to problem+json through apperr.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

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
}

func newGateway(ctx context.Context, d platform.Deps) (*platform.Component, error) {
	if d.Config.PublicURL == "" {
		return nil, errors.New("gateway: the public URL (token issuer) is not set")
	}
	g := &Gateway{deps: d, peers: map[string]string{}}
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
	verifier, err := auth.NewVerifier(ctx, d.HTTP, g.peers["identity"]+"/oauth2/jwks", d.Config.PublicURL, d.Log)
	if err != nil {
		return nil, err
	}
	g.auth = verifier
	return &platform.Component{Handler: g.handler(), Ready: g.ready}, nil
}

// ready is true when every service behind the gateway is: a platform that
// answers its front door but cannot take a ride is not ready.
func (g *Gateway) ready(ctx context.Context) error {
	eg, ctx := errgroup.WithContext(ctx)
	for name, base := range g.peers {
		eg.Go(func() error {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(rctx, http.MethodGet, base+"/readyz", nil)
			if err != nil {
				return err
			}
			res, err := g.deps.HTTP.Do(req)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				return fmt.Errorf("%s not ready (%d)", name, res.StatusCode)
			}
			return nil
		})
	}
	return eg.Wait()
}

// publicPath reports whether path belongs to the public surface the gateway
// forwards to identity unchanged (OAuth endpoints and discovery).
func publicPath(path string) bool {
	return strings.HasPrefix(path, "/oauth2/") || strings.HasPrefix(path, "/.well-known/")
}
