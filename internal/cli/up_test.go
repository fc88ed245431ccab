package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/rideshare-platform/rideshare/internal/broker"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

var upTestServices = []platform.Service{{Name: "rides", Database: true}, {Name: "gateway"}}

// TestUpRefuses: settings up cannot honour stop it at once with a message
// that names the flag, and never echo a password.
func TestUpRefuses(t *testing.T) {
	const closedPort = 1 // testenv.NoListener's: nothing listens there
	noJetStream := runPlainNATS(t)
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--stream-replicas", "3"}, nil, "needs --nats"},
		{[]string{"--stream-replicas", "0"}, nil, "from 1 to 5"},
		{[]string{"--nats-tls-ca", "/etc/ssl/ca.pem"}, nil, "apply to --nats only"},
		{nil, map[string]string{"RIDESHARE_NATS_TOKEN": "t0ken"}, "apply to --nats only"},
		{[]string{"--postgres", "./rideshare_"}, nil, "not a postgres:// URL"},
		{[]string{"--postgres", "postgres://u@127.0.0.1/Ride_"}, nil, "lower-case"},
		{[]string{"--postgres", "postgres://u:hunter2@127.0.0.1:" + strconv.Itoa(closedPort) + "/rideshare_"}, nil, "postgres://u@127.0.0.1"},
		{[]string{"--nats", "nats://127.0.0.1:" + strconv.Itoa(closedPort)}, nil, "--nats nats://127.0.0.1:"},
		{[]string{"--nats", "nats://svc:hunter2@127.0.0.1:" + strconv.Itoa(closedPort)}, nil, "--nats nats://svc@127.0.0.1:"},
		{[]string{"--nats", noJetStream}, nil, "JetStream is not available"},
		{[]string{"--nats", noJetStream, "--nats-creds", "/no/such.creds"}, nil, "no such file"},
	} {
		var stdout, stderr bytes.Buffer
		args := append([]string{"up", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--fleet", "0"}, c.args...)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		code := Run(ctx, Env{
			Args: args, Getenv: func(k string) string { return c.env[k] },
			Stdout: &stdout, Stderr: &stderr, Services: upTestServices,
		})
		cancel()
		msg := stderr.String()
		if code != 1 || !strings.Contains(msg, c.want) || strings.Contains(msg+stdout.String(), "hunter2") {
			t.Errorf("up %v (env %v): exit %d, %q; want 1 and a message saying %q without the password", c.args, c.env, code, msg, c.want)
		}
	}
}

// runPlainNATS starts a NATS server without JetStream and returns its URL.
func runPlainNATS(t *testing.T) string {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv.ClientURL()
}

// TestPlanExternal: with PostgreSQL and an external broker, up starts no
// broker, hands each service its DSN and the broker's secrets in the
// environment (never in arguments, which the process list shows), passes
// the broker's files and stream replicas as flags, and records the DSNs
// without their passwords.
func TestPlanExternal(t *testing.T) {
	dsn := "postgres://rideshare:pg-secret@db.internal:5432/rideshare_rides?sslmode=require"
	p, err := planPlatform(Env{Services: upTestServices}, "/bin/rideshare", t.TempDir(), upPlan{
		listen: "127.0.0.1:0", secret: "s",
		broker: externalBroker{url: "nats://n1:4222,nats://n2:4222", streamReplicas: 3,
			security: broker.Security{User: "svc", Password: "nats-secret", TLSCA: "/etc/nats/ca.pem"}},
		databases: map[string]string{"rides": dsn},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, s := range p.specs {
			if s.Listener != nil {
				s.Listener.Close()
			}
		}
	})
	if len(p.specs) != 2 {
		t.Fatalf("%d processes planned, want rides and gateway only (no broker)", len(p.specs))
	}
	rides := p.specs[0]
	args := strings.Join(rides.Args, " ")
	for _, want := range []string{"--nats nats://n1:4222,nats://n2:4222", "--stream-replicas 3", "--nats-tls-ca /etc/nats/ca.pem"} {
		if !strings.Contains(args, want) {
			t.Errorf("rides' arguments %q lack %q", args, want)
		}
	}
	if strings.Contains(args, "secret") || slices.Contains(rides.Args, "--db") {
		t.Errorf("rides' arguments %q carry a secret or a --db", args)
	}
	for _, want := range []string{"RIDESHARE_DB=" + dsn, "RIDESHARE_NATS_USER=svc", "RIDESHARE_NATS_PASSWORD=nats-secret"} {
		if !slices.Contains(rides.Env, want) {
			t.Errorf("rides' environment lacks %s", want)
		}
	}
	if got := p.databases["rides"]; got != "postgres://rideshare@db.internal:5432/rideshare_rides?sslmode=require" {
		t.Errorf("state records rides' database as %q", got)
	}
}

func TestRedactNATSURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                 "nats://127.0.0.1:4222",
		"nats://u:p@n1:4222,nats://u:p@n2:4222": "nats://u@n1:4222,nats://u@n2:4222",
		"tls://s3cr3tt0ken@n1:4222":             "tls://n1:4222",
	} {
		if got := broker.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestServeBrokerClusterFlags: a cluster member needs its name, its route
// address and the routes, all three.
func TestServeBrokerClusterFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--cluster-name", "rideshare"},
		{"--cluster-name", "rideshare", "--cluster-listen", "127.0.0.1:0"},
		{"--routes", "nats://127.0.0.1:6222"},
	} {
		var stderr bytes.Buffer
		code := Run(context.Background(), Env{
			Args: append([]string{"serve", "broker", "--store", t.TempDir()}, args...), Stdout: &bytes.Buffer{}, Stderr: &stderr,
		})
		if code != 1 || !strings.Contains(stderr.String(), "needs --cluster-name, --cluster-listen and --routes") {
			t.Errorf("serve broker %v: exit %d, %q", args, code, stderr.String())
		}
	}
}

// TestServeBrokerCluster runs three `serve broker` members with the cluster
// flags, as three containers would: each becomes ready once the cluster
// has a meta leader, and streams with three replicas can be made on it.
func TestServeBrokerCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member cluster; skipped with -short")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The members take addresses, not sockets, so their ports are found
	// free and closed before they listen; another process (or a member's
	// own outgoing route connection) may take one in between, and that
	// member exits. Such a start is tried again on new ports; a member
	// that runs but never becomes ready fails the test.
	var c *brokerCluster
	for attempt := 1; ; attempt++ {
		c = startBrokerCluster(t, ctx)
		err := c.awaitReady(60 * time.Second)
		if err == nil {
			break
		}
		exited := c.exitedEarly() // before stop, which ends them all
		c.stop()
		if !exited || attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("attempt %d: %v", attempt, err)
	}
	defer c.stop()
	nc, js, err := broker.Dial(ctx, broker.DialOptions{URL: "nats://" + strings.Join(c.clients, ",nats://"), Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	testenv.Eventually(t, 30*time.Second, func() bool {
		return broker.EnsureStreams(ctx, js, 3) == nil
	}, "streams with three replicas could not be made on the cluster")
	s, err := js.Stream(ctx, broker.StreamName("rides"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("rides stream: %+v, %v; want a leader and two replicas", info, err)
	}
}

// brokerCluster is three `serve broker` members running in the test.
type brokerCluster struct {
	clients, health []string
	logs            []*testenv.Buffer
	exited          atomic.Int32
	done            chan int
	cancel          context.CancelFunc
	stopped         bool
}

func startBrokerCluster(t *testing.T, ctx context.Context) *brokerCluster {
	t.Helper()
	c := &brokerCluster{done: make(chan int, 3)}
	ctx, c.cancel = context.WithCancel(ctx)
	var routes []string
	for range 3 {
		var ports [3]int
		for i := range ports {
			p, err := freePort()
			if err != nil {
				t.Fatal(err)
			}
			ports[i] = p
		}
		routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(ports[0]))
		c.clients = append(c.clients, "127.0.0.1:"+strconv.Itoa(ports[1]))
		c.health = append(c.health, "127.0.0.1:"+strconv.Itoa(ports[2]))
	}
	for i := range 3 {
		args := []string{"serve", "broker", "--server-name", "n" + strconv.Itoa(i+1), "--cluster-name", "rideshare",
			"--cluster-listen", strings.TrimPrefix(routes[i], "nats://"), "--routes", strings.Join(routes, ","),
			"--nats-listen", c.clients[i], "--listen", c.health[i], "--store", t.TempDir()}
		log := &testenv.Buffer{}
		c.logs = append(c.logs, log)
		go func() {
			code := Run(ctx, Env{Args: args, Stdout: log, Stderr: log})
			c.exited.Add(1)
			c.done <- code
		}()
	}
	return c
}

// awaitReady waits until every member answers /readyz with 200, and says
// what each member printed if one does not or exits.
func (c *brokerCluster) awaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, h := range c.health {
		last := ""
		for {
			if c.exitedEarly() {
				return fmt.Errorf("a cluster member exited:\n%s", c.output())
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("after %s: cluster member at %s not ready (last answer: %s):\n%s", timeout, h, last, c.output())
			}
			res, err := http.Get("http://" + h + "/readyz")
			if err == nil {
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					break
				}
				last = string(b)
			} else {
				last = err.Error()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

func (c *brokerCluster) exitedEarly() bool { return c.exited.Load() > 0 }

func (c *brokerCluster) output() string {
	var b strings.Builder
	for i, l := range c.logs {
		fmt.Fprintf(&b, "--- n%d:\n%s\n", i+1, l.String())
	}
	return b.String()
}

// stop stops every member and waits until each has exited.
func (c *brokerCluster) stop() {
	if c.stopped {
		return
	}
	c.stopped = true
	c.cancel()
	for range 3 {
		<-c.done
	}
}
