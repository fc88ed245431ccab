package sqldb_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

func TestPrefixedDSN(t *testing.T) {
	for _, c := range []struct {
		prefix, name, want, err string
	}{
		{"postgres://rideshare@127.0.0.1:5432/rideshare_?sslmode=disable", "rides",
			"postgres://rideshare@127.0.0.1:5432/rideshare_rides?sslmode=disable", ""},
		{"postgresql://u:p%40ss@db.internal/prod_", "payments", "postgresql://u:p%40ss@db.internal/prod_payments", ""},
		{"postgres://u@db/", "users", "postgres://u@db/users", ""},
		{"postgres://u@db", "users", "postgres://u@db/users", ""},
		{"./data/rideshare_", "rides", "", "not a postgres:// URL"},
		{"postgres://u@db/Rideshare_", "rides", "", "lower-case"},
		{"postgres://u@db/ride-share_", "rides", "", "lower-case"},
		{"postgres://u@db/" + strings.Repeat("x", 60), "rides", "", "63 bytes"},
	} {
		got, err := sqldb.PrefixedDSN(c.prefix, c.name)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("PrefixedDSN(%q, %q): error %v, want one saying %q", c.prefix, c.name, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("PrefixedDSN(%q, %q) = %q, %v; want %q", c.prefix, c.name, got, err, c.want)
		}
	}
}

func TestRedactDSN(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"postgres://rideshare:s3cret@db:5432/rides?sslmode=require", "postgres://rideshare@db:5432/rides?sslmode=require"},
		{"postgres://rideshare@db/rides?password=s3cret&sslmode=disable", "postgres://rideshare@db/rides?sslmode=disable"},
		{"postgres://db/rides", "postgres://db/rides"},
		{"/var/lib/rideshare/rides.db", "/var/lib/rideshare/rides.db"},
	} {
		if got := sqldb.RedactDSN(c.in); got != c.want || strings.Contains(got, "s3cret") {
			t.Errorf("RedactDSN(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestEnsureDatabase creates a missing database once, finds it the second
// time, and opens and migrates it like any other.
func TestEnsureDatabase(t *testing.T) {
	base := os.Getenv(testenv.PostgresEnv)
	if base == "" {
		t.Skipf("PostgreSQL not configured: set %s", testenv.PostgresEnv)
	}
	ctx := context.Background()
	var b [6]byte
	_, _ = rand.Read(b[:])
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/rideshare_t" + hex.EncodeToString(b[:]) + "_"
	dsn, err := sqldb.PrefixedDSN(u.String(), "rides")
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/") + "rides"
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("dropping %s: %v", name, err)
		}
	})

	for i, want := range []bool{true, false} {
		created, err := sqldb.EnsureDatabase(ctx, dsn)
		if err != nil || created != want {
			t.Fatalf("EnsureDatabase, call %d: created %v, %v; want %v", i+1, created, err, want)
		}
	}
	db, err := sqldb.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Migrate(ctx, schema, "test_migrations"); err != nil {
		t.Fatal(err)
	}
}
