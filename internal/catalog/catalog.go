// Package catalog lists the platform's services: what the binary runs
// (`serve NAME` one, `up` all) and what the deploy manifests must deploy.
// Adding a service means adding it here.
package catalog

import (
	"github.com/rideshare-platform/rideshare/internal/dispatch"
	"github.com/rideshare-platform/rideshare/internal/gateway"
	"github.com/rideshare-platform/rideshare/internal/identity"
	"github.com/rideshare-platform/rideshare/internal/notifications"
	"github.com/rideshare-platform/rideshare/internal/payments"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/pricing"
	"github.com/rideshare-platform/rideshare/internal/rides"
	"github.com/rideshare-platform/rideshare/internal/users"
)

// Services is every service, in the order `up` lists them.
var Services = []platform.Service{
	identity.Service,
	users.Service,
	rides.Service,
	dispatch.Service,
	payments.Service,
	pricing.Service,
	notifications.Service,
	gateway.Service,
}
