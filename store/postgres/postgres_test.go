package postgres_test

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keybrake/keybrake"

	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/store"
	"github.com/keybrake/keybrake/store/postgres"
	"github.com/keybrake/keybrake/store/postgres/pgtest"
	"github.com/keybrake/keybrake/store/sqlstore"
	"github.com/keybrake/keybrake/store/storetest"
)

// openSchema opens the store on a fresh schema of the test database, and
// returns the schema's URL too, for the test's own sessions.
func openSchema(t *testing.T, params ...string) (*sqlstore.Store, string) {
	t.Helper()
	url, _ := pgtest.Schema(t, kbtest.PostgresURL(t))
	s, err := postgres.Open(t.Context(), pgtest.WithParams(t, url, append([]string{"pool_max_conns", "8"}, params...)...), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, url
}

// TestConformance runs the one store suite against PostgreSQL when
// KEYBRAKE_TEST_POSTGRES_URL is set (always in CI).
func TestConformance(t *testing.T) {
	kbtest.PostgresURL(t)
	storetest.Run(t, func(t *testing.T) store.Store { s, _ := openSchema(t); return s })
}

func newKey(t *testing.T, s store.Store, ttl time.Duration) *keybrake.Key {
	t.Helper()
	return newCappedKey(t, s, ttl, 100*keybrake.MicrosPerUSD)
}

// newCappedKey issues a Stripe key allowed POST /v1/payment_intents, with
// a daily cap.
func newCappedKey(t *testing.T, s store.Store, ttl time.Duration, daily keybrake.Micros) *keybrake.Key {
	t.Helper()
	rules, err := keybrake.ParseRules([]string{"POST /v1/payment_intents"})
	if err != nil {
		t.Fatal(err)
	}
	k, err := s.CreateKey(t.Context(), &keybrake.Key{ID: keybrake.NewID("key_"), Vendor: "stripe", DailyCap: daily,
		Rules: rules}, keybrake.HashSecret(keybrake.NewVaultKey()), ttl)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func charge(k *keybrake.Key) keybrake.Attempt {
	return keybrake.Attempt{KeyID: k.ID, Vendor: "stripe", Method: "POST", Path: "/v1/payment_intents",
		Rule: "POST /v1/payment_intents", Estimate: keybrake.MicrosPerUSD, Instance: "inst_pgtest"}
}

func wantUnavailable(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, keybrake.ErrStoreUnavailable) {
		t.Fatalf("%s: %v, want ErrStoreUnavailable", what, err)
	}
}

// TestReplicasMigrateAtOnce: several replicas starting together on an empty
// schema all come up, and the migration is applied once.
func TestReplicasMigrateAtOnce(t *testing.T) {
	base := kbtest.PostgresURL(t)
	url, schema := pgtest.Schema(t, base)
	url = pgtest.WithParams(t, url, "pool_max_conns", "2")
	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := postgres.Open(t.Context(), url, postgres.Options{})
			if err == nil {
				err = s.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("replica %d: %v", i, err)
		}
	}
	var applied int
	db := pgtest.Admin(t, base)
	if err := db.QueryRow(`SELECT count(*) FROM ` + schema + `.goose_db_version WHERE version_id = 1`).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if applied != 1 {
		t.Errorf("migration 1 recorded %d times, want 1", applied)
	}
}

// TestMissingSchemaIsExplained: a search_path naming no existing schema is
// refused with a message saying so, not with a confusing CREATE error.
func TestMissingSchemaIsExplained(t *testing.T) {
	url := pgtest.WithParams(t, kbtest.PostgresURL(t), "search_path", "kb_does_not_exist")
	s, err := postgres.Open(t.Context(), url, postgres.Options{})
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded without a schema")
	}
	if !strings.Contains(err.Error(), "search_path") {
		t.Errorf("error does not explain the search_path: %v", err)
	}
}

