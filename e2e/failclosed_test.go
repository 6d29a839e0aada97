package e2e

import (
	"context"
	"database/sql"
	"net/http"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
)

// A store that cannot take a decision (here: SQLite's write lock held by
// someone else past the busy timeout) fails closed: 503 store_unavailable,
// nothing forwarded, /healthz 503. When the lock goes, Keybrake recovers
// without a restart.
func TestStoreUnavailableFailsClosed(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{})
	if r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd"); r.Status != 200 {
		t.Fatalf("warm-up: %d %s", r.Status, r.Body)
	}

	locker, err := sql.Open("sqlite", "file:"+env.DB+"?_pragma=busy_timeout(100)")
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close()
	conn, err := locker.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
		t.Fatalf("take the write lock: %v", err)
	}
	locked := true
	unlock := func() {
		if locked {
			conn.ExecContext(context.Background(), "ROLLBACK") //nolint:errcheck
			locked = false
		}
	}
	defer unlock()

	before := env.Stripe.Requests()
	r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd")
	e := expectDenied(t, env.Stripe, before, r, 503, "store_unavailable")
	if e.Error == nil || e.Error.Type != "api_error" {
		t.Fatalf("Stripe-shaped 503: %s", r.Body)
	}
	resp, err := httpClient.Get(env.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/healthz with the store locked: %d, want 503", resp.StatusCode)
	}

	unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := httpClient.Get(env.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("/healthz did not recover after the lock was released")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd"); r.Status != 200 {
		t.Fatalf("after recovery: %d %s", r.Status, r.Body)
	}
	if v := getKey(t, env, k.ID); v.SpentUSD.String() != "2.00" {
		t.Fatalf("spent %s, want 2.00", v.SpentUSD)
	}
}

// A vendor that refuses connections: 502 upstream_unreachable, and the
// reservation is kept as an unknown outcome.
func TestVendorUnreachable(t *testing.T) {
	env := kbtest.Start(t)
	env.Upstream.Close() // nothing listens at the vendor's address any more
	k := env.Issue(t, client.IssueParams{})
	r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd")
	if r.Status != 502 || decodeErr(t, r).Code != "upstream_unreachable" {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if v := getKey(t, env, k.ID); v.SpentUSD.String() != "1.00" {
		t.Fatalf("spent %s: an unknown outcome stays counted", v.SpentUSD)
	}
	if rows := calls(t, env, client.ListCallsParams{Outcome: "unknown"}); len(rows) != 1 || rows[0].Code != "upstream_unreachable" {
		t.Fatalf("unknown calls: %+v", rows)
	}
}
