package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
)

// The client covers every operation of the spec: each operationId of
// docs/openapi.yaml has a call below, made against a real server (whose
// contract middleware checks the exchange), and an operation added to the
// spec without a client method fails this test.
func TestClientCoversEveryOperation(t *testing.T) {
	env := kbtest.Start(t)
	ctx := context.Background()
	c := env.Admin

	key, err := c.IssueKey(ctx, client.IssueParams{Vendor: "stripe", DailyUSDCap: "25", ExpiresIn: "1h",
		AllowedEndpoints: []string{"POST /v1/payment_intents"}, AgentRunLabel: "run:client:1", AgentName: "billing"},
		client.IdempotencyKey("client-test-1"))
	if err != nil || !strings.HasPrefix(key.VaultKey, "kbvk") {
		t.Fatalf("issue: %v %+v", err, key)
	}
	r := env.Do(t, key.VaultKey, "POST", "/v1/payment_intents", "application/x-www-form-urlencoded", "amount=1250&currency=usd")
	if r.Status != http.StatusOK {
		t.Fatalf("proxied call: %d %s", r.Status, r.Body)
	}
	// What the key records (12.50, below) is what the vendor charged.
	if got := env.Stripe.ChargedMinor()["usd"]; got != 1250 {
		t.Fatalf("the sandbox Stripe charged %d cents, want 1250", got)
	}

	var webhookID string
	calls := map[string]func(t *testing.T){
		"issueKey": func(t *testing.T) {
			var replayed bool
			again, err := c.IssueKey(ctx, client.IssueParams{Vendor: "stripe", DailyUSDCap: "25", ExpiresIn: "1h",
				AllowedEndpoints: []string{"POST /v1/payment_intents"}, AgentRunLabel: "run:client:1", AgentName: "billing"},
				client.IdempotencyKey("client-test-1"), client.Replayed(&replayed))
			// Without KEYBRAKE_SECRETS_KEY the retry cannot be shown the
			// secret again, but it never makes a second key.
			var ce *client.Error
			if err == nil {
				if again.ID != key.ID || !replayed {
					t.Errorf("a retried issue made %s (replayed %v), want %s replayed", again.ID, replayed, key.ID)
				}
			} else if !errors.As(err, &ce) || ce.Code != "idempotency_replay_unavailable" || !strings.Contains(ce.Message, key.ID) {
				t.Errorf("retried issue: %v", err)
			}
		},
		"getKey": func(t *testing.T) {
			k, err := c.GetKey(ctx, key.ID)
			if err != nil || k.SpentUSD == nil || k.SpentUSD.String() != "12.50" || *k.Calls != 1 {
				t.Errorf("get key: %v %+v", err, k)
			}
		},
		"listKeys": func(t *testing.T) {
			p, err := c.ListKeys(ctx, client.ListKeysParams{AgentRunLabel: "run:client:1", Status: "active", Limit: 10})
			if err != nil || len(p.Data) != 1 || p.Data[0].ID != key.ID {
				t.Errorf("list keys: %v %+v", err, p)
			}
		},
		"listCalls": func(t *testing.T) {
			p, err := c.ListCalls(ctx, client.ListCallsParams{KeyID: key.ID, Outcome: "forwarded", Limit: 5})
			if err != nil || len(p.Data) != 1 || p.Data[0].Actual.String() != "12.50" {
				t.Fatalf("list calls: %v %+v", err, p)
			}
			for _, format := range []string{"csv", "ndjson"} {
				var buf bytes.Buffer
				n, err := c.ExportCalls(ctx, client.ListCallsParams{KeyID: key.ID}, format, &buf, nil)
				if err != nil || n != 1 || !strings.Contains(buf.String(), "12.50") {
					t.Errorf("export %s: %d rows, %v: %s", format, n, err, buf.String())
				}
			}
		},
		"runSummary": func(t *testing.T) {
			s, err := c.RunSummary(ctx, "run:client:1")
			if err != nil || s.Calls != 1 || s.Spent.String() != "12.50" {
				t.Errorf("run summary: %v %+v", err, s)
			}
		},
		"reportRuns": func(t *testing.T) {
			r, err := c.ReportRuns(ctx, client.ReportParams{LabelPrefix: "run:client"})
			if err != nil || len(r.Data) != 1 || r.Data[0].Spent.String() != "12.50" {
				t.Errorf("runs report: %v %+v", err, r)
			}
			reportCSV(t, c, "runs", "12.50")
		},
		"reportAgents": func(t *testing.T) {
			r, err := c.ReportAgents(ctx, client.ReportParams{})
			if err != nil || len(r.Data) != 1 || r.Data[0]["agent_name"] != "billing" {
				t.Errorf("agents report: %v %+v", err, r)
			}
			reportCSV(t, c, "agents", "billing")
		},
		"reportDaily": func(t *testing.T) {
			r, err := c.ReportDaily(ctx, client.ReportParams{Vendor: "stripe"})
			if err != nil || len(r.Rows) != 1 || r.Rows[0].Spent.String() != "12.50" {
				t.Errorf("daily report: %v %+v", err, r)
			}
			reportCSV(t, c, "daily", "12.50")
		},
		"reportAnomalies": func(t *testing.T) {
			r, err := c.ReportAnomalies(ctx, client.ReportParams{Factor: "2.5", MinUSD: "1"})
			if err != nil || len(r.Data) != 1 || r.Data[0].Baseline != nil || r.Factor.String() != "2.50" { // a first run has no baseline yet
				t.Errorf("anomalies report: %v %+v", err, r)
			}
			reportCSV(t, c, "anomalies", "baseline_usd")
		},
		"createToken": func(t *testing.T) {
			tok, err := c.CreateToken(ctx, client.TokenParams{Name: "client-test", MaxDailyUSD: "10", Vendors: []string{"stripe"},
				Endpoints: []string{"POST /v1/payment_intents"}, MaxExpiresIn: "1h"})
			if err != nil || !strings.HasPrefix(tok.Token, "kbit") {
				t.Fatalf("create token: %v %+v", err, tok)
			}
		},
		"listTokens": func(t *testing.T) {
			p, err := c.ListTokens(ctx)
			if err != nil || len(p.Data) != 1 || p.Data[0].Token != "" {
				t.Errorf("list tokens: %v %+v", err, p)
			}
		},
		"revokeToken": func(t *testing.T) {
			p, _ := c.ListTokens(ctx)
			tok, err := c.RevokeToken(ctx, p.Data[0].ID)
			if err != nil || tok.Status != "revoked" {
				t.Errorf("revoke token: %v %+v", err, tok)
			}
		},
		"createWebhook": func(t *testing.T) {
			w, err := c.CreateWebhook(ctx, client.WebhookParams{URL: "http://127.0.0.1:9/hook", Events: []string{"key.revoked"}})
			if err != nil || !strings.HasPrefix(w.Secret, "whsec_") {
				t.Fatalf("create webhook: %v %+v", err, w)
			}
			webhookID = w.ID
		},
		"listWebhooks": func(t *testing.T) {
			p, err := c.ListWebhooks(ctx)
			if err != nil || len(p.Data) != 1 || p.Data[0].Secret != "" {
				t.Errorf("list webhooks: %v %+v", err, p)
			}
		},
		"listDeliveries": func(t *testing.T) {
			p, err := c.ListDeliveries(ctx, webhookID, 10, "")
			if err != nil || p.Data == nil {
				t.Errorf("list deliveries: %v %+v", err, p)
			}
		},
		"revokeKey": func(t *testing.T) {
			rv, err := c.RevokeKey(ctx, key.ID)
			if err != nil || rv.Status != "revoked" {
				t.Errorf("revoke key: %v %+v", err, rv)
			}
		},
		"deleteWebhook": func(t *testing.T) {
			if err := c.DeleteWebhook(ctx, webhookID); err != nil {
				t.Errorf("delete webhook: %v", err)
			}
		},
		"health": func(t *testing.T) {
			h, err := c.Health(ctx)
			if err != nil || h.Status != "ok" || h.Sandbox {
				t.Errorf("health: %v %+v", err, h)
			}
		},
		"openAPI": func(t *testing.T) {
			doc, err := c.OpenAPI(ctx)
			if err != nil || !json.Valid(doc) {
				t.Errorf("openapi: %v", err)
			}
		},
	}
	// In an order where each call finds what the one before it made.
	order := []string{"issueKey", "getKey", "listKeys", "listCalls", "runSummary", "reportRuns", "reportAgents", "reportDaily",
		"reportAnomalies", "createToken", "listTokens", "revokeToken", "createWebhook", "listWebhooks", "revokeKey",
		"listDeliveries", "deleteWebhook", "health", "openAPI"}
	if len(order) != len(calls) {
		t.Fatalf("order has %d calls, the table %d", len(order), len(calls))
	}

	contract, err := kbtest.LoadContract(kbtest.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	ops := 0
	for _, item := range contract.Doc.Paths.Map() {
		for _, op := range item.Operations() {
			ops++
			if calls[op.OperationID] == nil {
				missing = append(missing, op.OperationID)
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("the spec has operations the client has no call for: %v", missing)
	}
	if ops != len(calls) {
		t.Fatalf("the spec has %d operations, the table %d calls", ops, len(calls))
	}
	for _, name := range order {
		t.Run(name, calls[name])
	}
	if got := env.Stripe.Requests(); got != 1 {
		t.Errorf("the sandbox Stripe received %d calls, want only the one made", got)
	}
}

func reportCSV(t *testing.T, c *client.Client, name, want string) {
	t.Helper()
	var buf bytes.Buffer
	if err := c.ReportCSV(context.Background(), name, client.ReportParams{}, &buf); err != nil || !strings.Contains(buf.String(), want) {
		t.Errorf("%s report CSV: %v: %q", name, err, buf.String())
	}
}
