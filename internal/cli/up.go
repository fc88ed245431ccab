package cli

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rideshare-platform/rideshare/internal/broker"
	fleetsim "github.com/rideshare-platform/rideshare/internal/fleet"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/supervisor"
	"github.com/rideshare-platform/rideshare/internal/telemetry"
)

// operatorClientID is the client-credentials client `up` provisions for
// the command line's own operator commands.
const operatorClientID = "rideshare-operator"

// Start groups: the broker first, then the services, then the gateway,
// whose readiness means every service behind it is ready.
const (
	groupBroker = iota
	groupServices
	groupGateway
)

func runUp(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "up", "up [flags]",
		"Runs the whole platform on this machine: an embedded NATS JetStream broker and every\n"+
			"service as its own process, each with its own SQLite database in the data folder.\n"+
			"--postgres and --nats put the databases and the broker elsewhere.\n"+
			"A process that dies is restarted. Ctrl-C stops everything.")
	listen := fs.String("listen", "127.0.0.1:8080", "public address of the gateway (port 0 picks a free one)")
	data := fs.String("data", ".rideshare", "data folder: databases, broker store, logs, "+StateFile)
	fleet := fs.Int("fleet", 30, "simulated drivers that roam the demo city and take rides (0: none)")
	replicas := keyValues{}
	fs.Var(replicas, "replicas", "NAME=N runs N instances of a service, e.g. dispatch=3,payments=2: each registers\nin the broker's registry and callers balance across them; replicas share their\nservice's database; repeatable")
	settings := keyValues{}
	fs.Var(settings, "set", "KEY=VALUE service setting passed to every service, e.g. payments.decline_rate=0.1 or\ndispatch.offer_ttl=10s; repeatable (see each service's settings in the README)")
	postgres := fs.String("postgres", envOr(env, "RIDESHARE_POSTGRES", ""), "DSN-PREFIX: keep each service's data in its own PostgreSQL database instead of SQLite.\n"+
		"DSN-PREFIX is a postgres:// URL whose database name is a prefix: service NAME uses the\n"+
		"database PREFIX+NAME on that server, with the same user and parameters, e.g.\n"+
		"postgres://rideshare@127.0.0.1:5432/rideshare_?sslmode=disable → rideshare_identity,\n"+
		"rideshare_rides, ... A missing database is created through the server's \"postgres\"\n"+
		"database (the role needs CREATEDB, or create them beforehand); schemas are migrated at\n"+
		"start. Give the password in PGPASSWORD or ~/.pgpass, not here [RIDESHARE_POSTGRES]")
	natsURL := fs.String("nats", envOr(env, "RIDESHARE_NATS", ""), "use this NATS JetStream (nats://host:port, comma-separated for a cluster) instead of\n"+
		"starting the embedded broker; it needs JetStream on (tested against nats-server 2.15,\n"+
		"the version built in) [RIDESHARE_NATS]")
	streamReplicas := fs.Int("stream-replicas", atoi(envOr(env, "RIDESHARE_STREAM_REPLICAS", "1")), "replicas of each JetStream stream and of the registry bucket, with --nats: the\ncluster size, e.g. 3 [RIDESHARE_STREAM_REPLICAS]")
	natsSecurity := natsSecurityFlags(fs, env)
	if err := parse(fs, env, args); err != nil {
		return err
	}
	if *fleet < 0 {
		return errors.New("--fleet must be 0 or more")
	}
	if *streamReplicas < 1 || *streamReplicas > 5 {
		return errors.New("--stream-replicas must be from 1 to 5")
	}
	if *streamReplicas > 1 && *natsURL == "" {
		return errors.New("--stream-replicas above 1 needs --nats: the embedded broker is a single server")
	}
	counts, err := replicaCounts(env, replicas)
	if err != nil {
		return err
	}
	ext := externalBroker{url: *natsURL, security: natsSecurity(), streamReplicas: *streamReplicas}
	if ext.url != "" {
		if err := checkBroker(ctx, ext); err != nil {
			return err
		}
	} else if ext.security != (broker.Security{}) {
		return errors.New("--nats-creds, --nats-tls-* and RIDESHARE_NATS_USER/PASSWORD/TOKEN apply to --nats only")
	}
	var databases map[string]string
	if *postgres != "" {
		if databases, err = ensureDatabases(ctx, env, *postgres); err != nil {
			return err
		}
	}
	dir, err := filepath.Abs(*data)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
		return err
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer unlock()
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding this program to start its services: %w", err)
	}
	prev, err := previousState(dir)
	if err != nil {
		return err
	}
	secret := prev.ClientSecret
	if secret == "" {
		secret = randomSecret()
	}
	fleetPassword := prev.FleetPassword
	if fleetPassword == "" {
		fleetPassword = randomSecret()[:24]
	}

	plan, err := planPlatform(env, exe, dir, upPlan{
		listen: *listen, secret: secret, settings: settings, replicas: counts, broker: ext, databases: databases,
	})
	if err != nil {
		return err
	}
	sup := supervisor.New(plan.specs, supervisor.Options{
		LogDir: filepath.Join(dir, "logs"),
		Events: prefixWriter{w: env.Stdout, prefix: "up: "},
	})
	start := time.Now()
	fmt.Fprintf(env.Stdout, "up: starting rideshare in %s\n", dir)
	if err := sup.Start(ctx); err != nil {
		_ = sup.Stop()
		if errors.Is(err, supervisor.ErrStopped) || ctx.Err() != nil {
			return nil
		}
		return err
	}
	took := time.Since(start)
	state := State{
		GatewayURL: plan.publicURL, NATSURL: broker.RedactURL(plan.natsURL), Services: plan.services, Databases: plan.databases,
		ClientID: operatorClientID, ClientSecret: secret, FleetPassword: fleetPassword,
		PID: os.Getpid(), StartedAt: time.Now().UTC(),
	}
	replicaAddrs(sup, state.Services)
	if err := writeState(dir, state); err != nil {
		_ = sup.Stop()
		return fmt.Errorf("writing %s: %w", StateFile, err)
	}
	printBanner(env, state, dir, took)
	go keepStateCurrent(ctx, sup, dir, state, env)

	fleetDone := make(chan struct{})
	if *fleet > 0 {
		logFile, err := os.OpenFile(filepath.Join(dir, "logs", "fleet.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			_ = sup.Stop()
			return err
		}
		defer logFile.Close()
		f := fleetsim.New(fleetsim.Config{
			Gateway: state.GatewayURL, Drivers: *fleet, Password: fleetPassword, Area: geo.SanFrancisco,
			Seed: time.Now().UnixNano(), Logger: telemetry.NewLogger(logFile, "fleet", slog.LevelInfo),
		})
		fmt.Fprintf(env.Stdout, "up: %d simulated drivers are going online (log: %s)\n", *fleet, logFile.Name())
		go func() {
			defer close(fleetDone)
			if err := f.Run(ctx); err != nil {
				fmt.Fprintf(env.Stdout, "up: fleet: %v\n", err)
			}
		}()
	} else {
		close(fleetDone)
	}

	<-ctx.Done()
	fmt.Fprintf(env.Stdout, "up: stopping\n")
	<-fleetDone // the drivers go offline while the services still answer
	err = sup.Stop()
	fmt.Fprintf(env.Stdout, "up: stopped\n")
	return err
}

