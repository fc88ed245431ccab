// Package platform is the contract between a service and the process that
// hosts it. A service declares itself as a Service value (its name, schema and
// constructor); Run hosts any Service the same way, whether `rideshare serve`
// runs it alone in a container or `rideshare up` runs it as one of many
// processes on a laptop.
package platform

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/broker"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/resilience"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/telemetry"
)

// Service is one deployable unit, declared once in its own package.
type Service struct {
	// Name is what `rideshare serve NAME` takes and what peers call it.
	Name string
	// Summary is one line for --help.
	Summary string
	// Database says the service owns a database (every service but the
	// gateway). It always holds the outbox tables.
	Database bool
	// Migrations is the service's own schema, if it has one yet.
	Migrations fs.FS
	// Calls names the services this one calls by RPC: the wiring gives it
	// their addresses, and network policies allow exactly these calls.
	Calls []string
	// New builds the service from its dependencies.
	New func(ctx context.Context, d Deps) (*Component, error)
}

// Component is a built service.
type Component struct {
	// Handler serves its RPC (or, for the gateway, the public API).
	Handler http.Handler
	// Workers run until the context ends (event consumers, timers). One
	// that returns an error is logged and restarted with backoff.
	Workers []Worker
	// Ready, if set, adds to the host's readiness check.
	Ready func(ctx context.Context) error
	// Close, if set, releases what New acquired, after the server stopped.
	Close func() error
	// Audit, if set, reports one page of the service's own invariants for
	// `rideshare check`, served with the outbox backlog at /admin/audit
	// (audit.go). The answer is encoded as JSON; a service pages per-item
	// facts by q so that no answer grows with the size of its tables.
	Audit func(ctx context.Context, q AuditQuery) (any, error)
}

// Worker is a named background loop.
type Worker struct {
	Name string
	Run  func(ctx context.Context) error
}

// Config is a process's configuration, from flags and environment.
type Config struct {
	// Listen is host:port, or fd:N for a socket inherited from `up`.
	Listen string
	// InstanceListen, if set, is a second address (host:port or fd:N)
	// that is this instance's alone, for when Listen is a socket its
	// replicas share: its probes and operators reach it there.
	InstanceListen string
	// DB is the database DSN: a SQLite path or postgres://….
	DB string
	// NATS is the broker URL.
	NATS string
	// NATSSecurity are the broker's credentials and TLS settings.
	NATSSecurity broker.Security
	// StreamReplicas is the stream replication factor (cluster size).
	StreamReplicas int
	// Peers maps a service name to a fixed base URL (a Kubernetes Service,
	// a load balancer). A peer without one is found in the broker's
	// instance registry, when there is a broker.
	Peers map[string]string
	// Advertise is the base URL this instance registers for callers to
	// reach it at. Empty derives it from the listening address, unless
	// that is a wildcard (0.0.0.0), which names no host: then the instance
	// does not register.
	Advertise string
	// Instance names this replica ("dispatch-2") in the registry; empty is
	// fine for a service's only instance.
	Instance string
	// PublicURL is the gateway's public base URL; it is also the OAuth
	// issuer, since the gateway fronts the identity endpoints.
	PublicURL string
	// Dev enables developer conveniences that production refuses, such as
	// the first-party password grant.
	Dev bool
	// Secrets holds named secrets from the environment (never from flags,
	// which other users of the machine can read in the process list).
	Secrets map[string]string
	// CallGraph is every service of the platform and the services it
	// calls (its Calls), from the wiring table (see CallGraph): identity
	// gives each service a client, and a service accepts RPCs only from
	// the services that call it (serviceauth.go).
	CallGraph map[string][]string
	// Settings are service-specific knobs ("payments.decline_rate=0.1"),
	// from repeatable --set flags. A service reads only its own prefix.
	Settings map[string]string
	// LogLevel is the minimum level logged.
	LogLevel slog.Level
	// Stderr receives the JSON logs.
	Stderr io.Writer
}

// Deps is what a service is given to build itself.
type Deps struct {
	Config Config
	// DB, Outbox and Events are nil for a service without a Database.
	DB     *sqldb.DB
	Outbox *outbox.Outbox
	Events *outbox.Consumer
	NATS   *nats.Conn
	JS     jetstream.JetStream
	// HTTP is the pooled client for calls to peers.
	HTTP    *http.Client
	Log     *slog.Logger
	Metrics prometheus.Registerer
	// Resilience is the process's per-dependency policy table (timeouts,
	// retries, breakers, bulkheads), which ClientOptions applies to every
	// RPC. Nil (a Deps built by hand in a test) applies none.
	Resilience *resilience.Table
	// ServiceAuth puts this service's token on every RPC it makes and
	// checks the token of every RPC it serves (serviceauth.go). Run always
	// sets it; nil (a Deps built by hand in a test) does neither.
	ServiceAuth *ServiceAuth
	// Replicas counts the live instances of this service in the registry,
	// this one included, for a service that divides something among its
	// replicas (the gateway its rate limits). Nil without a registry (no
	// broker): the instance is on its own.
	Replicas func(ctx context.Context) (int, error)
}

