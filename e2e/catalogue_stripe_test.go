package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/internal/sandbox"
	"github.com/keybrake/keybrake/server"
)

// The issue's first finding, as an agent holding a key would try it: rules
// that let an agent "manage payment intents", a $5 daily cap. Creating
// small, updating the amount up and confirming must not move more than the
// key records.
func TestCreateSmallUpdateUpConfirm(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "5",
		AllowedEndpoints: []string{"POST /v1/payment_intents", "POST /v1/payment_intents/*", "POST /v1/payment_intents/*/confirm"}})
	j := stripeJudge(t, env, k)

	j.send("POST", "/v1/payment_intents", formCT, "amount=100&currency=usd").ok(t)
	id := env.Stripe.Intents()[0].ID
	// Raising the amount without naming its currency is refused, so two
	// updates cannot each be priced against the other's stale half.
	j.send("POST", "/v1/payment_intents/"+id, formCT, "amount=99999900").refused(t, "unpriceable_request")
	// Naming both: the update reserves what it adds, and the cap stops it.
	j.send("POST", "/v1/payment_intents/"+id, formCT, "amount=99999900&currency=usd").refused(t, "cap_exhausted")
	// Confirming what was created through the key reserves nothing more.
	v := j.send("POST", "/v1/payment_intents/"+id+"/confirm", formCT, "payment_method=pm_card_visa").ok(t)
	if v.lookups != 1 {
		t.Fatalf("confirm read the PaymentIntent %d times, want once", v.lookups)
	}
	if got := env.Stripe.MovedMinor()["usd"]; got != 100 {
		t.Fatalf("the vendor moved %d cents, want 100", got)
	}
	if k := getKey(t, env, k.ID); k.SpentUSD.String() != "1.00" {
		t.Fatalf("spent %s, want 1.00: the PaymentIntent was counted once", k.SpentUSD)
	}
	// The audit rows name the operations, and the confirm carries its object.
	rows := calls(t, env, client.ListCallsParams{KeyID: k.ID})
	if rows[0].Operation != "payment_intents.confirm" || rows[0].ObjectID != id || rows[0].Actual != 0 {
		t.Fatalf("confirm row %+v", *rows[0].Call)
	}
}

// Updates up and down, then a confirm: the key counts the highest amount the
// PaymentIntent reached through it, which is at least what the confirm moves.
func TestExposureFollowsUpdates(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "10",
		AllowedEndpoints: []string{"payment_intents.create", "payment_intents.update", "payment_intents.confirm"}})
	j := stripeJudge(t, env, k)
	j.send("POST", "/v1/payment_intents", "application/json", `{"amount":100,"currency":"usd"}`).ok(t)
	id := env.Stripe.Intents()[0].ID
	for _, amount := range []int{400, 200, 450, 100} {
		j.send("POST", "/v1/payment_intents/"+id, "application/json", fmt.Sprintf(`{"amount":%d,"currency":"usd"}`, amount)).ok(t)
	}
	j.send("POST", "/v1/payment_intents/"+id+"/confirm", formCT, "").ok(t)
	if k := getKey(t, env, k.ID); k.SpentUSD.String() != "4.50" {
		t.Fatalf("spent %s, want 4.50 (the highest amount set)", k.SpentUSD)
	}
	// A metadata update is free and does not touch the exposure.
	j.send("POST", "/v1/payment_intents/"+id, formCT, "metadata[order]=A-1").ok(t)
	// A failed update releases what it reserved: the vendor refuses to
	// change a confirmed PaymentIntent's amount.
	r := j.send("POST", "/v1/payment_intents/"+id, formCT, "amount=900&currency=usd")
	if !r.forwarded || r.r.Status != 400 {
		t.Fatalf("update after confirm: %d %s", r.r.Status, r.r.Body)
	}
	if k := getKey(t, env, k.ID); k.SpentUSD.String() != "4.50" || k.ReservedUSD.String() != "0.00" {
		t.Fatalf("spent %s reserved %s after a refused update", k.SpentUSD, k.ReservedUSD)
	}
}