type platformPlan struct {
	specs     []supervisor.Spec
	publicURL string
	natsURL   string
	services  map[string]string
	// databases are the services' databases as the state file records
	// them: SQLite paths, or PostgreSQL DSNs without their passwords.
	databases map[string]string
}

// upPlan is what `up` was asked to run.
type upPlan struct {
	listen, secret string
	settings       keyValues
	replicas       map[string]int
	broker         externalBroker
	// databases maps a service to its PostgreSQL DSN; nil gives each
	// service a SQLite file in the data folder.
	databases map[string]string
}

// externalBroker is a NATS JetStream that `up` uses instead of starting
// its own (url empty: start the embedded one).
type externalBroker struct {
	url            string
	security       broker.Security
	streamReplicas int
}

// args are the flags that pass the broker's settings on to `serve`; the
// secrets among them travel in env instead.
func (b externalBroker) args() []string {
	var out []string
	if b.streamReplicas > 1 {
		out = append(out, "--stream-replicas", strconv.Itoa(b.streamReplicas))
	}
	for _, f := range []struct{ flag, v string }{
		{"--nats-creds", b.security.CredsFile}, {"--nats-tls-ca", b.security.TLSCA},
		{"--nats-tls-cert", b.security.TLSCert}, {"--nats-tls-key", b.security.TLSKey},
	} {
		if f.v != "" {
			out = append(out, f.flag, f.v)
		}
	}
	return out
}

