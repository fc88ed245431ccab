package identity

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

const testOperatorSecret = "operator-secret-for-tests-0123456789"

// newTestDB is a fresh identity database in a file, migrated as platform.Run
// migrates it.
func newTestDB(t *testing.T) *sqldb.DB {
	t.Helper()
	ctx := context.Background()
	db, err := sqldb.Open(ctx, filepath.Join(t.TempDir(), "identity.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx, outbox.Migrations(), outbox.MigrationTable); err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(ctx, Service.Migrations, "schema_migrations"); err != nil {
		t.Fatal(err)
	}
	return db
}

// testIdentity is the identity component serving on a real loopback port,
// with its issuer set to its own URL as if the gateway were transparent.
type testIdentity struct {
	db     *sqldb.DB
	issuer string
	http   *http.Client
}

func startIdentity(t *testing.T, dev bool) *testIdentity {
	t.Helper()
	db := newTestDB(t)
	srv := httptest.NewUnstartedServer(nil)
	issuer := "http://" + srv.Listener.Addr().String()
	log := slog.New(slog.DiscardHandler)
	comp, err := Service.New(context.Background(), platform.Deps{
		Config: platform.Config{
			PublicURL: issuer,
			Dev:       dev,
			Secrets:   map[string]string{OperatorSecretName: testOperatorSecret},
		},
		DB:     db,
		Outbox: outbox.New(db, Service.Name, outbox.Options{Logger: log}),
		Log:    log,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = comp.Handler
	srv.Start()
	t.Cleanup(srv.Close)
	c := srv.Client()
	// Redirects are what the authorize endpoint answers; tests look at them.
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &testIdentity{db: db, issuer: issuer, http: c}
}

// count is the number of rows in table.
func count(t *testing.T, db *sqldb.DB, table string) int {
	t.Helper()
	var n int
	if err := db.Reader().QueryRow(`SELECT count(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