// Many concurrent updates of one PaymentIntent, then a confirm: whatever
// order they land in, the key has counted at least what is confirmed.
func TestConcurrentUpdatesAreCounted(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "1000",
		AllowedEndpoints: []string{"payment_intents.create", "payment_intents.update", "payment_intents.confirm"}})
	j := stripeJudge(t, env, k)
	j.send("POST", "/v1/payment_intents", formCT, "amount=100&currency=usd").ok(t)
	id := env.Stripe.Intents()[0].ID
	var wg sync.WaitGroup
	for i := 1; i <= 24; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env.Do(t, k.VaultKey, "POST", "/v1/payment_intents/"+id, formCT, fmt.Sprintf("amount=%d&currency=usd", 100*i))
		}()
	}
	wg.Wait()
	j.send("POST", "/v1/payment_intents/"+id+"/confirm", formCT, "").ok(t)
	if got := getKey(t, env, k.ID).SpentUSD.String(); got != "24.00" {
		t.Fatalf("spent %s, want 24.00: the most any update set", got)
	}
}

// A PaymentIntent someone else created reserves its whole amount when the
// agent confirms it; one above the cap is refused (after reading it).
func TestConfirmSomeoneElsesPaymentIntent(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "5", AllowedEndpoints: []string{"POST /v1/payment_intents/*/confirm"}})
	j := stripeJudge(t, env, k)
	small := env.Stripe.AddPaymentIntent(250, "usd", "")
	big := env.Stripe.AddPaymentIntent(99999900, "usd", "")
	euro := env.Stripe.AddPaymentIntent(100, "eur", "")
	j.send("POST", "/v1/payment_intents/"+small+"/confirm", formCT, "").ok(t)
	v := j.send("POST", "/v1/payment_intents/"+big+"/confirm", formCT, "").refused(t, "cap_exhausted")
	if v.lookups != 1 {
		t.Fatalf("lookups %d", v.lookups)
	}
	j.send("POST", "/v1/payment_intents/"+euro+"/confirm", formCT, "").ok(t)
	j.send("POST", "/v1/payment_intents/pi_nobody/confirm", formCT, "").refused(t, "unpriceable_request")
	if got := getKey(t, env, k.ID).SpentUSD.String(); got != "3.60" {
		t.Fatalf("spent %s, want 3.60 ($2.50 + €1 at 1.10)", got)
	}
}

// Manual capture: authorize through the key, increment, capture; and the
// capture of someone else's authorization.
func TestCaptureAndIncrement(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "10", AllowedEndpoints: []string{"payment_intents.create",
		"payment_intents.confirm", "payment_intents.increment_authorization", "payment_intents.capture"}})
	j := stripeJudge(t, env, k)
	j.send("POST", "/v1/payment_intents", formCT, "amount=100&currency=usd&capture_method=manual&confirm=true").ok(t)
	id := env.Stripe.Intents()[0].ID
	j.send("POST", "/v1/payment_intents/"+id+"/increment_authorization", formCT, "amount=400").ok(t)
	j.send("POST", "/v1/payment_intents/"+id+"/increment_authorization", formCT, "amount=99999900").refused(t, "cap_exhausted")
	j.send("POST", "/v1/payment_intents/"+id+"/capture", formCT, "").ok(t)
	if got := getKey(t, env, k.ID).SpentUSD.String(); got != "4.00" {
		t.Fatalf("spent %s, want 4.00", got)
	}
	other := env.Stripe.AddPaymentIntent(300, "usd", "manual")
	j.send("POST", "/v1/payment_intents/"+other+"/confirm", formCT, "").ok(t) // authorizes: $3 reserved
	j.send("POST", "/v1/payment_intents/"+other+"/capture", formCT, "amount_to_capture=200").ok(t)
	if got := getKey(t, env, k.ID).SpentUSD.String(); got != "7.00" {
		t.Fatalf("spent %s, want 7.00", got)
	}
}

