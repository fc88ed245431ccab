package sqldb_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

var schema = sqldb.ThingsSchema

// TestContract runs the store layer's promises on every engine: the same
// SQL text, the same results.
func TestContract(t *testing.T) {
	for _, e := range testenv.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			ctx := context.Background()
			db := e.Open(t)
			for range 2 { // applying twice is a no-op
				if err := db.Migrate(ctx, schema, "test_migrations"); err != nil {
					t.Fatal(err)
				}
			}

			committed := 0
			err := db.InTx(ctx, func(tx *sqldb.Tx) error {
				tx.OnCommit(func() { committed++ })
				_, err := tx.ExecContext(ctx, `INSERT INTO things (id, n, blob, ok) VALUES ($1, $2, $3, $4)`, "a", int64(1)<<40, []byte{0, 1, 255}, true)
				return err
			})
			if err != nil || committed != 1 {
				t.Fatalf("commit: err %v, OnCommit ran %d times", err, committed)
			}

			boom := errors.New("boom")
			err = db.InTx(ctx, func(tx *sqldb.Tx) error {
				tx.OnCommit(func() { committed++ })
				if _, err := tx.ExecContext(ctx, `INSERT INTO things (id, n) VALUES ($1, $2)`, "b", 2); err != nil {
					return err
				}
				return boom
			})
			if !errors.Is(err, boom) || committed != 1 {
				t.Fatalf("rollback: err %v, OnCommit ran %d times", err, committed)
			}

			err = db.InTx(ctx, func(tx *sqldb.Tx) error {
				_, err := tx.ExecContext(ctx, `INSERT INTO things (id, n) VALUES ($1, $2)`, "a", 3)
				return err
			})
			if !sqldb.IsUniqueViolation(err) {
				t.Fatalf("duplicate key: %v, want a unique violation", err)
			}

			var n int64
			var blob []byte
			var ok bool
			var count int
			// $1 used twice: SQLite numbers parameters by first use.
			if err := db.Reader().QueryRowContext(ctx, `SELECT n, blob, ok FROM things WHERE id = $1 AND id <> $2 AND id = $1`, "a", "z").Scan(&n, &blob, &ok); err != nil {
				t.Fatal(err)
			}
			if err := db.Reader().QueryRowContext(ctx, `SELECT count(*) FROM things`).Scan(&count); err != nil {
				t.Fatal(err)
			}
			if n != 1<<40 || !bytes.Equal(blob, []byte{0, 1, 255}) || !ok || count != 1 {
				t.Fatalf("read back n=%d blob=%v ok=%v count=%d", n, blob, ok, count)
			}
		})
	}
}

// TestMigrateConcurrently is replicas starting together on one database:
// each migrates at start, and none may fail because another got there
// first.
func TestMigrateConcurrently(t *testing.T) {
	for _, e := range []struct {
		name string
		dsn  func(t *testing.T) string
	}{
		{"sqlite", func(t *testing.T) string { return t.TempDir() + "/replicas.db" }},
		{"postgres", func(t *testing.T) string { return testenv.PostgresDSN(t) }},
	} {
		t.Run(e.name, func(t *testing.T) {
			dsn := e.dsn(t)
			const replicas = 4
			errs := make(chan error, replicas)
			for range replicas {
				go func() {
					db, err := sqldb.Open(context.Background(), dsn)
					if err != nil {
						errs <- err
						return
					}
					defer db.Close()
					errs <- db.Migrate(context.Background(), schema, "test_migrations")
				}()
			}
			for range replicas {
				if err := <-errs; err != nil {
					t.Error(err)
				}
			}
		})
	}
}
