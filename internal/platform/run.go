package platform

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rideshare-platform/rideshare/internal/broker"
	"github.com/rideshare-platform/rideshare/internal/faults"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/resilience"
	"github.com/rideshare-platform/rideshare/internal/server"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/telemetry"
)

// Run hosts svc until ctx ends: it opens and migrates the service's
// database, connects to the broker, builds the service, runs its workers and
// the outbox relay, and serves HTTP. It returns once everything has stopped.
func Run(ctx context.Context, svc Service, cfg Config) error {
	stderr := cfg.Stderr
	if stderr == nil {
		stderr = os.Stderr
	}
	log := telemetry.NewLogger(stderr, svc.Name, cfg.LogLevel)
	reg := telemetry.NewRegistry()
	d := Deps{Config: cfg, HTTP: NewHTTPClient(), Log: log, Metrics: reg}
	var err error
	if d.Resilience, err = resilience.New(resilience.Options{Settings: cfg.Settings, Peers: svc.Calls, Metrics: reg}); err != nil {
		return fmt.Errorf("%s: %w", svc.Name, err)
	}
	shed, err := resilience.ParseShedOptions(cfg.Settings)
	if err != nil {
		return fmt.Errorf("%s: %w", svc.Name, err)
	}
	// The fault-injection switch: off until an admin sets a fault, so drills
	// and tests can make this process slow or broken on purpose.
	injector := faults.New(faults.Options{Logger: log, Metrics: reg})
	// Admin endpoints every process serves, each under /admin/ and behind
	// an admin token (see server.Config.Admin).
	admin := map[string]http.Handler{
		"/admin/resilience": d.Resilience.AdminHandler(),
		"/admin/faults":     injector.Admin(),
	}

	ln, err := server.Listen(cfg.Listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	var also []net.Listener
	if cfg.InstanceListen != "" {
		own, err := server.Listen(cfg.InstanceListen)
		if err != nil {
			return err
		}
		defer own.Close()
		also = append(also, own)
	}

	// Tokens (serviceauth.go): identity's keys check the admin endpoints'
	// tokens and the service token of every RPC served; this service's own
	// token goes on every RPC it makes.
	adminAuth, serviceAuth := authenticators(ctx, d, svc, ln)
	d.ServiceAuth = serviceAuth

	if svc.Database {
		if d.DB, err = sqldb.Open(ctx, cfg.DB); err != nil {
			return fmt.Errorf("%s: %w", svc.Name, err)
		}
		defer d.DB.Close()
		if err := d.DB.Migrate(ctx, outbox.Migrations(), outbox.MigrationTable); err != nil {
			return fmt.Errorf("%s: %w", svc.Name, err)
		}
		if svc.Migrations != nil {
			if err := d.DB.Migrate(ctx, svc.Migrations, "schema_migrations"); err != nil {
				return fmt.Errorf("%s: %w", svc.Name, err)
			}
		}
		d.Outbox = outbox.New(d.DB, svc.Name, outbox.Options{Logger: log, Metrics: reg})
	}
	var registry []Worker
	if cfg.NATS != "" {
		d.NATS, d.JS, err = broker.Dial(ctx, broker.DialOptions{URL: cfg.NATS, Name: svc.Name, Logger: log, Security: cfg.NATSSecurity})
		if err != nil {
			return fmt.Errorf("%s: %w", svc.Name, err)
		}
		defer d.NATS.Close()
		if d.DB != nil {
			d.Events = outbox.NewConsumer(d.DB, d.JS, log, reg)
		}
		var view http.Handler
		if registry, view, err = useDiscovery(ctx, &d, svc, ln); err != nil {
			return fmt.Errorf("%s: %w", svc.Name, err)
		}
		if view != nil {
			admin["/admin/discovery"] = view
		}
	}

	comp, err := svc.New(ctx, d)
	if err != nil {
		return fmt.Errorf("%s: %w", svc.Name, err)
	}
	if comp.Close != nil {
		defer comp.Close()
	}
	admin[AuditPath] = auditHandler(svc.Name, cfg.Instance, d.Outbox, comp.Audit)

	// The service's workers (event consumers above all) bind to streams, so
	// they start once the streams are ensured; until then the process is
	// not ready.
	streamsEnsured := make(chan struct{})
	workers := append(comp.Workers, registry...)
	if d.Outbox != nil && d.JS != nil {
		workers = append(workers, Worker{Name: "outbox-relay", Run: func(ctx context.Context) error {
			return d.Outbox.Relay(ctx, d.JS)
		}})
	}
	if d.JS == nil {
		close(streamsEnsured)
	}

	wctx, stopWorkers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if d.JS != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runWorker(wctx, log, Worker{Name: "streams", Run: func(ctx context.Context) error {
				if err := broker.EnsureStreams(ctx, d.JS, cfg.StreamReplicas); err != nil {
					return err
				}
				close(streamsEnsured)
				<-ctx.Done()
				return nil
			}})
		}()
	}
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-streamsEnsured:
				runWorker(wctx, log, w)
			case <-wctx.Done():
			}
		}()
	}

	ready := func(ctx context.Context) error {
		if d.DB != nil {
			if err := d.DB.Ping(ctx); err != nil {
				return err
			}
		}
		if d.NATS != nil {
			if d.NATS.Status() != nats.CONNECTED {
				return errors.New("broker not connected")
			}
			select {
			case <-streamsEnsured:
			default:
				return errors.New("broker streams not yet ensured")
			}
		}
		if comp.Ready != nil {
			return comp.Ready(ctx)
		}
		return nil
	}
	log.Info("serving", "addr", ln.Addr().String(), "db", d.DB != nil, "broker", cfg.NATS != "")
	err = server.Serve(ctx, ln, server.Config{
		Handler: injector.Middleware(comp.Handler), Ready: ready, Registry: reg, Logger: log,
		Shed: shed, Admin: admin, AdminAuth: adminAuth, Also: also,
	})
	stopWorkers()
	wg.Wait()
	log.Info("stopped")
	return err
}

// runWorker keeps w running until ctx ends, restarting it with capped
// backoff when it fails: a consumer whose broker is restarting must come
// back by itself, not take the process down.
func runWorker(ctx context.Context, log *slog.Logger, w Worker) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := w.Run(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			backoff = 100 * time.Millisecond
		}
		log.Warn("worker stopped; restarting", "worker", w.Name, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}