// Refunds move money of their own: an amount, or "the rest", never offset by
// what was counted on the charge.
func TestRefundsOfTheRest(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "5", AllowedEndpoints: []string{"POST /v1/charges", "POST /v1/charges/*/capture",
		"POST /v1/charges/*/refunds", "POST /v1/refunds", "charges.refund"}})
	j := stripeJudge(t, env, k)
	j.send("POST", "/v1/charges", formCT, "amount=150&currency=usd&source=tok_visa").ok(t)
	var ch string
	for _, m := range env.Stripe.Moves() {
		ch = m.Object
	}
	j.send("POST", "/v1/charges/"+ch+"/refunds", formCT, "amount=50").ok(t)
	j.send("POST", "/v1/refunds", formCT, "charge="+ch).ok(t) // the rest: $1.00
	if got := getKey(t, env, k.ID).SpentUSD.String(); got != "3.00" {
		t.Fatalf("spent %s, want 3.00 (charge 1.50 + refunds 0.50 + 1.00)", got)
	}
	big := env.Stripe.AddCharge(100000, "usd", true)
	j.send("POST", "/v1/charges/"+big+"/refund", formCT, "").refused(t, "cap_exhausted")
	j.send("POST", "/v1/refunds", formCT, "charge="+big).refused(t, "cap_exhausted")
	j.send("POST", "/v1/refunds", formCT, "charge="+big+"&amount=100").ok(t)
	// Someone else's uncaptured charge: capturing it reserves its amount.
	auth := env.Stripe.AddCharge(90, "usd", false)
	j.send("POST", "/v1/charges/"+auth+"/capture", formCT, "").ok(t)
	if got := getKey(t, env, k.ID).SpentUSD.String(); got != "4.90" {
		t.Fatalf("spent %s, want 4.90", got)
	}
}

// The issue's second finding: a wildcard rule admitted top-ups and invoice
// items at $0. A rule that covers a forbidden operation is refused at
// issuance; named rules price what they admit.
func TestTopupsInvoicesAndTransfers(t *testing.T) {
	env := kbtest.Start(t)
	issueRefused(t, env, client.IssueParams{AllowedEndpoints: []string{"POST /v1/*"}}, `"POST /v1/*"`, "forbidden", "ephemeral_keys.create")
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "20", AllowedEndpoints: []string{"POST /v1/topups", "POST /v1/invoiceitems",
		"POST /v1/invoices", "POST /v1/invoices/*/pay", "POST /v1/transfers", "POST /v1/transfers/*/reversals", "POST /v1/payouts",
		"POST /v1/customers/*/balance_transactions", "POST /v1/treasury/outbound_payments"}})
	j := stripeJudge(t, env, k)
	j.send("POST", "/v1/topups", formCT, "amount=5000000&currency=usd").refused(t, "cap_exhausted")
	j.send("POST", "/v1/topups", formCT, "amount=100&currency=usd").ok(t)
	j.send("POST", "/v1/invoiceitems", formCT, "customer=cus_1&amount=5000000&currency=usd").refused(t, "cap_exhausted")
	j.send("POST", "/v1/invoiceitems", formCT, "customer=cus_1&price=price_1&currency=usd").refused(t, "unpriceable_request")
	j.send("POST", "/v1/invoiceitems", formCT, "customer=cus_1&amount=200&currency=usd").ok(t)
	j.send("POST", "/v1/invoices", formCT, "customer=cus_1").refused(t, "unpriceable_request") // auto_advance would collect it
	j.send("POST", "/v1/invoices", formCT, "customer=cus_1&auto_advance=false").ok(t)
	inv := env.Stripe.AddInvoice(300, "usd")
	j.send("POST", "/v1/invoices/"+inv+"/pay", formCT, "").ok(t)
	j.send("POST", "/v1/transfers", formCT, "amount=100&currency=usd&destination=acct_1").ok(t)
	tr := env.Stripe.AddTransfer(250, "usd")
	j.send("POST", "/v1/transfers/"+tr+"/reversals", formCT, "").ok(t)
	j.send("POST", "/v1/payouts", formCT, "amount=100&currency=usd").ok(t)
	j.send("POST", "/v1/customers/cus_1/balance_transactions", formCT, "amount=-300&currency=usd").ok(t)
	j.send("POST", "/v1/treasury/outbound_payments", formCT, "amount=100&currency=usd&financial_account=fa_1").ok(t)
	// 1 + 2 + 3 + 1 + 2.50 + 1 + 3 + 1
	if got := getKey(t, env, k.ID).SpentUSD.String(); got != "14.50" {
		t.Fatalf("spent %s, want 14.50", got)
	}
}

