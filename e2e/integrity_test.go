package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/server"
)

// Issue 12: what Keybrake priced is exactly what the vendor receives. Each
// test sends what the issue found (and its kin) through a running server
// and checks three things: the status and code, what the vendor received
// (nothing, for a refusal), and what the key recorded against what the
// vendor charged.

// lastAudit is the newest audit row of a key.
func lastAudit(t *testing.T, env *kbtest.Env, keyID string) client.Call {
	t.Helper()
	page, err := env.Admin.ListCalls(context.Background(), client.ListCallsParams{KeyID: keyID, Limit: 1})
	if err != nil || len(page.Data) == 0 {
		t.Fatalf("no audit row for %s: %v", keyID, err)
	}
	return page.Data[0]
}

// chargedUSD sums the sandbox's PaymentIntents, USD only.
func chargedUSD(env *kbtest.Env) keybrake.Micros {
	return keybrake.Micros(env.Stripe.ChargedMinor()["usd"]) * 10_000
}

// The issue's form keys: Rack reads [amount], amount], ]amount as amount.
// Each is refused naming the key; a legitimate body in any order or
// encoding reaches Stripe re-encoded, and Stripe charged what was priced.
func TestFormKeysStripeWouldReadDifferentlyAreRefused(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "10000"})
	for _, body := range []string{
		"amount=100&currency=usd&[amount]=900000",
		"amount=100&currency=usd&amount]=900000",
		"amount=100&currency=usd&]amount=900000",
		"amount=100&currency=usd&amount[]=900000",
		"amount=100&currency=usd&%5Bamount%5D=900000",
		"amount=100&currency=usd;amount=900000",
		"amount=100&currency=usd&metadata[a]=1&metadata[a]=2",
		"amount=100&currency=usd&metadata=x&metadata[a]=1",
	} {
		before := env.Stripe.Requests()
		r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, body)
		e := expectDenied(t, env.Stripe, before, r, 400, "unpriceable_request")
		if !strings.Contains(e.Message, "form key") && !strings.Contains(e.Message, "byte ';'") {
			t.Errorf("%q: the refusal does not name the key: %s", body, e.Message)
		}
		if row := lastAudit(t, env, k.ID); row.Outcome != "denied_unpriceable_request" || row.ID != e.CallID {
			t.Errorf("%q: audit row %+v", body, row.Call)
		}
	}
	r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "metadata%5Border%5D=A%2D1&currency=usd&amount=250&description=a+b")
	if r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	got := env.Stripe.Received()
	if len(got) != 1 || got[0].Body != "amount=250&currency=usd&description=a+b&metadata[order]=A-1" {
		t.Fatalf("Stripe received %q, not the body re-encoded from what was priced", got[0].Body)
	}
	if v := getKey(t, env, k.ID); *v.SpentUSD != 2_500_000 || chargedUSD(env) != 2_500_000 {
		t.Fatalf("recorded $%s, Stripe charged $%s", v.SpentUSD, chargedUSD(env))
	}
}

// The same on Twilio's forms and Resend's JSON: a parameter given twice or
// in another letter case, a JSON key given twice, is refused; what goes
// through is re-encoded.
func TestTwilioAndResendBodiesAreCanonical(t *testing.T) {
	env, f := kbtest.StartWithFakes(t, nil)
	tw := env.Issue(t, client.IssueParams{Vendor: "twilio", DailyUSDCap: "1", AllowedEndpoints: []string{"messages.create"}})
	for _, body := range []string{
		"To=%2B15551234567&From=%2B15550000000&Body=hi&Body=" + strings.Repeat("x", 1000),
		"To=%2B15551234567&TO=%2B4915112345678&From=%2B15550000000&Body=hi",
		"To=%2B15551234567&From=%2B15550000000&Body=hi&[To]=%2B4915112345678",
		"To=%2B15551234567&From=%2B15550000000&Body=hi;To=%2B4915112345678",
	} {
		before := f.Twilio.Requests()
		r := env.Do(t, tw.VaultKey, "POST", twAcct+"/Messages.json", formCT, body)
		if r.Status != 400 || refusalCode(r.Body) != "unpriceable_request" || f.Twilio.Requests() != before {
			t.Fatalf("%q: %d %s (Twilio requests %d → %d)", body, r.Status, r.Body, before, f.Twilio.Requests())
		}
	}
	if r := env.Do(t, tw.VaultKey, "POST", twAcct+"/Messages.json", formCT, "Body=hi+there&To=%2B15551234567&From=%2B15550000000"); r.Status != 201 && r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if got := f.Twilio.Received(); len(got) != 1 || got[0].Body != "Body=hi+there&From=%2B15550000000&To=%2B15551234567" {
		t.Fatalf("Twilio received %+v", got)
	}

	rs := env.Issue(t, client.IssueParams{Vendor: "resend", DailyUSDCap: "1", AllowedEndpoints: []string{"emails.send"}})
	for _, body := range []string{
		`{"from":"a@example.com","to":"b@example.com","subject":"s","to":["c@x.com","d@x.com","e@x.com"]}`,
		`{"from":"a@example.com","from":"a@evil.com","to":"b@example.com","subject":"s"}`,
		`{"from":"a@example.com","to":"b@example.com","subject":"s"} {"to":"x"}`,
	} {
		before := f.Resend.Requests()
		r := env.Do(t, rs.VaultKey, "POST", "/emails", "application/json", body)
		if r.Status != 400 || refusalCode(r.Body) != "unpriceable_request" || f.Resend.Requests() != before {
			t.Fatalf("%s: %d %s", body, r.Status, r.Body)
		}
	}
	if r := env.Do(t, rs.VaultKey, "POST", "/emails", "application/json", "{\"subject\" : \"<b>\",\n \"to\":[\"b@example.com\"], \"from\":\"a@example.com\"}"); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if got := f.Resend.Received(); len(got) != 1 || got[0].Body != `{"subject":"<b>","to":["b@example.com"],"from":"a@example.com"}` {
		t.Fatalf("Resend received %+v", got)
	}
}

