package store

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/keybrake/keybrake/store/postgres"
	"github.com/keybrake/keybrake/store/sqlite"
)

// Options tune Open. The zero value is the production setting.
type Options struct {
	// Logger receives the PostgreSQL store's own log lines (instance
	// lease, lost sessions); nil discards them.
	Logger *slog.Logger
	// Clock replaces the SQLite store's clock (tests of expiry and day
	// rollover). PostgreSQL always uses the database's clock.
	Clock func() time.Time
}

// IsPostgres reports whether a --db value names a PostgreSQL database
// rather than a SQLite file.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// Open opens the store dsn names, creating and migrating it if needed: a
// postgres:// (or postgresql://) URL for PostgreSQL shared by replicas,
// anything else as the path of a SQLite file.
func Open(ctx context.Context, dsn string, opt Options) (Store, error) {
	if IsPostgres(dsn) {
		return postgres.Open(ctx, dsn, postgres.Options{Logger: opt.Logger})
	}
	return sqlite.Open(ctx, dsn, sqlite.Options{Clock: opt.Clock})
}