// TestConnectionCutFailsClosed: with every connection to the database cut,
// each operation fails as store unavailable (the proxy answers 503 and
// forwards nothing); when the database is reachable again the same store
// works, without reopening it.
func TestConnectionCutFailsClosed(t *testing.T) {
	url, _ := pgtest.Schema(t, kbtest.PostgresURL(t))
	fwd, url := pgtest.ForwardURL(t, url)
	s, err := postgres.Open(t.Context(), pgtest.WithParams(t, url, "pool_max_conns", "4"), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := newKey(t, s, time.Hour)
	if d, err := s.Decide(t.Context(), charge(k)); err != nil || !d.Allowed {
		t.Fatalf("before the cut: %+v %v", d, err)
	}

	fwd.Cut()
	for i := 0; i < 3; i++ { // pooled connections, then fresh dials, all fail
		_, err := s.Decide(t.Context(), charge(k))
		wantUnavailable(t, "Decide during the outage", err)
	}
	_, err = s.GetKey(t.Context(), k.ID)
	wantUnavailable(t, "GetKey during the outage", err)
	_, err = s.KeyByHash(t.Context(), "0000")
	wantUnavailable(t, "KeyByHash during the outage", err)
	wantUnavailable(t, "Ping during the outage", s.Ping(t.Context()))

	fwd.Restore()
	d, err := s.Decide(t.Context(), charge(k))
	if err != nil || !d.Allowed {
		t.Fatalf("after the database came back: %+v %v", d, err)
	}
	if v, err := s.GetKey(t.Context(), k.ID); err != nil || v.Usage.Reserved != 2*keybrake.MicrosPerUSD {
		t.Fatalf("after the outage: %+v %v", v, err)
	}
}

// TestHungDatabaseFailsClosed: a database host that stops answering
// (packets held, nothing closed) fails each statement after the client-side
// backstop instead of holding the request forever.
func TestHungDatabaseFailsClosed(t *testing.T) {
	url, _ := pgtest.Schema(t, kbtest.PostgresURL(t))
	fwd, url := pgtest.ForwardURL(t, url)
	s, err := postgres.Open(t.Context(), pgtest.WithParams(t, url, "pool_max_conns", "2"),
		// The backstop must outlast a healthy commit on a loaded CI machine
		// (300ms did not), yet end a hang well before the test's own limits.
		postgres.Options{QueryTimeout: 2 * time.Second, ConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := newKey(t, s, time.Hour)

	for _, idle := range []bool{false, true} {
		if idle {
			// A pooled connection idle for over a second is pinged before
			// reuse; that ping must be bounded too. (Setup, not a timing
			// assertion.)
			time.Sleep(1100 * time.Millisecond)
		}
		fwd.Pause()
		_, err = s.Decide(t.Context(), charge(k))
		wantUnavailable(t, fmt.Sprintf("Decide while the database hangs (idle connection: %v)", idle), err)
		fwd.Resume()
		if d, err := s.Decide(t.Context(), charge(k)); err != nil || !d.Allowed {
			t.Fatalf("after the hang: %+v %v", d, err)
		}
	}
}

// TestLockTimeoutFailsClosed: a decision that cannot get its key's row lock
// (another session holds it) gives up after lock_timeout as store
// unavailable, rather than queueing requests behind it indefinitely.
func TestLockTimeoutFailsClosed(t *testing.T) {
	base := kbtest.PostgresURL(t)
	url, schema := pgtest.Schema(t, base)
	s, err := postgres.Open(t.Context(), pgtest.WithParams(t, url, "pool_max_conns", "2", "lock_timeout", "200"), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := newKey(t, s, time.Hour)

	holder, err := pgtest.Admin(t, base).BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(`SELECT id FROM `+schema+`.keys WHERE id = $1 FOR UPDATE`, k.ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.Decide(t.Context(), charge(k))
	wantUnavailable(t, "Decide behind a held row lock", err)
	if err := holder.Rollback(); err != nil {
		t.Fatal(err)
	}
	if d, err := s.Decide(t.Context(), charge(k)); err != nil || !d.Allowed {
		t.Fatalf("after the lock was released: %+v %v", d, err)
	}
}

// TestDatabaseClockDecides: expiry and created_at come from PostgreSQL's
// clock, not the process's. The schema's clock is shifted hours away from
// the host's; the store follows the database.
func TestDatabaseClockDecides(t *testing.T) {
	base := kbtest.PostgresURL(t)
	url, schema := pgtest.Schema(t, base)
	admin := pgtest.Admin(t, base)
	pgtest.ShiftClock(t, admin, schema, 3*time.Hour)
	s, err := postgres.Open(t.Context(), pgtest.WithParams(t, url, "pool_max_conns", "2"), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	k := newKey(t, s, time.Hour)
	if lead := time.Until(k.CreatedAt); lead < 2*time.Hour {
		t.Fatalf("created_at %v is not the database's (shifted) clock; it leads this process by %v", k.CreatedAt, lead)
	}
	if d, err := s.Decide(t.Context(), charge(k)); err != nil || !d.Allowed {
		t.Fatalf("live by the database's clock: %+v %v", d, err)
	}
	pgtest.ShiftClock(t, admin, schema, 5*time.Hour) // the database says: expired an hour ago
	d, err := s.Decide(t.Context(), charge(k))
	if err != nil || d.Allowed || d.Err.Code != keybrake.CodeKeyExpired {
		t.Fatalf("expired by the database's clock, live by this process's: %+v %v", d, err)
	}
	if v, err := s.GetKey(t.Context(), k.ID); err != nil || v.Status != keybrake.StatusExpired {
		t.Fatalf("GetKey: %+v %v", v, err)
	}
}

func TestUnavailableClassification(t *testing.T) {
	for code, want := range map[string]bool{
		"08006": true, "08001": true, "57P01": true, "57P03": true, "57014": true, "25006": true,
		"53100": true, "53300": true, "55P03": true, "40P01": true, "40001": true, "25P03": true, "58030": true,
		"23505": false, "23514": false, "23503": false, "42P01": false, "42703": false, "22003": false,
	} {
		if got := postgres.Unavailable(&pgconn.PgError{Code: code}); got != want {
			t.Errorf("SQLSTATE %s: unavailable=%v, want %v", code, got, want)
		}
	}
	for err, want := range map[error]bool{
		io.EOF:                   true,
		io.ErrUnexpectedEOF:      true,
		driver.ErrBadConn:        true,
		context.DeadlineExceeded: true,
		&net.OpError{Op: "dial", Err: errors.New("connection refused")}: true,
		errors.New(`sql: Scan error on column index 0`):                 false,
	} {
		if got := postgres.Unavailable(err); got != want {
			t.Errorf("%v: unavailable=%v, want %v", err, got, want)
		}
	}
}

// TestReadOnlyDatabaseIsUnhealthy: a database that answers reads but refuses
// writes (a standby, default_transaction_read_only) fails the health check
// and every decision, instead of looking healthy while refusing all calls.
func TestReadOnlyDatabaseIsUnhealthy(t *testing.T) {
	url, _ := pgtest.Schema(t, kbtest.PostgresURL(t))
	rw, err := postgres.Open(t.Context(), url, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	k := newKey(t, rw, time.Hour)
	if err := rw.Ping(t.Context()); err != nil {
		t.Fatalf("writable database: %v", err)
	}
	ro, err := postgres.Open(t.Context(), pgtest.WithParams(t, url, "default_transaction_read_only", "on"), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	wantUnavailable(t, "Ping on a read-only database", ro.Ping(t.Context()))
	_, err = ro.Decide(t.Context(), charge(k))
	wantUnavailable(t, "Decide on a read-only database", err)
}

// TestClaimInstance: a replica name is held by one live store at a time,
// and freed by release.
func TestClaimInstance(t *testing.T) {
	url, _ := pgtest.Schema(t, kbtest.PostgresURL(t))
	open := func() store.Store {
		s, err := postgres.Open(t.Context(), url, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()
	release, err := a.ClaimInstance(t.Context(), "replica-a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ClaimInstance(t.Context(), "replica-a"); err == nil || !strings.Contains(err.Error(), "held by another live") {
		t.Fatalf("a second claim of a live name: %v", err)
	}
	other, err := b.ClaimInstance(t.Context(), "replica-b")
	if err != nil {
		t.Fatalf("another name: %v", err)
	}
	defer other() //nolint:errcheck
	if err := release(); err != nil {
		t.Fatal(err)
	}
	again, err := b.ClaimInstance(t.Context(), "replica-a")
	if err != nil {
		t.Fatalf("claim after release: %v", err)
	}
	again() //nolint:errcheck
	// A process that dies loses its session, and with it the name: the
	// real-process test e2e/TestReplicaRestartRecoversItsCalls kills one.
}
