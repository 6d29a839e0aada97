package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/server"
)

func resendJudge(t testing.TB, env *kbtest.Env, f *kbtest.Fakes, k *client.Key) *judge {
	return &judge{t: t, env: env, key: k, cap: k.DailyUSDCap, received: f.Resend.Received,
		moved: func() keybrake.Micros { return keybrake.Micros(f.Resend.Moved()) }}
}

// An explicit Resend POST /api-keys rule returned a full-access key: API
// keys and webhooks are forbidden; broadcasts wait for a price.
func TestResendCatalogue(t *testing.T) {
	env, f := kbtest.StartWithFakes(t, nil)
	for _, rule := range []string{"POST /api-keys", "GET /api-keys", "DELETE /api-keys/*", "api_keys.create", "POST /webhooks", "GET /webhooks/*"} {
		issueRefused(t, env, client.IssueParams{Vendor: "resend", AllowedEndpoints: []string{rule}}, "forbidden")
	}
	k := env.Issue(t, client.IssueParams{Vendor: "resend", DailyUSDCap: "0.01", AllowedEndpoints: []string{"emails.send", "emails.batch",
		"POST /broadcasts", "POST /broadcasts/*/send"}})
	j := resendJudge(t, env, f, k)
	j.send("POST", "/emails", "application/json", `{"from":"a@x.com","to":["b@x.com","c@x.com"],"subject":"s"}`).ok(t)
	j.send("POST", "/emails/batch", "application/json", `[{"from":"a@x.com","to":"b@x.com","subject":"s"},{"from":"a@x.com","to":"c@x.com","cc":"d@x.com","subject":"s"}]`).ok(t)
	j.send("POST", "/broadcasts/b_1/send", "application/json", `{}`).refused(t, "unpriceable_request")
	j.send("POST", "/broadcasts", "application/json", `{"segment_id":"s","from":"a@x.com","subject":"s","send":true}`).refused(t, "unpriceable_request")
	j.send("POST", "/broadcasts", "application/json", `{"segment_id":"s","from":"a@x.com","subject":"s"}`).ok(t)
	j.send("POST", "/api-keys", "application/json", `{"name":"x"}`).refused(t, "operation_forbidden")
	if got := getKey(t, env, k.ID).SpentUSD.String(); got != "0.0045" {
		t.Fatalf("spent %s, want 5 recipients", got)
	}

	// Priced by the operator, a broadcast is sent at that price.
	env, f = kbtest.StartWithFakes(t, func(c *server.Config) {
		c.Vendors.Prices = pricingFile(t, "operations:\n  resend.broadcasts.send: {fixed: \"2.00\"}\n")
	})
	k = env.Issue(t, client.IssueParams{Vendor: "resend", DailyUSDCap: "3", AllowedEndpoints: []string{"broadcasts.send"}})
	j = resendJudge(t, env, f, k)
	j.send("POST", "/broadcasts/b_1/send", "application/json", `{}`).ok(t)
	j.send("POST", "/broadcasts/b_2/send", "application/json", `{}`).refused(t, "cap_exhausted")
}

// A key issued before the catalogue with a wildcard still cannot mint a
// Resend key.
func TestResendOldKeyCannotMintKeys(t *testing.T) {
	env, f := kbtest.StartWithFakes(t, nil)
	rules, _ := keybrake.ParseRules([]string{"POST /api-keys", "GET /webhooks"})
	secret := keybrake.NewVaultKey()
	created, err := env.Server.Store().CreateKey(context.Background(), &keybrake.Key{ID: keybrake.NewID("vk_"), Vendor: "resend",
		DailyCap: keybrake.MicrosPerUSD, Rules: rules}, keybrake.HashSecret(secret), 3600e9)
	if err != nil {
		t.Fatal(err)
	}
	j := resendJudge(t, env, f, &client.Key{ID: created.ID, VaultKey: secret, DailyUSDCap: created.DailyCap})
	v := j.send("POST", "/api-keys", "application/json", `{"name":"agent"}`).refused(t, "operation_forbidden")
	if strings.Contains(string(v.r.Body), "re_SANDBOX") {
		t.Fatal("a key reached the agent")
	}
	j.send("GET", "/webhooks", "", "").refused(t, "operation_forbidden")
	// Its grants show the forbidden operations for what they are.
	k := getKey(t, env, created.ID)
	if len(k.AllowedOperations) != 2 || k.AllowedOperations[0].Operations[0].PriceModel != keybrake.ModelForbidden {
		t.Fatalf("grants %+v", k.AllowedOperations)
	}
}

