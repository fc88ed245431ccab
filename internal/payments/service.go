// Package payments owns payment intents, their idempotency keys and a
// double-entry ledger. It places holds, captures, voids and refunds against
// a card network (a simulated one by default, behind the Network interface),
// records every movement of money as a balanced ledger transaction, and
// announces each state change through the outbox in the same transaction.
//
// The rides saga calls it; operators can too. Every write is idempotent by
// key and finishes exactly once even if this process dies mid-way (see
// processor).
package payments

import (
	"context"
	"embed"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/rideshare-platform/rideshare/api/payments/v1/paymentsv1connect"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Service declares the payments service.
var Service = platform.Service{
	Name:       "payments",
	Summary:    "holds, captures, refunds and a double-entry ledger",
	Database:   true,
	Migrations: sqldb.Sub(migrations, "migrations"),
	New:        newService,
}

// recoveryInterval is how often pending operations whose lease ran out are
// looked for. Short enough that a hold left by a crash is recorded (and
// can be voided) within seconds of its lease ending.
const recoveryInterval = 5 * time.Second

// Settings are the service's knobs, from --set payments.KEY=VALUE.
type Settings struct {
	// Latency is added to every call to the simulated card network.
	Latency time.Duration
	// DeclineRate is the share, 0 to 1, of good cards the simulated
	// network declines at random.
	DeclineRate float64
}

// readSettings parses payments.latency (a Go duration, default 0) and
// payments.decline_rate (0 to 1, default 0). A bad value stops the service
// from starting rather than running with a silently different setting.
func readSettings(d platform.Deps) (Settings, error) {
	var s Settings
	var err error
	if s.Latency, err = time.ParseDuration(d.Setting("payments.latency", "0s")); err != nil || s.Latency < 0 {
		return s, fmt.Errorf("payments.latency: want a non-negative Go duration such as 250ms, got %q", d.Setting("payments.latency", ""))
	}
	if s.DeclineRate, err = strconv.ParseFloat(d.Setting("payments.decline_rate", "0"), 64); err != nil || s.DeclineRate < 0 || s.DeclineRate > 1 {
		return s, fmt.Errorf("payments.decline_rate: want a number from 0 to 1, got %q", d.Setting("payments.decline_rate", ""))
	}
	return s, nil
}

func newService(_ context.Context, d platform.Deps) (*platform.Component, error) {
	s, err := readSettings(d)
	if err != nil {
		return nil, err
	}
	pr := newProcessor(d.DB, d.Outbox, NewCardNetwork(d.DB, s.Latency, s.DeclineRate), newMetrics(d.Metrics), d.Log, s.Latency)
	h := &handler{pr: pr, log: pr.log}
	mux := http.NewServeMux()
	mux.Handle(paymentsv1connect.NewPaymentsServiceHandler(h, d.HandlerOptions()...))
	pr.log.Info("payments: simulated card network", "latency", s.Latency, "decline_rate", s.DeclineRate)
	return &platform.Component{
		Handler: mux,
		Workers: []platform.Worker{{Name: "recovery", Run: func(ctx context.Context) error {
			return pr.runRecovery(ctx, recoveryInterval)
		}}},
		Audit: func(ctx context.Context, q platform.AuditQuery) (any, error) {
			return pr.store.audit(ctx, q.After, q.Limit)
		},
	}, nil
}
