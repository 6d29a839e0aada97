package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/server"
)

// The issue's acceptance test: 3,000 concurrent $1.00 payment intents on one
// key with a $500 cap. Exactly 500 reach the vendor, 2,500 get 429.
//
// 3,000 requests at once queue on SQLite's single writer for longer than
// the default decision deadline (5s), which would refuse the excess with
// 503 store_unavailable (see TestDrillWriterHeld); this test is about
// exactness, so the deadline is out of its way.
func TestCapIsExactUnderConcurrency(t *testing.T) {
	env := kbtest.Start(t, kbtest.Options{Configure: func(cfg *server.Config) { cfg.DecisionTimeout = 5 * time.Minute }})
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "500"})
	const n = 3000
	tr := &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: 0}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Minute}
	var ok, capped, other atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest("POST", env.URL+"/stripe/v1/payment_intents", strings.NewReader(`{"amount":100,"currency":"usd"}`))
			req.Header.Set("Authorization", "Bearer "+k.VaultKey)
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				other.Add(1)
				t.Errorf("request %d: %v", i, err)
				return
			}
			defer resp.Body.Close()
			var b strings.Builder
			fmt.Fprint(&b, resp.Body)
			switch resp.StatusCode {
			case 200:
				ok.Add(1)
			case 429:
				capped.Add(1)
			default:
				other.Add(1)
			}
		}(i)
	}
	close(start)
	wg.Wait()
	if ok.Load() != 500 || capped.Load() != 2500 || other.Load() != 0 {
		t.Fatalf("200: %d, 429: %d, other: %d; want 500, 2500, 0", ok.Load(), capped.Load(), other.Load())
	}
	if got := len(env.Stripe.Intents()); got != 500 {
		t.Fatalf("the vendor received %d charges, want exactly 500", got)
	}
	if got := env.Stripe.Requests(); got != 500 {
		t.Fatalf("the vendor received %d requests, want exactly 500", got)
	}
	v := getKey(t, env, k.ID)
	if v.SpentUSD.String() != "500.00" || v.ReservedUSD.String() != "0.00" || *v.Calls != 3000 || *v.AllowedCalls != 500 || *v.DeniedCalls != 2500 {
		t.Fatalf("key: spent %s reserved %s calls %d allowed %d denied %d", v.SpentUSD, v.ReservedUSD, *v.Calls, *v.AllowedCalls, *v.DeniedCalls)
	}
}

// A revoke is effective for the very next request: every request sent after
// DELETE answered is refused, under concurrent load.
func TestRevokeStopsTheNextCall(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "100000"})
	var revokedAt atomic.Int64 // unix nanos when DELETE returned; 0 before
	var lateSuccess atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				sentAfterRevoke := revokedAt.Load() != 0
				r, err := env.Try(k.VaultKey, "POST", "/v1/payment_intents", "application/x-www-form-urlencoded", "amount=100&currency=usd")
				if err != nil {
					t.Error(err)
					return
				}
				if sentAfterRevoke && r.Status != 401 {
					lateSuccess.Add(1)
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // let traffic flow before the revoke
	rv, err := env.Admin.RevokeKey(context.Background(), k.ID)
	if err != nil {
		t.Fatal(err)
	}
	revokedAt.Store(time.Now().UnixNano())
	chargesAtRevoke := len(env.Stripe.Intents())
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if lateSuccess.Load() != 0 {
		t.Fatalf("%d requests sent after the revoke were not refused", lateSuccess.Load())
	}
	// In-flight calls at the moment of the revoke may still complete; none
	// may start after it.
	if after := len(env.Stripe.Intents()); after > chargesAtRevoke+8 {
		t.Fatalf("%d charges reached the vendor after the revoke", after-chargesAtRevoke)
	}
	r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", "application/x-www-form-urlencoded", "amount=100&currency=usd")
	before := env.Stripe.Requests()
	expectDenied(t, env.Stripe, before, r, 401, "key_revoked")
	// Revoking again answers the same.
	rv2, err := env.Admin.RevokeKey(context.Background(), k.ID)
	if err != nil || rv2.Status != "revoked" || !rv2.RevokedAt.Equal(rv.RevokedAt) {
		t.Fatalf("second revoke: %+v, %v; first %+v", rv2, err, rv)
	}
}

