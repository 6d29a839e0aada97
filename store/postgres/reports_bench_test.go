package postgres_test

import (
	"testing"
	"time"

	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/store/postgres"
	"github.com/keybrake/keybrake/store/postgres/pgtest"
	"github.com/keybrake/keybrake/store/storetest"
)

// BenchmarkReports measures the four spend reports on 10 million audit
// rows (KEYBRAKE_BENCH_ROWS to change it), seeded with generate_series, one
// INSERT per million rows. Only with -bench:
//
//	KEYBRAKE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
//	  go test -run '^$' -bench Reports -benchtime 3x -timeout 60m ./store/postgres/
func BenchmarkReports(b *testing.B) {
	url, _ := pgtest.Schema(b, kbtest.PostgresURL(b))
	// Seeding a million rows takes longer than the default statement timeout.
	url = pgtest.WithParams(b, url, "statement_timeout", "1800000")
	s, err := postgres.Open(b.Context(), url, postgres.Options{StatementTimeout: 30 * time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	n := storetest.BenchRows(b)
	now := time.Now().UTC()
	start := now.AddDate(0, 0, -storetest.BenchDays).UnixMicro()
	step := (now.UnixMicro() - start) / int64(n)
	runs := n / storetest.BenchCallsPerRun
	t0 := time.Now()
	db := s.DB()
	if _, err := db.ExecContext(b.Context(), `INSERT INTO keys (id, secret_hash, vendor, daily_cap, rules, agent_run_label, agent_name,
		created_at, expires_at, alert_thresholds)
		SELECT 'key-' || i, 'hash-' || i, 'stripe', 100000000, '[]', 'run-' || i, 'agent-' || (i % $2),
			$3::bigint + i * $4::bigint * $5, $3::bigint + i * $4::bigint * $5 + 3600000000, '[]'
		FROM generate_series(0, $1::bigint - 1) AS i`, runs, storetest.BenchAgents, start, step, storetest.BenchCallsPerRun); err != nil {
		b.Fatal(err)
	}
	const chunk = 1_000_000
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		if _, err := db.ExecContext(b.Context(), `INSERT INTO calls (at, key_id, agent_run_label, vendor, method, path, rule, outcome, code,
			status, estimated, actual, day)
			SELECT $3::bigint + i * $4::bigint, 'key-' || (i / $5), 'run-' || (i / $5),
				CASE WHEN i % 10 = 0 THEN 'twilio' ELSE 'stripe' END, 'POST', '/v1/payment_intents', 'POST /v1/payment_intents',
				CASE WHEN i % 20 = 1 THEN 'denied_cap_exhausted' ELSE 'forwarded' END,
				CASE WHEN i % 20 = 1 THEN 'cap_exhausted' ELSE '' END,
				CASE WHEN i % 20 = 1 THEN 429 ELSE 200 END,
				CASE WHEN i % 20 = 1 THEN 0 ELSE 1000000 END,
				CASE WHEN i % 20 = 1 THEN 0 ELSE 500000 + (i % 7) * 100000 END,
				to_char(to_timestamp(($3::bigint + i * $4::bigint) / 1000000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD')
			FROM generate_series($1::bigint, $2::bigint - 1) AS i`, lo, hi, start, step, storetest.BenchCallsPerRun); err != nil {
			b.Fatal(err)
		}
	}
	// VACUUM sets the visibility map, as autovacuum would on a live
	// database, so covering indexes are read without the table.
	if _, err := db.ExecContext(b.Context(), `VACUUM ANALYZE`); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d audit rows (%d runs) in %s", n, runs, time.Since(t0).Round(time.Second))
	storetest.BenchReports(b, s, now)
}