// Issuance resolves every rule against the catalogue and says what each
// grants, in the 201 answer and on GET.
func TestIssueShowsWhatRulesGrant(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{AllowedEndpoints: []string{"POST /v1/payment_intents/*", "stripe.charges.create", "GET /v1/payment_intents/*"}})
	if strings.Join(k.AllowedEndpoints, ",") != "POST /v1/payment_intents/*,charges.create,GET /v1/payment_intents/*" {
		t.Fatalf("allowed endpoints %v", k.AllowedEndpoints)
	}
	want := map[string][]string{
		"POST /v1/payment_intents/*": {"payment_intents.update POST /v1/payment_intents/* body"},
		"charges.create":             {"charges.create POST /v1/charges body"},
		"GET /v1/payment_intents/*":  {"payment_intents.retrieve GET /v1/payment_intents/* free", "payment_intents.search GET /v1/payment_intents/search free"},
	}
	check := func(k *client.Key) {
		t.Helper()
		if len(k.AllowedOperations) != 3 {
			t.Fatalf("allowed operations %+v", k.AllowedOperations)
		}
		for _, g := range k.AllowedOperations {
			var got []string
			for _, op := range g.Operations {
				got = append(got, op.Operation+" "+op.Method+" "+op.Path+" "+string(op.PriceModel))
			}
			if strings.Join(got, ";") != strings.Join(want[g.Rule], ";") {
				t.Errorf("%s grants %v, want %v", g.Rule, got, want[g.Rule])
			}
		}
	}
	check(k)
	check(getKey(t, env, k.ID))
	page, err := env.Admin.ListKeys(context.Background(), client.ListKeysParams{})
	if err != nil || len(page.Data) != 1 {
		t.Fatal(err)
	}
	check(&page.Data[0])

	// The raw answer, as an orchestrator reads it.
	req, _ := http.NewRequest("GET", env.URL+"/vault/keys/"+k.ID, nil)
	req.Header.Set("Authorization", "Bearer "+kbtest.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	first := raw["allowed_operations"].([]any)[0].(map[string]any)
	if first["rule"] != "POST /v1/payment_intents/*" || first["operations"].([]any)[0].(map[string]any)["price_model"] != "body" {
		t.Fatalf("allowed_operations JSON: %v", raw["allowed_operations"])
	}
}

// An issuer token's endpoints may name operations too; a key's rule is
// within the token when every operation it grants is.
func TestIssuerTokenCoversOperations(t *testing.T) {
	env := kbtest.Start(t)
	tok, err := env.Admin.CreateToken(context.Background(), client.TokenParams{Name: "sfn", MaxDailyUSD: "100", Vendors: []string{"stripe"},
		Endpoints: []string{"payment_intents.create", "POST /v1/payment_intents/*/confirm"}, MaxExpiresIn: "2h"})
	if err != nil {
		t.Fatal(err)
	}
	issuer := client.New(env.URL, tok.Token)
	for _, rules := range [][]string{{"POST /v1/payment_intents"}, {"payment_intents.create"}, {"payment_intents.confirm"}, {"POST /v1/payment_intents/pi_1/confirm"}} {
		if _, err := issuer.IssueKey(context.Background(), client.IssueParams{Vendor: "stripe", DailyUSDCap: "10", ExpiresIn: "1h", AllowedEndpoints: rules}); err != nil {
			t.Errorf("%v within the token: %v", rules, err)
		}
	}
	for _, rules := range [][]string{{"POST /v1/payment_intents/*"}, {"payment_intents.capture"}, {"POST /v1/refunds"}} {
		_, err := issuer.IssueKey(context.Background(), client.IssueParams{Vendor: "stripe", DailyUSDCap: "10", ExpiresIn: "1h", AllowedEndpoints: rules})
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != keybrake.CodeIssuerLimitExceeded || ce.Field != "endpoints" {
			t.Errorf("%v outside the token: %v", rules, err)
		}
	}
	_, err = env.Admin.CreateToken(context.Background(), client.TokenParams{Name: "typo", MaxDailyUSD: "1", Vendors: []string{"stripe"},
		Endpoints: []string{"payment_intent.create"}, MaxExpiresIn: "1h"})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Field != "endpoints" {
		t.Errorf("a token naming no operation: %v", err)
	}
}
