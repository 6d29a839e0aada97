package server

import (
	"context"

	"github.com/keybrake/keybrake/store"
)

// isPostgres reports whether a --db value names a PostgreSQL database.
func isPostgres(dsn string) bool { return store.IsPostgres(dsn) }

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
	return store.Open(ctx, cfg.DB, store.Options{Logger: cfg.Logger, Clock: cfg.Clock})
}
