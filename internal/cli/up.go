package cli

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	fleetsim "github.com/rideshare-platform/rideshare/internal/fleet"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/platform"
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
			"A process that dies is restarted. Ctrl-C stops everything.")
	listen := fs.String("listen", "127.0.0.1:8080", "public address of the gateway (port 0 picks a free one)")
	data := fs.String("data", ".rideshare", "data folder: databases, broker store, logs, "+StateFile)
	fleet := fs.Int("fleet", 30, "simulated drivers that roam the demo city and take rides (0: none)")
	replicas := keyValues{}
	fs.Var(replicas, "replicas", "NAME=N runs N instances of a service, e.g. dispatch=3,payments=2: each registers\nin the broker's registry and callers balance across them; repeatable")
	settings := keyValues{}
	fs.Var(settings, "set", "KEY=VALUE service setting passed to every service, e.g. payments.decline_rate=0.1 or\ndispatch.offer_ttl=10s; repeatable (see each service's settings in the README)")
	if err := parse(fs, env, args); err != nil {
		return err
	}
	if *fleet < 0 {
		return errors.New("--fleet must be 0 or more")
	}
	counts, err := replicaCounts(env, replicas)
	if err != nil {
		return err
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

	plan, err := planPlatform(env, exe, dir, *listen, secret, settings, counts)
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
		GatewayURL: plan.publicURL, NATSURL: plan.natsURL, Services: plan.services,
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
}

// planPlatform opens every service's socket now, so every address is known
// before anything starts and each process keeps its port across restarts.
// A service run as several replicas is the exception: each replica gets a
// new port at every start (see supervisor.Spec.Listen) and callers find it
// in the registry, the way instances come and go on a real cluster. Every
// service, one instance or several, registers there, and every caller
// finds its peers there: `up` passes no fixed addresses.
func planPlatform(env Env, exe, dir, listen, secret string, settings keyValues, replicas map[string]int) (p platformPlan, err error) {
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
	gw, err := open(listen)
	if err != nil {
		return p, fmt.Errorf("the gateway cannot listen on %s (%v); pick another with --listen, e.g. --listen 127.0.0.1:0", listen, err)
	}
	p.publicURL = "http://" + gw.Addr().String()
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

	p.services = map[string]string{}
	for _, s := range env.Services {
		group := groupServices
		if s.Name == "gateway" {
			group = groupGateway
		}
		args := []string{"serve", s.Name, "--listen", "fd:3", "--nats", p.natsURL,
			"--public-url", p.publicURL, "--dev"}
		if s.Database {
			// Replicas share their service's database, as they would share
			// its PostgreSQL: SQLite's file locks serialize their writes.
			args = append(args, "--db", filepath.Join(dir, s.Name+".db"))
		}
		if len(settings) > 0 {
			args = append(args, "--set", settings.String())
		}
		n := max(replicas[s.Name], 1)
		for i := 1; i <= n; i++ {
			spec := supervisor.Spec{
				Name: s.Name, Path: exe, Args: args, Group: group,
				// Secrets travel in the environment, not in arguments that any
				// user of the machine can read in the process list.
				Env: upEnv(s.Name, secret),
			}
			switch {
			case s.Name == "gateway":
				// Gateway replicas share the public socket; the kernel
				// spreads connections over the processes accepting on it.
				spec.Listener, spec.ReadyURL = gw, "http://"+gw.Addr().String()+"/readyz"
			case n == 1:
				l, err := open("127.0.0.1:0")
				if err != nil {
					return p, err
				}
				spec.Listener, spec.ReadyURL = l, "http://"+l.Addr().String()+"/readyz"
				p.services[s.Name] = "http://" + l.Addr().String()
			default:
				spec.Listen = func() (*net.TCPListener, error) {
					l, err := net.Listen("tcp", "127.0.0.1:0")
					if err != nil {
						return nil, err
					}
					return l.(*net.TCPListener), nil
				}
				spec.ReadyURL = "/readyz"
			}
			if n > 1 {
				spec.Name = s.Name + "-" + strconv.Itoa(i)
				spec.Args = append(slices.Clone(args), "--instance", spec.Name)
			}
			p.specs = append(p.specs, spec)
		}
	}
	return p, nil
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
	fmt.Fprintf(w, "  public API   %s\n", s.GatewayURL)
	fmt.Fprintf(w, "  discovery    %s/.well-known/openid-configuration\n", s.GatewayURL)
	fmt.Fprintf(w, "  broker       %s\n", s.NATSURL)
	names := make([]string, 0, len(s.Services))
	for n := range s.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, s.Services[n])
	}
	fmt.Fprintf(w, "\n  data and logs %s\n  operator credential in %s (mode 0600)\n\n", dir, filepath.Join(dir, StateFile))
	fmt.Fprintf(w, "Try: curl -s %s/readyz\nPress Ctrl-C to stop.\n", s.GatewayURL)
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
