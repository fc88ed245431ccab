package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/rideshare-platform/rideshare/internal/catalog"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestPlatformOnPostgres runs `up --postgres PREFIX` with replicas of
// rides, dispatch and payments: every service keeps its data in its own
// PostgreSQL database, which up creates and the replicas share, and a ride
// goes from request to receipt.
func TestPlatformOnPostgres(t *testing.T) {
	// Replicas share their service's database: two saga workers, two
	// dispatch timer workers and two outbox relays per service on one
	// PostgreSQL database each.
	p, prefix, admin := startOnPostgres(t, t.TempDir(), "--replicas", "rides=2,dispatch=2,payments=2")

	var names []string
	for _, s := range catalog.Services {
		if s.Database {
			names = append(names, s.Name)
			want, err := sqldb.PrefixedDSN(prefix, s.Name)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.state.Databases[s.Name]; got != want {
				t.Errorf("platform.json: %s's database is %q, want %q", s.Name, got, want)
			}
		}
	}
	id := takeOneRide(t, p, "pg")

	// The ride is in rides' own PostgreSQL database, and no SQLite file
	// was made.
	rides, err := sql.Open("pgx", p.state.Databases["rides"])
	if err != nil {
		t.Fatal(err)
	}
	defer rides.Close()
	var status string
	if err := rides.QueryRowContext(context.Background(), `SELECT status FROM rides WHERE id = $1`, id).Scan(&status); err != nil {
		t.Fatalf("reading the ride from %s: %v", p.state.Databases["rides"], err)
	}
	if status != "completed" {
		t.Errorf("rides' database holds the ride as %q", status)
	}
	if files, _ := filepath.Glob(filepath.Join(p.dir, "*.db")); len(files) > 0 {
		t.Errorf("SQLite files made in PostgreSQL mode: %v", files)
	}
	var n int
	if err := admin.QueryRowContext(context.Background(), `SELECT count(*) FROM pg_database WHERE datname LIKE $1`,
		pathOf(t, prefix)+"%").Scan(&n); err != nil || n != len(names) {
		t.Errorf("%d databases with the prefix (%v), want one for each of %v", n, err, names)
	}
}

// TestPlatformOnExternalNATS runs `up --nats URL` against a JetStream
// server this test starts, which demands a user and password: up starts no
// broker of its own, passes the credentials to every service through the
// environment, and a ride goes from request to receipt.
func TestPlatformOnExternalNATS(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the whole platform; skipped with -short")
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "external", Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: t.TempDir(), Username: "rideshare", Password: "broker-secret",
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })

	t.Setenv("RIDESHARE_NATS_USER", "rideshare")
	t.Setenv("RIDESHARE_NATS_PASSWORD", "wrong")
	if code := run(context.Background(), []string{"up", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--nats", srv.ClientURL()},
		os.Getenv, nil, &testenv.Buffer{}, &testenv.Buffer{}); code != 1 {
		t.Fatalf("up with a wrong NATS password exited %d, want 1 at once", code)
	}
	t.Setenv("RIDESHARE_NATS_PASSWORD", "broker-secret")
	p := startPlatform(t, t.TempDir(), "--nats", srv.ClientURL())
	if p.state.NATSURL != srv.ClientURL() {
		t.Errorf("platform.json names the broker %q, want %q", p.state.NATSURL, srv.ClientURL())
	}
	for pid, name := range childPIDs(t) {
		if name == brokerChild {
			t.Errorf("up started a broker (pid %d) although given --nats", pid)
		}
	}
	if _, err := os.Stat(filepath.Join(p.dir, "broker")); err == nil {
		t.Error("up made a broker store although given --nats")
	}
	takeOneRide(t, p, "nats")
	if n := srv.NumClients(); n < len(catalog.Services) {
		t.Errorf("the external server has %d clients, want at least one per service (%d)", n, len(catalog.Services))
	}
}

// TestPlatformOnJetStreamCluster runs `up --nats` on a three-member
// JetStream cluster with every stream and the registry replicated three
// times: a ride completes, one member (the meta leader) stops, and another
// ride completes on the two that are left.
func TestPlatformOnJetStreamCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the whole platform; skipped with -short")
	}
	c := testenv.JetStreamCluster(t, 3)
	p := startPlatform(t, t.TempDir(), "--nats", c.URL(), "--stream-replicas", "3")
	takeOneRide(t, p, "cluster1")
	leader := c.WaitForMetaLeader(30 * time.Second)
	c.Stop(leader)
	t.Logf("stopped %s, the meta leader", c.Name(leader))
	takeOneRide(t, p, "cluster2")
}

// brokerChild is the name childPIDs gives `serve broker`.
const brokerChild = "broker"

// takeOneRide signs up a driver and a rider and takes a ride from request
// to receipt, returning its id.
func takeOneRide(t *testing.T, p *runningPlatform, tag string) string {
	t.Helper()
	driver := p.newDriver(tag+"-driver@example.com", nearFerry)
	rider := p.newRider(tag + "-rider@example.com")
	id := rider.request(tag+"-ride", trip(ferryBuilding, twinPeaks))["id"].(string)
	driver.awaitOffer(id)
	for _, step := range []string{"accept", "arrive", "start", "complete"} {
		driver.step(id, step)
	}
	rider.await(id, "completed")
	var rc map[string]any
	testenv.Eventually(t, 30*time.Second, func() bool {
		rc = rider.receipt(id)
		return rc["status"] == "captured"
	}, "the fare was never captured: %v", &rc)
	if amount, _ := rc["amount"].(float64); amount <= 0 {
		t.Fatalf("receipt: %v", rc)
	}
	return id
}

// startOnPostgres runs `up --postgres PREFIX` (and extra flags, as
// startPlatform takes them) with every service's database on the server
// RIDESHARE_TEST_POSTGRES names, under a prefix no other run uses; t is
// skipped when no server is configured, or with -short. It returns the
// prefix and a connection to the server's base database; the databases are
// dropped when t ends, after the platform has stopped.
func startOnPostgres(t testing.TB, dir string, extra ...string) (*runningPlatform, string, *sql.DB) {
	t.Helper()
	base := os.Getenv(testenv.PostgresEnv)
	if base == "" {
		t.Skipf("PostgreSQL not configured: set %s to a database whose role may create databases", testenv.PostgresEnv)
	}
	if testing.Short() {
		t.Skip("boots the whole platform; skipped with -short")
	}
	prefix, admin := postgresPrefix(t, base)
	return startPlatform(t, dir, append([]string{"--postgres", prefix}, extra...)...), prefix, admin
}

// postgresPrefix is a DSN prefix for databases no other run uses, on the
// server base names; the databases made under it are dropped when t ends,
// after the platform (whose cleanup is registered later, so runs first)
// has stopped.
func postgresPrefix(t testing.TB, base string) (string, *sql.DB) {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "rideshare_t" + hex.EncodeToString(b[:]) + "_"
	u.Path = "/" + name
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		for _, s := range catalog.Services {
			if s.Database {
				_, _ = admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+s.Name+" WITH (FORCE)")
			}
		}
	})
	return u.String(), admin
}

// pathOf is the database part of a postgres:// URL.
func pathOf(t testing.TB, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}