// The issue's header findings: a second Content-Encoding (gzip whose
// comment parses as amount=100, whose data is amount=900000), a second
// Content-Type or Idempotency-Key, and the others Keybrake reads. Each is
// refused with ambiguous_header, audited, and nothing reaches Stripe.
func TestSecondHeaderValuesAreRefused(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "10000"})
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Comment = "amount=100&currency=usd"
	zw.Write([]byte("amount=900000&currency=usd")) //nolint:errcheck
	zw.Close()
	host := strings.TrimPrefix(env.URL, "http://")
	base := "POST /v1/payment_intents HTTP/1.1\r\nHost: " + host + "\r\nAuthorization: Bearer " + k.VaultKey + "\r\n"
	for name, extra := range map[string]string{
		"Content-Encoding twice": "Content-Type: " + formCT + "\r\nContent-Encoding: identity\r\nContent-Encoding: gzip\r\n",
		"Content-Encoding list":  "Content-Type: " + formCT + "\r\nContent-Encoding: identity, gzip\r\n",
		"Content-Type twice":     "Content-Type: " + formCT + "\r\nContent-Type: application/json\r\n",
		"Idempotency-Key twice":  "Content-Type: " + formCT + "\r\nIdempotency-Key: a\r\nIdempotency-Key: b\r\n",
		"Stripe-Account twice":   "Content-Type: " + formCT + "\r\nStripe-Account: acct_1\r\nStripe-Account: acct_2\r\n",
		"Stripe-Version twice":   "Content-Type: " + formCT + "\r\nStripe-Version: 2024-06-20\r\nStripe-Version: 2020-08-27\r\n",
		"Stripe-Context twice":   "Content-Type: " + formCT + "\r\nStripe-Context: acct_1\r\nStripe-Context: acct_2\r\n",
	} {
		before, body := env.Stripe.Requests(), gz.String()
		status, answer := kbtest.RawRequest(t, env.URL, base+extra+fmt.Sprintf("Content-Length: %d\r\nConnection: close\r\n\r\n", len(body))+body)
		if status != 400 || !strings.Contains(answer, `"code":"ambiguous_header"`) || env.Stripe.Requests() != before {
			t.Errorf("%s: %d %s", name, status, answer)
			continue
		}
		if row := lastAudit(t, env, k.ID); row.Outcome != "denied_ambiguous_header" {
			t.Errorf("%s: audit row %+v", name, row.Call)
		}
	}
	// Transfer-Encoding with a Content-Length: Go's server reads the body as
	// chunked and drops the length (RFC 9112 §6.3), so the handler cannot
	// tell; Keybrake forwards the body it read, with its own length, so the
	// vendor reads exactly what was priced either way.
	status, _ := kbtest.RawRequest(t, env.URL, base+"Content-Type: "+formCT+"\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n17\r\namount=100&currency=usd\r\n0\r\n\r\n")
	if got := env.Stripe.Received(); status != 200 || len(got) != 1 || got[0].Body != "amount=100&currency=usd" || got[0].Header.Get("Content-Length") != "23" {
		t.Errorf("Transfer-Encoding with Content-Length: %d, Stripe received %+v", status, got)
	}
	before := env.Stripe.Requests()
	// Two Authorization headers: which key? Neither.
	status, answer := kbtest.RawRequest(t, env.URL, "POST /v1/payment_intents HTTP/1.1\r\nHost: "+host+"\r\nAuthorization: Bearer "+k.VaultKey+
		"\r\nAuthorization: Bearer "+k.VaultKey+"\r\nContent-Type: "+formCT+"\r\nContent-Length: 23\r\nConnection: close\r\n\r\namount=100&currency=usd")
	if status != 400 || !strings.Contains(answer, "ambiguous_header") || env.Stripe.Requests() != before {
		t.Errorf("two Authorization headers: %d %s", status, answer)
	}
	if v := getKey(t, env, k.ID); *v.SpentUSD != chargedUSD(env) || chargedUSD(env) != keybrake.MicrosPerUSD {
		t.Fatalf("recorded $%s, Stripe charged $%s", v.SpentUSD, chargedUSD(env))
	}
}

