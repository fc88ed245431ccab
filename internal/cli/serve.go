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
	instanceListen := fs.String("instance-listen", envOr(env, "RIDESHARE_INSTANCE_LISTEN", ""), "a second address, this instance's alone, serving the same endpoints, for when --listen is a socket\nshared with other replicas: probes and operators reach this one instance there [RIDESHARE_INSTANCE_LISTEN]")
	db := fs.String("db", envOr(env, "RIDESHARE_DB", filepath.Join(".rideshare", name+".db")), "database: a SQLite file path or a postgres:// DSN [RIDESHARE_DB]")
	natsURL := fs.String("nats", envOr(env, "RIDESHARE_NATS", ""), "NATS JetStream URL, e.g. nats://127.0.0.1:4222 [RIDESHARE_NATS]")
	replicas := fs.Int("stream-replicas", atoi(envOr(env, "RIDESHARE_STREAM_REPLICAS", "1")), "replicas of each JetStream stream (the cluster size) [RIDESHARE_STREAM_REPLICAS]")
	natsSecurity := natsSecurityFlags(fs, env)
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
	sec := natsSecurity()
	if _, err := sec.Options(); err != nil {
		return err
	}
	ctx = watchParent(ctx, env)
	return platform.Run(ctx, svc, platform.Config{
		Listen:         *listen,
		InstanceListen: *instanceListen,
		DB:             *db,
		NATS:           *natsURL,
		NATSSecurity:   sec,
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
// Given a cluster name it is one member of a JetStream cluster.
func serveBroker(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "serve broker", "serve broker [flags]", "An embedded NATS JetStream server, as `up` runs it, or one member of a JetStream cluster:\n"+
		"  serve broker --server-name n1 --cluster-name rideshare --cluster-listen 0.0.0.0:6222 \\\n"+
		"    --routes nats://n1:6222,nats://n2:6222,nats://n3:6222 --nats-listen 0.0.0.0:4222 --store /data/jetstream\n"+
		"Three members tolerate the loss of one; services then use --stream-replicas 3.")
	listen := fs.String("listen", envOr(env, "RIDESHARE_LISTEN", "127.0.0.1:0"), "address of the readiness/metrics HTTP server [RIDESHARE_LISTEN]")
	natsAddr := fs.String("nats-listen", envOr(env, "RIDESHARE_NATS_LISTEN", "127.0.0.1:0"), "host:port for NATS clients [RIDESHARE_NATS_LISTEN]")
	store := fs.String("store", envOr(env, "RIDESHARE_BROKER_STORE", filepath.Join(".rideshare", "broker")), "folder for JetStream's streams [RIDESHARE_BROKER_STORE]")
	serverName := fs.String("server-name", envOr(env, "RIDESHARE_BROKER_NAME", "rideshare-broker"), "this server's name, unique in a cluster and the same across its restarts [RIDESHARE_BROKER_NAME]")
	clusterName := fs.String("cluster-name", envOr(env, "RIDESHARE_CLUSTER_NAME", ""), "join a JetStream cluster of this name (the same on every member); empty runs alone [RIDESHARE_CLUSTER_NAME]")
	clusterListen := fs.String("cluster-listen", envOr(env, "RIDESHARE_CLUSTER_LISTEN", ""), "host:port for the other members' route connections, e.g. 0.0.0.0:6222 [RIDESHARE_CLUSTER_LISTEN]")
	routes := fs.String("routes", envOr(env, "RIDESHARE_ROUTES", ""), "comma-separated route URLs of the members, e.g. nats://n1:6222,nats://n2:6222,nats://n3:6222\n(listing this member too is fine) [RIDESHARE_ROUTES]")
	if err := parse(fs, env, args); err != nil {
		return err
	}
	opts := broker.EmbeddedOptions{Addr: *natsAddr, StoreDir: *store, Name: *serverName}
	if *clusterName != "" || *clusterListen != "" || *routes != "" {
		if *clusterName == "" || *clusterListen == "" || *routes == "" {
			return errors.New("a cluster member needs --cluster-name, --cluster-listen and --routes")
		}
		opts.Cluster = &broker.ClusterOptions{Name: *clusterName, Listen: *clusterListen, Routes: strings.Split(*routes, ",")}
	}
	ctx = watchParent(ctx, env)
	log := telemetry.NewLogger(env.Stderr, brokerName, slog.LevelInfo)
	ln, err := server.Listen(*listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	srv, err := broker.RunEmbedded(opts)
	if err != nil {
		return err
	}
	defer func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}()
	log.Info("broker serving", "nats", broker.URL(srv), "store", *store, "server_name", *serverName,
		"cluster", *clusterName, "cluster_url", broker.ClusterURL(srv))
	return server.Serve(ctx, ln, server.Config{
		Logger:   log,
		Registry: telemetry.NewRegistry(),
		Ready: func(context.Context) error {
			// RunEmbedded waited for the server to accept connections; from
			// then on, ready means still running with JetStream on, and for
			// a cluster member, a meta leader elected: without one no
			// stream can be created or changed. (Start a cluster's members
			// together, e.g. a StatefulSet's podManagementPolicy Parallel:
			// none is ready before a majority runs.)
			if !srv.Running() || !srv.JetStreamEnabled() {
				return errors.New("jetstream not ready")
			}
			if opts.Cluster != nil && broker.MetaLeader(srv) == "" {
				return errors.New("jetstream cluster has no meta leader yet")
			}
			return nil
		},
	})
}

// natsSecurityFlags declares the broker's credential and TLS flags on fs
// and returns a function that reads them, with the secrets, which come only
// from the environment: flags show in the process list.
func natsSecurityFlags(fs *flag.FlagSet, env Env) func() broker.Security {
	creds := fs.String("nats-creds", envOr(env, "RIDESHARE_NATS_CREDS", ""), "NATS credentials file (user JWT and nkey seed); or set RIDESHARE_NATS_USER and\nRIDESHARE_NATS_PASSWORD, or RIDESHARE_NATS_TOKEN, in the environment (never as flags) [RIDESHARE_NATS_CREDS]")
	ca := fs.String("nats-tls-ca", envOr(env, "RIDESHARE_NATS_TLS_CA", ""), "PEM file of the CAs that sign the NATS servers' certificates (turns on TLS) [RIDESHARE_NATS_TLS_CA]")
	cert := fs.String("nats-tls-cert", envOr(env, "RIDESHARE_NATS_TLS_CERT", ""), "PEM client certificate, for NATS servers that require mutual TLS (with --nats-tls-key) [RIDESHARE_NATS_TLS_CERT]")
	key := fs.String("nats-tls-key", envOr(env, "RIDESHARE_NATS_TLS_KEY", ""), "PEM key of --nats-tls-cert [RIDESHARE_NATS_TLS_KEY]")
	return func() broker.Security {
		return broker.Security{
			CredsFile: *creds, TLSCA: *ca, TLSCert: *cert, TLSKey: *key,
			User: env.Getenv("RIDESHARE_NATS_USER"), Password: env.Getenv("RIDESHARE_NATS_PASSWORD"),
			Token: env.Getenv("RIDESHARE_NATS_TOKEN"),
		}
	}
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
