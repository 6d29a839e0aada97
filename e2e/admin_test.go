package e2e

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/server"
)

func adminRequest(t testing.TB, base, token, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(b, &m) //nolint:errcheck // some answers are not objects
	return resp.StatusCode, m
}

// No admin endpoint is reachable without the admin token, including routes
// that do not exist (an unauthenticated caller learns nothing).
func TestAdminRequiresToken(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{})
	routes := [][2]string{
		{"POST", "/vault/keys"}, {"GET", "/vault/keys"}, {"GET", "/vault/keys/" + k.ID},
		{"DELETE", "/vault/keys/" + k.ID}, {"GET", "/vault/calls"}, {"GET", "/vault/runs/x"},
		{"GET", "/vault/nope"}, {"GET", "/vault"},
	}
	for _, tok := range []string{"", "wrong-token-0123456789", kbtest.AdminToken + "x", k.VaultKey} {
		for _, r := range routes {
			status, body := adminRequest(t, env.URL, tok, r[0], r[1], `{"vendor":"stripe"}`)
			if status != 401 || body["code"] != "unauthorized" {
				t.Fatalf("%s %s with token %q: %d %v", r[0], r[1], tok, status, body)
			}
		}
	}
	if v := getKey(t, env, k.ID); v.Status != "active" {
		t.Fatalf("an unauthenticated DELETE changed the key: %s", v.Status)
	}
}

func TestIssueKeyValidation(t *testing.T) {
	env := kbtest.Start(t, kbtest.Options{Configure: func(c *server.Config) { c.MaxExpiresIn = 6 * 3600e9 }})
	valid := `"vendor":"stripe","daily_usd_cap":50,"allowed_endpoints":["POST /v1/payment_intents"],"expires_in":"2h"`
	cases := []struct {
		body, field string
	}{
		{`{"daily_usd_cap":50,"allowed_endpoints":["POST /v1/payment_intents"],"expires_in":"2h"}`, "vendor"},
		{`{` + strings.Replace(valid, `"stripe"`, `"paypal"`, 1) + `}`, "vendor"},
		{`{"vendor":"stripe","allowed_endpoints":["POST /v1/payment_intents"],"expires_in":"2h"}`, "daily_usd_cap"},
		{`{` + strings.Replace(valid, `50`, `0`, 1) + `}`, "daily_usd_cap"},
		{`{` + strings.Replace(valid, `50`, `-5`, 1) + `}`, "daily_usd_cap"},
		{`{` + strings.Replace(valid, `50`, `1e3`, 1) + `}`, "daily_usd_cap"},
		{`{` + strings.Replace(valid, `50`, `"0.0000001"`, 1) + `}`, "daily_usd_cap"},
		{`{` + strings.Replace(valid, `50`, `"fifty"`, 1) + `}`, "daily_usd_cap"},
		{`{"vendor":"stripe","daily_usd_cap":50,"expires_in":"2h"}`, "allowed_endpoints"},
		{`{` + strings.Replace(valid, `["POST /v1/payment_intents"]`, `[]`, 1) + `}`, "allowed_endpoints"},
		{`{` + strings.Replace(valid, `["POST /v1/payment_intents"]`, `["POST /v1/../refunds"]`, 1) + `}`, "allowed_endpoints"},
		{`{` + strings.Replace(valid, `["POST /v1/payment_intents"]`, `["post /v1/payment_intents"]`, 1) + `}`, "allowed_endpoints"},
		{`{` + strings.Replace(valid, `["POST /v1/payment_intents"]`, `["POST /emails"]`, 1) + `}`, "allowed_endpoints"},
		{`{` + strings.Replace(valid, `["POST /v1/payment_intents"]`, `"POST /v1/payment_intents"`, 1) + `}`, "allowed_endpoints"},
		{`{"vendor":"stripe","daily_usd_cap":50,"allowed_endpoints":["POST /v1/payment_intents"]}`, "expires_in"},
		{`{` + strings.Replace(valid, `"2h"`, `"7h"`, 1) + `}`, "expires_in"},
		{`{` + strings.Replace(valid, `"2h"`, `"soon"`, 1) + `}`, "expires_in"},
		{`{` + strings.Replace(valid, `"2h"`, `0`, 1) + `}`, "expires_in"},
		{`{` + strings.Replace(valid, `"2h"`, `-60`, 1) + `}`, "expires_in"},
		{`{` + valid + `,"total_usd_cap":0}`, "total_usd_cap"},
		{`{` + valid + `,"max_usd_per_call":"x"}`, "max_usd_per_call"},
		{`{` + valid + `,"agent_run_label":"` + strings.Repeat("a", 513) + `"}`, "agent_run_label"},
		{`{` + valid + `,"metadata":{"":"x"}}`, "metadata"},
		{`{` + valid + `,"budget":5}`, "budget"},
	}
	for _, c := range cases {
		status, body := adminRequest(t, env.URL, kbtest.AdminToken, "POST", "/vault/keys", c.body)
		if status != 400 || body["code"] != "invalid_request" || body["field"] != c.field || body["message"] == "" {
			t.Errorf("%s\n  → %d %v; want 400 invalid_request field %q", c.body, status, body, c.field)
		}
	}
	for _, body := range []string{`not json`, `{` + valid + `} {}`, ``} {
		if status, m := adminRequest(t, env.URL, kbtest.AdminToken, "POST", "/vault/keys", body); status != 400 || m["code"] != "invalid_request" {
			t.Errorf("%q → %d %v", body, status, m)
		}
	}
	if n := len(calls(t, env, client.ListCallsParams{})); n != 0 {
		t.Fatalf("%d audit rows", n)
	}
	keys, err := env.Admin.ListKeys(t.Context(), client.ListKeysParams{})
	if err != nil || len(keys.Data) != 0 {
		t.Fatalf("a refused request created a key: %v %v", keys, err)
	}

	// The seed's IssueVaultKey Parameters: a JSON-number budget from
	// $.budget_usd, a Step Functions execution ARN as the label; expires_in
	// also as whole seconds.
	for _, exp := range []string{`"2h"`, `7200`, `"7200"`} {
		status, m := adminRequest(t, env.URL, kbtest.AdminToken, "POST", "/vault/keys",
			`{"vendor":"stripe","daily_usd_cap":12.5,"allowed_endpoints":["POST /v1/payment_intents"],"expires_in":`+exp+
				`,"agent_run_label":"arn:aws:states:us-east-1:123456789:execution:billing:7f3a"}`)
		if status != 201 || m["daily_usd_cap"] != "12.50" || m["agent_run_label"] != "arn:aws:states:us-east-1:123456789:execution:billing:7f3a" {
			t.Fatalf("expires_in %s: %d %v", exp, status, m)
		}
		for _, f := range []string{"key_id", "vault_key", "vendor", "allowed_endpoints", "expires_at", "created_at"} {
			if m[f] == nil || m[f] == "" {
				t.Fatalf("201 answer lacks %s: %v", f, m)
			}
		}
	}
}

