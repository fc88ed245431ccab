// Package pricing owns fare rules and surge state: it quotes fares from
// dispatch's route estimates, its own fare rules (data in its database) and a
// surge multiplier kept from dispatch's supply events. Quotes are signed,
// self-contained tokens, so estimating is read-only and safe to retry.
//
// The service is one flat package: fare.go and surge.go are the pricing
// arithmetic, quote.go the quote tokens, estimate.go the use cases, store.go
// and dispatch.go the adapters, rpc.go the RPC server.
package pricing

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/rideshare-platform/rideshare/api/dispatch/v1/dispatchv1connect"
	"github.com/rideshare-platform/rideshare/api/pricing/v1/pricingv1connect"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Service declares the pricing service.
var Service = platform.Service{
	Name:       "pricing",
	Summary:    "fare estimates and surge",
	Database:   true,
	Migrations: sqldb.Sub(migrations, "migrations"),
	Calls:      []string{"dispatch"},
	New:        newService,
}

// serviceAreas are the areas pricing quotes in; each needs a row in
// fare_rules.
var serviceAreas = []geo.Area{geo.SanFrancisco}

func newService(ctx context.Context, d platform.Deps) (*platform.Component, error) {
	peer, err := d.Peer("dispatch")
	if err != nil {
		return nil, fmt.Errorf("pricing: %w", err)
	}
	cfg, err := readSettings(d)
	if err != nil {
		return nil, err
	}
	st := &store{db: d.DB}
	rules, err := st.fareRules(ctx)
	if err != nil {
		return nil, err
	}
	book, err := newRulebook(serviceAreas, rules)
	if err != nil {
		return nil, err
	}
	secret := []byte(cfg.quoteKey)
	if cfg.quoteKey == "" {
		if secret, err = st.quoteSecret(ctx); err != nil {
			return nil, err
		}
	}
	dc := dispatchClient{rpc: dispatchv1connect.NewDispatchServiceClient(d.HTTP, peer, d.ClientOptions()...)}
	h := &handler{
		store: st, rules: book, routes: dc, zones: dc, surge: cfg.surge,
		quotes: newQuoteSigner(secret), quoteTTL: cfg.quoteTTL, budget: cfg.dispatchBudget,
		now: time.Now, log: d.Log, fallbacks: newFallbackCounter(d.Metrics),
	}
	mux := http.NewServeMux()
	mux.Handle(pricingv1connect.NewPricingServiceHandler(rpcServer{h: h}, d.HandlerOptions()...))
	comp := &platform.Component{Handler: mux}
	if d.Events != nil {
		comp.Workers = append(comp.Workers, platform.Worker{Name: "supply", Run: func(ctx context.Context) error {
			return d.Events.Run(ctx, outbox.Subscription{
				Name:   "pricing-supply",
				Owner:  "dispatch",
				Types:  []string{"dispatch.supply.changed"},
				Handle: h.onSupplyChanged,
			})
		}})
	}
	return comp, nil
}

// config is the service's settings (--set pricing.KEY=VALUE).
type config struct {
	quoteKey       string
	quoteTTL       time.Duration
	dispatchBudget time.Duration
	surge          SurgePolicy
}

// readSettings reads the pricing.* settings; a malformed one stops the
// service at start instead of being silently replaced by its default:
//
//	pricing.quote_key          secret quotes are signed with (default: a random
//	                           secret kept in the pricing database)
//	pricing.quote_ttl          how long a quote is honoured (2m)
//	pricing.dispatch_timeout   budget for dispatch's answers per request (300ms)
//	pricing.surge_k            surge per unit of demand/supply above threshold (0.5)
//	pricing.surge_threshold    demand/supply ratio where surge starts (1)
//	pricing.surge_cap          highest multiplier (3.0)
//	pricing.surge_stale_after  how long a zone's counts count in full (3m)
//	pricing.surge_decay        how long stale surge takes to fade to 1.0 (2m)
func readSettings(d platform.Deps) (config, error) {
	var errs []error
	dur := func(key string, def time.Duration) time.Duration {
		v, err := time.ParseDuration(d.Setting(key, def.String()))
		if err != nil || v <= 0 {
			errs = append(errs, fmt.Errorf("pricing: setting %s: want a positive duration such as %s", key, def))
			return def
		}
		return v
	}
	num := func(key string, def, least float64) float64 {
		v, err := strconv.ParseFloat(d.Setting(key, strconv.FormatFloat(def, 'f', -1, 64)), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < least {
			errs = append(errs, fmt.Errorf("pricing: setting %s: want a number of at least %g", key, least))
			return def
		}
		return v
	}
	p := DefaultSurgePolicy
	c := config{
		quoteKey:       d.Setting("pricing.quote_key", ""),
		quoteTTL:       dur("pricing.quote_ttl", 2*time.Minute),
		dispatchBudget: dur("pricing.dispatch_timeout", 300*time.Millisecond),
		surge: SurgePolicy{
			K:          num("pricing.surge_k", p.K, 0),
			Threshold:  num("pricing.surge_threshold", p.Threshold, 0),
			Cap:        Surge(math.Round(num("pricing.surge_cap", p.Cap.Float(), 1) * 10)),
			StaleAfter: dur("pricing.surge_stale_after", p.StaleAfter),
			DecayFor:   dur("pricing.surge_decay", p.DecayFor),
		},
	}
	return c, errors.Join(errs...)
}