// The issue's Connection finding: Connection: Idempotency-Key made Go's
// reverse proxy drop the key, so after a vendor 500 the retry created a
// second PaymentIntent ($20 moved, $10 recorded). Keybrake sets the headers
// it decided after that removal: Stripe deduplicates the retry.
func TestConnectionHeaderCannotDropTheIdempotencyKey(t *testing.T) {
	stripe, h := faultyStripe()
	env := kbtest.Start(t, kbtest.Options{Upstream: h})
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "100"})
	body := `{"amount":1000,"currency":"usd"}`
	r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", "application/json", body,
		"Idempotency-Key", "run-7", "Connection", "Idempotency-Key, Content-Type, Stripe-Version", "Stripe-Version", "2024-06-20", "X-Test-Fault", "500-after")
	if r.Status != 500 {
		t.Fatalf("first attempt: %d %s", r.Status, r.Body)
	}
	r = env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", "application/json", body,
		"Idempotency-Key", "run-7", "Connection", "Idempotency-Key, Content-Type, Stripe-Version", "Stripe-Version", "2024-06-20")
	if r.Status != 200 {
		t.Fatalf("retry: %d %s", r.Status, r.Body)
	}
	for _, rq := range stripe.Received() {
		if rq.Header.Get("Idempotency-Key") != k.ID+":run-7" || rq.Header.Get("Content-Type") != formCT || rq.Header.Get("Stripe-Version") != "2024-06-20" {
			t.Fatalf("Stripe received %v", rq.Header)
		}
	}
	if n := len(stripe.Intents()); n != 1 {
		t.Fatalf("%d PaymentIntents: the retry was not deduplicated", n)
	}
	if v := getKey(t, env, k.ID); *v.SpentUSD != 10*keybrake.MicrosPerUSD || keybrake.Micros(stripe.ChargedMinor()["usd"])*10_000 != 10*keybrake.MicrosPerUSD {
		t.Fatalf("recorded $%s for $%d.%02d charged", v.SpentUSD, stripe.ChargedMinor()["usd"]/100, stripe.ChargedMinor()["usd"]%100)
	}
}

// A client key too long to prefix reaches Stripe hashed, within its 255
// characters, the same on every retry: the retry after an unknown outcome
// is deduplicated by Stripe.
func TestLongIdempotencyKeyIsHashedStably(t *testing.T) {
	stripe, h := faultyStripe()
	env := kbtest.Start(t, kbtest.Options{Upstream: h})
	k := env.Issue(t, client.IssueParams{})
	long := strings.Repeat("k", 255)
	for _, fault := range []string{"500-after", ""} {
		env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd", "Idempotency-Key", long, "X-Test-Fault", fault)
	}
	got := stripe.Received()
	if len(got) != 2 || got[0].Header.Get("Idempotency-Key") != got[1].Header.Get("Idempotency-Key") {
		t.Fatalf("Stripe received %d requests", len(got))
	}
	key := got[0].Header.Get("Idempotency-Key")
	if len(key) > 255 || !strings.HasPrefix(key, k.ID+"#") || len(stripe.Intents()) != 1 {
		t.Fatalf("Stripe received Idempotency-Key %q (%d chars), %d PaymentIntents", key, len(key), len(stripe.Intents()))
	}
}

