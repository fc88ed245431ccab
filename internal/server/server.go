// Package server runs a rideshare process's HTTP server: the same timeouts,
// body limit, request ids, logs, metrics, health and readiness endpoints,
// load shedding and admin endpoints for every service, with HTTP/2 over
// cleartext so gRPC clients work too.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/auth"
	"github.com/rideshare-platform/rideshare/internal/resilience"
	"github.com/rideshare-platform/rideshare/internal/telemetry"
)

// Timeouts every server uses. WriteTimeout bounds ordinary responses; a
// streaming handler (server-sent events) lifts it for its own response with
// http.ResponseController.
const (
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 30 * time.Second
	WriteTimeout      = 60 * time.Second
	IdleTimeout       = 120 * time.Second
	ShutdownTimeout   = 10 * time.Second
	// DefaultMaxBody is the request body limit; larger bodies get 413.
	DefaultMaxBody = 1 << 20
)

// Listen opens addr: "host:port", or "fd:N" for a socket inherited from the
// parent (rideshare up keeps each service's socket across restarts).
func Listen(addr string) (net.Listener, error) {
	if fd, ok := strings.CutPrefix(addr, "fd:"); ok {
		n, err := strconv.Atoi(fd)
		if err != nil || n < 3 {
			return nil, fmt.Errorf("server: bad inherited socket %q", addr)
		}
		f := os.NewFile(uintptr(n), "listener")
		defer f.Close() // FileListener dups it
		ln, err := net.FileListener(f)
		if err != nil {
			return nil, fmt.Errorf("server: inherited socket %s: %w", addr, err)
		}
		return ln, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("server: listen %s: %w", addr, err)
	}
	return ln, nil
}

// Config describes one server.
type Config struct {
	// Handler serves everything but the infrastructure endpoints.
	Handler http.Handler
	// Ready reports whether the process can do its work (database and
	// broker reachable); nil means always ready.
	Ready func(ctx context.Context) error
	// Registry backs /metrics and receives the HTTP metrics.
	Registry *prometheus.Registry
	Logger   *slog.Logger
	// MaxBody overrides DefaultMaxBody.
	MaxBody int64
	// WriteTimeout overrides WriteTimeout (tests use a short one).
	WriteTimeout time.Duration
	// Shed configures the load shedding of Handler; the zero value means
	// resilience.DefaultShed, and Shed.Off turns it off. The
	// infrastructure and admin endpoints are never shed: a probe or an
	// operator must get through to an overloaded process.
	Shed resilience.ShedOptions
	// Admin are operator endpoints by path ("/admin/resilience"); each
	// also serves the paths below it. Every one requires an access token
	// with the admin role, checked with AdminAuth: 401 without a valid
	// token, 403 without the role. Without AdminAuth they are not served
	// at all (404), so no process ever exposes them unauthenticated.
	Admin     map[string]http.Handler
	AdminAuth Authenticator
	// Also are further listeners served exactly like the main one. A
	// replica whose main socket is shared with its siblings (up's gateway
	// replicas accept on one public socket) listens on one of its own
	// too: a probe or an operator sent to the shared socket reaches
	// whichever replica accepts first, one sent here reaches this one.
	Also []net.Listener
}

// Authenticator says who sends a request, from its bearer token
// (*auth.Verifier is one).
type Authenticator interface {
	Caller(r *http.Request) (*authv1.Caller, error)
}

// AdminPrefix is where admin endpoints live; paths under it never reach
// the service's handler.
const AdminPrefix = "/admin/"

