// Package sqldb opens a service's own database, SQLite by default or
// PostgreSQL when given a postgres:// DSN, and is the one place that knows the
// difference. Queries elsewhere are written once, in the subset both engines
// accept: $1, $2 … placeholders whose first uses appear in ascending order
// (SQLite numbers $N parameters by first appearance), TEXT / BIGINT / BOOLEAN /
// BYTEA columns, ON CONFLICT and RETURNING. Times are stored as BIGINT unix
// microseconds so comparisons and ordering behave the same on both.
package sqldb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Dialect names a database engine.
type Dialect string

// The supported engines.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DB is a service's database: one writer and a pool of readers. On SQLite the
// writer is a single connection, because SQLite serialises writers anyway and
// several writer connections only add lock waits and long tails; reads run in
// parallel on their own pool thanks to WAL.
type DB struct {
	Dialect Dialect
	write   *sql.DB
	read    *sql.DB
	// path is the SQLite file; empty on PostgreSQL.
	path string
}

// Open opens dsn: "postgres://…" or "postgresql://…" for PostgreSQL,
// otherwise a SQLite file path (optionally prefixed "sqlite:"). The SQLite
// file's folder is created if missing.
func Open(ctx context.Context, dsn string) (*DB, error) {
	if IsPostgres(dsn) {
		return openPostgres(ctx, dsn)
	}
	return openSQLite(ctx, strings.TrimPrefix(dsn, "sqlite:"))
}

func openSQLite(ctx context.Context, path string) (*DB, error) {
	return openSQLiteWith(ctx, path, func(dsn string) *sql.DB {
		return sql.OpenDB(stmtConnector{drv: sqliteDriver, dsn: dsn})
	})
}

// openSQLiteWith opens path's writer and readers with pool (the benchmark
// of the statement cache opens them without it).
func openSQLiteWith(ctx context.Context, path string, pool func(dsn string) *sql.DB) (*DB, error) {
	if path == "" {
		return nil, errors.New("sqldb: empty SQLite path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("sqldb: %w", err)
	}
	// synchronous(NORMAL) in WAL mode loses at most the last transactions on
	// power loss, never consistency; the busy timeout covers another process
	// (a migration, a crash-restarted twin) briefly holding the write lock.
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(NORMAL)", "busy_timeout(10000)", "foreign_keys(ON)"} {
		q.Add("_pragma", p)
	}
	wq := url.Values{"_txlock": {"immediate"}}
	for k, v := range q {
		wq[k] = v
	}
	w := pool("file:" + path + "?" + wq.Encode())
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	r := pool("file:" + path + "?" + q.Encode())
	r.SetMaxOpenConns(4)
	db := &DB{Dialect: SQLite, write: w, read: r, path: path}
	if err := db.Ping(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// sqliteDriver is the driver the SQLite package registers, taken from a
// handle that never connects.
var sqliteDriver = func() driver.Driver {
	db, err := sql.Open("sqlite", "")
	if err != nil {
		panic(err) // only if the import above did not register it
	}
	defer db.Close()
	return db.Driver()
}()

func openPostgres(ctx context.Context, dsn string) (*DB, error) {
	p, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqldb: %w", err)
	}
	p.SetMaxOpenConns(16)
	p.SetConnMaxIdleTime(5 * time.Minute)
	db := &DB{Dialect: Postgres, write: p, read: p}
	if err := db.Ping(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Close closes both pools.
func (db *DB) Close() error {
	err := db.write.Close()
	if db.read != db.write {
		err = errors.Join(err, db.read.Close())
	}
	return err
}

// Ping checks that the database answers; readiness probes call it.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.write.PingContext(ctx); err != nil {
		return fmt.Errorf("sqldb: ping: %w", err)
	}
	return nil
}

// Reader is the pool for queries outside a transaction.
func (db *DB) Reader() *sql.DB { return db.read }

// Tx is a write transaction. OnCommit registers work to run once the commit
// has succeeded, such as waking the outbox relay.
type Tx struct {
	*sql.Tx
	onCommit []func()
}

// OnCommit runs f after a successful commit, never after a rollback.
func (tx *Tx) OnCommit(f func()) { tx.onCommit = append(tx.onCommit, f) }

// InTx runs fn in a write transaction: committed when fn returns nil, rolled
// back otherwise. This is the unit of consistency: a state change and the
// events it emits are written here together or not at all.
func (db *DB) InTx(ctx context.Context, fn func(*Tx) error) error {
	stx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqldb: begin: %w", err)
	}
	tx := &Tx{Tx: stx}
	if err := fn(tx); err != nil {
		_ = stx.Rollback()
		return err
	}
	if err := stx.Commit(); err != nil {
		return fmt.Errorf("sqldb: commit: %w", err)
	}
	for _, f := range tx.onCommit {
		f()
	}
	return nil
}

// Migrate applies the migrations in fsys that are not yet applied, recording
// them in table. Each migration source keeps its own table, so a shared
// component (the outbox) and the service's own schema version independently.
func (db *DB) Migrate(ctx context.Context, fsys fs.FS, table string) error {
	dialect := goose.DialectSQLite3
	if db.Dialect == Postgres {
		dialect = goose.DialectPostgres
	}
	opts := []goose.ProviderOption{goose.WithTableName(table)}
	// Replicas start together and each migrates at start: without a lock
	// two of them both see a migration as pending and the second fails on
	// "table already exists". PostgreSQL serialises them with an advisory
	// lock held for the session; SQLite with a lock file beside the
	// database, since its own locks end with each transaction and a
	// migration spans several.
	if db.Dialect == Postgres {
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return fmt.Errorf("sqldb: migrations %s: %w", table, err)
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	} else {
		unlock, err := lockFile(ctx, db.path+".migrate-lock")
		if err != nil {
			return fmt.Errorf("sqldb: migrations %s: %w", table, err)
		}
		defer unlock()
	}
	p, err := goose.NewProvider(dialect, db.write, fsys, opts...)
	if err != nil {
		return fmt.Errorf("sqldb: migrations %s: %w", table, err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("sqldb: migrate %s: %w", table, err)
	}
	return nil
}

// lockFile takes an exclusive lock on the file at path, waiting until ctx
// ends. The lock goes with the process, so a migrator that dies frees it.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// IsUniqueViolation reports whether err is a unique or primary key conflict.
func IsUniqueViolation(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		c := se.Code()
		return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// Micros is t as stored: unix microseconds.
func Micros(t time.Time) int64 { return t.UnixMicro() }

// Time reads a stored unix-microsecond value back, in UTC.
func Time(us int64) time.Time { return time.UnixMicro(us).UTC() }

// Sub is the migrations folder dir inside an embedded FS. The folder is fixed
// at build time, so a bad name is a programming error caught by any test.
func Sub(fsys fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(err)
	}
	return sub
}
