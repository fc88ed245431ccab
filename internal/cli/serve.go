package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/rideshare-platform/rideshare/internal/broker"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/server"
	"github.com/rideshare-platform/rideshare/internal/telemetry"
)

// brokerName is the pseudo-service `serve` runs as the embedded broker.
const brokerName = "broker"

// keyValues is a repeatable NAME=VALUE flag: --peer, --set.
type keyValues map[string]string

func (p keyValues) String() string {
	parts := make([]string, 0, len(p))
	for k, v := range p {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (p keyValues) Set(s string) error {
	for _, kv := range strings.Split(s, ",") {
		name, u, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || name == "" || u == "" {
			return fmt.Errorf("want NAME=VALUE, got %q", kv)
		}
		p[name] = u
	}
	return nil
}

func runServe(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			usage(env)
			return flag.ErrHelp
		}
		fmt.Fprintf(env.Stderr, "Usage: rideshare serve SERVICE [flags]\nServices: %s, %s\n", strings.Join(platform.Names(env.Services), ", "), brokerName)
		return errUsage
	}
	name, args := args[0], args[1:]
	if name == brokerName {
		return serveBroker(ctx, env, args)
	}
	svc, ok := platform.Find(env.Services, name)
	if !ok {
		return fmt.Errorf("unknown service %q (one of: %s)", name, strings.Join(platform.Names(env.Services), ", "))
	}

	fs := newFlags(env, "serve "+name, "serve "+name+" [flags]", name+": "+svc.Summary+
		".\nEvery flag can also be set by the environment variable named in brackets.")
	listen := fs.String("listen", envOr(env, "RIDESHARE_LISTEN", "127.0.0.1:0"), "address to serve on, host:port or fd:N for an inherited socket [RIDESHARE_LISTEN]")
	db := fs.String("db", envOr(env, "RIDESHARE_DB", filepath.Join(".rideshare", name+".db")), "database: a SQLite file path or a postgres:// DSN [RIDESHARE_DB]")
	natsURL := fs.String("nats", envOr(env, "RIDESHARE_NATS", ""), "NATS JetStream URL, e.g. nats://127.0.0.1:4222 [RIDESHARE_NATS]")
	replicas := fs.Int("stream-replicas", atoi(envOr(env, "RIDESHARE_STREAM_REPLICAS", "1")), "replicas of each JetStream stream (the cluster size) [RIDESHARE_STREAM_REPLICAS]")
	publicURL := fs.String("public-url", envOr(env, "RIDESHARE_PUBLIC_URL", ""), "the gateway's public base URL, which is also the token issuer [RIDESHARE_PUBLIC_URL]")
	dev := fs.Bool("dev", envOr(env, "RIDESHARE_DEV", "") == "true", "developer mode: allows the first-party password grant; never in production [RIDESHARE_DEV=true]")
	logLevel := fs.String("log-level", envOr(env, "RIDESHARE_LOG_LEVEL", "info"), "debug, info, warn or error [RIDESHARE_LOG_LEVEL]")
	instance := fs.String("instance", envOr(env, "RIDESHARE_INSTANCE", ""), "name of this instance among the service's replicas, e.g. dispatch-2, shown in the registry [RIDESHARE_INSTANCE]")
	advertise := fs.String("advertise", envOr(env, "RIDESHARE_ADVERTISE", ""), "URL this instance registers for callers to reach it at (default: from --listen unless it is a wildcard) [RIDESHARE_ADVERTISE]")
	peers := keyValues{}
	if v := env.Getenv("RIDESHARE_PEERS"); v != "" {
		if err := peers.Set(v); err != nil {
			return fmt.Errorf("RIDESHARE_PEERS: %w", err)
		}
	}
	fs.Var(peers, "peer", "NAME=URL: a fixed address of a service this one calls (a Kubernetes Service);\nwithout one, its instances are found in the broker's registry; repeatable or comma-separated [RIDESHARE_PEERS]")
	settings := keyValues{}
	if v := env.Getenv("RIDESHARE_SET"); v != "" {
		if err := settings.Set(v); err != nil {
			return fmt.Errorf("RIDESHARE_SET: %w", err)
		}
	}
	fs.Var(settings, "set", "KEY=VALUE service setting, e.g. payments.decline_rate=0.1; repeatable [RIDESHARE_SET]")
	if err := parse(fs, env, args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	if svc.Database && *db == "" {
		return errors.New("--db is required")
	}
	ctx = watchParent(ctx, env)
	return platform.Run(ctx, svc, platform.Config{
		Listen:         *listen,
		DB:             *db,
		NATS:           *natsURL,
		StreamReplicas: *replicas,
		Peers:          peers,
		Advertise:      strings.TrimRight(*advertise, "/"),
		Instance:       *instance,
		PublicURL:      strings.TrimRight(*publicURL, "/"),
		Dev:            *dev,
		Secrets: map[string]string{
			"operator_client_secret":         env.Getenv("RIDESHARE_OPERATOR_CLIENT_SECRET"),
			platform.ServiceSecretName:       env.Getenv("RIDESHARE_SERVICE_SECRET"),
			platform.ServiceMasterSecretName: env.Getenv("RIDESHARE_SERVICE_MASTER_SECRET"),
		},
		CallGraph: platform.CallGraph(env.Services),
		Settings:  settings,
		LogLevel:  level,
		Stderr:    env.Stderr,
	})
}

// serveBroker runs the embedded JetStream server as its own process, with a
// small HTTP server for readiness and metrics like every other process.
func serveBroker(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "serve broker", "serve broker [flags]", "An embedded NATS JetStream server, as `up` runs it.")
	listen := fs.String("listen", envOr(env, "RIDESHARE_LISTEN", "127.0.0.1:0"), "address of the readiness/metrics HTTP server [RIDESHARE_LISTEN]")
	natsAddr := fs.String("nats-listen", envOr(env, "RIDESHARE_NATS_LISTEN", "127.0.0.1:0"), "host:port for NATS clients [RIDESHARE_NATS_LISTEN]")
	store := fs.String("store", envOr(env, "RIDESHARE_BROKER_STORE", filepath.Join(".rideshare", "broker")), "folder for JetStream's streams [RIDESHARE_BROKER_STORE]")
	if err := parse(fs, env, args); err != nil {
		return err
	}
	ctx = watchParent(ctx, env)
	log := telemetry.NewLogger(env.Stderr, brokerName, slog.LevelInfo)
	ln, err := server.Listen(*listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	srv, err := broker.RunEmbedded(broker.EmbeddedOptions{Addr: *natsAddr, StoreDir: *store, Name: "rideshare-broker"})
	if err != nil {
		return err
	}
	defer func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}()
	log.Info("broker serving", "nats", broker.URL(srv), "store", *store)
	return server.Serve(ctx, ln, server.Config{
		Logger:   log,
		Registry: telemetry.NewRegistry(),
		Ready: func(context.Context) error {
			// RunEmbedded waited for the server to accept connections; from
			// then on, ready means still running with JetStream on.
			if !srv.Running() || !srv.JetStreamEnabled() {
				return errors.New("jetstream not ready")
			}
			return nil
		},
	})
}

// watchParent ends ctx when the supervising `up` goes away: `up` holds our
// stdin open for our whole life, so EOF means it died (even by SIGKILL), and
// we shut down instead of living on as an orphan.
func watchParent(ctx context.Context, env Env) context.Context {
	if env.Getenv("RIDESHARE_SUPERVISED") != "1" || env.Stdin == nil {
		return ctx
	}
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		_, _ = io.Copy(io.Discard, env.Stdin)
		cancel()
	}()
	return ctx
}

// atoi reads a numeric default from the environment; a bad value becomes 0,
// which the flag's consumer treats as "use the default".
func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
