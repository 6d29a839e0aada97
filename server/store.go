package server

import (
	"context"
	"errors"
	"strings"

	"github.com/keybrake/keybrake/store"
	"github.com/keybrake/keybrake/store/sqlite"
)

// isPostgres reports whether a --db value names a PostgreSQL database.
func isPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// openStore opens the store a --db value names: a postgres:// URL for the
// shared PostgreSQL store, anything else as a SQLite file path.
func openStore(ctx context.Context, cfg Config) (store.Store, error) {
	if isPostgres(cfg.DB) {
		return nil, errors.New("PostgreSQL store: not built into this version yet")
	}
	return sqlite.Open(ctx, cfg.DB, sqlite.Options{Clock: cfg.Clock})
}
