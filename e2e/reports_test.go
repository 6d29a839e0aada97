package e2e

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
)

// adminGet GETs an admin path with the admin token and returns status,
// content type and body.
func adminGet(t *testing.T, env *kbtest.Env, path, token string) (int, string, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", env.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

func adminJSON(t *testing.T, env *kbtest.Env, path string, v any) {
	t.Helper()
	status, _, b := adminGet(t, env, path, kbtest.AdminToken)
	if status != 200 {
		t.Fatalf("GET %s: %d %s", path, status, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v\n%s", path, err, b)
	}
}

// runCharge issues a key for a run and charges it cents once per amount.
func runCharge(t *testing.T, env *kbtest.Env, label, agent string, cents ...int) *client.Key {
	t.Helper()
	k := env.Issue(t, client.IssueParams{AgentRunLabel: label, AgentName: agent, DailyUSDCap: "50"})
	for _, c := range cents {
		if r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, fmt.Sprintf("amount=%d&currency=usd", c)); r.Status != 200 {
			t.Fatalf("charge %s: %d %s", label, r.Status, r.Body)
		}
	}
	return k
}

// The four reports through HTTP, JSON and CSV, with their filters, and the
// refusals that name what was wrong.
func TestSpendReportsOverHTTP(t *testing.T) {
	env := kbtest.Start(t)
	runCharge(t, env, "acme:billing:charge:1", "billing", 150, 150)
	runCharge(t, env, "acme:billing:charge:2", "billing", 100)
	capped := runCharge(t, env, "globex:mail:send:1", "mailer", 50)
	for _, c := range []int{110, 100, 120} {
		runCharge(t, env, fmt.Sprintf("nightly-%d", c), "nightly", c)
	}
	runCharge(t, env, "nightly-runaway", "nightly", 2000, 2000)
	// A denial counts as a call of its run, and reaches no vendor.
	before := env.Stripe.Requests()
	expectDenied(t, env.Stripe, before, env.Do(t, capped.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=99999&currency=usd"),
		http.StatusTooManyRequests, "cap_exhausted")

	var runs struct {
		Since, Until string
		Data         []map[string]any `json:"data"`
		HasMore      bool             `json:"has_more"`
	}
	adminJSON(t, env, "/vault/reports/runs", &runs)
	if len(runs.Data) != 7 || runs.HasMore || runs.Since == "" || runs.Until == "" {
		t.Fatalf("runs: %+v", runs)
	}
	if r := runs.Data[0]; r["agent_run_label"] != "globex:mail:send:1" || r["calls"] != 2.0 || r["denied_calls"] != 1.0 || r["spent_usd"] != "0.50" || r["cap_usd"] != "50.00" {
		t.Fatalf("newest run (the denial is its last call): %v", r)
	}
	adminJSON(t, env, "/vault/reports/runs?label_prefix=acme:&agent_name=billing", &runs)
	if len(runs.Data) != 2 || runs.Data[0]["agent_run_label"] != "acme:billing:charge:2" || runs.Data[1]["spent_usd"] != "3.00" {
		t.Fatalf("acme runs: %+v", runs.Data)
	}
	adminJSON(t, env, "/vault/reports/runs?limit=3", &runs)
	if len(runs.Data) != 3 || !runs.HasMore {
		t.Fatalf("first page: %+v", runs)
	}
	status, ct, body := adminGet(t, env, "/vault/reports/runs?format=csv", kbtest.AdminToken)
	recs, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if status != 200 || !strings.HasPrefix(ct, "text/csv") || err != nil || len(recs) != 8 ||
		strings.Join(recs[0], ",") != "agent_run_label,agent_name,keys,calls,allowed_calls,denied_calls,unknown_calls,spent_usd,cap_usd,first_call_at,last_call_at" {
		t.Fatalf("runs CSV: %d %s %v\n%s", status, ct, err, body)
	}

	var agents struct {
		GroupBy string           `json:"group_by"`
		Data    []map[string]any `json:"data"`
	}
	adminJSON(t, env, "/vault/reports/agents", &agents)
	if agents.GroupBy != "agent_name" || len(agents.Data) != 3 || agents.Data[0]["agent_name"] != "nightly" || agents.Data[0]["spent_usd"] != "43.30" ||
		agents.Data[0]["runs"] != 4.0 || agents.Data[0]["max_run_usd"] != "40.00" || agents.Data[0]["avg_run_usd"] != "10.825" {
		t.Fatalf("agents: %+v", agents)
	}
	adminJSON(t, env, "/vault/reports/agents?group_by=label_prefix&depth=1&sep=:", &agents)
	if agents.GroupBy != "label_prefix" || agents.Data[1]["label_prefix"] != "acme" || agents.Data[1]["runs"] != 2.0 || agents.Data[1]["spent_usd"] != "4.00" {
		t.Fatalf("agents by tenant: %+v", agents)
	}

	var daily struct {
		Data      []keybrake.DailyRow        `json:"data"`
		Month     string                     `json:"month"`
		Projected map[string]keybrake.Micros `json:"projected_month_usd"`
	}
	adminJSON(t, env, "/vault/reports/daily", &daily)
	var charged keybrake.Micros
	for _, pi := range env.Stripe.Intents() {
		charged += keybrake.Micros(pi.Amount) * 10_000
	}
	// Every call is today: the daily row is what the vendor charged, and
	// with no earlier days the projection is the month so far.
	if len(daily.Data) != 1 || daily.Data[0].Vendor != "stripe" || daily.Data[0].Calls != 10 || daily.Data[0].DeniedCalls != 1 ||
		daily.Data[0].Spent != charged || daily.Projected["stripe"] != charged || daily.Month == "" {
		t.Fatalf("daily: %+v (vendor charged $%s)", daily, charged)
	}

	var anomalies struct {
		Factor string `json:"factor"`
		Data   []struct {
			Label    string  `json:"agent_run_label"`
			Spent    string  `json:"spent_usd"`
			Baseline *string `json:"baseline_usd"`
			Factor   *string `json:"factor"`
		} `json:"data"`
	}
	adminJSON(t, env, "/vault/reports/anomalies", &anomalies)
	if anomalies.Factor != "3.00" || len(anomalies.Data) != 1 || anomalies.Data[0].Label != "nightly-runaway" ||
		*anomalies.Data[0].Baseline != "1.10" || *anomalies.Data[0].Factor != "36.36" || anomalies.Data[0].Spent != "40.00" {
		t.Fatalf("anomalies: %+v", anomalies)
	}
	adminJSON(t, env, "/vault/reports/anomalies?factor=40", &anomalies)
	if len(anomalies.Data) != 0 {
		t.Fatalf("factor 40: %+v", anomalies)
	}
	adminJSON(t, env, "/vault/reports/anomalies?factor=40&min_usd=2.5", &anomalies)
	if len(anomalies.Data) != 2 || anomalies.Data[1].Label != "acme:billing:charge:1" || anomalies.Data[1].Baseline == nil {
		t.Fatalf("min_usd 2.50: %+v", anomalies)
	}
	_, _, body = adminGet(t, env, "/vault/reports/anomalies?format=csv", kbtest.AdminToken)
	if recs, err := csv.NewReader(strings.NewReader(string(body))).ReadAll(); err != nil || len(recs) != 2 || recs[0][11] != "baseline_usd" || recs[1][12] != "36.36" {
		t.Fatalf("anomalies CSV: %v\n%s", err, body)
	}

	// Refusals name the field; issuer tokens and strangers get nothing.
	for path, field := range map[string]string{
		"/vault/reports/runs?since=yesterday":                   "since",
		"/vault/reports/runs?until=2024-13-01":                  "until",
		"/vault/reports/runs?since=2024-06-02&until=2024-06-01": "since",
		"/vault/reports/runs?format=xml":                        "format",
		"/vault/reports/runs?limit=0":                           "limit",
		"/vault/reports/agents?group_by=label_prefix":           "depth",
		"/vault/reports/agents?group_by=team":                   "group_by",
		"/vault/reports/anomalies?factor=0.5":                   "factor",
		"/vault/reports/anomalies?min_usd=-1":                   "min_usd",
		"/vault/calls?format=xml":                               "format",
	} {
		status, _, b := adminGet(t, env, path, kbtest.AdminToken)
		var e struct{ Code, Field string }
		if json.Unmarshal(b, &e); status != 400 || e.Code != "invalid_request" || e.Field != field {
			t.Errorf("%s: %d %s, want 400 naming %s", path, status, b, field)
		}
	}
	tok, err := env.Admin.CreateToken(context.Background(), client.TokenParams{Name: "issuer", MaxDailyUSD: "10", Vendors: []string{"stripe"},
		Endpoints: []string{"POST /v1/payment_intents"}, MaxExpiresIn: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/vault/reports/runs", "/vault/reports/daily", "/vault/webhooks", "/vault/calls?format=csv"} {
		if status, _, _ := adminGet(t, env, path, tok.Token); status != http.StatusForbidden {
			t.Errorf("%s with an issuer token: %d, want 403", path, status)
		}
		if status, _, _ := adminGet(t, env, path, ""); status != http.StatusUnauthorized {
			t.Errorf("%s without a token: %d, want 401", path, status)
		}
	}
}

// The audit export streams every matching row, past one page, in CSV and
// NDJSON, and what it says each call cost is what the vendor charged.
func TestAuditExportStreamsEverything(t *testing.T) {
	env := kbtest.Start(t)
	k := runCharge(t, env, "run-export", "exporter", 100, 250, 75)
	// 1,100 refusals of a key outside its allow-list: more than one page of
	// the log. (Requests with no valid key are not audited at all.)
	junkKey := env.Issue(t, client.IssueParams{AgentRunLabel: "run-junk"})
	const junk = 1100
	var wg sync.WaitGroup
	var audited atomic.Int64 // a loaded machine may shed a few with 503 before the ledger
	sem := make(chan struct{}, 16)
	for i := 0; i < junk; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if r, err := env.Try(junkKey.VaultKey, "GET", "/v1/charges", "", ""); err == nil && r.Header.Get("Keybrake-Call-Id") != "" {
				audited.Add(1)
			}
		}()
	}
	wg.Wait()
	if audited.Load() < junk/2 {
		t.Fatalf("only %d of %d refusals were audited", audited.Load(), junk)
	}
	total := int(audited.Load()) + 3

	status, ct, body := adminGet(t, env, "/vault/calls?format=ndjson", kbtest.AdminToken)
	if status != 200 || ct != "application/x-ndjson" {
		t.Fatalf("ndjson: %d %s", status, ct)
	}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	var last int64
	n := 0
	for sc.Scan() {
		var c struct {
			ID int64 `json:"id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("line %d: %v", n+1, err)
		}
		if last != 0 && c.ID >= last {
			t.Fatalf("ids not strictly newest first: %d after %d", c.ID, last)
		}
		last, n = c.ID, n+1
	}
	if n != total {
		t.Fatalf("ndjson export has %d rows, want %d", n, total)
	}

	_, _, body = adminGet(t, env, "/vault/calls?format=csv&agent_run_label=run-export", kbtest.AdminToken)
	recs, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if err != nil || len(recs) != 4 || recs[0][0] != "id" || recs[0][12] != "actual_usd" {
		t.Fatalf("csv export of one run: %v\n%s", err, body)
	}
	var exported, charged keybrake.Micros
	for _, r := range recs[1:] {
		m, err := keybrake.ParseUSD(r[12])
		if err != nil || r[2] != k.ID || r[8] != "forwarded" {
			t.Fatalf("row %v: %v", r, err)
		}
		exported += m
	}
	for _, pi := range env.Stripe.Intents() {
		charged += keybrake.Micros(pi.Amount) * 10_000
	}
	if exported != charged || charged != 4_250_000 || *getKey(t, env, k.ID).SpentUSD != charged {
		t.Fatalf("export says $%s, vendor charged $%s", exported, charged)
	}
	q := url.Values{"format": {"csv"}, "outcome": {"denied_endpoint_not_allowed"}, "since": {"2000-01-01"}}
	_, _, body = adminGet(t, env, "/vault/calls?"+q.Encode(), kbtest.AdminToken)
	if recs, _ := csv.NewReader(strings.NewReader(string(body))).ReadAll(); len(recs) != int(audited.Load())+1 {
		t.Fatalf("denials exported: %d rows, want the %d that were audited", len(recs)-1, audited.Load())
	}
	q.Set("until", "2000-01-02")
	_, _, body = adminGet(t, env, "/vault/calls?"+q.Encode(), kbtest.AdminToken)
	if recs, _ := csv.NewReader(strings.NewReader(string(body))).ReadAll(); len(recs) != 1 {
		t.Fatalf("a window with no calls exported %d rows", len(recs)-1)
	}
}

// Agent-written strings cannot become spreadsheet formulas in an export.
func TestExportDefusesFormulas(t *testing.T) {
	env := kbtest.Start(t)
	runCharge(t, env, "=HYPERLINK(\"http://evil\")", "@agent", 100)
	_, _, body := adminGet(t, env, "/vault/reports/runs?format=csv", kbtest.AdminToken)
	recs, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if err != nil || len(recs) != 2 || recs[1][0] != `'=HYPERLINK("http://evil")` || recs[1][1] != "'@agent" {
		t.Fatalf("runs CSV: %v %q", err, recs)
	}
	_, _, body = adminGet(t, env, "/vault/calls?format=csv", kbtest.AdminToken)
	if recs, _ := csv.NewReader(strings.NewReader(string(body))).ReadAll(); len(recs) != 2 || recs[1][3] != `'=HYPERLINK("http://evil")` {
		t.Fatalf("calls CSV: %q", recs)
	}
}
