package postgres_test

import (
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/store"
	"github.com/keybrake/keybrake/store/postgres"
	"github.com/keybrake/keybrake/store/postgres/pgtest"
)

// The instance-name protocol with its periods shortened: beat 50ms, lease
// 350ms, watch 500ms (production: 1s, 7s, 10s).
var fast = postgres.WithTimings(postgres.Options{}, 50*time.Millisecond, 350*time.Millisecond, 500*time.Millisecond)

func openFast(t *testing.T, url string) store.Store {
	t.Helper()
	s, err := postgres.Open(t.Context(), url, fast)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// eventually polls cond for up to 10s (a bound on the wait, not a timing
// assertion).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func holder(t *testing.T, db *sql.DB, schema, name string) (h string, beat int64) {
	t.Helper()
	if err := db.QueryRow(`SELECT holder, beat FROM `+schema+`.instances WHERE name = $1`, name).Scan(&h, &beat); err != nil {
		t.Fatal(err)
	}
	return h, beat
}

// A name whose last holder did not release it (a kill -9) is taken over
// only after its beat stood still for the whole watch; a name whose holder
// still beats (alive, without its lock) is refused.
func TestInstanceTakeOverOnlyADeadHolder(t *testing.T) {
	base := kbtest.PostgresURL(t)
	url, schema := pgtest.Schema(t, base)
	db := pgtest.Admin(t, base)
	s := openFast(t, url)
	if _, err := db.Exec(`INSERT INTO ` + schema + `.instances (name, holder, beat) VALUES ('dead', 'old-token', 7), ('alive', 'old-token', 7)`); err != nil {
		t.Fatal(err)
	}

	release, err := s.ClaimInstance(t.Context(), "dead")
	if err != nil {
		t.Fatalf("claim a name whose holder stopped beating: %v", err)
	}
	if h, _ := holder(t, db, schema, "dead"); h == "old-token" || h == "" {
		t.Errorf("holder after the take-over: %q", h)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if h, _ := holder(t, db, schema, "dead"); h != "" {
		t.Errorf("holder after release: %q, want released", h)
	}

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // the live holder, beating without the lock
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				db.Exec(`UPDATE ` + schema + `.instances SET beat = beat + 1 WHERE name = 'alive' AND holder = 'old-token'`) //nolint:errcheck
			}
		}
	}()
	_, err = s.ClaimInstance(t.Context(), "alive")
	close(stop)
	<-done
	if err == nil || !strings.Contains(err.Error(), "belongs to a live keybrake serve") {
		t.Fatalf("claim a name whose holder still beats: %v", err)
	}
	if h, _ := holder(t, db, schema, "alive"); h != "old-token" {
		t.Errorf("the refused claim changed the holder to %q", h)
	}
}

// A replica whose session is ended while another session takes its lock
// decides nothing (and fails Ping) until it holds the lock again; then it
// decides again, without a restart.
func TestInstanceFailsClosedWithoutItsLock(t *testing.T) {
	base := kbtest.PostgresURL(t)
	url, schema := pgtest.Schema(t, base)
	db := pgtest.Admin(t, base)
	s := openFast(t, url)
	release, err := s.ClaimInstance(t.Context(), "r1")
	if err != nil {
		t.Fatal(err)
	}
	defer release() //nolint:errcheck
	k := newKey(t, s, time.Hour)
	if _, err := s.Decide(t.Context(), charge(k)); err != nil {
		t.Fatal(err)
	}

	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pgtest.StealInstanceLock(t, db, conn, schema, "r1")
	eventually(t, "decisions to be refused", func() bool {
		_, err := s.Decide(t.Context(), charge(k))
		return errors.Is(err, keybrake.ErrStoreUnavailable)
	})
	if err := s.Ping(t.Context()); !errors.Is(err, keybrake.ErrStoreUnavailable) || !strings.Contains(err.Error(), `"r1"`) {
		t.Errorf("Ping without the lock: %v", err)
	}
	v, err := s.GetKey(t.Context(), k.ID)
	if err != nil {
		t.Fatal(err)
	}
	refusedAt := v.Usage.Calls

	if _, err := conn.ExecContext(t.Context(), `SELECT pg_advisory_unlock_all()`); err != nil {
		t.Fatal(err)
	}
	eventually(t, "decisions once the lock is free", func() bool {
		_, err := s.Decide(t.Context(), charge(k))
		return err == nil
	})
	if err := s.Ping(t.Context()); err != nil {
		t.Errorf("Ping with the lock back: %v", err)
	}
	if v, _ := s.GetKey(t.Context(), k.ID); v.Usage.Calls != refusedAt+1 {
		t.Errorf("calls went from %d to %d: a refused decision reserved something", refusedAt, v.Usage.Calls)
	}
}

// A replica that finds its row taken over (it could not beat for the whole
// lease, and another process took the name) decides nothing more, even
// once the lock is free again.
func TestInstanceFencedAfterTakeOver(t *testing.T) {
	base := kbtest.PostgresURL(t)
	url, schema := pgtest.Schema(t, base)
	db := pgtest.Admin(t, base)
	s := openFast(t, url)
	release, err := s.ClaimInstance(t.Context(), "r1")
	if err != nil {
		t.Fatal(err)
	}
	k := newKey(t, s, time.Hour)
	if _, err := db.Exec(`UPDATE ` + schema + `.instances SET holder = 'newcomer' WHERE name = 'r1'`); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the fenced replica to refuse decisions", func() bool {
		_, err := s.Decide(t.Context(), charge(k))
		return errors.Is(err, keybrake.ErrStoreUnavailable)
	})
	time.Sleep(200 * time.Millisecond) // several beats: it must not take the name back
	if _, err := s.Decide(t.Context(), charge(k)); err == nil || !strings.Contains(err.Error(), "taken over") {
		t.Errorf("decision after the take-over: %v", err)
	}
	if err := release(); err != nil {
		t.Errorf("release of a name taken over: %v", err)
	}
	if h, _ := holder(t, db, schema, "r1"); h != "newcomer" {
		t.Errorf("releasing a name taken over changed its holder to %q", h)
	}
}

// Releasing after the database restarted (the session, and with it the
// lock, are gone) is not an error: SIGTERM must still exit 0. The beat is
// slowed so that the replica does not open a new session first.
func TestInstanceReleaseAfterSessionLoss(t *testing.T) {
	base := kbtest.PostgresURL(t)
	url, schema := pgtest.Schema(t, base)
	db := pgtest.Admin(t, base)
	s, err := postgres.Open(t.Context(), url, postgres.WithTimings(postgres.Options{}, time.Hour, 2*time.Hour, 3*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	release, err := s.ClaimInstance(t.Context(), "r1")
	if err != nil {
		t.Fatal(err)
	}
	if n := pgtest.TerminateBackends(t, db, pgtest.InstanceLockHolders, schema, "r1"); n != 1 {
		t.Fatalf("terminated %d sessions, want r1's one", n)
	}
	eventually(t, "the lock to go with its session", func() bool {
		var n int
		db.QueryRow(`SELECT count(*) FROM (`+pgtest.InstanceLockHolders+`) AS h`, schema, "r1").Scan(&n) //nolint:errcheck
		return n == 0
	})
	if err := release(); err != nil {
		t.Fatalf("release after the session ended: %v", err)
	}
	if h, _ := holder(t, db, schema, "r1"); h != "" {
		t.Errorf("holder after release: %q, want released", h)
	}
}
