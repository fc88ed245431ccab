package users

import (
	"context"
	"embed"
	"net/http"

	eventsv1 "github.com/rideshare-platform/rideshare/api/events/v1"
	identityv1 "github.com/rideshare-platform/rideshare/api/identity/v1"
	"github.com/rideshare-platform/rideshare/api/rides/v1/ridesv1connect"
	"github.com/rideshare-platform/rideshare/api/users/v1/usersv1connect"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Service declares the users service.
var Service = platform.Service{
	Name:       "users",
	Summary:    "rider and driver profiles, vehicles, ratings",
	Database:   true,
	Migrations: sqldb.Sub(migrations, "migrations"),
	Calls:      []string{"rides"},
	New:        newService,
}

func newService(_ context.Context, d platform.Deps) (*platform.Component, error) {
	ridesURL, err := d.Peer("rides")
	if err != nil {
		return nil, err
	}
	h := &handler{
		store: &store{db: d.DB, outbox: d.Outbox},
		rides: ridesRPC{ridesv1connect.NewRidesServiceClient(d.HTTP, ridesURL, d.ClientOptions()...)},
	}
	mux := http.NewServeMux()
	mux.Handle(usersv1connect.NewUsersServiceHandler(h, d.HandlerOptions()...))
	comp := &platform.Component{Handler: mux}
	if d.Events != nil {
		comp.Workers = append(comp.Workers, platform.Worker{Name: "accounts", Run: func(ctx context.Context) error {
			return d.Events.Run(ctx, outbox.Subscription{
				Name:   "users-accounts",
				Owner:  "identity",
				Types:  []string{"identity.account.created"},
				Handle: h.onAccountCreated,
			})
		}})
	}
	return comp, nil
}

// onAccountCreated makes sure every account gets its profile even when the
// gateway's direct call after signup never arrived (it crashed, or users was
// down at that moment).
func (h *handler) onAccountCreated(ctx context.Context, tx *sqldb.Tx, env *eventsv1.Envelope) error {
	var ev identityv1.AccountCreated
	if err := env.GetPayload().UnmarshalTo(&ev); err != nil {
		return apperr.Wrap(err, apperr.Invalid, "", "malformed identity.account.created")
	}
	p, err := newProfile(ev.GetAccountId(), ev.GetRole(), ev.GetName(), ev.GetEmail(), ev.GetVehicle())
	if err != nil {
		return err // Invalid: the event can never apply, and is dropped
	}
	_, err = h.store.createTx(ctx, tx, p)
	return err
}
