// Package rides owns rides and orchestrates the ride saga (DESIGN.md
// section 3): fare quote (pricing), payment hold (payments), driver search
// (dispatch), the trip's steps, and capture, with every failure compensated.
//
// The domain is the Ride aggregate (ride.go) and its saga plan (steps.go),
// plain Go; the store (store.go) loads and saves it with its events in one
// transaction; the saga worker (saga.go) runs its steps against the peers
// behind small interfaces (peers.go); rpc.go serves RidesService.
package rides

import (
	"context"
	"embed"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/rideshare-platform/rideshare/api/dispatch/v1/dispatchv1connect"
	"github.com/rideshare-platform/rideshare/api/payments/v1/paymentsv1connect"
	"github.com/rideshare-platform/rideshare/api/pricing/v1/pricingv1connect"
	"github.com/rideshare-platform/rideshare/api/rides/v1/ridesv1connect"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Service declares the rides service.
var Service = platform.Service{
	Name:       "rides",
	Summary:    "ride lifecycle and the ride saga",
	Database:   true,
	Migrations: sqldb.Sub(migrations, "migrations"),
	Calls:      []string{"pricing", "payments", "dispatch"},
	New:        newService,
}

func newService(_ context.Context, d platform.Deps) (*platform.Component, error) {
	pol, err := policyFrom(d.Setting)
	if err != nil {
		return nil, err
	}
	urls := map[string]string{}
	for _, name := range []string{"pricing", "payments", "dispatch"} {
		if urls[name], err = d.Peer(name); err != nil {
			return nil, err
		}
	}
	opts := d.ClientOptions()
	pr := pricingRPC{pricingv1connect.NewPricingServiceClient(d.HTTP, urls["pricing"], opts...)}
	pay := paymentsRPC{paymentsv1connect.NewPaymentsServiceClient(d.HTTP, urls["payments"], opts...)}
	disp := dispatchRPC{dispatchv1connect.NewDispatchServiceClient(d.HTTP, urls["dispatch"], opts...)}

	m := newMetrics(d.Metrics)
	st := &store{db: d.DB, outbox: d.Outbox, metrics: m}
	sg := newSaga(st, pr, pay, disp, pol, now, d.Log, m)
	srv := &server{store: st, dispatch: disp, policy: pol, area: geo.SanFrancisco, now: now}

	mux := http.NewServeMux()
	mux.Handle(ridesv1connect.NewRidesServiceHandler(srv, d.HandlerOptions()...))
	comp := &platform.Component{Handler: mux, Workers: []platform.Worker{
		{Name: "saga", Run: sg.Run},
		{Name: "idempotency-keys", Run: func(ctx context.Context) error {
			return pruneLoop(ctx, d, time.Hour)
		}},
	}}
	comp.Audit = func(ctx context.Context, q platform.AuditQuery) (any, error) {
		return AuditRides(ctx, d.DB, q.After, q.Limit, now())
	}
	if d.Events != nil {
		comp.Workers = append(comp.Workers, platform.Worker{Name: "search-outcomes", Run: func(ctx context.Context) error {
			return d.Events.Run(ctx, sg.searchOutcomes())
		}})
	}
	return comp, nil
}

// policyFrom reads the service settings (--set rides.KEY=VALUE).
func policyFrom(setting func(key, def string) string) (policy, error) {
	pol := defaultPolicy
	var err error
	for key, dst := range map[string]*time.Duration{
		"rides.search_timeout": &pol.searchTimeout,
		"rides.cancel_grace":   &pol.cancelGrace,
		"rides.hold_timeout":   &pol.holdTimeout,
	} {
		v := setting(key, dst.String())
		if *dst, err = time.ParseDuration(v); err != nil || *dst <= 0 {
			return pol, fmt.Errorf("setting %s=%q: want a positive duration such as 90s", key, v)
		}
	}
	v := setting("rides.cancel_fee", strconv.FormatInt(pol.cancelFee, 10))
	if pol.cancelFee, err = strconv.ParseInt(v, 10, 64); err != nil || pol.cancelFee < 0 {
		return pol, fmt.Errorf("setting rides.cancel_fee=%q: want an amount in minor units, 0 or more", v)
	}
	return pol, nil
}

// pruneLoop forgets old idempotency keys every interval.
func pruneLoop(ctx context.Context, d platform.Deps, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if n, err := pruneKeys(ctx, d.DB, now()); err != nil && ctx.Err() == nil {
			d.Log.Warn("pruning idempotency keys failed", "err", err)
		} else if n > 0 {
			d.Log.Info("pruned idempotency keys", "keys", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// now is the service's clock, truncated to what the database keeps. Tests
// inject their own.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
