package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/internal/sandbox"
	"github.com/keybrake/keybrake/pricing"
	"github.com/keybrake/keybrake/server"
)

// oldKey stores a key the way keys issued before the catalogue were: its
// rules are not checked at issue, only at call time.
func oldKey(t testing.TB, env *kbtest.Env, vendor, cap string, rules ...string) *client.Key {
	t.Helper()
	rs, err := keybrake.ParseRules(rules)
	if err != nil {
		t.Fatal(err)
	}
	c, err := keybrake.ParseUSD(cap)
	if err != nil {
		t.Fatal(err)
	}
	secret := keybrake.NewVaultKey()
	k, err := env.Server.Store().CreateKey(context.Background(), &keybrake.Key{ID: keybrake.NewID("vk_"), Vendor: vendor,
		DailyCap: c, Rules: rs}, keybrake.HashSecret(secret), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &client.Key{ID: k.ID, VaultKey: secret, DailyUSDCap: k.DailyCap}
}

// Every forbidden operation of every vendor, walked from the catalogue
// itself: refused at issuance by name and by path, and refused at call time,
// with nothing sent, for a key whose rules admit it literally.
func TestEveryForbiddenOperationIsNeverForwarded(t *testing.T) {
	env, f := kbtest.StartWithFakes(t, nil)
	received := map[string]func() []sandbox.Received{"stripe": env.Stripe.Received, "twilio": f.Twilio.Received, "resend": f.Resend.Received}
	n := 0
	vendors, err := server.BuildVendors(server.VendorConfig{}, pricing.Default()) // the catalogues the server runs
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vendors {
		for _, op := range v.Catalog().Operations() {
			if op.Model != keybrake.ModelForbidden {
				continue
			}
			n++
			issueRefused(t, env, client.IssueParams{Vendor: v.Name(), AllowedEndpoints: []string{op.Name}}, op.Name)
			issueRefused(t, env, client.IssueParams{Vendor: v.Name(), AllowedEndpoints: []string{op.Method + " " + op.Path()}}, op.Name)
			path := strings.ReplaceAll(op.Path(), "*", "x1")
			k := oldKey(t, env, v.Name(), "100", op.Method+" "+path, op.Name)
			j := &judge{t: t, env: env, key: k, cap: k.DailyUSDCap, received: received[v.Name()], moved: func() keybrake.Micros { return 0 }}
			body, ct := "", ""
			if op.Method != "GET" && op.Method != "DELETE" {
				body, ct = "a=1", formCT
				if v.Name() == "resend" {
					body, ct = `{"name":"x"}`, "application/json"
				}
			}
			j.send(op.Method, path, ct, body).refused(t, "operation_forbidden")
		}
	}
	if n < 50 {
		t.Fatalf("only %d forbidden operations walked", n)
	}
}

// The Stripe operations on an existing PaymentIntent not covered elsewhere.
func TestOtherPaymentIntentExposures(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "5", AllowedEndpoints: []string{"payment_intents.apply_customer_balance",
		"payment_intents.verify_microdeposits", "treasury.outbound_transfers.create"}})
	j := stripeJudge(t, env, k)
	a := env.Stripe.AddPaymentIntent(200, "usd", "")
	b := env.Stripe.AddPaymentIntent(900, "usd", "")
	j.send("POST", "/v1/payment_intents/"+a+"/apply_customer_balance", formCT, "amount=200").ok(t)
	j.send("POST", "/v1/payment_intents/"+b+"/verify_microdeposits", formCT, "amounts[0]=32&amounts[1]=45").refused(t, "cap_exhausted")
	j.send("POST", "/v1/treasury/outbound_transfers", formCT, "amount=250&currency=usd&financial_account=fa_1").ok(t)
	if got := getKey(t, env, k.ID).SpentUSD.String(); got != "4.50" {
		t.Fatalf("spent %s", got)
	}
}