// stripe_accounts: without it a key acts on the platform account only
// (Stripe-Account and Stripe-Context refused); with it, only on those
// accounts. stripe_customers: the customer in the body, in the path, and of
// the object a lookup-priced call acts on.
func TestStripeScope(t *testing.T) {
	env := kbtest.Start(t)
	plain := env.Issue(t, client.IssueParams{DailyUSDCap: "100"})
	j := stripeJudge(t, env, plain)
	for _, h := range []string{"Stripe-Account", "Stripe-Context"} {
		v := j.send("POST", "/v1/payment_intents", formCT, "amount=100&currency=usd", h, "acct_1").refused(t, "scope_violation")
		if e := decodeErr(t, v.r); !strings.Contains(e.Message, h) {
			t.Fatalf("%s", v.r.Body)
		}
		if row := lastAudit(t, env, plain.ID); row.Outcome != "denied_scope_violation" {
			t.Fatalf("audit row %+v", row.Call)
		}
	}

	scoped := env.Issue(t, client.IssueParams{DailyUSDCap: "100", AllowedEndpoints: []string{"payment_intents.create", "payment_intents.confirm",
		"customers.balance_transactions.create"}, KeyPolicy: adminPolicy(func(p *client.IssueParams) {
		p.StripeAccounts, p.StripeCustomers = []string{"acct_A"}, []string{"cus_1"}
	})})
	if scoped.StripeAccounts[0] != "acct_A" || scoped.StripeCustomers[0] != "cus_1" {
		t.Fatalf("issued key shows %+v", scoped.KeyPolicy)
	}
	if shown := getKey(t, env, scoped.ID); len(shown.StripeCustomers) != 1 || shown.StripeCustomers[0] != "cus_1" {
		t.Fatalf("GET shows %+v", shown.KeyPolicy)
	}
	j = stripeJudge(t, env, scoped)
	j.send("POST", "/v1/payment_intents", formCT, "amount=100&currency=usd&customer=cus_1", "Stripe-Account", "acct_B").refused(t, "scope_violation")
	j.send("POST", "/v1/payment_intents", formCT, "amount=100&currency=usd&customer=cus_2", "Stripe-Account", "acct_A").refused(t, "scope_violation")
	j.send("POST", "/v1/payment_intents", formCT, "amount=100&currency=usd", "Stripe-Account", "acct_A").refused(t, "scope_violation")
	j.send("POST", "/v1/payment_intents", "application/json", `{"amount":100,"currency":"usd","customer":{"id":"cus_1"}}`).refused(t, "scope_violation")
	j.send("POST", "/v1/payment_intents", formCT, "amount=100&currency=usd&Customer=cus_1&customer=cus_2").refused(t, "scope_violation")
	j.send("POST", "/v1/customers/cus_2/balance_transactions", formCT, "amount=-500&currency=usd").refused(t, "scope_violation")
	before := len(env.Stripe.Received())
	j.send("POST", "/v1/payment_intents", "application/json", `{"amount":100,"currency":"usd","customer":"cus_1"}`, "Stripe-Account", "acct_A").ok(t)
	if got := env.Stripe.Received()[before]; got.Header.Get("Stripe-Account") != "acct_A" {
		t.Fatalf("Stripe-Account did not reach Stripe: %v", got.Header)
	}
	e := decodeErr(t, env.Do(t, scoped.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd&customer=cus_9"))
	if e.Code != "scope_violation" || !strings.Contains(e.Message, "cus_9") {
		t.Fatalf("%+v", e)
	}

	// A lookup: confirming a PaymentIntent of another customer reads it
	// (one GET) and refuses; one of cus_1 is confirmed.
	other := env.Issue(t, client.IssueParams{DailyUSDCap: "100"})
	mk := func(cus string) string {
		r := env.Do(t, other.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=300&currency=usd&customer="+cus)
		var pi struct{ ID string }
		if err := json.Unmarshal(r.Body, &pi); err != nil || pi.ID == "" {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		return pi.ID
	}
	theirs, ours := mk("cus_2"), mk("cus_1")
	v := j.send("POST", "/v1/payment_intents/"+theirs+"/confirm", formCT, "").refused(t, "scope_violation")
	if v.lookups != 1 {
		t.Fatalf("%d lookups", v.lookups)
	}
	if row := lastAudit(t, env, scoped.ID); row.Outcome != "denied_scope_violation" || row.Estimated.String() != "3.00" {
		t.Fatalf("audit row %+v: want the denial with the price it asked", row.Call)
	}
	j.send("POST", "/v1/payment_intents/"+ours+"/confirm", formCT, "").ok(t)
}

func adminPolicy(set func(p *client.IssueParams)) client.KeyPolicy {
	var p client.IssueParams
	set(&p)
	return p.KeyPolicy
}

// twilio_from and resend_from_domains, on every message, call and email.
func TestSenderScope(t *testing.T) {
	env, f := kbtest.StartWithFakes(t, nil)
	tw := env.Issue(t, client.IssueParams{Vendor: "twilio", DailyUSDCap: "1", AllowedEndpoints: []string{"messages.create"},
		KeyPolicy: adminPolicy(func(p *client.IssueParams) {
			p.TwilioFrom = []string{"+15550000000", "MG0123456789abcdef0123456789abcdef"}
		})})
	j := twilioJudge(t, env, f, tw)
	j.send("POST", twAcct+"/Messages.json", formCT, twForm("To", "+15551234567", "From", "+15559999999", "Body", "hi")).refused(t, "scope_violation")
	j.send("POST", twAcct+"/Messages.json", formCT, twForm("To", "+15551234567", "Body", "hi")).refused(t, "scope_violation")
	j.send("POST", twAcct+"/Messages.json", formCT, twForm("To", "+15551234567", "From", "+15550000000", "MessagingServiceSid", "MGffffffffffffffffffffffffffffffff", "Body", "hi")).refused(t, "scope_violation")
	j.send("POST", twAcct+"/Messages.json", formCT, twForm("To", "+15551234567", "From", "+15550000000", "Body", "hi")).ok(t)
	j.send("POST", twAcct+"/Messages.json", formCT, twForm("To", "+15551234567", "MessagingServiceSid", "MG0123456789abcdef0123456789abcdef", "Body", "hi")).ok(t)

	rs := env.Issue(t, client.IssueParams{Vendor: "resend", DailyUSDCap: "1", AllowedEndpoints: []string{"emails.send", "emails.batch"},
		KeyPolicy: adminPolicy(func(p *client.IssueParams) { p.ResendFromDomains = []string{"Example.com"} })})
	if rs.ResendFromDomains[0] != "example.com" {
		t.Fatalf("domains %v", rs.ResendFromDomains)
	}
	j = resendJudge(t, env, f, rs)
	j.send("POST", "/emails", "application/json", `{"from":"Acme <a@evil.com>","to":"b@x.com","subject":"s"}`).refused(t, "scope_violation")
	j.send("POST", "/emails", "application/json", `{"from":"a@mail.example.com","to":"b@x.com","subject":"s"}`).refused(t, "scope_violation")
	j.send("POST", "/emails", "application/json", `{"to":"b@x.com","subject":"s"}`).refused(t, "scope_violation")
	j.send("POST", "/emails/batch", "application/json", `[{"from":"a@example.com","to":"b@x.com","subject":"s"},{"from":"a@evil.com","to":"c@x.com","subject":"s"}]`).refused(t, "scope_violation")
	j.send("POST", "/emails", "application/json", `{"from":"Acme <billing@EXAMPLE.com>","to":"b@x.com","subject":"s"}`).ok(t)

	// Scope fields belong to the key's vendor.
	_, err := env.Admin.IssueKey(context.Background(), client.IssueParams{Vendor: "twilio", DailyUSDCap: "1", ExpiresIn: "1h",
		AllowedEndpoints: []string{"messages.create"}, KeyPolicy: adminPolicy(func(p *client.IssueParams) { p.StripeCustomers = []string{"cus_1"} })})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != "invalid_request" || ce.Field != "stripe_customers" {
		t.Fatalf("a Stripe scope field on a Twilio key: %v", err)
	}
	_, err = env.Admin.IssueKey(context.Background(), client.IssueParams{Vendor: "stripe", DailyUSDCap: "1", ExpiresIn: "1h",
		AllowedEndpoints: []string{"payment_intents.create"}, KeyPolicy: adminPolicy(func(p *client.IssueParams) { p.StripeCustomers = []string{"acct_1"} })})
	if !errors.As(err, &ce) || ce.Field != "stripe_customers" {
		t.Errorf("an account id as a customer: %v", err)
	}
	// An empty list would allow nothing: refused, naming the field.
	req, _ := http.NewRequest("POST", env.URL+"/vault/keys", strings.NewReader(`{"vendor":"stripe","daily_usd_cap":1,"expires_in":"1h",
		"allowed_endpoints":["payment_intents.create"],"stripe_accounts":[]}`))
	req.Header.Set("Authorization", "Bearer "+kbtest.AdminToken)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var ae struct{ Code, Field string }
	json.NewDecoder(resp.Body).Decode(&ae) //nolint:errcheck
	resp.Body.Close()
	if resp.StatusCode != 400 || ae.Field != "stripe_accounts" {
		t.Errorf("an empty stripe_accounts: %d %+v", resp.StatusCode, ae)
	}
}

// An issuer token's scope is a ceiling on its keys' scope; its
// max_outstanding_usd bounds what it mints in total, even twenty requests
// at once.
func TestIssuerTokenCeilings(t *testing.T) {
	env := kbtest.Start(t)
	ctx := context.Background()
	tok, err := env.Admin.CreateToken(ctx, client.TokenParams{Name: "sfn", MaxDailyUSD: "10", Vendors: []string{"stripe"},
		Endpoints: []string{"POST /v1/payment_intents"}, MaxExpiresIn: "1h", MaxOutstandingUSD: "25",
		ScopeFields: client.ScopeFields{StripeCustomers: []string{"cus_1", "cus_2"}}})
	if err != nil {
		t.Fatal(err)
	}
	if tok.MaxOutstandingUSD == nil || *tok.MaxOutstandingUSD != 25*keybrake.MicrosPerUSD || len(tok.StripeCustomers) != 2 {
		t.Fatalf("token %+v", tok)
	}
	issuer := client.New("http://"+env.Server.AdminAddr(), tok.Token)
	key := func(customers ...string) client.IssueParams {
		return client.IssueParams{Vendor: "stripe", DailyUSDCap: "5", ExpiresIn: "30m", AllowedEndpoints: []string{"POST /v1/payment_intents"},
			KeyPolicy: adminPolicy(func(p *client.IssueParams) { p.StripeCustomers = customers })}
	}
	var ce *client.Error
	for _, p := range []client.IssueParams{key(), key("cus_3"), key("cus_1", "cus_3")} {
		if _, err := issuer.IssueKey(ctx, p); !errors.As(err, &ce) || ce.Code != "issuer_limit_exceeded" || ce.Field != "stripe_customers" {
			t.Errorf("%v: %v", p.StripeCustomers, err)
		}
	}
	var made, refused atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := issuer.IssueKey(ctx, key("cus_1"))
			var ce *client.Error
			switch {
			case err == nil:
				made.Add(1)
			case errors.As(err, &ce) && ce.Code == "issuer_limit_exceeded" && ce.Field == "max_outstanding_usd":
				refused.Add(1)
			default:
				t.Errorf("issue: %v", err)
			}
		}()
	}
	wg.Wait()
	if made.Load() != 5 || refused.Load() != 15 {
		t.Fatalf("20 concurrent $5 keys under max_outstanding_usd $25: %d issued, %d refused", made.Load(), refused.Load())
	}
	page, err := env.Admin.ListKeys(ctx, client.ListKeysParams{Status: "active"})
	if err != nil || len(page.Data) != 5 {
		t.Fatalf("%d active keys, %v", len(page.Data), err)
	}
	if _, err := issuer.RevokeKey(ctx, page.Data[0].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := issuer.IssueKey(ctx, key("cus_2")); err != nil {
		t.Fatalf("after a revoke: %v", err)
	}
}

// max_calls_per_minute: past it 429 rate_limited with Retry-After, not
// cap_exhausted (the seed's Lambda must not read it as a spent budget);
// nothing forwarded; audited.
func TestRateLimit(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "100", KeyPolicy: adminPolicy(func(p *client.IssueParams) { p.MaxCallsPerMinute = 2 })})
	if k.MaxCallsPerMinute != 2 {
		t.Fatalf("key %+v", k.KeyPolicy)
	}
	for i := 0; i < 2; i++ {
		if r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd"); r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
	}
	before := env.Stripe.Requests()
	r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd")
	e := expectDenied(t, env.Stripe, before, r, 429, "rate_limited")
	if ra := r.Header.Get("Retry-After"); ra == "" || ra == "0" || e.Error == nil || e.Error.Code != "rate_limited" || r.Header.Get("Stripe-Should-Retry") != "true" {
		t.Fatalf("Retry-After %q, Stripe-Should-Retry %q, %s", ra, r.Header.Get("Stripe-Should-Retry"), r.Body)
	}
	if e.Code == "cap_exhausted" || e.Cap != "" {
		t.Fatalf("a rate limit reads as the cap: %s", r.Body)
	}
	if row := lastAudit(t, env, k.ID); row.Outcome != "denied_rate_limited" || row.Status != 429 {
		t.Fatalf("audit row %+v", row.Call)
	}
	if v := getKey(t, env, k.ID); *v.SpentUSD != 2*keybrake.MicrosPerUSD || chargedUSD(env) != 2*keybrake.MicrosPerUSD {
		t.Fatalf("recorded $%s, Stripe charged $%s", v.SpentUSD, chargedUSD(env))
	}
}

// Hostile bodies are refused on a bound, quickly and before any ledger
// work: a 1 MiB array of zeros (which once became a 6.2 MB form body),
// deep nesting, a million form parameters.
func TestHostileBodiesAreBounded(t *testing.T) {
	env, f := kbtest.StartWithFakes(t, nil)
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "100"})
	rs := env.Issue(t, client.IssueParams{Vendor: "resend", DailyUSDCap: "1", AllowedEndpoints: []string{"emails.send"}})
	zeros := `{"amount":100,"currency":"usd","metadata":[` + strings.TrimSuffix(strings.Repeat("0,", 500_000), ",") + `]}`
	deep := `{"amount":100,"currency":"usd","metadata":` + strings.Repeat(`{"a":`, 1000) + "1" + strings.Repeat("}", 1000) + "}"
	params := "amount=100&currency=usd" + strings.Repeat("&a[]=", 200_000)
	for _, c := range []struct {
		key, path, ct, body string
		status              int
		code                string
	}{
		{k.VaultKey, "/v1/payment_intents", "application/json", zeros, 413, "request_too_large"},
		{k.VaultKey, "/v1/payment_intents", "application/json", deep, 400, "unpriceable_request"},
		{k.VaultKey, "/v1/payment_intents", formCT, params, 413, "request_too_large"},
		{rs.VaultKey, "/emails", "application/json", `{"from":"a@x.com","to":"b@x.com","subject":"s","tags":[` + strings.TrimSuffix(strings.Repeat("0,", 500_000), ",") + `]}`, 413, "request_too_large"},
	} {
		if len(c.body) > 1<<20 {
			t.Fatalf("body of %d bytes is over the 1 MiB limit: the test would not reach the parser", len(c.body))
		}
		sb, rb := env.Stripe.Requests(), f.Resend.Requests()
		r := env.Do(t, c.key, "POST", c.path, c.ct, c.body)
		if r.Status != c.status || refusalCode(r.Body) != c.code || env.Stripe.Requests() != sb || f.Resend.Requests() != rb {
			t.Errorf("%s %d bytes: %d %s", c.path, len(c.body), r.Status, r.Body)
		}
	}
	if v := getKey(t, env, k.ID); *v.SpentUSD != 0 || *v.DeniedCalls != 3 {
		t.Fatalf("key %+v", v)
	}
}