// env is the environment the broker's secrets travel in: flags would show
// them in the process list.
func (b externalBroker) env() []string {
	var out []string
	for _, kv := range []struct{ k, v string }{
		{"RIDESHARE_NATS_USER", b.security.User}, {"RIDESHARE_NATS_PASSWORD", b.security.Password},
		{"RIDESHARE_NATS_TOKEN", b.security.Token},
	} {
		if kv.v != "" {
			out = append(out, kv.k+"="+kv.v)
		}
	}
	return out
}

// checkBroker connects to an external broker once, without the services'
// endless retry, so a wrong URL, credential or certificate, or a server
// without JetStream, is one clear error at start.
func checkBroker(ctx context.Context, b externalBroker) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nc, js, err := broker.Dial(ctx, broker.DialOptions{
		URL: b.url, Name: "rideshare-up", Security: b.security, Logger: slog.New(slog.DiscardHandler),
		Extra: []nats.Option{nats.RetryOnFailedConnect(false), nats.MaxReconnects(0), nats.Timeout(5 * time.Second)},
	})
	if err != nil {
		return fmt.Errorf("--nats %s: %w", broker.RedactURL(b.url), err)
	}
	defer nc.Close()
	if _, err := js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("--nats %s: JetStream is not available there: %w", broker.RedactURL(b.url), err)
	}
	return nil
}

// ensureDatabases gives every service that keeps data its own database on
// the server prefix names (see the --postgres flag), creating the missing
// ones now, so a server that refuses is one clear error rather than every
// service failing in its log.
func ensureDatabases(ctx context.Context, env Env, prefix string) (map[string]string, error) {
	out := map[string]string{}
	for _, s := range env.Services {
		if !s.Database {
			continue
		}
		dsn, err := sqldb.PrefixedDSN(prefix, s.Name)
		if err != nil {
			return nil, fmt.Errorf("--postgres: %w", err)
		}
		created, err := sqldb.EnsureDatabase(ctx, dsn)
		if err != nil {
			return nil, fmt.Errorf("--postgres: %w", err)
		}
		if created {
			fmt.Fprintf(env.Stdout, "up: created database %s\n", sqldb.RedactDSN(dsn))
		}
		out[s.Name] = dsn
	}
	return out, nil
}

