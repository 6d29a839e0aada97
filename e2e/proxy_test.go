package e2e

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
)

// The seed's charge-customer Lambda, as written: a JSON body to
// /stripe/v1/payment_intents with the vault key as Bearer.
func TestSeedLambdaRequestIsForwardedAsStripeForm(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "10", AgentRunLabel: "arn:aws:states:us-east-1:1:execution:sm:run-1"})
	r := env.Do(t, k.VaultKey, "POST", "/stripe/v1/payment_intents", "application/json",
		`{"amount":150,"currency":"usd","customer":"cus_42","metadata":{"order":"A-1"}}`,
		"Idempotency-Key", "exec-1-7", "Keybrake-Item", "7", "Stripe-Version", "2024-06-20",
		"X-HTTP-Method-Override", "DELETE", "Cookie", "session=abc")
	if r.Status != http.StatusOK {
		t.Fatalf("status %d: %s", r.Status, r.Body)
	}
	if !strings.Contains(string(r.Body), `"id":"pi_sandbox_000001"`) {
		t.Fatalf("body is not the vendor's: %s", r.Body)
	}
	if r.Header.Get("Keybrake-Key-Id") != k.ID || r.Header.Get("Keybrake-Spent-Usd") != "1.50" || r.Header.Get("Keybrake-Remaining-Usd") != "8.50" {
		t.Fatalf("Keybrake headers: %v", r.Header)
	}
	if r.Header.Get("Request-Id") != "req_sandbox_1" {
		t.Fatalf("vendor headers must come back: %v", r.Header)
	}

	got := env.Stripe.Received()
	if len(got) != 1 {
		t.Fatalf("vendor received %d requests", len(got))
	}
	up := got[0]
	if up.Method != "POST" || up.Path != "/v1/payment_intents" {
		t.Fatalf("upstream %s %s", up.Method, up.Path)
	}
	form, err := url.ParseQuery(up.Body)
	if err != nil || form.Get("amount") != "150" || form.Get("currency") != "usd" || form.Get("customer") != "cus_42" || form.Get("metadata[order]") != "A-1" {
		t.Fatalf("upstream body %q is not Stripe's form encoding of the JSON", up.Body)
	}
	h := up.Header
	if h.Get("Authorization") != "Bearer "+kbtest.StripeSecret {
		t.Fatalf("upstream Authorization %q: want the real secret", h.Get("Authorization"))
	}
	if h.Get("Content-Type") != "application/x-www-form-urlencoded" {
		t.Fatalf("upstream Content-Type %q", h.Get("Content-Type"))
	}
	if h.Get("Idempotency-Key") != k.ID+":exec-1-7" || h.Get("Stripe-Version") != "2024-06-20" {
		t.Fatalf("Idempotency-Key (namespaced to the vault key) and Stripe-Version must pass through: %v", h)
	}
	for _, stripped := range []string{"Keybrake-Item", "X-Http-Method-Override", "Cookie", "X-Forwarded-For"} {
		if h.Get(stripped) != "" {
			t.Fatalf("%s reached the vendor", stripped)
		}
	}
	if strings.Contains(fmt.Sprint(h), k.VaultKey) {
		t.Fatal("the vault key reached the vendor")
	}

	cs := calls(t, env, client.ListCallsParams{KeyID: k.ID})
	if len(cs) != 1 {
		t.Fatalf("%d audit rows, want 1", len(cs))
	}
	c := cs[0]
	if c.Outcome != "forwarded" || c.Status != 200 || c.Estimated.String() != "1.50" || c.Actual.String() != "1.50" ||
		c.ObjectID != "pi_sandbox_000001" || c.IdempotencyKey != "exec-1-7" || c.Item != "7" || c.VendorRequestID != "req_sandbox_1" ||
		c.Rule != "POST /v1/payment_intents" || c.Vendor != "stripe" || c.Method != "POST" || c.Path != "/v1/payment_intents" ||
		c.AgentRunLabel != "arn:aws:states:us-east-1:1:execution:sm:run-1" {
		t.Fatalf("audit row: %+v", *c.Call)
	}
}