// Settlement: 2xx settles the actual cost from the answer, 4xx releases the
// reservation, 5xx and no answer keep the estimate as spend (unknown).
func TestSettlement(t *testing.T) {
	_, h := faultyStripe() // canned answers and faults, chosen by X-Test-Fault
	env := kbtest.Start(t, kbtest.Options{Upstream: h})
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "100"})
	form := "application/x-www-form-urlencoded"
	do := func(fault string) *kbtest.Response {
		return env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", form, "amount=100&currency=usd", "X-Test-Fault", fault)
	}
	steps := []struct {
		fault         string
		status        int
		outcome       string
		actual, spent string
	}{
		{"", 200, "forwarded", "1.00", "1.00"},
		{"amount-differs", 200, "forwarded", "0.40", "1.40"},
		{"402", 402, "forwarded", "0.00", "1.40"},
		{"500-after", 500, "unknown", "1.00", "2.40"},
		{"drop-after", 502, "unknown", "1.00", "3.40"},
	}
	for _, s := range steps {
		r := do(s.fault)
		if r.Status != s.status {
			t.Fatalf("%q: status %d, want %d: %s", s.fault, r.Status, s.status, r.Body)
		}
		if s.fault == "drop-after" {
			e := decodeErr(t, r)
			if e.Code != "upstream_unreachable" || !strings.Contains(e.Message, "unknown") {
				t.Fatalf("dropped connection: %s", r.Body)
			}
		}
		c := calls(t, env, client.ListCallsParams{KeyID: k.ID, Limit: 1})[0]
		if string(c.Outcome) != s.outcome || c.Actual.String() != s.actual {
			t.Fatalf("%q: audit outcome %s actual %s; want %s %s", s.fault, c.Outcome, c.Actual, s.outcome, s.actual)
		}
		v := getKey(t, env, k.ID)
		if v.SpentUSD.String() != s.spent || v.ReservedUSD.String() != "0.00" {
			t.Fatalf("%q: spent %s reserved %s; want spent %s", s.fault, v.SpentUSD, v.ReservedUSD, s.spent)
		}
	}
	unknown := calls(t, env, client.ListCallsParams{Outcome: "unknown"})
	if len(unknown) != 2 {
		t.Fatalf("%d calls listed with outcome unknown, want 2", len(unknown))
	}
}

// Stripe minor units: zero-decimal (JPY), three-decimal (KWD) and
// two-decimal (EUR) currencies priced exactly through the FX table.
func TestCurrencies(t *testing.T) {
	env := kbtest.Start(t) // FX: EUR=1.10, JPY=0.0067, KWD=3.25
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "100"})
	for _, c := range []struct{ body, want string }{
		{"amount=1000&currency=jpy", "6.70"},  // ¥1000 × 0.0067
		{"amount=1000&currency=kwd", "3.25"},  // 1.000 KWD × 3.25
		{"amount=1000&currency=EUR", "11.00"}, // €10.00 × 1.10
		{"amount=1&currency=jpy", "0.0067"},   // exact below a cent
	} {
		r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", "application/x-www-form-urlencoded", c.body)
		if r.Status != 200 {
			t.Fatalf("%s: %d %s", c.body, r.Status, r.Body)
		}
		row := calls(t, env, client.ListCallsParams{KeyID: k.ID, Limit: 1})[0]
		if row.Estimated.String() != c.want || row.Actual.String() != c.want {
			t.Fatalf("%s: estimated %s actual %s, want %s", c.body, row.Estimated, row.Actual, c.want)
		}
	}
}

// The daily cap resets on the next UTC day; the lifetime cap does not.
func TestDailyAndTotalCaps(t *testing.T) {
	env, clock := withClock(t)
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "2", TotalUSDCap: "3", ExpiresIn: "24h"})
	charge := func() *kbtest.Response {
		return env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", "application/x-www-form-urlencoded", "amount=100&currency=usd")
	}
	for i := 0; i < 2; i++ {
		if r := charge(); r.Status != 200 {
			t.Fatalf("charge %d: %d %s", i, r.Status, r.Body)
		}
	}
	before := env.Stripe.Requests()
	if e := expectDenied(t, env.Stripe, before, charge(), 429, "cap_exhausted"); e.Cap != "daily" {
		t.Fatalf("cap %q, want daily", e.Cap)
	}
	// Move to the same time tomorrow: a new UTC day.
	clock.advance(24*time.Hour - time.Minute)
	if r := charge(); r.Status != 200 {
		t.Fatalf("next day: %d %s", r.Status, r.Body)
	}
	before = env.Stripe.Requests()
	if e := expectDenied(t, env.Stripe, before, charge(), 429, "cap_exhausted"); e.Cap != "total" || e.CapUSD != "3.00" {
		t.Fatalf("want the total cap: %+v", e)
	}
	v := getKey(t, env, k.ID)
	if v.SpentUSD.String() != "3.00" || v.SpentTodayUSD.String() != "1.00" {
		t.Fatalf("spent %s today %s", v.SpentUSD, v.SpentTodayUSD)
	}
}
