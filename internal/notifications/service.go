// Package notifications turns ride events into messages for riders and
// drivers, keeps them in a delivery log, and streams them to the gateway,
// which relays them as server-sent events.
package notifications

import (
	"context"
	"embed"
	"net/http"

	"github.com/rideshare-platform/rideshare/api/notifications/v1/notificationsv1connect"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Service declares the notifications service.
var Service = platform.Service{
	Name:       "notifications",
	Summary:    "ride events turned into per-user streams",
	Database:   true,
	Migrations: sqldb.Sub(migrations, "migrations"),
	New:        newService,
}

func newService(_ context.Context, d platform.Deps) (*platform.Component, error) {
	h := &handler{log: &deliveryLog{db: d.DB}, hub: newHub()}
	mux := http.NewServeMux()
	mux.Handle(notificationsv1connect.NewNotificationsServiceHandler(h, d.HandlerOptions()...))
	comp := &platform.Component{Handler: mux}
	if d.Events != nil {
		comp.Workers = append(comp.Workers, platform.Worker{Name: "ride-events", Run: func(ctx context.Context) error {
			return d.Events.Run(ctx, outbox.Subscription{
				Name:   "notifications-rides",
				Owner:  "rides",
				Types:  []string{"rides.ride.requested", "rides.ride.status_changed"},
				Handle: h.onRideEvent,
			})
		}})
	}
	return comp, nil
}