func TestKeysListShowRevoke(t *testing.T) {
	env := kbtest.Start(t)
	var ids []string
	for i := 0; i < 5; i++ {
		label := "run-a"
		if i%2 == 1 {
			label = "run-b"
		}
		ids = append(ids, env.Issue(t, client.IssueParams{AgentRunLabel: label}).ID)
	}
	// The secret is shown only when issued.
	status, m := adminRequest(t, env.URL, kbtest.AdminToken, "GET", "/vault/keys/"+ids[0], "")
	if status != 200 || m["vault_key"] != nil || m["status"] != "active" || m["spent_usd"] != "0.00" || m["remaining_usd"] != "100.00" {
		t.Fatalf("GET key: %d %v", status, m)
	}
	// Pagination: newest first, no duplicates, no gaps.
	var seen []string
	cursor := ""
	for {
		page, err := env.Admin.ListKeys(t.Context(), client.ListKeysParams{Limit: 2, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range page.Data {
			seen = append(seen, k.ID)
		}
		if !page.HasMore {
			break
		}
		cursor = page.NextCursor
	}
	if len(seen) != 5 {
		t.Fatalf("paged through %d keys, want 5", len(seen))
	}
	for i := range seen {
		if seen[i] != ids[4-i] {
			t.Fatalf("order %v, want newest first %v", seen, ids)
		}
	}
	byLabel, err := env.Admin.ListKeys(t.Context(), client.ListKeysParams{AgentRunLabel: "run-b"})
	if err != nil || len(byLabel.Data) != 2 {
		t.Fatalf("label filter: %v %v", byLabel, err)
	}
	if _, err := env.Admin.RevokeKey(t.Context(), ids[0]); err != nil {
		t.Fatal(err)
	}
	revoked, err := env.Admin.ListKeys(t.Context(), client.ListKeysParams{Status: "revoked"})
	if err != nil || len(revoked.Data) != 1 || revoked.Data[0].ID != ids[0] || revoked.Data[0].RemainingUSD.String() != "0.00" {
		t.Fatalf("status filter: %+v %v", revoked, err)
	}
	var ce *client.Error
	if _, err := env.Admin.ListKeys(t.Context(), client.ListKeysParams{Status: "sleeping"}); !errors.As(err, &ce) || ce.Status != 400 || ce.Field != "status" {
		t.Fatalf("bad status filter: %v", err)
	}
	if _, err := env.Admin.ListKeys(t.Context(), client.ListKeysParams{Cursor: "garbage!"}); !errors.As(err, &ce) || ce.Field != "cursor" {
		t.Fatalf("bad cursor: %v", err)
	}
	for _, id := range []string{"vk_doesnotexist", "x"} {
		if _, err := env.Admin.GetKey(t.Context(), id); !errors.As(err, &ce) || ce.Status != 404 || ce.Code != "not_found" {
			t.Fatalf("GET unknown key: %v", err)
		}
		if _, err := env.Admin.RevokeKey(t.Context(), id); !errors.As(err, &ce) || ce.Status != 404 || ce.Code != "not_found" {
			t.Fatalf("DELETE unknown key: %v", err)
		}
	}
	if _, err := env.Admin.RunSummary(t.Context(), "no-such-run"); !errors.As(err, &ce) || ce.Status != 404 {
		t.Fatalf("unknown run: %v", err)
	}
}

// The per-run summary the seed asks for.
func TestRunSummary(t *testing.T) {
	env := kbtest.Start(t)
	label := "arn:aws:states:us-east-1:123456789:execution:billing/with:odd?chars"
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "3", AgentRunLabel: label, AllowedEndpoints: []string{"POST /v1/payment_intents", "GET /v1/balance"}})
	for i := 0; i < 4; i++ {
		env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", "application/x-www-form-urlencoded", "amount=100&currency=usd")
	}
	env.Do(t, k.VaultKey, "GET", "/v1/balance", "", "")
	env.Do(t, k.VaultKey, "POST", "/v1/refunds", "application/x-www-form-urlencoded", "amount=100")
	other := env.Issue(t, client.IssueParams{AgentRunLabel: "another-run"})
	env.Do(t, other.VaultKey, "POST", "/v1/payment_intents", "application/x-www-form-urlencoded", "amount=100&currency=usd")

	s, err := env.Admin.RunSummary(t.Context(), label)
	if err != nil {
		t.Fatal(err)
	}
	if s.Spent.String() != "3.00" || s.Allowed != 4 || s.Denied != 2 || s.Calls != 6 || len(s.Keys) != 1 || s.Keys[0].ID != k.ID {
		t.Fatalf("summary: %+v", s)
	}
	if s.DeniedByCode["cap_exhausted"] != 1 || s.DeniedByCode["endpoint_not_allowed"] != 1 {
		t.Fatalf("denials by code: %v", s.DeniedByCode)
	}
	if len(s.ByEndpoint) != 2 || s.ByEndpoint[0].Endpoint != "GET /v1/balance" || s.ByEndpoint[1].Spent.String() != "3.00" || s.ByEndpoint[1].Calls != 3 {
		t.Fatalf("by endpoint: %+v", s.ByEndpoint)
	}
	if s.FirstCall == nil || s.LastCall == nil || s.LastCall.Before(*s.FirstCall) {
		t.Fatalf("first/last: %v %v", s.FirstCall, s.LastCall)
	}
	rows := calls(t, env, client.ListCallsParams{AgentRunLabel: label})
	if len(rows) != 6 {
		t.Fatalf("%d audit rows for the run, want 6", len(rows))
	}
	for i := 1; i < len(rows); i++ {
		if rows[i].ID >= rows[i-1].ID {
			t.Fatal("audit rows must be newest first")
		}
	}
}

// --admin-addr moves the admin API off the agents' listener.
func TestSeparateAdminListener(t *testing.T) {
	env := kbtest.Start(t, kbtest.Options{Configure: func(c *server.Config) { c.AdminAddr = "127.0.0.1:0" }})
	if env.Server.Addr() == env.Server.AdminAddr() {
		t.Fatal("admin listener not separate")
	}
	k := env.Issue(t, client.IssueParams{}) // env.Admin talks to the admin listener
	status, _ := adminRequest(t, env.URL, kbtest.AdminToken, "GET", "/vault/keys/"+k.ID, "")
	if status != 404 {
		t.Fatalf("admin API on the proxy listener: %d, want 404", status)
	}
	r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", "application/x-www-form-urlencoded", "amount=100&currency=usd")
	if r.Status != 200 {
		t.Fatalf("proxy: %d %s", r.Status, r.Body)
	}
	for _, base := range []string{env.URL, "http://" + env.Server.AdminAddr()} {
		resp, err := httpClient.Get(base + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s/healthz: %d", base, resp.StatusCode)
		}
	}
}
