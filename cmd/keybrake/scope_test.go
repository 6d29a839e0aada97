package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/keybrake/keybrake/internal/kbtest"
)

// The scope, rate-limit and idempotency-scope flags of key issue and token
// create reach the key, are shown by key show, and confine its calls.
func TestScopeFlags(t *testing.T) {
	env := kbtest.Start(t)
	t.Setenv("KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken)
	t.Setenv("KEYBRAKE_URL", env.URL)

	code, out, errOut := cli(t, "--json", "key", "issue", "--daily-usd-cap", "50", "--endpoint", "payment_intents.create",
		"--stripe-customer", "cus_1", "--stripe-customer", "cus_2", "--stripe-account", "acct_A",
		"--max-calls-per-minute", "10", "--idempotency-scope", "msg-1")
	var k struct {
		ID                string   `json:"key_id"`
		VaultKey          string   `json:"vault_key"`
		StripeCustomers   []string `json:"stripe_customers"`
		StripeAccounts    []string `json:"stripe_accounts"`
		MaxCallsPerMinute int      `json:"max_calls_per_minute"`
		IdempotencyScope  string   `json:"idempotency_scope"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &k) != nil || strings.Join(k.StripeCustomers, ",") != "cus_1,cus_2" ||
		strings.Join(k.StripeAccounts, ",") != "acct_A" || k.MaxCallsPerMinute != 10 || k.IdempotencyScope != "msg-1" {
		t.Fatalf("key issue: %d %s %s", code, out, errOut)
	}
	code, out, _ = cli(t, "key", "show", k.ID)
	for _, want := range []string{"stripe_customers", "cus_1, cus_2", "stripe_accounts", "acct_A", "max_calls_per_minute", "10", "idempotency_scope", "msg-1"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("key show lacks %q: %d\n%s", want, code, out)
		}
	}
	before := env.Stripe.Requests()
	r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", "application/x-www-form-urlencoded", "amount=100&currency=usd&customer=cus_3")
	if r.Status != 403 || !strings.Contains(string(r.Body), "scope_violation") || env.Stripe.Requests() != before {
		t.Fatalf("a customer outside the scope: %d %s", r.Status, r.Body)
	}
	code, _, errOut = cli(t, "key", "issue", "--daily-usd-cap", "5", "--endpoint", "payment_intents.create", "--stripe-customer", "acct_1")
	if code == 0 || !strings.Contains(errOut, "stripe_customers") {
		t.Fatalf("a bad customer id: %d %s", code, errOut)
	}

	code, out, errOut = cli(t, "token", "create", "--name", "sfn", "--max-daily-usd-cap", "10", "--vendors", "stripe",
		"--endpoints", "POST /v1/payment_intents", "--max-outstanding-usd", "20", "--stripe-customer", "cus_1")
	if code != 0 || !strings.Contains(out, "max_outstanding_usd") || !strings.Contains(out, "$20.00") || !strings.Contains(out, "cus_1") {
		t.Fatalf("token create: %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = cli(t, "serve", "--help")
	if code != 0 || !strings.Contains(out, "--audit-retention") {
		t.Fatalf("serve --help: %d\n%s", code, out)
	}
}