// Subscriptions, payment links, checkout sessions, ephemeral keys: forbidden
// by name at issuance, and at call time for a key issued before the
// catalogue with a wildcard that admits them.
func TestForbiddenStripeOperations(t *testing.T) {
	env := kbtest.Start(t)
	for rule, op := range map[string]string{
		"POST /v1/subscriptions":                      "subscriptions.create",
		"subscriptions.update":                        "subscriptions.update",
		"POST /v1/payment_links":                      "payment_links.create",
		"POST /v1/checkout/sessions":                  "checkout.sessions.create",
		"POST /v1/ephemeral_keys":                     "ephemeral_keys.create",
		"POST /v1/account_links":                      "account_links.create",
		"POST /v1/accounts/*/login_links":             "accounts.login_links.create",
		"POST /v1/webhook_endpoints":                  "webhook_endpoints.create",
		"POST /v1/issuing/cards":                      "issuing.cards.create",
		"GET /v1/issuing/cards/*":                     "issuing.cards.retrieve",
		"POST /v2/money_management/outbound_payments": "v2.money_management.outbound_payments.create",
		"POST /v1/terminal/connection_tokens":         "terminal.connection_tokens.create",
	} {
		issueRefused(t, env, client.IssueParams{AllowedEndpoints: []string{rule}}, rule, op)
	}
	issueRefused(t, env, client.IssueParams{AllowedEndpoints: []string{"POST /v1/subscription"}}, "covers no operation")
	issueRefused(t, env, client.IssueParams{AllowedEndpoints: []string{"payment_intent.create"}}, "not an operation")

	// A key from before the catalogue: its rules are only checked at call
	// time.
	rules, err := keybrake.ParseRules([]string{"POST /v1/*", "POST /v1/*/*", "POST /v2/*/*", "GET /v1/*/*/*"})
	if err != nil {
		t.Fatal(err)
	}
	secret := keybrake.NewVaultKey()
	created, err := env.Server.Store().CreateKey(context.Background(), &keybrake.Key{ID: keybrake.NewID("vk_"), Vendor: "stripe",
		DailyCap: 5 * keybrake.MicrosPerUSD, Rules: rules}, keybrake.HashSecret(secret), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	old := &client.Key{ID: created.ID, VaultKey: secret, DailyUSDCap: created.DailyCap}
	j := stripeJudge(t, env, old)
	for _, c := range []struct{ path, body, code string }{
		{"/v1/subscriptions", "customer=cus_1&items[0][price]=price_1", "operation_forbidden"},
		{"/v1/payment_links", "line_items[0][price]=price_1&line_items[0][quantity]=1", "operation_forbidden"},
		{"/v1/ephemeral_keys", "customer=cus_1", "operation_forbidden"},
		{"/v1/checkout/sessions", "mode=payment", "operation_forbidden"},
		{"/v2/money_management/outbound_payments", "", "operation_forbidden"},
		{"/v1/quotes", "customer=cus_1", "unknown_operation"},
		{"/v1/credit_notes", "invoice=in_1&refund_amount=500", "unknown_operation"},
		{"/v1/payment_intents/pi_1/frobnicate", "", "unknown_operation"},
	} {
		j.send("POST", c.path, formCT, c.body).refused(t, c.code)
	}
	j.send("GET", "/v1/issuing/cards/ic_1/x", "", "").refused(t, "unknown_operation")
	j.send("POST", "/v1/payment_intents", formCT, "amount=100&currency=usd").ok(t)
}

// The catalogue reaches the vendor only through what it prices: the root
// and /stripe forms, JSON and form bodies, each resolved the same way.
func TestEveryPriceModelThroughHTTP(t *testing.T) {
	env := kbtest.Start(t, kbtest.Options{Configure: func(c *server.Config) {
		c.Vendors.Prices = pricingFile(t, "operations:\n  stripe.customers.create: {fixed: \"0.25\"}\n"+
			"  stripe.credit_notes.create: {method: POST, path: /v1/credit_notes, fixed: \"2.00\"}\n")
	}})
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "10", AllowedEndpoints: []string{"GET /v1/balance", "POST /v1/payment_intents",
		"POST /v1/payment_intents/*/confirm", "POST /v1/customers", "credit_notes.create"}})
	j := stripeJudge(t, env, k)
	j.send("GET", "/stripe/v1/balance", "", "").ok(t)                                          // free
	j.send("POST", "/stripe/v1/payment_intents", formCT, "amount=100&currency=usd").ok(t)      // body
	j.send("POST", "/v1/payment_intents/"+env.Stripe.Intents()[0].ID+"/confirm", "", "").ok(t) // lookup
	j.send("POST", "/v1/customers", formCT, "email=a%40b.c").ok(t)                             // free + fixed
	v := j.send("POST", "/v1/credit_notes", formCT, "invoice=in_1")                            // added by the pricing file
	if !v.forwarded || v.r.Status != 404 {
		t.Fatalf("credit note: %d %s", v.r.Status, v.r.Body)
	}
	rows := calls(t, env, client.ListCallsParams{KeyID: k.ID})
	if rows[0].Operation != "credit_notes.create" || rows[0].Estimated.String() != "2.00" || rows[0].Actual != 0 {
		t.Fatalf("credit note row: %+v", *rows[0].Call)
	}
	if got := getKey(t, env, k.ID).SpentUSD.String(); got != "1.25" {
		t.Fatalf("spent %s, want 1.25", got)
	}
	for _, row := range rows {
		if !strings.Contains("balance.retrieve payment_intents.create payment_intents.confirm customers.create credit_notes.create", row.Operation) || row.Operation == "" {
			t.Errorf("row names operation %q", row.Operation)
		}
	}
}

