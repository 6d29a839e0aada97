package e2e

import (
	"context"
	"database/sql"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/store/postgres/pgtest"
)

func lockHolders(t testing.TB, db *sql.DB, schema, name string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM (`+pgtest.InstanceLockHolders+`) AS h`, schema, name).Scan(&n); err != nil {
		t.Fatalf("pg_locks: %v", err)
	}
	return n
}

// TestDrillPostgresRestartKeepsInstance: PostgreSQL (a private cluster)
// restarts under a live replica with --instance-id r1 and calls in flight.
// The session advisory lock holding the name dies with the server. A
// second `serve --instance-id r1` started right after must be refused and
// must not recover r1's calls as unknown; r1 holds its name again and
// serves without a restart, and every call settles to what the vendor did.
func TestDrillPostgresRestartKeepsInstance(t *testing.T) {
	row := &drillRow{}
	reportDrill(t, row)
	cluster := pgtest.StartCluster(t, pgtest.ClusterOptions{})
	url, schema := pgtest.Schema(t, cluster.URL())
	stripe, upstream := slowStripe(t, 30*time.Millisecond)
	env := serveEnv(url, upstream, "KEYBRAKE_INSTANCE_ID", "r1")
	r1 := kbtest.Serve(t, env)
	admin := client.New(r1.AdminURL(), kbtest.AdminToken)
	k := issueCharges(t, r1, "100000")

	l := startLoad(t, []string{r1.URL()}, k.VaultKey, 8, 10*time.Millisecond)
	waitFor(t, time.Minute, "charges before the restart", func() bool { return l.all.get("200") >= 20 })
	cluster.Restart(t, 3*time.Second)

	// A second process with r1's name, right after the restart.
	dup, err := kbtest.TryServe(t, env)
	if err == nil {
		dup.Kill()
		t.Errorf("a second serve --instance-id r1 started while r1 is alive\n%s", dup.Logs())
		if strings.Contains(dup.Logs(), "in flight at the last shutdown") {
			t.Errorf("and it recovered r1's live calls as unknown")
		}
	} else if !strings.Contains(err.Error(), `"r1"`) {
		t.Errorf("the second r1 was refused without naming the instance id: %v", err)
	} else {
		t.Logf("the second r1 was refused: %s", logLines(err.Error(), "error:"))
	}

	servedAfter := l.all.get("200")
	waitFor(t, time.Minute, "r1 to serve again after the restart", func() bool { return l.all.get("200") >= servedAfter+20 })
	l.halt()
	t.Logf("r1 logged:\n%s", logLines(r1.Logs(), `"msg":"instance id`))
	db := pgtest.Admin(t, cluster.URL())
	if n := lockHolders(t, db, schema, "r1"); n != 1 {
		t.Errorf("%d sessions hold r1's instance lock after the restart, want 1 (r1's own)", n)
	}

	unknown := allCalls(t, admin, client.ListCallsParams{KeyID: k.ID, Outcome: "unknown"})
	if len(unknown) != 0 {
		t.Errorf("%d of r1's calls were marked unknown while r1 was alive", len(unknown))
	}
	for outcome := range l.all.snapshot() {
		if outcome != "200" && outcome != "503 store_unavailable" {
			t.Errorf("answer %q during the drill; want only 200 or 503 store_unavailable (%s)", outcome, &l.all)
		}
	}
	spent, reserved := spentOf(t, admin, k.ID)
	row.calls, row.outcomes, row.charged, row.recorded = l.all.total(), l.all.String(), stripeCharged(stripe), spent
	if spent != row.charged || reserved != 0 {
		t.Errorf("recorded $%s (reserved $%s), vendor charged $%s: every call should have settled exactly", spent, reserved, row.charged)
	}
	if n := int64(stripe.Requests()); n != l.all.get("200") {
		t.Errorf("the vendor received %d requests for %d allowed calls", n, l.all.get("200"))
	}
}