// Serve serves on ln until ctx ends, then shuts down gracefully: it stops
// accepting, lets in-flight requests finish within ShutdownTimeout, and
// returns.
func Serve(ctx context.Context, ln net.Listener, c Config) error {
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	maxBody := c.MaxBody
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeStatus(w, http.StatusOK, "ok", "")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if c.Ready != nil {
			rctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			if err := c.Ready(rctx); err != nil {
				writeStatus(w, http.StatusServiceUnavailable, "unavailable", err.Error())
				return
			}
		}
		writeStatus(w, http.StatusOK, "ready", "")
	})
	if c.Registry != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(c.Registry, promhttp.HandlerOpts{Registry: c.Registry}))
	}
	if c.Handler != nil {
		shedOpts := c.Shed
		if shedOpts == (resilience.ShedOptions{}) {
			shedOpts = resilience.DefaultShed
		}
		var reg prometheus.Registerer
		if c.Registry != nil {
			reg = c.Registry
		}
		shed, err := resilience.NewShedder(shedOpts, reg)
		if err != nil {
			return fmt.Errorf("server: %w", err)
		}
		mux.Handle("/", shed.Wrap(c.Handler))
	}
	mux.Handle(AdminPrefix, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		apperr.WriteProblem(w, r, apperr.E(apperr.NotFound, "", "no such endpoint: %s", r.URL.Path), 0)
	}))
	if c.AdminAuth != nil {
		for path, h := range c.Admin {
			if !strings.HasPrefix(path, AdminPrefix) || strings.HasSuffix(path, "/") {
				return fmt.Errorf("server: admin endpoint %q must be a path under %s", path, AdminPrefix)
			}
			h = requireAdmin(c.AdminAuth, h)
			mux.Handle(path, h)
			mux.Handle(path+"/", h)
		}
	}

	var h http.Handler = mux
	h = limitBody(h, maxBody)
	h = accessLog(h, log)
	if c.Registry != nil {
		h = telemetry.NewHTTPMetrics(c.Registry).Wrap(h)
	}
	h = telemetry.RequestIDs(h)
	h = streamsUnbounded(h)

	writeTimeout := c.WriteTimeout
	if writeTimeout <= 0 {
		writeTimeout = WriteTimeout
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)

	listeners := append([]net.Listener{ln}, c.Also...)
	errc := make(chan error, len(listeners))
	for _, l := range listeners {
		go func() { errc <- srv.Serve(l) }()
	}
	var failed error
	select {
	case failed = <-errc:
		failed = fmt.Errorf("server: %w", failed)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = srv.Close()
	}
	waiting := len(listeners)
	if failed != nil {
		waiting--
	}
	for range waiting {
		if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
	}
	return errors.Join(failed, err)
}

// streamsUnbounded lifts the write timeout for streaming RPCs (Connect
// streaming and gRPC): a notification stream lives as long as its caller
// wants, and the caller's deadline, which the RPC carries, is what bounds it.
func streamsUnbounded(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ct := r.Header.Get("Content-Type")
		if strings.HasPrefix(ct, "application/connect+") || strings.HasPrefix(ct, "application/grpc") {
			_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
		}
		next.ServeHTTP(w, r)
	})
}

// requireAdmin lets only callers with an admin's access token reach next.
func requireAdmin(a Authenticator, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := a.Caller(r)
		if err != nil {
			if apperr.Is(err, apperr.Unauthenticated) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="rideshare"`)
			}
			apperr.WriteProblem(w, r, err, 0)
			return
		}
		if auth.RoleName(c.GetRole()) != "admin" {
			apperr.WriteProblem(w, r, apperr.E(apperr.Forbidden, "", "admin endpoints require the admin role"), 0)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeStatus(w http.ResponseWriter, code int, status, detail string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(struct {
		Status string `json:"status"`
		Detail string `json:"detail,omitempty"`
	}{status, detail})
}

// limitBody caps every request body; reading past the cap fails with
// *http.MaxBytesError, which handlers (and the RPC layer) turn into 413.
func limitBody(next http.Handler, max int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			w.Header().Set("Connection", "close")
			apperr.WriteProblem(w, r, apperr.E(apperr.TooLarge, "", "request body exceeds %d bytes", max), 0)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, max)
		next.ServeHTTP(w, r)
	})
}

// accessLog logs failed and slow requests; successful fast ones are counted
// by the metrics, not logged, so logs stay readable under load.
func accessLog(next http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if r.URL.Path == "/readyz" || r.URL.Path == "/healthz" {
			// Probes run many times a second during start; their answer is
			// the supervisor's business, not the log's.
			next.ServeHTTP(w, r)
			return
		}
		rec := telemetry.NewRecorder(w)
		next.ServeHTTP(rec, r)
		d := time.Since(start)
		if rec.Status == http.StatusServiceUnavailable && rec.Header().Get("Retry-After") != "" {
			// Shed under overload: thousands a second would drown the log;
			// rideshare_shed_rejected_total counts them.
			return
		}
		if rec.Status >= 500 || d > time.Second {
			log.WarnContext(r.Context(), "request", "method", r.Method, "path", r.URL.Path, "status", rec.Status, "duration_ms", d.Milliseconds())
		} else if rec.Status >= 400 {
			log.InfoContext(r.Context(), "request", "method", r.Method, "path", r.URL.Path, "status", rec.Status, "duration_ms", d.Milliseconds())
		}
	})
}
