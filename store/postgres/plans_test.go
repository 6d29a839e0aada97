package postgres_test

import (
	"database/sql"
	"testing"
	"time"

	"github.com/keybrake/keybrake"

	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/store/postgres"
	"github.com/keybrake/keybrake/store/postgres/pgtest"
)

// TestBatchesReachCallsByIndexOnAGrownTable: the batch's statements take
// arrays (= ANY($1)) and stay prepared. Left to itself, PostgreSQL plans
// such a statement generically after five runs, for the table as it was
// then. On a new database that plan was a sequential scan of calls, kept
// as the table grew: every batch read the whole table under the key's
// lock. The store plans each run for its own arguments, so a batch after
// the table grew reads calls by primary key.
//
// The store's pool has one connection, so every batch runs on the backend
// whose table statistics the test flushes and reads.
func TestBatchesReachCallsByIndexOnAGrownTable(t *testing.T) {
	base := kbtest.PostgresURL(t)
	url, schema := pgtest.Schema(t, base)
	s, err := postgres.Open(t.Context(), pgtest.WithParams(t, url, "pool_max_conns", "1"), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := newKey(t, s, time.Hour)
	call := func() {
		t.Helper()
		d, err := s.Decide(t.Context(), charge(k))
		if err != nil || !d.Allowed {
			t.Fatalf("decide: %+v %v", d, err)
		}
		if _, err := s.Settle(t.Context(), keybrake.Settlement{CallID: d.CallID, Outcome: keybrake.OutcomeForwarded, Status: 200}); err != nil {
			t.Fatal(err)
		}
	}
	for range 12 { // past the five runs after which a generic plan may stick
		call()
	}
	admin := pgtest.Admin(t, base)
	if _, err := admin.ExecContext(t.Context(), `INSERT INTO `+schema+`.calls (at, key_id, vendor, method, path, rule, outcome, code,
		status, estimated, actual, day, instance)
		SELECT 0, NULL, 'stripe', 'POST', '/v1/x', '', 'denied', 'key_unknown', 401, 0, 0, '2026-01-01', ''
		FROM generate_series(1, 50000)`); err != nil {
		t.Fatal(err)
	}
	seqScans := func() int64 {
		t.Helper()
		// The store's one backend reports its counters now, not within
		// the second PostgreSQL otherwise allows itself.
		if _, err := s.DB().ExecContext(t.Context(), `SELECT pg_stat_force_next_flush()`); err != nil {
			t.Fatal(err)
		}
		var n sql.NullInt64
		if err := admin.QueryRowContext(t.Context(), `SELECT seq_scan FROM pg_stat_user_tables
			WHERE schemaname = $1 AND relname = 'calls'`, schema).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n.Int64
	}
	before := seqScans()
	for range 20 {
		call()
	}
	if n := seqScans() - before; n != 0 {
		t.Fatalf("20 calls on a 50,000-row calls table scanned it whole %d times; each batch should reach its rows by index", n)
	}
}

// TestDailyCapFollowsTheDatabasesDay: a batch reads the database's clock
// and the key's usage on the UTC day that clock names in one statement; the
// daily cap is that day's. A key spent to its daily cap is refused today,
// allowed once the database's clock says tomorrow, and refused again when
// it says today.
func TestDailyCapFollowsTheDatabasesDay(t *testing.T) {
	base := kbtest.PostgresURL(t)
	url, schema := pgtest.Schema(t, base)
	admin := pgtest.Admin(t, base)
	pgtest.ShiftClock(t, admin, schema, 0)
	s, err := postgres.Open(t.Context(), pgtest.WithParams(t, url, "pool_max_conns", "2"), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rules, err := keybrake.ParseRules([]string{"POST /v1/payment_intents"})
	if err != nil {
		t.Fatal(err)
	}
	k, err := s.CreateKey(t.Context(), &keybrake.Key{ID: keybrake.NewID("key_"), Vendor: "stripe", DailyCap: 2 * keybrake.MicrosPerUSD,
		Rules: rules}, keybrake.HashSecret(keybrake.NewVaultKey()), 72*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	spend := func(what string, wantAllowed bool, wantSpentToday keybrake.Micros) {
		t.Helper()
		d, err := s.Decide(t.Context(), charge(k))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if d.Allowed != wantAllowed {
			t.Fatalf("%s: allowed=%v (%v), want %v", what, d.Allowed, d.Err, wantAllowed)
		}
		if !d.Allowed {
			return
		}
		u, err := s.Settle(t.Context(), keybrake.Settlement{CallID: d.CallID, Outcome: keybrake.OutcomeForwarded, Status: 200, Actual: keybrake.MicrosPerUSD})
		if err != nil {
			t.Fatal(err)
		}
		if u.SpentToday != wantSpentToday {
			t.Fatalf("%s: spent today $%s, want $%s", what, u.SpentToday, wantSpentToday)
		}
	}
	spend("first dollar today", true, keybrake.MicrosPerUSD)
	spend("second dollar today", true, 2*keybrake.MicrosPerUSD)
	spend("a third today", false, 0)
	pgtest.ShiftClock(t, admin, schema, 24*time.Hour)
	spend("tomorrow, by the database's clock", true, keybrake.MicrosPerUSD)
	pgtest.ShiftClock(t, admin, schema, 0)
	spend("today again", false, 0)
}
