package sqldb_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// BenchmarkStatements is a store's typical write transaction (an insert,
// a read by key and an update) and a read by key outside it, on a SQLite
// file with each connection's statement cache and, as the baseline in the
// same run, without it (the driver parsing every statement per call). It
// reports the process's CPU per operation, and for the cached run its
// ratio to the uncached one run just before.
func BenchmarkStatements(b *testing.B) {
	ctx := context.Background()
	var baseline float64
	for _, mode := range []struct {
		name string
		open func(ctx context.Context, path string) (*sqldb.DB, error)
	}{
		{"uncached", sqldb.OpenSQLiteUncached},
		{"cached", sqldb.Open},
	} {
		b.Run(mode.name, func(b *testing.B) {
			db, err := mode.open(ctx, filepath.Join(b.TempDir(), "bench.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			if err := db.Migrate(ctx, schema, "test_migrations"); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			cpu := testenv.ProcessCPU()
			for i := 0; b.Loop(); i++ {
				id := fmt.Sprint("b", i)
				if err := db.InTx(ctx, func(tx *sqldb.Tx) error {
					if _, err := tx.ExecContext(ctx, `INSERT INTO things (id, n) VALUES ($1, $2)`, id, i); err != nil {
						return err
					}
					var n int64
					if err := tx.QueryRowContext(ctx, `SELECT n FROM things WHERE id = $1`, id).Scan(&n); err != nil {
						return err
					}
					_, err := tx.ExecContext(ctx, `UPDATE things SET n = $1, ok = $2 WHERE id = $3`, n+1, true, id)
					return err
				}); err != nil {
					b.Fatal(err)
				}
				var n int64
				if err := db.Reader().QueryRowContext(ctx, `SELECT n FROM things WHERE id = $1`, id).Scan(&n); err != nil {
					b.Fatal(err)
				}
			}
			perOp := float64((testenv.ProcessCPU() - cpu).Microseconds()) / float64(b.N)
			b.ReportMetric(perOp, "cpu-µs/op")
			if mode.name == "uncached" {
				baseline = perOp
			} else if baseline > 0 {
				b.ReportMetric(perOp/baseline, "cpu-x-uncached")
			}
		})
	}
}
