package e2e

// Several `keybrake serve` processes on one PostgreSQL database, as behind a
// load balancer: one exact cap, revoke and expiry that every replica obeys
// at once, and an outage that every replica answers with 503 and nothing
// forwarded. Run with KEYBRAKE_TEST_POSTGRES_URL set (always set in CI).

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/internal/sandbox"
	"github.com/keybrake/keybrake/store/postgres/pgtest"
)

const replicaChargeBody = `{"amount":100,"currency":"usd"}` // $1.00

// replicaSet is N keybrake serve processes sharing one PostgreSQL schema,
// in front of one counting sandbox Stripe.
type replicaSet struct {
	procs  []*kbtest.Proc
	admins []*client.Client
	stripe *sandbox.Stripe
	db     *sql.DB // the test's own connection, for the clock
	schema string
	fwd    *pgtest.Forwarder // between the replicas and PostgreSQL
	http   *http.Client
}

// startReplicas starts n replicas on a fresh schema. Their connections go
// through a forwarder the test can cut; the schema's clock_timestamp() is
// the database's clock plus a skew the test can shift (zero at start).
// extra adds environment variables (name, value pairs).
func startReplicas(t testing.TB, n int, extra ...string) *replicaSet {
	t.Helper()
	base := kbtest.PostgresURL(t)
	url, schema := pgtest.Schema(t, base)
	rs := &replicaSet{stripe: sandbox.NewStripe(kbtest.StripeSecret), db: pgtest.Admin(t, base), schema: schema}
	pgtest.ShiftClock(t, rs.db, schema, 0) // before any replica prepares a clock read
	rs.fwd, url = pgtest.ForwardURL(t, url)
	url = pgtest.WithParams(t, url, "pool_max_conns", "8")

	upstream := httptest.NewServer(rs.stripe)
	t.Cleanup(upstream.Close)
	env := kbtest.EnvVars(
		"KEYBRAKE_DB", url,
		"KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken,
		"KEYBRAKE_STRIPE_SECRET_KEY", kbtest.StripeSecret,
		"KEYBRAKE_STRIPE_BASE_URL", upstream.URL,
	)
	env = append(env, kbtest.EnvVars(extra...)...)
	// Start them together: concurrent starts must migrate safely.
	rs.procs = make([]*kbtest.Proc, n)
	kbtest.Binary(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if r := recover(); r != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprint(r))
					mu.Unlock()
				}
			}()
			rs.procs[i] = serveReplica(t, env)
		}()
	}
	wg.Wait()
	if len(failures) > 0 || t.Failed() {
		t.Fatalf("replicas did not start: %v", failures)
	}
	for _, p := range rs.procs {
		rs.admins = append(rs.admins, client.New(p.AdminURL(), kbtest.AdminToken))
	}
	rs.http = &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 1024, MaxIdleConns: 4096}}
	t.Cleanup(rs.http.CloseIdleConnections)
	return rs
}

// serveReplica runs kbtest.Serve, whose t.Fatal from a non-test goroutine
// would be lost: failures are reported through t.Errorf instead.
func serveReplica(t testing.TB, env []string) *kbtest.Proc {
	return kbtest.Serve(&goroutineTB{TB: t}, env)
}

// goroutineTB turns Fatal into Error+panic, which startReplicas recovers.
type goroutineTB struct{ testing.TB }

func (g *goroutineTB) Fatal(args ...any) { g.TB.Error(args...); panic(fmt.Sprint(args...)) }
func (g *goroutineTB) Fatalf(format string, args ...any) {
	g.TB.Errorf(format, args...)
	panic(fmt.Sprintf(format, args...))
}

// replicaReply is one proxied answer: status and Keybrake's error code.
type replicaReply struct {
	status int
	code   string
	body   string
}

