// Package dispatch owns driver availability and positions, and matches
// riders to drivers.
//
// Positions live in memory (a grid index per process, fed by high-frequency
// pings, broadcast to the other replicas and written to the database
// lazily); what must survive a restart is in the dispatch database: who is
// online, searches, offers, and the per-driver semantic locks that keep a
// driver from being offered or booked two rides at once. Offer expiry and
// search deadlines are stored due times driven by a timer worker, so a
// restart resumes them. Outcomes reach the ride saga as events:
// dispatch.ride.driver_assigned, dispatch.ride.search_failed, plus
// dispatch.offer.declined and, for pricing, dispatch.supply.changed per
// zone (see zone.go).
package dispatch

import (
	"context"
	"embed"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare-platform/rideshare/api/dispatch/v1/dispatchv1connect"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Service declares the dispatch service.
var Service = platform.Service{
	Name:       "dispatch",
	Summary:    "driver positions, matching, offers, route estimates",
	Database:   true,
	Migrations: sqldb.Sub(migrations, "migrations"),
	New:        newService,
}

func newService(ctx context.Context, deps platform.Deps) (*platform.Component, error) {
	cfg, est, err := settings(deps.Setting)
	if err != nil {
		return nil, err
	}
	d, err := newDispatcher(ctx, deps.DB, deps.Outbox, est, time.Now, cfg, deps.Metrics, deps.Log)
	if err != nil {
		return nil, err
	}
	workers := []platform.Worker{
		{Name: "dispatch-timers", Run: d.runTimers},
		{Name: "dispatch-positions", Run: d.runPositions},
		{Name: "dispatch-fleet-refresh", Run: d.runRefresh},
		{Name: "dispatch-supply", Run: d.runSupply},
	}
	if deps.NATS != nil {
		if d.cast, err = newBroadcaster(deps.NATS, d.fleet, cfg.castWindow, deps.Metrics, d.log); err != nil {
			return nil, err
		}
		workers = append(workers, platform.Worker{Name: "dispatch-fleet-broadcast", Run: d.cast.run})
	}
	mux := http.NewServeMux()
	mux.Handle(dispatchv1connect.NewDispatchServiceHandler(&handler{d: d}, deps.HandlerOptions()...))
	return &platform.Component{Handler: mux, Workers: workers}, nil
}

// newDispatcher builds the dispatcher and loads the fleet (online drivers,
// their last stored positions, the locks) from db.
func newDispatcher(ctx context.Context, db *sqldb.DB, ob *outbox.Outbox, router Router, now func() time.Time,
	cfg config, reg prometheus.Registerer, log *slog.Logger) (*dispatcher, error) {
	if log == nil {
		log = slog.Default()
	}
	st := &store{db: db}
	f := newFleet()
	d := &dispatcher{
		store: st, outbox: ob, fleet: f, router: router, now: now, cfg: cfg,
		metrics: newMetrics(reg, f, st), log: log, wake: make(chan struct{}, 1),
	}
	if _, err := d.refreshFleet(ctx, time.Time{}); err != nil {
		return nil, err
	}
	return d, nil
}

// settings reads the service's --set options:
//
//	dispatch.offer_ttl        how long a driver has to answer an offer (15s)
//	dispatch.search_timeout   deadline of a StartSearch without one (2m)
//	dispatch.search_retry     how often a search with no free driver looks again (2s)
//	dispatch.position_flush   how often positions are persisted (5s)
//	dispatch.fleet_refresh    how often the fleet is re-read from the database (5s)
//	dispatch.fleet_broadcast  how long fleet changes are gathered before broadcasting them to the other replicas (50ms)
//	dispatch.supply_interval  how often zones are checked for SupplyChanged (3s)
//	dispatch.supply_repeat    re-announce an unchanged busy zone after this (1m)
//	dispatch.detour_factor    route length over straight-line distance (1.3)
//	dispatch.city_speed_kmh   average driving speed (25)
func settings(get func(key, def string) string) (config, Estimator, error) {
	cfg := defaultConfig
	durations := []struct {
		key string
		v   *time.Duration
	}{
		{"dispatch.offer_ttl", &cfg.offerTTL},
		{"dispatch.search_timeout", &cfg.searchTimeout},
		{"dispatch.search_retry", &cfg.retryEvery},
		{"dispatch.position_flush", &cfg.flushEvery},
		{"dispatch.fleet_refresh", &cfg.refreshEvery},
		{"dispatch.fleet_broadcast", &cfg.castWindow},
		{"dispatch.supply_interval", &cfg.supplyEvery},
		{"dispatch.supply_repeat", &cfg.supplyRepeat},
	}
	for _, s := range durations {
		v, err := time.ParseDuration(get(s.key, s.v.String()))
		if err != nil || v <= 0 {
			return config{}, Estimator{}, fmt.Errorf("setting %s: want a positive duration such as 15s, got %q", s.key, get(s.key, ""))
		}
		*s.v = v
	}
	est := DefaultEstimator
	floats := []struct {
		key string
		v   *float64
		min float64
	}{
		{"dispatch.detour_factor", &est.DetourFactor, 1},
		{"dispatch.city_speed_kmh", &est.SpeedKMH, 1},
	}
	for _, s := range floats {
		v, err := strconv.ParseFloat(get(s.key, strconv.FormatFloat(*s.v, 'g', -1, 64)), 64)
		if err != nil || v < s.min {
			return config{}, Estimator{}, fmt.Errorf("setting %s: want a number of at least %g, got %q", s.key, s.min, get(s.key, ""))
		}
		*s.v = v
	}
	return cfg, est, nil
}

// runPositions is the position flusher: every flushEvery it writes the
// positions that changed, and once more on the way out so a clean restart
// loses none.
func (d *dispatcher) runPositions(ctx context.Context) error {
	t := time.NewTicker(d.cfg.flushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			return d.flushPositions(fctx)
		case <-t.C:
		}
		if err := d.flushPositions(ctx); err != nil && ctx.Err() == nil {
			d.log.WarnContext(ctx, "persisting positions", "err", err)
		}
	}
}

// refreshSlack re-reads rows a little older than the last refresh: a
// transaction stamped before that refresh may have committed after it.
const refreshSlack = 30 * time.Second

// runRefresh re-reads, every refreshEvery, the drivers and locks other
// replicas changed: the broadcast (broadcast.go) tells a replica at once,
// and this catches what it missed (a lost message, a replica without a
// broker), so every replica matches against the same fleet.
func (d *dispatcher) runRefresh(ctx context.Context) error {
	t := time.NewTicker(d.cfg.refreshEvery)
	defer t.Stop()
	since := d.clock()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		readAt, err := d.refreshFleet(ctx, since.Add(-refreshSlack))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d.log.WarnContext(ctx, "refreshing the fleet", "err", err)
			continue
		}
		since = readAt
	}
}
