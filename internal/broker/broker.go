// Package broker runs and reaches the platform's message broker, NATS
// JetStream: embedded in a process for the laptop and for tests, or a real
// cluster reached by URL. The same client code serves both.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// EmbeddedOptions configure an embedded server.
type EmbeddedOptions struct {
	// Addr is host:port to listen on; port 0 picks a free one. Empty means
	// no socket at all: reachable only in-process (see InProcess).
	Addr string
	// StoreDir keeps the streams across restarts. Empty uses a temp dir the
	// server removes on shutdown.
	StoreDir string
	// Name identifies the server in logs and in a cluster; every member
	// of a cluster needs its own, kept across restarts (JetStream knows its
	// peers by it).
	Name string
	// Cluster, when set, makes the server one member of a JetStream
	// cluster; nil runs it alone.
	Cluster *ClusterOptions
}

// ClusterOptions join an embedded server to a JetStream cluster. A cluster
// of three tolerates losing one member: streams with three replicas keep
// accepting and serving messages while a majority is up.
type ClusterOptions struct {
	// Name is the cluster's name, the same on every member.
	Name string
	// Listen is host:port for the other members' route connections; port 0
	// picks a free one (see ClusterURL).
	Listen string
	// Routes are the other members' route URLs (nats://host:port). A member
	// may list itself too, so every member can share one list.
	Routes []string
}

// RunEmbedded starts a JetStream server and waits until it accepts
// connections. Call Shutdown then WaitForShutdown to stop it.
func RunEmbedded(o EmbeddedOptions) (*server.Server, error) {
	opts := &server.Options{
		ServerName: o.Name,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: 4 << 20,
		// The outboxes already hold every event until the broker acknowledges
		// it, so the broker's own periodic fsync (not one per message, which
		// costs ~4x throughput) is enough for durability here.
		SyncInterval: 2 * time.Second,
	}
	if o.Addr == "" {
		opts.DontListen = true
	} else {
		host, port, err := splitAddr(o.Addr)
		if err != nil {
			return nil, fmt.Errorf("broker: listen address: %w", err)
		}
		opts.Host, opts.Port = host, port
	}
	if c := o.Cluster; c != nil {
		if o.Name == "" || c.Name == "" {
			return nil, errors.New("broker: a cluster member needs a server name and a cluster name")
		}
		if o.StoreDir == "" {
			// A temp store would forget the member's Raft state at every
			// restart, and the cluster would count it as a new peer.
			return nil, errors.New("broker: a cluster member needs a store folder")
		}
		host, port, err := splitAddr(c.Listen)
		if err != nil {
			return nil, fmt.Errorf("broker: cluster listen address: %w", err)
		}
		opts.Cluster.Name, opts.Cluster.Host, opts.Cluster.Port = c.Name, host, port
		for _, r := range c.Routes {
			u, err := url.Parse(strings.TrimSpace(r))
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("broker: route %q: want nats://host:port", r)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	fatal := &fatalLog{}
	srv.SetLogger(fatal, false, false)
	go srv.Start()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if srv.ReadyForConnections(100 * time.Millisecond) {
			return srv, nil
		}
		if msg := fatal.message(); msg != "" || time.Now().After(deadline) {
			srv.Shutdown()
			if msg != "" {
				return nil, fmt.Errorf("broker: %s", msg)
			}
			return nil, errors.New("broker: embedded server not ready after 10s")
		}
	}
}

// fatalLog keeps what the server reports as fatal. NoLog keeps its
// chatter out of the service's own log, but a port it cannot listen on
// must reach whoever started it, not become "not ready after 10s".
type fatalLog struct {
	mu    sync.Mutex
	fatal string
}

func (l *fatalLog) Fatalf(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fatal == "" {
		l.fatal = fmt.Sprintf(format, v...)
	}
}

func (l *fatalLog) message() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatal
}

func (*fatalLog) Noticef(string, ...any) {}
func (*fatalLog) Warnf(string, ...any)   {}
func (*fatalLog) Errorf(string, ...any)  {}
func (*fatalLog) Debugf(string, ...any)  {}
func (*fatalLog) Tracef(string, ...any)  {}

