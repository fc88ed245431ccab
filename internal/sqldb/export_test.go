package sqldb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"testing/fstest"
)

// ThingsSchema is the one table the package's tests and benchmarks use.
var ThingsSchema = fstest.MapFS{
	"00001_things.sql": {Data: []byte(`
-- +goose Up
CREATE TABLE things (id TEXT PRIMARY KEY, n BIGINT NOT NULL, blob BYTEA, ok BOOLEAN NOT NULL DEFAULT FALSE);
-- +goose Down
DROP TABLE things;
`)},
}

// OpenSQLiteUncached opens a SQLite file through the driver's own
// connections, without the statement cache: the baseline of
// BenchmarkStatements.
func OpenSQLiteUncached(ctx context.Context, path string) (*DB, error) {
	return openSQLiteWith(ctx, path, func(dsn string) *sql.DB { return sql.OpenDB(plainConnector{dsn}) })
}

// plainConnector is the SQLite driver's own connections.
type plainConnector struct{ dsn string }

func (c plainConnector) Connect(context.Context) (driver.Conn, error) {
	return sqliteDriver.Open(c.dsn)
}
func (c plainConnector) Driver() driver.Driver { return sqliteDriver }