// stripe-go cannot take a base URL with a path, so the vendor's own paths
// work at the root with the vendor chosen by the key; Basic auth with the
// key as user name is what older Stripe SDKs send.
func TestRootFormAndBasicAuth(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{})
	r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", "application/x-www-form-urlencoded", "amount=100&currency=usd")
	if r.Status != 200 {
		t.Fatalf("root form: %d %s", r.Status, r.Body)
	}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(k.VaultKey+":"))
	r = env.Do(t, "", "POST", "/v1/payment_intents", "application/x-www-form-urlencoded", "amount=100&currency=usd", "Authorization", basic)
	if r.Status != 200 {
		t.Fatalf("basic auth: %d %s", r.Status, r.Body)
	}
	if n := len(env.Stripe.Intents()); n != 2 {
		t.Fatalf("%d charges, want 2", n)
	}
}

// Every refusal code: the status, the code, nothing at the vendor, and an
// audit row saying why.
func TestDenials(t *testing.T) {
	env, clock := withClock(t)
	key := env.Issue(t, client.IssueParams{DailyUSDCap: "5", MaxUSDPerCall: "2", TotalUSDCap: "50",
		AllowedEndpoints: []string{"POST /v1/payment_intents", "POST /v1/payment_intents/*/capture", "GET /v1/balance"}})
	revoked := env.Issue(t, client.IssueParams{})
	if _, err := env.Admin.RevokeKey(t.Context(), revoked.ID); err != nil {
		t.Fatal(err)
	}
	expiring := env.Issue(t, client.IssueParams{ExpiresIn: "10m"})
	clock.advance(11 * time.Minute)
	t.Cleanup(func() { clock.advance(-11 * time.Minute) })

	form := "application/x-www-form-urlencoded"
	pi := "amount=100&currency=usd"
	wellFormedUnknown := "kbvk" + strings.Repeat("0", 49)
	cases := []struct {
		name                   string
		vaultKey, method, path string
		ctype, body            string
		header                 []string
		status                 int
		code                   string
	}{
		{"no key", "", "POST", "/v1/payment_intents", form, pi, nil, 401, "invalid_vault_key"},
		{"malformed key", "sk_live_notavaultkey", "POST", "/v1/payment_intents", form, pi, nil, 401, "invalid_vault_key"},
		{"bad checksum", mistype(key.VaultKey), "POST", "/v1/payment_intents", form, pi, nil, 401, "invalid_vault_key"},
		{"unknown key", wellFormedUnknown, "POST", "/v1/payment_intents", form, pi, nil, 401, "invalid_vault_key"},
		{"revoked", revoked.VaultKey, "POST", "/v1/payment_intents", form, pi, nil, 401, "key_revoked"},
		{"revoked beats bad path", revoked.VaultKey, "POST", "/v1/../v1/payment_intents", form, pi, nil, 401, "key_revoked"},
		{"expired", expiring.VaultKey, "POST", "/v1/payment_intents", form, pi, nil, 401, "key_expired"},
		{"dot-dot", key.VaultKey, "POST", "/v1/payment_intents/../payment_intents", form, pi, nil, 400, "non_canonical_path"},
		{"encoded dot-dot", key.VaultKey, "POST", "/v1/payment_intents/%2e%2e/refunds", form, pi, nil, 400, "non_canonical_path"},
		{"encoded slash", key.VaultKey, "POST", "/v1/payment_intents%2fpi_1%2fcapture", form, pi, nil, 400, "non_canonical_path"},
		{"encoded backslash", key.VaultKey, "POST", "/v1/payment_intents%5c", form, pi, nil, 400, "non_canonical_path"},
		{"double slash", key.VaultKey, "POST", "//v1/payment_intents", form, pi, nil, 400, "non_canonical_path"},
		{"trailing slash", key.VaultKey, "POST", "/v1/payment_intents/", form, pi, nil, 400, "non_canonical_path"},
		{"semicolon", key.VaultKey, "POST", "/v1/payment_intents;x=1", form, pi, nil, 400, "non_canonical_path"},
		{"prefix then dot", key.VaultKey, "POST", "/stripe/./v1/payment_intents", form, pi, nil, 400, "non_canonical_path"},
		{"prefix only", key.VaultKey, "POST", "/stripe", form, pi, nil, 400, "non_canonical_path"},
		{"method not allowed", key.VaultKey, "GET", "/v1/payment_intents", "", "", nil, 403, "endpoint_not_allowed"},
		{"path not allowed", key.VaultKey, "POST", "/v1/refunds", form, "amount=100", nil, 403, "endpoint_not_allowed"},
		{"wildcard is one segment", key.VaultKey, "POST", "/v1/payment_intents/pi_1/x/capture", form, "amount_to_capture=100", nil, 403, "unknown_operation"},
		{"allowed but forbidden", key.VaultKey, "POST", "/v1/ephemeral_keys", form, "customer=cus_1", nil, 403, "operation_forbidden"},
		{"root path no vendor owns", key.VaultKey, "POST", "/emails", "application/json", "{}", nil, 403, "endpoint_not_allowed"},
		{"amount missing", key.VaultKey, "POST", "/v1/payment_intents", form, "currency=usd", nil, 400, "unpriceable_request"},
		{"amount repeated", key.VaultKey, "POST", "/v1/payment_intents", form, "amount=1&amount=100000&currency=usd", nil, 400, "unpriceable_request"},
		{"amount not integer", key.VaultKey, "POST", "/v1/payment_intents", form, "amount=1.5&currency=usd", nil, 400, "unpriceable_request"},
		{"amount negative", key.VaultKey, "POST", "/v1/payment_intents", form, "amount=-100&currency=usd", nil, 400, "unpriceable_request"},
		{"bad JSON", key.VaultKey, "POST", "/v1/payment_intents", "application/json", `{"amount":`, nil, 400, "unpriceable_request"},
		{"JSON array", key.VaultKey, "POST", "/v1/payment_intents", "application/json", `[1]`, nil, 400, "unpriceable_request"},
		{"other content type", key.VaultKey, "POST", "/v1/payment_intents", "text/plain", "amount=100", nil, 400, "unpriceable_request"},
		{"query on priced call", key.VaultKey, "POST", "/v1/payment_intents?amount=100000", form, pi, nil, 400, "unpriceable_request"},
		{"compressed body", key.VaultKey, "POST", "/v1/payment_intents", form, pi, []string{"Content-Encoding", "gzip"}, 400, "unpriceable_request"},
		{"capture amount repeated", key.VaultKey, "POST", "/v1/payment_intents/pi_1/capture", form, "amount_to_capture=1&amount_to_capture=9999", nil, 400, "unpriceable_request"},
		{"currency not priced", key.VaultKey, "POST", "/v1/payment_intents", form, "amount=100&currency=gbp", nil, 400, "currency_not_priced"},
		{"per-call cap", key.VaultKey, "POST", "/v1/payment_intents", form, "amount=201&currency=usd", nil, 429, "cap_exhausted"},
		{"idempotency key too long", key.VaultKey, "POST", "/v1/payment_intents", form, pi, []string{"Idempotency-Key", strings.Repeat("k", 256)}, 400, "invalid_idempotency_key"},
		{"body too large", key.VaultKey, "POST", "/v1/payment_intents", form, pi + "&metadata[x]=" + strings.Repeat("x", 1<<20), nil, 413, "request_too_large"},
	}
	lastRow := func(t *testing.T) int64 {
		page, err := env.Admin.ListCalls(t.Context(), client.ListCallsParams{Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Data) == 0 {
			return 0
		}
		return page.Data[0].ID
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, lastBefore := env.Stripe.Requests(), lastRow(t)
			r := env.Do(t, c.vaultKey, c.method, c.path, c.ctype, c.body, c.header...)
			e := expectDenied(t, env.Stripe, before, r, c.status, c.code)
			if e.Error == nil || e.Error.Code != c.code {
				t.Fatalf("the Stripe route must add Stripe's error object with the code: %s", r.Body)
			}
			if c.code == "invalid_vault_key" {
				// No valid key: counted and sampled in the log, not audited
				// one row each (a flood of them must not fill the ledger).
				if e.CallID != 0 || lastRow(t) != lastBefore {
					t.Fatalf("a request with no valid key wrote an audit row: %s", r.Body)
				}
				return
			}
			if e.CallID == 0 {
				t.Fatalf("no audit row id in %s", r.Body)
			}
			if r.Header.Get("Stripe-Should-Retry") != "false" {
				t.Fatalf("Stripe-Should-Retry = %q, want false", r.Header.Get("Stripe-Should-Retry"))
			}
			page, err := env.Admin.ListCalls(t.Context(), client.ListCallsParams{Limit: 1})
			if err != nil {
				t.Fatal(err)
			}
			rows := page.Data
			if len(rows) != 1 || rows[0].ID != e.CallID || string(rows[0].Outcome) != "denied_"+c.code || rows[0].Status != c.status {
				t.Fatalf("audit row %+v (call_id in body %d), want outcome denied_%s", rows[0].Call, e.CallID, c.code)
			}
		})
	}
	// The daily cap, reached with allowed calls: 2 × $2 then $1.01 > $5.
	for i := 0; i < 2; i++ {
		if r := env.Do(t, key.VaultKey, "POST", "/v1/payment_intents", form, "amount=200&currency=usd"); r.Status != 200 {
			t.Fatalf("charge %d: %d %s", i, r.Status, r.Body)
		}
	}
	before := env.Stripe.Requests()
	r := env.Do(t, key.VaultKey, "POST", "/v1/payment_intents", form, "amount=101&currency=usd")
	e := expectDenied(t, env.Stripe, before, r, 429, "cap_exhausted")
	if e.Cap != "daily" || e.CapUSD != "5.00" || e.SpentUSD != "4.00" || e.RequestedUSD != "1.01" || e.KeyID != key.ID {
		t.Fatalf("cap_exhausted body: %s", r.Body)
	}
	// A read costs nothing and still passes with the cap spent.
	if r := env.Do(t, key.VaultKey, "GET", "/v1/balance", "", ""); r.Status != 200 {
		t.Fatalf("free read after the cap: %d %s", r.Status, r.Body)
	}
	k := getKey(t, env, key.ID)
	if k.SpentUSD.String() != "4.00" || *k.DeniedCalls == 0 || k.RemainingUSD.String() != "1.00" {
		t.Fatalf("key after denials: spent %s denied %d remaining %s", k.SpentUSD, *k.DeniedCalls, k.RemainingUSD)
	}
}

// Absolute-form and other raw targets a browser would never send, written
// straight to the socket.
func TestRawTargetsAreRefused(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{})
	for _, target := range []string{
		"http://api.stripe.com/v1/payment_intents",
		"/v1/payment_intents/%2E%2E/payment_intents",
		"/v1/./payment_intents",
	} {
		status, body := kbtest.RawRequest(t, env.URL, "POST "+target+" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+k.VaultKey+
			"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 23\r\nConnection: close\r\n\r\namount=100&currency=usd")
		if status != 400 || !strings.Contains(body, `"code":"non_canonical_path"`) {
			t.Fatalf("%s: %d %s", target, status, body)
		}
	}
	if n := env.Stripe.Requests(); n != 0 {
		t.Fatalf("vendor received %d requests", n)
	}
}
