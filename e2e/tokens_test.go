package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
)

// A scoped issuer token (what an IssueVaultKey Lambda holds) can issue keys
// only within its ceilings, read and revoke only its own keys, and nothing
// else.
func TestIssuerTokens(t *testing.T) {
	env := kbtest.Start(t)
	tok, err := env.Admin.CreateToken(t.Context(), client.TokenParams{Name: "sfn-billing", MaxDailyUSD: "500",
		Vendors: []string{"stripe"}, Endpoints: []string{"POST /v1/payment_intents", "POST /v1/payment_intents/*/capture"}, MaxExpiresIn: "6h"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok.Token, "kbit") || tok.Status != "active" {
		t.Fatalf("created token: %+v", tok)
	}
	issuer := client.New(env.URL, tok.Token)
	params := func(mod func(*client.IssueParams)) client.IssueParams {
		p := client.IssueParams{Vendor: "stripe", DailyUSDCap: "400", ExpiresIn: "2h", AllowedEndpoints: []string{"POST /v1/payment_intents"}, AgentRunLabel: "exec-1"}
		if mod != nil {
			mod(&p)
		}
		return p
	}
	own, err := issuer.IssueKey(t.Context(), params(nil))
	if err != nil {
		t.Fatalf("within the ceilings: %v", err)
	}
	if own.IssuerID != tok.ID {
		t.Fatalf("key issuer_id %q, want %s", own.IssuerID, tok.ID)
	}
	if r := env.Do(t, own.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd"); r.Status != 200 {
		t.Fatalf("a key issued by a token works: %d %s", r.Status, r.Body)
	}
	if _, err := issuer.IssueKey(t.Context(), params(func(p *client.IssueParams) {
		p.AllowedEndpoints = []string{"POST /v1/payment_intents/pi_123/capture"} // covered by the * ceiling
	})); err != nil {
		t.Fatalf("an endpoint inside a wildcard ceiling: %v", err)
	}

	for _, c := range []struct {
		mod   func(*client.IssueParams)
		field string
	}{
		{func(p *client.IssueParams) { p.DailyUSDCap = "500.01" }, "max_daily_usd_cap"},
		{func(p *client.IssueParams) { p.ExpiresIn = "7h" }, "max_expires_in"},
		{func(p *client.IssueParams) { p.AllowedEndpoints = []string{"POST /v1/refunds"} }, "endpoints"},
		{func(p *client.IssueParams) { p.AllowedEndpoints = []string{"POST /v1/payment_intents/*"} }, "endpoints"},
		{func(p *client.IssueParams) {
			p.AllowedEndpoints = []string{"POST /v1/payment_intents", "GET /v1/customers/*"}
		}, "endpoints"},
	} {
		_, err := issuer.IssueKey(t.Context(), params(c.mod))
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != 403 || ce.Code != "issuer_limit_exceeded" || ce.Field != c.field {
			t.Fatalf("above the %s ceiling: %v", c.field, err)
		}
	}

	adminKey := env.Issue(t, client.IssueParams{})
	var ce *client.Error
	if _, err := issuer.GetKey(t.Context(), adminKey.ID); !errors.As(err, &ce) || ce.Status != 404 {
		t.Fatalf("reading another's key: %v", err)
	}
	if _, err := issuer.RevokeKey(t.Context(), adminKey.ID); !errors.As(err, &ce) || ce.Status != 404 {
		t.Fatalf("revoking another's key: %v", err)
	}
	if v := getKey(t, env, adminKey.ID); v.Status != "active" {
		t.Fatal("an issuer token revoked a key it did not issue")
	}
	page, err := issuer.ListKeys(t.Context(), client.ListKeysParams{})
	if err != nil || len(page.Data) != 2 {
		t.Fatalf("an issuer lists only its own keys: %v, %v", page, err)
	}
	for _, k := range page.Data {
		if k.IssuerID != tok.ID {
			t.Fatalf("listed a key of another issuer: %+v", k)
		}
	}
	if _, err := issuer.ListCalls(t.Context(), client.ListCallsParams{}); !errors.As(err, &ce) || ce.Status != 403 || ce.Code != "forbidden" {
		t.Fatalf("issuer reading the audit log: %v", err)
	}
	if _, err := issuer.RunSummary(t.Context(), "exec-1"); !errors.As(err, &ce) || ce.Status != 403 {
		t.Fatalf("issuer reading a run summary: %v", err)
	}
	if _, err := issuer.CreateToken(t.Context(), client.TokenParams{Name: "x", MaxDailyUSD: "1", Vendors: []string{"stripe"}, Endpoints: []string{"POST /v1/payment_intents"}}); !errors.As(err, &ce) || ce.Status != 403 {
		t.Fatalf("issuer creating a token: %v", err)
	}
	if _, err := issuer.ListTokens(t.Context()); !errors.As(err, &ce) || ce.Status != 403 {
		t.Fatalf("issuer listing tokens: %v", err)
	}

	// Revoke its own key: the next call is refused.
	if _, err := issuer.RevokeKey(t.Context(), own.ID); err != nil {
		t.Fatal(err)
	}
	before := env.Stripe.Requests()
	expectDenied(t, env.Stripe, before, env.Do(t, own.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd"), 401, "key_revoked")

	// Revoking the token stops it at once; keys it issued keep working.
	second, err := issuer.IssueKey(t.Context(), params(nil))
	if err != nil {
		t.Fatal(err)
	}
	rt, err := env.Admin.RevokeToken(t.Context(), tok.ID)
	if err != nil || rt.Status != "revoked" || rt.RevokedAt == nil {
		t.Fatalf("revoke token: %+v %v", rt, err)
	}
	if _, err := issuer.IssueKey(t.Context(), params(nil)); !errors.As(err, &ce) || ce.Status != 401 {
		t.Fatalf("a revoked token still works: %v", err)
	}
	if r := env.Do(t, second.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd"); r.Status != 200 {
		t.Fatalf("a key of a revoked token: %d", r.Status)
	}
	list, err := env.Admin.ListTokens(t.Context())
	if err != nil || len(list.Data) != 1 || list.Data[0].Token != "" || list.Data[0].Status != "revoked" {
		t.Fatalf("token list: %+v %v", list, err)
	}
	// Stored hashed: the secret is nowhere in the database files.
	files, _ := filepath.Glob(env.DB + "*")
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if strings.Contains(string(b), tok.Token) {
			t.Fatalf("the token secret is stored in %s", f)
		}
	}
}

func TestCreateTokenValidation(t *testing.T) {
	env := kbtest.Start(t)
	for _, c := range []struct {
		p     client.TokenParams
		field string
	}{
		{client.TokenParams{MaxDailyUSD: "5", Vendors: []string{"stripe"}, Endpoints: []string{"POST /v1/payment_intents"}, MaxExpiresIn: "1h"}, "name"},
		{client.TokenParams{Name: "a", Vendors: []string{"stripe"}, Endpoints: []string{"POST /v1/payment_intents"}, MaxExpiresIn: "1h"}, "max_daily_usd_cap"},
		{client.TokenParams{Name: "a", MaxDailyUSD: "5", Endpoints: []string{"POST /v1/payment_intents"}, MaxExpiresIn: "1h"}, "vendors"},
		{client.TokenParams{Name: "a", MaxDailyUSD: "5", Vendors: []string{"paypal"}, Endpoints: []string{"POST /v1/payment_intents"}, MaxExpiresIn: "1h"}, "vendors"},
		{client.TokenParams{Name: "a", MaxDailyUSD: "5", Vendors: []string{"stripe"}, MaxExpiresIn: "1h"}, "endpoints"},
		{client.TokenParams{Name: "a", MaxDailyUSD: "5", Vendors: []string{"stripe"}, Endpoints: []string{"POST /emails"}, MaxExpiresIn: "1h"}, "endpoints"},
		{client.TokenParams{Name: "a", MaxDailyUSD: "5", Vendors: []string{"stripe"}, Endpoints: []string{"POST /v1/payment_intents"}, MaxExpiresIn: "48h"}, "max_expires_in"},
	} {
		_, err := env.Admin.CreateToken(t.Context(), c.p)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != 400 || ce.Field != c.field {
			t.Errorf("%+v: %v, want 400 field %s", c.p, err, c.field)
		}
	}
}
