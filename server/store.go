package server

import (
	"context"
	"strings"

	"github.com/keybrake/keybrake/store"
	"github.com/keybrake/keybrake/store/postgres"
	"github.com/keybrake/keybrake/store/sqlite"
)

// isPostgres reports whether a --db value names a PostgreSQL database.
func isPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// openStore opens the store a --db value names: a postgres:// URL for the
// shared PostgreSQL store, anything else as a SQLite file path.
//
// On PostgreSQL, New does not recover pending calls at start: other
// replicas may have calls legitimately in flight, and a restarted replica
// gets a new instance id, so it cannot tell its predecessor's calls apart.
// The background sweep counts a call as unknown spend once it is older than
// UpstreamTimeout + the proxy's settle retry (2m) + 1m, which no live
// replica's call can be (run every replica with the same
// --upstream-timeout); a settlement that arrives after the sweep still
// corrects the spend.
func openStore(ctx context.Context, cfg Config) (store.Store, error) {
	if isPostgres(cfg.DB) {
		return postgres.Open(ctx, cfg.DB, postgres.Options{Logger: cfg.Logger})
	}
	return sqlite.Open(ctx, cfg.DB, sqlite.Options{Clock: cfg.Clock})
}