// charge sends the seed's $1 charge to replica i.
func (rs *replicaSet) charge(i int, vaultKey string) (replicaReply, error) {
	req, err := http.NewRequest(http.MethodPost, rs.procs[i].URL()+"/stripe/v1/payment_intents", strings.NewReader(replicaChargeBody))
	if err != nil {
		return replicaReply{}, err
	}
	req.Header.Set("Authorization", "Bearer "+vaultKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := rs.http.Do(req)
	if err != nil {
		return replicaReply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return replicaReply{}, err
	}
	r := replicaReply{status: resp.StatusCode, body: string(b)}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Code string `json:"code"`
		}
		if err := json.Unmarshal(b, &e); err != nil {
			return r, fmt.Errorf("status %d with an unreadable body %q", resp.StatusCode, b)
		}
		r.code = e.Code
	}
	return r, nil
}

// mustCharge charges on replica i and checks the answer. For a refusal it
// also checks that the vendor received nothing more.
func (rs *replicaSet) mustCharge(t *testing.T, i int, vaultKey string, status int, code string) {
	t.Helper()
	before := rs.stripe.Requests()
	r, err := rs.charge(i, vaultKey)
	if err != nil {
		t.Fatalf("replica %d: %v", i+1, err)
	}
	if r.status != status || r.code != code {
		t.Fatalf("replica %d: %d %q, want %d %q; body %s", i+1, r.status, r.code, status, code, r.body)
	}
	after := rs.stripe.Requests()
	switch {
	case status == http.StatusOK && after != before+1:
		t.Fatalf("replica %d: an allowed charge reached the vendor %d times", i+1, after-before)
	case status != http.StatusOK && after != before:
		t.Fatalf("replica %d: the vendor received %d request(s) for a refused charge", i+1, after-before)
	}
}

func (rs *replicaSet) issue(t testing.TB, p client.IssueParams) *client.Key {
	t.Helper()
	p.Vendor = "stripe"
	p.AllowedEndpoints = []string{"POST /v1/payment_intents"}
	if p.ExpiresIn == "" {
		p.ExpiresIn = "1h"
	}
	k, err := rs.admins[0].IssueKey(context.Background(), p)
	if err != nil {
		t.Fatalf("issue key: %v", err)
	}
	return k
}

func (rs *replicaSet) key(t testing.TB, i int, id string) *client.Key {
	t.Helper()
	k, err := rs.admins[i].GetKey(context.Background(), id)
	if err != nil {
		t.Fatalf("replica %d: get key: %v", i+1, err)
	}
	return k
}