// Setting is the service setting key, or def when unset.
func (d Deps) Setting(key, def string) string {
	if v, ok := d.Config.Settings[key]; ok && v != "" {
		return v
	}
	return def
}

// Peer is the base URL of service name: its fixed address if it has one,
// else its logical address "http://NAME", which the HTTP client's balancer
// resolves to one of its registered instances on every call.
func (d Deps) Peer(name string) (string, error) {
	if u := d.Config.Peers[name]; u != "" {
		return strings.TrimRight(u, "/"), nil
	}
	if d.Config.NATS != "" {
		return "http://" + name, nil
	}
	return "", fmt.Errorf("no address for peer %q (set --peer %s=URL, or --nats to find it in the registry)", name, name)
}

// ClientOptions are the options every RPC client uses: a deadline on every
// call, request ids forwarded, errors mapped back into the vocabulary, and
// the called peer's resilience policies. The peer is read from each call's
// procedure, so one set of options serves clients of any peer.
//
// The interceptors, outermost first, and why in this order:
//  1. defaultDeadline: the deadline bounds the whole call, every retry and
//     backoff included, and the policies derive each attempt's timeout
//     from what is left of it.
//  2. telemetry: the request id is set once on the request, which every
//     attempt sends.
//  3. apperr: maps the final outcome once, after the retries: the policies'
//     own refusals (circuit_open, bulkhead_full) are already in the
//     vocabulary and pass unchanged, and the policies below it see the
//     peer's raw RPC codes (which a retry decision needs; apperr would fold
//     a cancellation into Unavailable).
//  4. service tokens: set once per call, outside the policies, so that
//     identity being unreachable for a token counts against no peer's
//     breaker, and every retry carries the token.
//  5. resilience: retries, bulkhead, breaker and the per-attempt timeout,
//     around each attempt on the wire.
func (d Deps) ClientOptions() []connect.ClientOption {
	ics := []connect.Interceptor{defaultDeadline(DefaultCallTimeout), telemetry.Interceptor(), apperr.Interceptor()}
	if d.ServiceAuth != nil {
		ics = append(ics, d.ServiceAuth.clientInterceptor())
	}
	if d.Resilience != nil {
		ics = append(ics, d.Resilience.Interceptor())
	}
	// Small messages go uncompressed: gzip on every answer, empty ones
	// included, was a tenth of the gateway's CPU (docs/performance.md).
	return []connect.ClientOption{connect.WithInterceptors(ics...), connect.WithCompressMinBytes(compressMinBytes)}
}

// compressMinBytes is the smallest RPC message worth compressing; below it,
// gzip costs more CPU than the loopback or cluster network saves.
const compressMinBytes = 1024

// HandlerOptions are the options every RPC handler uses: request ids, the
// error vocabulary, and the check of the calling service's token
// (callcheck.go), inside the vocabulary so that its refusals are mapped.
// selfAuthenticated names procedures exempt from that check because they
// check their callers' tokens themselves (identity's SetRole, which
// operators call with an admin token).
func (d Deps) HandlerOptions(selfAuthenticated ...string) []connect.HandlerOption {
	ics := []connect.Interceptor{telemetry.Interceptor(), apperr.Interceptor()}
	if d.ServiceAuth != nil {
		ics = append(ics, d.ServiceAuth.handlerInterceptor(selfAuthenticated))
	}
	return []connect.HandlerOption{
		connect.WithInterceptors(ics...),
		connect.WithReadMaxBytes(1 << 20),
		connect.WithCompressMinBytes(compressMinBytes),
	}
}

// DefaultCallTimeout bounds an RPC whose caller set no deadline of its own,
// so that no call anywhere waits forever.
const DefaultCallTimeout = 5 * time.Second

func defaultDeadline(d time.Duration) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if _, ok := ctx.Deadline(); !ok && req.Spec().IsClient {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, d)
				defer cancel()
			}
			return next(ctx, req)
		}
	}
}

// NewHTTPClient is the client for calls between services: pooled keep-alive
// connections and bounded connection setup.
func NewHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 512
	t.MaxIdleConnsPerHost = 128
	t.IdleConnTimeout = 90 * time.Second
	t.ResponseHeaderTimeout = 30 * time.Second
	return &http.Client{Transport: t}
}

// Names lists services' names, sorted.
func Names(svcs []Service) []string {
	out := make([]string, 0, len(svcs))
	for _, s := range svcs {
		out = append(out, s.Name)
	}
	sort.Strings(out)
	return out
}

// Find returns the service called name.
func Find(svcs []Service, name string) (Service, bool) {
	for _, s := range svcs {
		if s.Name == name {
			return s, true
		}
	}
	return Service{}, false
}
