package sqldb_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"testing/fstest"

	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

var schema = fstest.MapFS{
	"00001_things.sql": {Data: []byte(`
-- +goose Up
CREATE TABLE things (id TEXT PRIMARY KEY, n BIGINT NOT NULL, blob BYTEA, ok BOOLEAN NOT NULL DEFAULT FALSE);
-- +goose Down
DROP TABLE things;
`)},
}

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