// Partial captures of someone else's authorization (final_capture=false)
// add up: each is priced for what the PaymentIntent will have received.
func TestMulticaptureAddsUp(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "5", AllowedEndpoints: []string{"payment_intents.confirm", "payment_intents.capture"}})
	j := stripeJudge(t, env, k)
	id := env.Stripe.AddPaymentIntent(400, "usd", "manual")
	j.send("POST", "/v1/payment_intents/"+id+"/confirm", formCT, "").ok(t) // authorizes $4: counted
	for _, part := range []string{"100", "150", "150"} {
		j.send("POST", "/v1/payment_intents/"+id+"/capture", formCT, "amount_to_capture="+part+"&final_capture=false").ok(t)
	}
	if got := getKey(t, env, k.ID).SpentUSD.String(); got != "4.00" {
		t.Fatalf("spent %s, want 4.00", got)
	}
	// Someone else's authorization, captured in parts without a confirm
	// through the key.
	other := env.Stripe.AddPaymentIntent(100, "usd", "manual")
	env.Stripe.Authorize(other)
	j.send("POST", "/v1/payment_intents/"+other+"/capture", formCT, "amount_to_capture=40&final_capture=false").ok(t)
	j.send("POST", "/v1/payment_intents/"+other+"/capture", formCT, "amount_to_capture=60").ok(t)
	if got := getKey(t, env, k.ID).SpentUSD.String(); got != "5.00" {
		t.Fatalf("spent %s, want 5.00", got)
	}
}

// A lookup the vendor cannot answer refuses the call with 503
// lookup_failed, retryable, and forwards nothing; a 404 is a 400.
func TestLookupFailureForwardsNothing(t *testing.T) {
	env := kbtest.Start(t)
	env.Stripe.Fault = func(r *http.Request, n int) sandbox.Fault {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "pi_down") {
			return sandbox.FailBeforeApply
		}
		return sandbox.NoFault
	}
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "5", AllowedEndpoints: []string{"payment_intents.confirm"}})
	for _, c := range []struct {
		id, code string
		status   int
	}{{"pi_down", "lookup_failed", 503}, {"pi_missing", "unpriceable_request", 400}} {
		before := len(env.Stripe.Received())
		r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents/"+c.id+"/confirm", formCT, "")
		if r.Status != c.status || refusalCode(r.Body) != c.code {
			t.Fatalf("%s: %d %s", c.id, r.Status, r.Body)
		}
		got := env.Stripe.Received()[before:]
		if len(got) != 1 || got[0].Method != "GET" {
			t.Fatalf("%s: the vendor received %+v, want only the lookup", c.id, got)
		}
	}
	if k := getKey(t, env, k.ID); *k.SpentUSD != 0 || *k.ReservedUSD != 0 {
		t.Fatalf("spent %s reserved %s", k.SpentUSD, k.ReservedUSD)
	}
}

// A revoked key makes no lookup: nothing reaches the vendor.
func TestRevokedKeyMakesNoLookup(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "5", AllowedEndpoints: []string{"payment_intents.confirm"}})
	id := env.Stripe.AddPaymentIntent(100, "usd", "")
	if _, err := env.Admin.RevokeKey(context.Background(), k.ID); err != nil {
		t.Fatal(err)
	}
	r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents/"+id+"/confirm", formCT, "")
	expectDenied(t, env.Stripe, 0, r, 401, "key_revoked")
}
