package platform

import (
	"context"
	"errors"
	"fmt"
	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/auth"
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
	adminAuth, err := adminAuthenticator(ctx, cfg, d.HTTP, log)
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
	if cfg.NATS != "" {
		d.NATS, d.JS, err = broker.Dial(ctx, broker.DialOptions{URL: cfg.NATS, Name: svc.Name, Logger: log})
		if err != nil {
			return fmt.Errorf("%s: %w", svc.Name, err)
		}
		defer d.NATS.Close()
		if d.DB != nil {
			d.Events = outbox.NewConsumer(d.DB, d.JS, log, reg)
		}
	}

	comp, err := svc.New(ctx, d)
	if err != nil {
		return fmt.Errorf("%s: %w", svc.Name, err)
	}
	if comp.Close != nil {
		defer comp.Close()
	}

	// The service's workers (event consumers above all) bind to streams, so
	// they start once the streams are ensured; until then the process is
	// not ready.
	streamsEnsured := make(chan struct{})
	workers := comp.Workers
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
		Shed: shed, Admin: admin, AdminAuth: adminAuth,
	})
	stopWorkers()
	wg.Wait()
	log.Info("stopped")
	return err
}

// adminAuthenticator verifies admin tokens against identity's published
// keys, the way the gateway verifies every token. It needs identity's
// address and the issuer (the public URL); without either (a unit test, a
// lone `serve`), it is nil and the admin endpoints are off.
func adminAuthenticator(ctx context.Context, cfg Config, client *http.Client, log *slog.Logger) (server.Authenticator, error) {
	identity := strings.TrimRight(cfg.Peers["identity"], "/")
	if identity == "" || cfg.PublicURL == "" {
		return nil, nil
	}
	return &lazyVerifier{build: func() (*auth.Verifier, error) {
		return auth.NewVerifier(ctx, client, identity+"/oauth2/jwks", cfg.PublicURL, log)
	}}, nil
}

// lazyVerifier builds the admin token verifier on the first admin request.
// Building it fetches identity's keys, and at start-up identity may not
// serve yet (or be this very process): fetching then would hold every
// service's start for the fetch timeout. Admin calls are rare; the first
// one pays for the fetch.
type lazyVerifier struct {
	build func() (*auth.Verifier, error)
	mu    sync.Mutex
	v     *auth.Verifier
}

// Caller verifies r's bearer token, building the verifier if needed; a
// failed build is retried on the next request.
func (l *lazyVerifier) Caller(r *http.Request) (*authv1.Caller, error) {
	l.mu.Lock()
	if l.v == nil {
		v, err := l.build()
		if err != nil {
			l.mu.Unlock()
			return nil, apperr.Wrap(err, apperr.Unavailable, "", "admin tokens cannot be checked right now")
		}
		l.v = v
	}
	v := l.v
	l.mu.Unlock()
	return v.Caller(r)
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
