package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// IsPostgres reports whether dsn names a PostgreSQL database.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// dbNamePrefix is what a database name prefix may hold: no quoting is then
// ever needed, and names read the same in psql and in logs.
var dbNamePrefix = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// PrefixedDSN is the DSN of database prefix's name followed by name, on the
// server and with the credentials and parameters of prefix, a postgres://
// URL whose database part is the prefix:
//
//	postgres://rideshare@db:5432/rideshare_?sslmode=disable + "rides"
//	→ postgres://rideshare@db:5432/rideshare_rides?sslmode=disable
func PrefixedDSN(prefix, name string) (string, error) {
	if !IsPostgres(prefix) {
		return "", fmt.Errorf("sqldb: %q is not a postgres:// URL", RedactDSN(prefix))
	}
	u, err := url.Parse(prefix)
	if err != nil {
		return "", fmt.Errorf("sqldb: PostgreSQL URL: %w", redactErr(err, prefix))
	}
	db := strings.TrimPrefix(u.Path, "/") + name
	if !dbNamePrefix.MatchString(db) {
		return "", fmt.Errorf("sqldb: database name %q: use lower-case letters, digits and underscores", db)
	}
	if len(db) > 63 { // PostgreSQL's NAMEDATALEN - 1
		return "", fmt.Errorf("sqldb: database name %q is longer than PostgreSQL's 63 bytes", db)
	}
	u.Path, u.RawPath = "/"+db, ""
	return u.String(), nil
}

// RedactDSN is dsn without its password, fit for logs and state files.
// A SQLite path is returned as is.
func RedactDSN(dsn string) string {
	if !IsPostgres(dsn) {
		return dsn
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "postgres://(unparsable)"
	}
	q := u.Query()
	if q.Has("password") {
		q.Del("password")
		u.RawQuery = q.Encode()
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.User(u.User.Username())
	}
	return u.String()
}

// redactErr keeps a URL parse error from echoing the password it failed on.
func redactErr(err error, dsn string) error {
	u, perr := url.Parse(dsn)
	if perr != nil || u.User == nil {
		return errors.New("malformed URL")
	}
	if p, ok := u.User.Password(); ok && strings.Contains(err.Error(), p) {
		return errors.New("malformed URL")
	}
	return err
}

// PostgreSQL error codes this file tells apart.
const (
	pgInvalidCatalogName    = "3D000" // the database does not exist
	pgDuplicateDatabase     = "42P04"
	pgInsufficientPrivilege = "42501"
)

// EnsureDatabase creates the PostgreSQL database dsn names unless it exists,
// and reports whether it created it. It first connects to that database
// itself, so a role that may not create databases works with databases an
// administrator made for it; only when the database is missing does it
// connect to the server's maintenance database, "postgres", with the same
// credentials, to create it. Two callers racing to create one database
// both succeed.
func EnsureDatabase(ctx context.Context, dsn string) (bool, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return false, fmt.Errorf("sqldb: %s: %w", RedactDSN(dsn), err)
	}
	name := cfg.Database
	if err := pingPostgres(ctx, dsn); err == nil {
		return false, nil
	} else if !hasCode(err, pgInvalidCatalogName) {
		return false, fmt.Errorf("sqldb: %s: %w", RedactDSN(dsn), err)
	}

	u, err := url.Parse(dsn)
	if err != nil {
		return false, fmt.Errorf("sqldb: PostgreSQL URL: %w", redactErr(err, dsn))
	}
	u.Path, u.RawPath = "/postgres", ""
	admin, err := sql.Open("pgx", u.String())
	if err != nil {
		return false, fmt.Errorf("sqldb: %w", err)
	}
	defer admin.Close()
	_, err = admin.ExecContext(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	switch {
	case err == nil:
		return true, nil
	case hasCode(err, pgDuplicateDatabase):
		return false, nil // created by someone else meanwhile
	case hasCode(err, pgInsufficientPrivilege):
		return false, fmt.Errorf("sqldb: database %q does not exist and role %q may not create databases: "+
			"create it (CREATE DATABASE %s OWNER %s;) or allow the role to (ALTER ROLE %s CREATEDB;)",
			name, cfg.User, name, cfg.User, cfg.User)
	}
	return false, fmt.Errorf("sqldb: creating database %q via %s: %w", name, RedactDSN(u.String()), err)
}

func pingPostgres(ctx context.Context, dsn string) error {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.PingContext(ctx)
}

func hasCode(err error, code string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == code
}