// TestReplicasShareOneExactCap is the issue's headline: 3,000 concurrent $1
// charges spread over three replicas against a $500 cap. Exactly 500 reach
// the vendor; the other 2,500 are refused with 429 cap_exhausted.
func TestReplicasShareOneExactCap(t *testing.T) {
	// 3,000 calls at once queue on one key's row lock for longer than the
	// default decision deadline; this test is about exactness.
	rs := startReplicas(t, 3, "KEYBRAKE_DECISION_TIMEOUT", "5m")
	const calls, capUSD = 3000, 500
	k := rs.issue(t, client.IssueParams{DailyUSDCap: fmt.Sprint(capUSD)})

	var ok, capped atomic.Int64
	perReplica := make([]atomic.Int64, len(rs.procs))
	var mu sync.Mutex
	var unexpected []string
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r, err := rs.charge(i%3, k.VaultKey)
			switch {
			case err == nil && r.status == http.StatusOK:
				ok.Add(1)
				perReplica[i%3].Add(1)
			case err == nil && r.status == http.StatusTooManyRequests && r.code == "cap_exhausted":
				capped.Add(1)
			default:
				mu.Lock()
				unexpected = append(unexpected, fmt.Sprintf("replica %d: %d %s %v", i%3+1, r.status, r.body, err))
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()

	if len(unexpected) > 0 {
		t.Errorf("%d unexpected answers, first: %s", len(unexpected), unexpected[0])
	}
	if ok.Load() != capUSD || capped.Load() != calls-capUSD {
		t.Fatalf("%d allowed, %d cap_exhausted; want exactly %d and %d", ok.Load(), capped.Load(), capUSD, calls-capUSD)
	}
	if n := len(rs.stripe.Intents()); n != capUSD || rs.stripe.Requests() != capUSD {
		t.Fatalf("the vendor received %d requests and created %d charges, want exactly %d", rs.stripe.Requests(), n, capUSD)
	}
	t.Logf("allowed per replica: %d / %d / %d", perReplica[0].Load(), perReplica[1].Load(), perReplica[2].Load())
	for i := range rs.procs {
		v := rs.key(t, i, k.ID)
		if v.SpentUSD == nil || v.SpentUSD.String() != "500.00" || v.ReservedUSD == nil || *v.ReservedUSD != 0 ||
			v.Calls == nil || *v.Calls != calls || v.AllowedCalls == nil || *v.AllowedCalls != capUSD || v.DeniedCalls == nil || *v.DeniedCalls != calls-capUSD {
			t.Errorf("replica %d shows spent %v reserved %v calls %v allowed %v denied %v; want 500.00, 0, %d, %d, %d",
				i+1, v.SpentUSD, v.ReservedUSD, v.Calls, v.AllowedCalls, v.DeniedCalls, calls, capUSD, calls-capUSD)
		}
	}
	for i := range rs.procs { // and the next call, anywhere, is refused
		rs.mustCharge(t, i, k.VaultKey, http.StatusTooManyRequests, "cap_exhausted")
	}
}

// TestReplicasRevokeStopsNextCall: a revoke sent to replica 1 stops the very
// next call on replicas 2 and 3, which had the key's policy cached.
func TestReplicasRevokeStopsNextCall(t *testing.T) {
	rs := startReplicas(t, 3)
	k := rs.issue(t, client.IssueParams{DailyUSDCap: "100"})
	for i := range rs.procs { // every replica has now looked the key up
		rs.mustCharge(t, i, k.VaultKey, http.StatusOK, "")
	}
	if _, err := rs.admins[0].RevokeKey(context.Background(), k.ID); err != nil {
		t.Fatalf("revoke on replica 1: %v", err)
	}
	for _, i := range []int{1, 2, 0} {
		rs.mustCharge(t, i, k.VaultKey, http.StatusUnauthorized, "key_revoked")
	}
	for i := range rs.procs {
		if v := rs.key(t, i, k.ID); v.Status != "revoked" {
			t.Errorf("replica %d shows status %s", i+1, v.Status)
		}
	}
	if n := len(rs.stripe.Intents()); n != 3 {
		t.Errorf("the vendor created %d charges, want 3", n)
	}
}

// TestReplicasExpiryFollowsDatabaseClock: a key's expiry is decided by
// PostgreSQL's clock, never a replica's.
//
// A process's clock cannot be faked per process for a Go binary (libfaketime
// hooks libc, and the Go runtime reads the clock through the vDSO without
// libc), and changing the host's clock would disturb everything else on it.
// So the test moves the other side: the clock_timestamp() the ledger reads is
// shifted hours away from the replicas' clocks in this test's schema, and
// every replica must follow the database, in both directions.
func TestReplicasExpiryFollowsDatabaseClock(t *testing.T) {
	rs := startReplicas(t, 3)

	// The database's clock runs 3h behind the replicas': a one-hour key
	// issued now expired two hours ago by every replica's own clock, yet the
	// database says it is live, so every replica accepts it.
	pgtest.ShiftClock(t, rs.db, rs.schema, -3*time.Hour)
	k := rs.issue(t, client.IssueParams{DailyUSDCap: "100", ExpiresIn: "1h"})
	if !k.ExpiresAt.Before(time.Now()) {
		t.Fatalf("expires_at %v should be in the replicas' past (the database's clock is behind)", k.ExpiresAt)
	}
	for i := range rs.procs {
		rs.mustCharge(t, i, k.VaultKey, http.StatusOK, "")
		if v := rs.key(t, i, k.ID); v.Status != "active" {
			t.Errorf("replica %d shows status %s, want active", i+1, v.Status)
		}
	}

	// The database's clock catches up: the key is past its expiry and every
	// replica refuses it.
	pgtest.ShiftClock(t, rs.db, rs.schema, 0)
	for i := range rs.procs {
		rs.mustCharge(t, i, k.VaultKey, http.StatusUnauthorized, "key_expired")
		if v := rs.key(t, i, k.ID); v.Status != "expired" {
			t.Errorf("replica %d shows status %s, want expired", i+1, v.Status)
		}
	}

	// The other direction: a key every replica's clock calls live for
	// another hour is refused once the database's clock says it expired.
	k2 := rs.issue(t, client.IssueParams{DailyUSDCap: "100", ExpiresIn: "1h"})
	rs.mustCharge(t, 1, k2.VaultKey, http.StatusOK, "")
	pgtest.ShiftClock(t, rs.db, rs.schema, 2*time.Hour)
	if !k2.ExpiresAt.After(time.Now()) {
		t.Fatal("the replicas' clocks should still call the second key live")
	}
	for i := range rs.procs {
		rs.mustCharge(t, i, k2.VaultKey, http.StatusUnauthorized, "key_expired")
	}
	if n := len(rs.stripe.Intents()); n != 4 {
		t.Errorf("the vendor created %d charges, want 4", n)
	}
}

// TestReplicasOutageFailClosedAndRecover cuts every connection between the
// replicas and PostgreSQL (a forwarder in between; the shared server keeps
// running) while calls stream in. Every replica answers 503
// store_unavailable and the vendor receives nothing during the outage; when
// the connection comes back they serve again without a restart.
func TestReplicasOutageFailClosedAndRecover(t *testing.T) {
	rs := startReplicas(t, 3)
	k := rs.issue(t, client.IssueParams{DailyUSDCap: "100000"})

	const (
		before, during, after, done = 0, 1, 2, 3
		workersPerReplica           = 6
	)
	type tally struct{ ok, unavailable, other atomic.Int64 }
	var (
		phase    atomic.Int32
		inflight [4]atomic.Int64 // requests of each phase still running
		counts   [3][3]tally     // [phase][replica]
		mu       sync.Mutex
		odd      []string
		wg       sync.WaitGroup
	)
	// Each phase has its own workers, which stop when the phase ends: a
	// call that was at the vendor when the database went away waits for its
	// settlement to be recorded, and must not starve the next phase.
	startWorkers := func(p int32) {
		for r := range rs.procs {
			for range workersPerReplica {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						// Announce the request before checking the phase, so
						// that whoever ends the phase can wait for it.
						inflight[p].Add(1)
						if phase.Load() != p {
							inflight[p].Add(-1)
							return
						}
						res, err := rs.charge(r, k.VaultKey)
						inflight[p].Add(-1)
						c := &counts[p][r]
						switch {
						case err == nil && res.status == http.StatusOK:
							c.ok.Add(1)
						case err == nil && res.status == http.StatusServiceUnavailable && res.code == "store_unavailable":
							c.unavailable.Add(1)
						default:
							c.other.Add(1)
							mu.Lock()
							odd = append(odd, fmt.Sprintf("phase %d replica %d: %d %s %v", p, r+1, res.status, res.body, err))
							mu.Unlock()
						}
						if p == during {
							time.Sleep(5 * time.Millisecond) // pace the refusals; not an assertion
						}
					}
				}()
			}
		}
	}
	t.Cleanup(func() { phase.Store(done); wg.Wait() })
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	everyReplica := func(p int, n int64, field func(*tally) *atomic.Int64) func() bool {
		return func() bool {
			for r := range rs.procs {
				if field(&counts[p][r]).Load() < n {
					return false
				}
			}
			return true
		}
	}
	okField := func(c *tally) *atomic.Int64 { return &c.ok }
	unavailableField := func(c *tally) *atomic.Int64 { return &c.unavailable }

	startWorkers(before)
	waitFor("charges on every replica before the outage", everyReplica(before, 10, okField))

	vendorAtCut := rs.stripe.Requests()
	rs.fwd.Cut()
	phase.Store(during)
	startWorkers(during)
	waitFor("every replica to refuse calls during the outage", everyReplica(during, 25, unavailableField))
	// Calls decided before the cut may still have reached the vendor until
	// now; from here on, for as long again, nothing may.
	vendorQuiet := rs.stripe.Requests()
	for i, p := range rs.procs {
		resp, err := rs.http.Get(p.URL() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("replica %d /healthz during the outage: %d, want 503", i+1, resp.StatusCode)
		}
	}
	waitFor("more refusals on every replica during the outage", everyReplica(during, 50, unavailableField))
	if n := rs.stripe.Requests(); n != vendorQuiet {
		t.Fatalf("the vendor received %d request(s) during the outage", n-vendorQuiet)
	}

	// End the outage phase before the database comes back: every request
	// counted as "during" ran while the connection was cut.
	phase.Store(after)
	waitFor("the outage's requests to finish", func() bool { return inflight[during].Load() == 0 })
	rs.fwd.Restore()
	startWorkers(after)
	waitFor("every replica to serve again after the outage", everyReplica(after, 10, okField))
	phase.Store(done)
	wg.Wait() // including calls whose settlement waited for the database

	var okTotal int64
	for p := range 3 {
		for r := range rs.procs {
			c := &counts[p][r]
			okTotal += c.ok.Load()
			if p == during && (c.ok.Load() != 0 || c.other.Load() != 0) {
				t.Errorf("replica %d during the outage: %d allowed, %d other answers; want only 503 store_unavailable",
					r+1, c.ok.Load(), c.other.Load())
			}
		}
		t.Logf("phase %d: allowed %d/%d/%d, store_unavailable %d/%d/%d, other %d/%d/%d", p,
			counts[p][0].ok.Load(), counts[p][1].ok.Load(), counts[p][2].ok.Load(),
			counts[p][0].unavailable.Load(), counts[p][1].unavailable.Load(), counts[p][2].unavailable.Load(),
			counts[p][0].other.Load(), counts[p][1].other.Load(), counts[p][2].other.Load())
	}
	t.Logf("vendor: %d requests before the cut, %d more from calls decided before it", vendorAtCut, vendorQuiet-vendorAtCut)
	if len(odd) > 0 {
		t.Errorf("%d answers other than 200 or 503 store_unavailable, first: %s", len(odd), odd[0])
	}
	for i, p := range rs.procs {
		if p.Exited() {
			t.Errorf("replica %d exited", i+1)
		}
	}

	// Every 200 was one vendor charge, and the ledger never counts less
	// than the vendor charged (a decision whose commit answer was lost in
	// the cut stays reserved until the recovery sweep makes it spend).
	intents := int64(len(rs.stripe.Intents()))
	if intents != okTotal || int64(rs.stripe.Requests()) != intents {
		t.Errorf("the vendor received %d requests and created %d charges; clients saw %d successes",
			rs.stripe.Requests(), intents, okTotal)
	}
	v := rs.key(t, 2, k.ID)
	if v.SpentUSD == nil || v.ReservedUSD == nil {
		t.Fatalf("key without usage: %+v", v)
	}
	spent, reserved := int64(*v.SpentUSD), int64(*v.ReservedUSD)
	const dollar = 1_000_000
	if spent > intents*dollar || spent+reserved < intents*dollar {
		t.Errorf("ledger: spent $%s reserved $%s for %d vendor charges of $1", v.SpentUSD, v.ReservedUSD, intents)
	}
	t.Logf("ledger: spent $%s reserved $%s for %d vendor charges", v.SpentUSD, v.ReservedUSD, intents)
}
