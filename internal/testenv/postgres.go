package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver

	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// PostgresEnv names the DSN of a PostgreSQL database whose role may create
// databases. CI sets it; without it, PostgreSQL runs of a test are skipped.
const PostgresEnv = "RIDESHARE_TEST_POSTGRES"

// Engine opens an empty database of one kind for a test.
type Engine struct {
	Name string
	Open func(t testing.TB) *sqldb.DB
}

// Engines are the database engines a store's contract tests run on: SQLite
// always, PostgreSQL when PostgresEnv is set.
func Engines() []Engine {
	return []Engine{
		{Name: "sqlite", Open: func(t testing.TB) *sqldb.DB { return open(t, t.TempDir()+"/test.db") }},
		{Name: "postgres", Open: func(t testing.TB) *sqldb.DB { return open(t, PostgresDSN(t)) }},
	}
}

func open(t testing.TB, dsn string) *sqldb.DB {
	t.Helper()
	db, err := sqldb.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// PostgresDSN creates a fresh database for t on the server PostgresEnv names
// and drops it when t ends, so tests never see each other's rows. It skips t
// when PostgresEnv is unset.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv(PostgresEnv)
	if base == "" {
		t.Skipf("PostgreSQL not configured: set %s=postgres://user@host:port/db to run this against PostgreSQL", PostgresEnv)
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "rideshare_t_" + hex.EncodeToString(b[:])
	if _, err := admin.ExecContext(context.Background(), "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating a test database on %s: %v", base, err)
	}
	t.Cleanup(func() {
		_, _ = admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}
