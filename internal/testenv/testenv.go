// Package testenv gives tests real dependencies, isolated per test: a
// SQLite database in the test's temp folder, an embedded JetStream server on
// a free port, and Eventually for polling instead of sleeping.
package testenv

import (
	"context"
	"io/fs"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rideshare-platform/rideshare/internal/broker"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// NoListener is an address where nothing listens, for a peer that is down.
// Its port is privileged, so no test can be listening there, as one can on
// a port found free and then closed.
const NoListener = "http://127.0.0.1:1"

// DB opens a fresh SQLite database for t, with the outbox tables and the
// given service schema applied. It is closed when t ends.
func DB(t testing.TB, schema fs.FS) *sqldb.DB {
	t.Helper()
	return MigratedDB(t, t.TempDir()+"/test.db", schema)
}

// MigratedDB opens dsn for t with pools of its own, as one more process of
// a service would, and migrates it (see Migrate). It is closed when t ends.
func MigratedDB(t testing.TB, dsn string, schema fs.FS) *sqldb.DB {
	t.Helper()
	return Migrate(t, open(t, dsn), schema)
}

// Migrate applies the outbox tables and a service's schema (if not nil) to
// db, as platform.Run does at start, and returns db.
func Migrate(t testing.TB, db *sqldb.DB, schema fs.FS) *sqldb.DB {
	t.Helper()
	ctx := context.Background()
	if err := db.Migrate(ctx, outbox.Migrations(), outbox.MigrationTable); err != nil {
		t.Fatal(err)
	}
	if schema != nil {
		if err := db.Migrate(ctx, schema, "schema_migrations"); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

// Broker starts an embedded JetStream server on a free loopback port with
// its store in t's temp folder, and shuts it down when t ends.
func Broker(t testing.TB) *server.Server {
	t.Helper()
	srv, err := broker.RunEmbedded(broker.EmbeddedOptions{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv
}

// Connect dials srv and closes the connection when t ends.
func Connect(t testing.TB, srv *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, js, err := broker.Dial(context.Background(), broker.DialOptions{URL: broker.URL(srv), Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, js
}

// Eventually polls cond every 10ms until it holds or timeout passes, then
// fails t with msg. Tests wait for outcomes this way, never by sleeping a
// guessed duration.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Later is an argument to Eventually's message that is worked out when the
// wait gives up, so that it shows the last state seen, not the first.
type Later func() string

func (l Later) String() string { return l() }