// planPlatform opens every service's socket now, so every address is known
// before anything starts and each process keeps its port across restarts.
// A service run as several replicas is the exception: each replica gets a
// new port at every start (see supervisor.Spec.Listen) and callers find it
// in the registry, the way instances come and go on a real cluster. Every
// service, one instance or several, registers there, and every caller
// finds its peers there: `up` passes no fixed addresses.
func planPlatform(env Env, exe, dir string, up upPlan) (p platformPlan, err error) {
	var opened []*net.TCPListener
	defer func() {
		if err != nil {
			for _, l := range opened {
				l.Close()
			}
		}
	}()
	open := func(addr string) (*net.TCPListener, error) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		opened = append(opened, l.(*net.TCPListener))
		return l.(*net.TCPListener), nil
	}
	gw, err := open(up.listen)
	if err != nil {
		return p, fmt.Errorf("the gateway cannot listen on %s (%v); pick another with --listen, e.g. --listen 127.0.0.1:0", up.listen, err)
	}
	p.publicURL = "http://" + gw.Addr().String()
	if up.broker.url != "" {
		p.natsURL = up.broker.url
	} else {
		natsPort, err := freePort()
		if err != nil {
			return p, err
		}
		p.natsURL = "nats://127.0.0.1:" + strconv.Itoa(natsPort)
		brokerLn, err := open("127.0.0.1:0")
		if err != nil {
			return p, err
		}
		p.specs = append(p.specs, supervisor.Spec{
			Name: brokerName, Path: exe, Group: groupBroker, Listener: brokerLn,
			Args: []string{"serve", brokerName, "--listen", "fd:3",
				"--nats-listen", "127.0.0.1:" + strconv.Itoa(natsPort), "--store", filepath.Join(dir, "broker")},
			ReadyURL: "http://" + brokerLn.Addr().String() + "/readyz",
		})
	}

	p.services = map[string]string{}
	p.databases = map[string]string{}
	for _, s := range env.Services {
		group := groupServices
		if s.Name == "gateway" {
			group = groupGateway
		}
		args := []string{"serve", s.Name, "--listen", "fd:3", "--nats", p.natsURL,
			"--public-url", p.publicURL, "--dev"}
		args = append(args, up.broker.args()...)
		// Secrets travel in the environment, not in arguments that any
		// user of the machine can read in the process list.
		childEnv := append(upEnv(s.Name, up.secret), up.broker.env()...)
		if s.Database {
			// Replicas share their service's database: PostgreSQL's, or
			// the SQLite file, whose locks serialize their writes.
			if dsn, ok := up.databases[s.Name]; ok {
				// In the environment too: a DSN may hold a password.
				childEnv = append(childEnv, "RIDESHARE_DB="+dsn)
				p.databases[s.Name] = sqldb.RedactDSN(dsn)
			} else {
				file := filepath.Join(dir, s.Name+".db")
				args = append(args, "--db", file)
				p.databases[s.Name] = file
			}
		}
		if len(up.settings) > 0 {
			args = append(args, "--set", up.settings.String())
		}
		n := max(up.replicas[s.Name], 1)
		for i := 1; i <= n; i++ {
			spec := supervisor.Spec{Name: s.Name, Path: exe, Args: args, Group: group, Env: childEnv}
			switch {
			case s.Name == "gateway" && n == 1:
				spec.Listener, spec.ReadyURL = gw, "http://"+gw.Addr().String()+"/readyz"
			case s.Name == "gateway":
				// Gateway replicas share the public socket; the kernel
				// spreads connections over the processes accepting on it.
				// Each listens on its own address too, where its readiness
				// is asked: through the shared socket a sibling might answer.
				spec.Listener, spec.Listen, spec.ReadyURL = gw, ownAddress, "/readyz"
				spec.Args = append(slices.Clone(args), "--instance-listen", "fd:4")
			case n == 1:
				l, err := open("127.0.0.1:0")
				if err != nil {
					return p, err
				}
				spec.Listener, spec.ReadyURL = l, "http://"+l.Addr().String()+"/readyz"
				p.services[s.Name] = "http://" + l.Addr().String()
			default:
				spec.Listen, spec.ReadyURL = ownAddress, "/readyz"
			}
			if n > 1 {
				spec.Name = s.Name + "-" + strconv.Itoa(i)
				spec.Args = append(slices.Clone(spec.Args), "--instance", spec.Name)
			}
			p.specs = append(p.specs, spec)
		}
	}
	return p, nil
}

