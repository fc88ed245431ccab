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
	"strconv"
	"strings"
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
	// Name identifies the server in logs and in a cluster.
	Name string
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
		host, port, err := net.SplitHostPort(o.Addr)
		if err != nil {
			return nil, fmt.Errorf("broker: listen address %q: %w", o.Addr, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("broker: listen port %q: %w", port, err)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, p
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("broker: embedded server not ready after 10s")
	}
	return srv, nil
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
	// Extra are further options (credentials, TLS) for a real cluster.
	Extra []nats.Option
}

// Dial connects and keeps reconnecting forever: a service must ride out a
// broker restart (its outbox holds events meanwhile), never exit over it.
func Dial(ctx context.Context, o DialOptions) (*nats.Conn, jetstream.JetStream, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
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
	}
	if o.InProcess != nil {
		opts = append(opts, nats.InProcessServer(o.InProcess))
	}
	opts = append(opts, o.Extra...)
	nc, err := nats.Connect(o.URL, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("broker: connect %s: %w", o.URL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("broker: %w", err)
	}
	return nc, js, nil
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
