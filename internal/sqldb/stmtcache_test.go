package sqldb

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
)

func openCacheTest(t testing.TB) *DB {
	t.Helper()
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), "cache.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(context.Background(), ThingsSchema, "test_migrations"); err != nil {
		t.Fatal(err)
	}
	return db
}

// cached is how many statements pool's connection keeps.
func cached(t *testing.T, pool *sql.DB) int {
	t.Helper()
	conn, err := pool.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	n := -1
	if err := conn.Raw(func(dc any) error { n = len(dc.(*stmtConn).stmts); return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestStatementCache: a query run again reuses its statement; a query run
// while rows of the same text are still open (a transaction holds its one
// connection) gets a statement of its own, and neither reader's rows are
// disturbed; past the cache's bound queries still run, uncached.
func TestStatementCache(t *testing.T) {
	ctx := context.Background()
	db := openCacheTest(t)
	base := cached(t, db.write) // the migration's own statements

	const insert = `INSERT INTO things (id, n) VALUES ($1, $2)`
	for i := range 5 {
		if err := db.InTx(ctx, func(tx *Tx) error {
			_, err := tx.ExecContext(ctx, insert, fmt.Sprint("t", i), i)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if got := cached(t, db.write); got != base+1 {
		t.Fatalf("after 5 runs of one insert the writer keeps %d statements, want %d", got, base+1)
	}

	const list = `SELECT id, n FROM things WHERE n >= $1 ORDER BY n`
	var outer, inner []int64
	if err := db.InTx(ctx, func(tx *Tx) error {
		rows, err := tx.QueryContext(ctx, list, 0)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var n int64
			if err := rows.Scan(&id, &n); err != nil {
				return err
			}
			outer = append(outer, n)
			if n != 2 {
				continue
			}
			again, err := tx.QueryContext(ctx, list, 3)
			if err != nil {
				return err
			}
			for again.Next() {
				if err := again.Scan(&id, &n); err != nil {
					return err
				}
				inner = append(inner, n)
			}
			if err := again.Close(); err != nil {
				return err
			}
		}
		return rows.Err()
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(outer) != "[0 1 2 3 4]" || fmt.Sprint(inner) != "[3 4]" {
		t.Fatalf("nested reads of one query: outer %v, inner %v; want [0 1 2 3 4] and [3 4]", outer, inner)
	}

	for i := range maxCachedStmts + 10 {
		var n int64
		if err := db.Reader().QueryRowContext(ctx, fmt.Sprintf(`SELECT n + %d FROM things WHERE id = $1`, i), "t1").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != int64(1+i) {
			t.Fatalf("query %d read %d, want %d", i, n, 1+i)
		}
	}
	// The reader pool may have spread the queries over its connections;
	// none keeps more than the bound.
	if got := cached(t, db.Reader()); got > maxCachedStmts {
		t.Fatalf("a reader keeps %d statements, over the bound %d", got, maxCachedStmts)
	}
}
