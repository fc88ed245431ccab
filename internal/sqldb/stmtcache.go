package sqldb

import (
	"context"
	"database/sql/driver"
	"errors"
)

// The SQLite driver parses and plans every statement on every call unless
// it was prepared, and the services' queries are a fixed set of constant
// strings run over and over: parsing was 22% of dispatch's CPU and 12–18%
// of rides' in the ride benchmarks. database/sql can reuse a prepared
// statement only when the caller keeps the *sql.Stmt, which would put
// statement handling in every store. So each SQLite connection keeps its
// own prepared statements by query text, beneath database/sql, where every
// query and every transaction already passes. (pgx keeps such a cache for
// PostgreSQL itself.) No library offers this for database/sql drivers.

// maxCachedStmts bounds a connection's cache; queries past it are prepared
// and closed per call, as without the cache. The services have fewer.
const maxCachedStmts = 256

// stmtConnector opens connections to dsn with drv, each with a statement
// cache.
type stmtConnector struct {
	drv driver.Driver
	dsn string
}

func (c stmtConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	// Everything database/sql uses must be there; the wrapper forwards it.
	inner, ok := conn.(sqliteConn)
	if !ok {
		conn.Close()
		return nil, errors.New("sqldb: the SQLite driver's connection lacks a context method database/sql needs")
	}
	return &stmtConn{sqliteConn: inner, stmts: map[string]*cachedStmt{}}, nil
}

func (c stmtConnector) Driver() driver.Driver { return c.drv }

// sqliteConn is what database/sql uses of a SQLite connection.
type sqliteConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// stmtConn is a connection that runs each query through a statement
// prepared once. database/sql uses a connection from one goroutine at a
// time, so the cache needs no lock.
type stmtConn struct {
	sqliteConn
	stmts map[string]*cachedStmt
}

type cachedStmt struct {
	stmt driver.Stmt
	// busy is set while the statement runs or its rows are open: a query
	// made again while rows of the same text are still being read (inside
	// a transaction, which holds its connection) gets a statement of its
	// own instead of resetting the rows under the reader's feet.
	busy bool
}

// stmt is query's statement, marked busy until release is called.
func (c *stmtConn) stmt(ctx context.Context, query string) (s driver.Stmt, release func() error, err error) {
	if cs := c.stmts[query]; cs != nil && !cs.busy {
		cs.busy = true
		return cs.stmt, func() error { cs.busy = false; return nil }, nil
	}
	s, err = c.PrepareContext(ctx, query)
	if err != nil {
		return nil, nil, err
	}
	if _, cached := c.stmts[query]; cached || len(c.stmts) >= maxCachedStmts {
		return s, s.Close, nil
	}
	cs := &cachedStmt{stmt: s, busy: true}
	c.stmts[query] = cs
	return s, func() error { cs.busy = false; return nil }, nil
}

func (c *stmtConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	s, release, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	res, err := s.(driver.StmtExecContext).ExecContext(ctx, args)
	return res, errors.Join(err, release())
}

func (c *stmtConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	s, release, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	rows, err := s.(driver.StmtQueryContext).QueryContext(ctx, args)
	if err != nil {
		return nil, errors.Join(err, release())
	}
	typed, ok := rows.(sqliteRows)
	if !ok {
		return nil, errors.Join(errors.New("sqldb: the SQLite driver's rows lack their column types"), rows.Close(), release())
	}
	return &releasingRows{sqliteRows: typed, release: release}, nil
}

// Close closes the cached statements, then the connection.
func (c *stmtConn) Close() error {
	var errs []error
	for _, cs := range c.stmts {
		errs = append(errs, cs.stmt.Close())
	}
	clear(c.stmts)
	return errors.Join(append(errs, c.sqliteConn.Close())...)
}

// sqliteRows is what database/sql uses of the SQLite driver's rows: the
// wrapper must not hide the column types (sql.Rows.ColumnTypes).
type sqliteRows interface {
	driver.Rows
	driver.RowsColumnTypeDatabaseTypeName
	driver.RowsColumnTypeLength
	driver.RowsColumnTypeNullable
	driver.RowsColumnTypePrecisionScale
	driver.RowsColumnTypeScanType
}

// releasingRows gives its statement back when closed.
type releasingRows struct {
	sqliteRows
	release func() error
}

func (r *releasingRows) Close() error {
	err := r.sqliteRows.Close()
	if r.release != nil {
		err = errors.Join(err, r.release())
		r.release = nil
	}
	return err
}