// splitAddr reads host:port, port 0 meaning any free port.
func splitAddr(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q: %w", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return "", 0, fmt.Errorf("%q: bad port", addr)
	}
	if p == 0 {
		p = server.RANDOM_PORT
	}
	return host, p, nil
}

// ClusterURL is the route URL other members list to reach srv.
func ClusterURL(srv *server.Server) string {
	if a := srv.ClusterAddr(); a != nil {
		return "nats://" + a.String()
	}
	return ""
}

// MetaLeader is the name of the JetStream cluster's meta leader as srv
// sees it: empty while there is none (too few members up to elect one),
// and for a server not in a cluster.
func MetaLeader(srv *server.Server) string {
	info, err := srv.Jsz(&server.JSzOptions{Limit: 1})
	if err != nil || info.Meta == nil {
		return ""
	}
	return info.Meta.Leader
}

// URL is the client URL of a listening embedded server.
func URL(srv *server.Server) string { return srv.ClientURL() }

// DialOptions configure a client connection.
type DialOptions struct {
	// URL is a nats:// URL (comma-separated for a cluster). Ignored when
	// InProcess is set.
	URL string
	// InProcess connects to an embedded server without a socket.
	InProcess *server.Server
	// Name is the connection name the server shows (the service name).
	Name string
	// Logger reports disconnects and reconnects.
	Logger *slog.Logger
	// Security are the credentials and TLS settings of a secured broker.
	Security Security
	// Extra are further client options.
	Extra []nats.Option
}

// Dial connects and keeps reconnecting forever: a service must ride out a
// broker restart (its outbox holds events meanwhile), never exit over it.
func Dial(ctx context.Context, o DialOptions) (*nats.Conn, jetstream.JetStream, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	var lastFailure atomic.Value
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("broker disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("broker reconnected", "url", c.ConnectedUrlRedacted())
		}),
		// A refused login or a TLS mismatch is retried like an outage; say
		// so once per distinct error rather than at every attempt.
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			msg := err.Error()
			if last, _ := lastFailure.Swap(msg).(string); last != msg {
				log.Warn("broker connection attempt failed; retrying", "err", err)
			}
		}),
	}
	if o.InProcess != nil {
		opts = append(opts, nats.InProcessServer(o.InProcess))
	}
	sec, err := o.Security.Options()
	if err != nil {
		return nil, nil, err
	}
	opts = append(opts, sec...)
	opts = append(opts, o.Extra...)
	nc, err := nats.Connect(o.URL, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("broker: connect %s: %w", RedactURL(o.URL), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("broker: %w", err)
	}
	return nc, js, nil
}

// RedactURL is a NATS URL list (comma-separated) without the passwords or
// tokens any of them hold, fit for errors, logs and state files.
func RedactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			continue
		}
		if _, ok := u.User.Password(); ok {
			u.User = url.User(u.User.Username())
		} else {
			u.User = nil // a bare token
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id. Consumers
// never rely on it: they are idempotent on their own, so a redelivery after
// the window still applies once. It only saves work on fast relay retries.
const DuplicateWindow = 2 * time.Minute

// Owners are the services that publish events; each owns one stream.
var Owners = []string{"identity", "users", "rides", "dispatch", "payments", "pricing", "notifications"}

// StreamName is the stream that owner's events live on: "RIDES" for rides.
func StreamName(owner string) string { return strings.ToUpper(owner) }

// StreamConfig is owner's stream: subjects "<owner>.>", file storage,
// a week of retention.
func StreamConfig(owner string, replicas int) jetstream.StreamConfig {
	if replicas < 1 {
		replicas = 1
	}
	return jetstream.StreamConfig{
		Name:        StreamName(owner),
		Description: owner + " domain events, published from its outbox",
		Subjects:    []string{owner + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      7 * 24 * time.Hour,
		Duplicates:  DuplicateWindow,
		Replicas:    replicas,
	}
}

// EnsureStreams creates or updates every owner's stream. Every service calls
// it at start, so whichever starts first makes the streams its consumers
// bind to; running it again changes nothing.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, replicas int) error {
	for _, owner := range Owners {
		if _, err := js.CreateOrUpdateStream(ctx, StreamConfig(owner, replicas)); err != nil {
			return fmt.Errorf("broker: stream %s: %w", StreamName(owner), err)
		}
	}
	return nil
}