// ownAddress opens a replica's socket, a new one at every start.
func ownAddress() (*net.TCPListener, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return l.(*net.TCPListener), nil
}

// replicaCounts reads --replicas NAME=N.
func replicaCounts(env Env, kv keyValues) (map[string]int, error) {
	out := map[string]int{}
	for name, v := range kv {
		if _, ok := platform.Find(env.Services, name); !ok {
			return nil, fmt.Errorf("--replicas: unknown service %q (one of: %s)", name, strings.Join(platform.Names(env.Services), ", "))
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 16 {
			return nil, fmt.Errorf("--replicas %s=%s: want a count from 1 to 16", name, v)
		}
		out[name] = n
	}
	return out, nil
}

// keepStateCurrent rewrites the state file when a replica comes back on a
// new address, so that `rideshare fault` and `admin` reach every instance.
func keepStateCurrent(ctx context.Context, sup *supervisor.Supervisor, dir string, st State, env Env) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		if replicaAddrs(sup, st.Services) {
			if err := writeState(dir, st); err != nil {
				fmt.Fprintf(env.Stdout, "up: writing %s: %v\n", StateFile, err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// freePort finds a port for the broker, the one socket a child must open
// itself (the NATS server takes an address, not a listener). The port is
// kept for restarts, so the gap between closing and reuse is only at start.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lockDir keeps two platforms from sharing one data folder, which would
// corrupt neither SQLite nor JetStream but would confuse everyone.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, "up.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another `rideshare up` is using %s", dir)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

func randomSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func printBanner(env Env, s State, dir string, took time.Duration) {
	w := env.Stdout
	fmt.Fprintf(w, "\nrideshare is ready in %.1fs\n\n", took.Seconds())
	// One column, as wide as the longest name ("notifications-2").
	width := len("data and logs")
	for n := range s.Services {
		width = max(width, len(n))
	}
	row := func(label, value string) { fmt.Fprintf(w, "  %-*s %s\n", width, label, value) }
	row("public API", s.GatewayURL)
	row("discovery", s.GatewayURL+"/.well-known/openid-configuration")
	row("broker", s.NATSURL)
	if line := postgresLine(s.Databases); line != "" {
		row("databases", line)
	}
	names := make([]string, 0, len(s.Services))
	for n := range s.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		row(n, s.Services[n])
	}
	fmt.Fprintln(w)
	row("data and logs", dir)
	fmt.Fprintf(w, "  operator credential in %s (mode 0600)\n\n", filepath.Join(dir, StateFile))
	fmt.Fprintf(w, "Try: curl -s %s/readyz\nPress Ctrl-C to stop.\n", s.GatewayURL)
}

// postgresLine names the PostgreSQL databases and their server, or is
// empty when the services keep SQLite files in the data folder.
func postgresLine(databases map[string]string) string {
	var names []string
	host := ""
	for _, dsn := range databases {
		if !sqldb.IsPostgres(dsn) {
			continue
		}
		if u, err := url.Parse(dsn); err == nil {
			names = append(names, strings.TrimPrefix(u.Path, "/"))
			host = u.Host
		}
	}
	if len(names) == 0 {
		return ""
	}
	sort.Strings(names)
	return "PostgreSQL at " + host + ": " + strings.Join(names, ", ")
}

// prefixWriter prefixes each write (the supervisor writes whole lines).
type prefixWriter struct {
	w      interface{ Write([]byte) (int, error) }
	prefix string
}

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := p.w.Write(append([]byte(p.prefix), b...)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// replicaAddrs records the replicas' current addresses in services and
// reports whether any changed.
func replicaAddrs(sup *supervisor.Supervisor, services map[string]string) bool {
	changed := false
	for _, ps := range sup.Status() {
		if ps.Addr == "" {
			continue
		}
		if u := "http://" + ps.Addr; services[ps.Name] != u {
			services[ps.Name], changed = u, true
		}
	}
	return changed
}