// TestDrillLockBackendKilled: the session holding r1's name is ended with
// pg_terminate_backend, and before r1 can take the lock again another
// session (the test, as a second claimant would) holds it. While it cannot
// hold its name r1 decides nothing: 503 store_unavailable, /healthz 503,
// nothing forwarded. Once the lock is free, r1 takes it back and serves.
func TestDrillLockBackendKilled(t *testing.T) {
	row := &drillRow{}
	reportDrill(t, row)
	base := kbtest.PostgresURL(t)
	url, schema := pgtest.Schema(t, base)
	stripe, upstream := slowStripe(t, 0)
	r1 := kbtest.Serve(t, serveEnv(url, upstream, "KEYBRAKE_INSTANCE_ID", "r1"))
	admin := client.New(r1.AdminURL(), kbtest.AdminToken)
	k := issueCharges(t, r1, "1000")
	var tl tally
	charge := func() string {
		out, _ := drillCharge(context.Background(), r1.URL(), k.VaultKey)
		tl.add(out)
		return out
	}
	if out := charge(); out != "200" {
		t.Fatalf("first charge: %s", out)
	}

	db := pgtest.Admin(t, base)
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pgtest.StealInstanceLock(t, db, conn, schema, "r1")
	waitFor(t, 30*time.Second, "r1's /healthz to fail while another session holds its name", func() bool {
		return healthz(r1.URL()) == http.StatusServiceUnavailable
	})
	before := stripe.Requests()
	for range 5 {
		if out := charge(); out != "503 store_unavailable" {
			t.Errorf("charge while r1 does not hold its name: %s, want 503 store_unavailable", out)
		}
	}
	if n := stripe.Requests(); n != before {
		t.Errorf("the vendor received %d request(s) while r1 did not hold its name", n-before)
	}

	if _, err := conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock_all()`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "r1 to hold its name again", func() bool { return healthz(r1.URL()) == http.StatusOK })
	if out := charge(); out != "200" {
		t.Errorf("charge after r1 took its name back: %s", out)
	}
	if n := lockHolders(t, db, schema, "r1"); n != 1 {
		t.Errorf("%d sessions hold r1's lock, want 1", n)
	}
	spent, _ := spentOf(t, admin, k.ID)
	row.calls, row.outcomes, row.charged, row.recorded = tl.total(), tl.String(), stripeCharged(stripe), spent
	if spent != row.charged {
		t.Errorf("recorded $%s, vendor charged $%s", spent, row.charged)
	}
}

// TestDrillSigtermAfterPostgresRestart: a replica whose database restarted
// under it (its instance lock died with the old server) still drains and
// exits 0 on SIGTERM.
func TestDrillSigtermAfterPostgresRestart(t *testing.T) {
	row := &drillRow{}
	reportDrill(t, row)
	cluster := pgtest.StartCluster(t, pgtest.ClusterOptions{})
	url, _ := pgtest.Schema(t, cluster.URL())
	stripe, upstream := slowStripe(t, 0)
	p := kbtest.Serve(t, serveEnv(url, upstream, "KEYBRAKE_INSTANCE_ID", "r1"))
	admin := client.New(p.AdminURL(), kbtest.AdminToken)
	k := issueCharges(t, p, "1000")
	var tl tally
	if out, _ := drillCharge(context.Background(), p.URL(), k.VaultKey); out != "200" {
		t.Fatalf("charge: %s", out)
	}
	tl.add("200")

	cluster.Restart(t, time.Second)
	waitFor(t, time.Minute, "a charge to go through after the restart", func() bool {
		out, _ := drillCharge(context.Background(), p.URL(), k.VaultKey)
		tl.add(out)
		return out == "200"
	})
	spent, _ := spentOf(t, admin, k.ID)
	row.calls, row.outcomes, row.charged, row.recorded = tl.total(), tl.String(), stripeCharged(stripe), spent
	if err := p.Stop(time.Minute); err != nil {
		t.Fatalf("SIGTERM after a database restart: %v, want exit 0\n%s", err, p.Logs())
	}
	if !strings.Contains(p.Logs(), `"msg":"stopped"`) {
		t.Errorf("no clean stop logged\n%s", p.Logs())
	}
}
