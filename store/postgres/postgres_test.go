package postgres_test

import (
	"testing"

	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/store"
	"github.com/keybrake/keybrake/store/postgres"
	"github.com/keybrake/keybrake/store/postgres/pgtest"
	"github.com/keybrake/keybrake/store/storetest"
)

// openSchema opens the store on a fresh schema of the test database.
func openSchema(t *testing.T, params ...string) store.Store {
	t.Helper()
	url, _ := pgtest.Schema(t, kbtest.PostgresURL(t))
	url = pgtest.WithParams(t, url, append([]string{"pool_max_conns", "8"}, params...)...)
	s, err := postgres.Open(t.Context(), url, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestConformance runs the one store suite against PostgreSQL when
// KEYBRAKE_TEST_POSTGRES_URL is set (always in CI).
func TestConformance(t *testing.T) {
	kbtest.PostgresURL(t)
	storetest.Run(t, func(t *testing.T) store.Store { return openSchema(t) })
}