// A flood of requests with no valid key writes no audit rows: it is counted
// by code in the metrics, and its log lines are sampled.
func TestNoValidKeyFloodIsNotAudited(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{})
	env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd")
	unknown := keybrake.NewVaultKey()
	const n = 300
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			for _, key := range []string{"", unknown, "sk_live_guess"} {
				r, err := env.Try(key, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd")
				if err != nil || r.Status != 401 {
					t.Errorf("%v %v", r, err)
				}
			}
		}()
	}
	wg.Wait()
	all, err := env.Admin.ListCalls(context.Background(), client.ListCallsParams{Limit: 1000})
	if err != nil || len(all.Data) != 1 {
		t.Fatalf("%d audit rows for one call and %d keyless requests: %v", len(all.Data), 3*n, err)
	}
	fams := scrape(t, env.URL+"/metrics", kbtest.AdminToken)
	wantSample(t, fams, "keybrake_rejected_requests_total", map[string]string{"code": "invalid_vault_key"}, 3*n)
	lines, suppressed := 0, 0
	for _, line := range strings.Split(env.Logs.String(), "\n") {
		var rec struct {
			Msg        string `json:"msg"`
			Code       string `json:"code"`
			Suppressed int    `json:"suppressed"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "proxied request" && rec.Code == "invalid_vault_key" {
			lines++
			suppressed += rec.Suppressed
		}
	}
	if lines == 0 || lines > 3*n/10 {
		t.Fatalf("%d log lines for %d keyless requests", lines, 3*n)
	}
	t.Logf("%d keyless requests: %d log lines (the last reporting %d suppressed so far)", 3*n, lines, suppressed)
}

// --audit-retention prunes the settled rows of keys that can no longer
// call; a live key's rows, and the keys' counters, stay.
func TestAuditRetention(t *testing.T) {
	c := &offsetClock{}
	env := kbtest.Start(t, kbtest.Options{Configure: func(cfg *server.Config) { cfg.Clock = c.now; cfg.AuditRetention = time.Hour }})
	done := env.Issue(t, client.IssueParams{ExpiresIn: "10m"})
	live := env.Issue(t, client.IssueParams{ExpiresIn: "24h"})
	for _, k := range []*client.Key{done, live} {
		env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd")
		env.Do(t, k.VaultKey, "GET", "/v1/charges", "", "") // denied
	}
	if n, err := env.Server.PruneAudit(context.Background()); err != nil || n != 0 {
		t.Fatalf("prune of fresh rows: %d %v", n, err)
	}
	c.advance(2 * time.Hour)
	n, err := env.Server.PruneAudit(context.Background())
	if err != nil || n != 2 {
		t.Fatalf("pruned %d rows (%v), want the expired key's two", n, err)
	}
	if rows := calls(t, env, client.ListCallsParams{KeyID: done.ID}); len(rows) != 0 {
		t.Fatalf("the expired key keeps %d rows", len(rows))
	}
	if rows := calls(t, env, client.ListCallsParams{KeyID: live.ID}); len(rows) != 2 {
		t.Fatalf("the live key keeps %d rows, want 2", len(rows))
	}
	if v := getKey(t, env, done.ID); *v.SpentUSD != keybrake.MicrosPerUSD || *v.AllowedCalls != 1 || *v.DeniedCalls != 1 {
		t.Fatalf("the pruned key's counters moved: %+v", v)
	}
}

// A cap_exhausted row records the price asked, not $0.
func TestDenialRowCarriesThePriceAsked(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "1", AgentRunLabel: "run-denied"})
	env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd")
	before := env.Stripe.Requests()
	r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd")
	e := expectDenied(t, env.Stripe, before, r, 429, "cap_exhausted")
	row := lastAudit(t, env, k.ID)
	if row.ID != e.CallID || row.Estimated.String() != "1.00" || row.Actual.String() != "0.00" || e.RequestedUSD != "1.00" {
		t.Fatalf("cap_exhausted row %+v, reply %s", row.Call, r.Body)
	}
	// The run summary shows what was refused, beside what was spent.
	sum, err := env.Admin.RunSummary(context.Background(), k.AgentRunLabel)
	if err != nil || sum.Spent != keybrake.MicrosPerUSD || sum.DeniedUSD != keybrake.MicrosPerUSD || sum.Denied != 1 {
		t.Fatalf("run summary %+v %v", sum, err)
	}
}

// A retry that takes over an unknown attempt, and finds that attempt still
// running at the vendor (409 in progress), must not release the
// reservation: the first attempt may yet move the money. Found under load
// (602 customers charged for a $600 cap in TestSeedRetryScenario): the
// vendor call outlived --upstream-timeout, the retry got Stripe's 409, and
// the $1 was released while Stripe charged it.
func TestRetryMeetingTheFirstAttemptStillAtTheVendor(t *testing.T) {
	var mu sync.Mutex
	state := map[string]string{} // Idempotency-Key → "running" | the answer
	intents := 0
	release := make(chan struct{})
	var once sync.Once
	let := func() { once.Do(func() { close(release) }) }
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		w.Header().Set("Content-Type", "application/json")
		mu.Lock()
		switch st := state[key]; {
		case st == "running":
			mu.Unlock()
			w.WriteHeader(409)
			fmt.Fprint(w, `{"error":{"type":"idempotency_error","code":"idempotency_key_in_use"}}`)
			return
		case st != "":
			mu.Unlock()
			w.Header().Set("Idempotent-Replayed", "true")
			fmt.Fprint(w, st)
			return
		}
		state[key] = "running"
		mu.Unlock()
		<-release // slower than Keybrake's upstream timeout
		mu.Lock()
		intents++
		state[key] = `{"id":"pi_slow","object":"payment_intent","amount":500,"currency":"usd"}`
		mu.Unlock()
		fmt.Fprint(w, state[key])
	})
	env := kbtest.Start(t, kbtest.Options{Upstream: upstream, Configure: func(cfg *server.Config) { cfg.UpstreamTimeout = time.Second }})
	t.Cleanup(let) // runs before the servers close: a failure must not leave the vendor's handler waiting
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "100"})
	send := func() *kbtest.Response {
		return env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=500&currency=usd", "Idempotency-Key", "slow-1")
	}
	if r := send(); r.Status != 502 {
		t.Fatalf("first attempt: %d %s", r.Status, r.Body)
	}
	if r := send(); r.Status != 409 {
		t.Fatalf("retry while the first runs: %d %s", r.Status, r.Body)
	}
	if v := getKey(t, env, k.ID); *v.SpentUSD+*v.ReservedUSD != 5*keybrake.MicrosPerUSD {
		t.Fatalf("the $5 the first attempt may move is no longer counted: spent $%s, reserved $%s", v.SpentUSD, v.ReservedUSD)
	}
	let()
	waitFor(t, 10*time.Second, "the vendor applies the first attempt", func() bool { mu.Lock(); defer mu.Unlock(); return intents == 1 })
	if r := send(); r.Status != 200 || r.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry after it completed: %d %v %s", r.Status, r.Header, r.Body)
	}
	if v := getKey(t, env, k.ID); *v.SpentUSD != 5*keybrake.MicrosPerUSD || *v.ReservedUSD != 0 || intents != 1 {
		t.Fatalf("spent $%s, reserved $%s, %d PaymentIntents", v.SpentUSD, v.ReservedUSD, intents)
	}
}
