package stepfunctions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/internal/sandbox"
)

const (
	nCustomers  = 1000
	amountCents = 1250 // $12.50 each
	budgetUSD   = 5000 // covers exactly 400 customers
	nCovered    = budgetUSD * 100 / amountCents
)

func customers(n int) []map[string]any {
	out := make([]map[string]any, n)
	for i := range out {
		out[i] = map[string]any{"id": customerID(i), "amount_cents": amountCents}
	}
	return out
}

func customerID(i int) string { return fmt.Sprintf("cus_%04d", i) }

func executionARN(name string) string {
	return "arn:aws:states:us-east-1:123456789:execution:agent-billing:" + name + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
}

// billingOutput is the execution's final state data. The Map's results
// are not in it (ResultPath null keeps the state small): each item's
// result is read from the execution's event log.
type billingOutput struct {
	Vault struct {
		KeyID    string `json:"key_id"`
		VaultKey string `json:"vault_key"`
	} `json:"vault"`
	Revocation struct {
		Revoked []client.Revocation `json:"revoked"`
	} `json:"revocation"`
}

// itemResult is one Map iteration's result: ChargeOne's charge, or the
// error CapHitEnd received from the Catch.
type itemResult struct {
	ItemIndex     *int   `json:"item_index"`
	PaymentIntent string `json:"payment_intent"`
	Customer      string `json:"customer"`
	Amount        int64  `json:"amount"`
	Replayed      bool   `json:"replayed"`
	Error         string `json:"Error"`
}

// outcome splits the Map's items into charged and capped item indexes.
func outcome(t *testing.T, r *report) (results []itemResult, charged, capped map[int]bool) {
	t.Helper()
	charged, capped = map[int]bool{}, map[int]bool{}
	if len(r.Items) != nCustomers {
		t.Fatalf("the Map ran %d items, want %d", len(r.Items), nCustomers)
	}
	results = make([]itemResult, nCustomers)
	for i := range results {
		c := &results[i]
		if err := json.Unmarshal(r.Items[strconv.Itoa(i)].Output, c); err != nil {
			t.Fatalf("item %d: output %s: %v", i, r.Items[strconv.Itoa(i)].Output, err)
		}
		switch {
		case c.PaymentIntent != "":
			if c.ItemIndex == nil || *c.ItemIndex != i || c.Customer != customerID(i) || c.Amount != amountCents {
				t.Fatalf("item %d: charge for the wrong item: %+v", i, c)
			}
			charged[i] = true
		case c.Error == "CapExhausted":
			capped[i] = true
		default:
			t.Fatalf("item %d: neither charged nor capped: %+v", i, c)
		}
	}
	return results, charged, capped
}

// TestBillingExecution runs the seed's workflow (with the revoke states) on
// aws-local-stepfunctions: the real definition, the real handler binaries
// behind a local Lambda, a live `keybrake serve`, and a sandbox Stripe that
// counts charges. 1,000 customers, MaxConcurrency 0, a cap for 400.
func TestBillingExecution(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end execution of 1,000 items")
	}
	nodeDir(t)
	s := startStack(t, stackOptions{customers: customers(nCustomers), chargeInstances: 8})
	arn := executionARN("run")
	start := time.Now()
	r := s.execute(t, "billing.asl.json", arn, map[string]any{"budget_usd": budgetUSD, "plan_id": "plan_gold"}, nil)
	t.Logf("execution of %d items took %s", nCustomers, time.Since(start).Round(time.Millisecond))

	if r.Status != "SUCCEEDED" {
		t.Fatalf("execution %s: %s: %s", r.Status, r.Error, r.Cause)
	}
	if got, want := strings.Join(r.States, ","), "IssueVaultKey,FetchCustomers,ChargeCustomers,RevokeVaultKey"; got != want {
		t.Errorf("states entered: %s, want %s", got, want)
	}
	var out billingOutput
	if err := json.Unmarshal(r.Output, &out); err != nil {
		t.Fatal(err)
	}
	// Step Functions refuses state data over 256 KiB: the definition must
	// stay deployable for this run's size.
	if len(r.Output) > 256<<10 {
		t.Errorf("the execution's output is %d bytes, over Step Functions' 256 KiB limit", len(r.Output))
	}
	_, charged, capped := outcome(t, r)
	if len(charged) != nCovered || len(capped) != nCustomers-nCovered {
		t.Fatalf("charged %d and capped %d items, want %d and %d", len(charged), len(capped), nCovered, nCustomers-nCovered)
	}
	// Each capped item went ChargeOne -> CapHitEnd; each charged one ended in ChargeOne.
	for i := 0; i < nCustomers; i++ {
		it := r.Items[strconv.Itoa(i)]
		want := "ChargeOne"
		if capped[i] {
			want = "ChargeOne,CapHitEnd"
		}
		if got := strings.Join(it.States, ","); got != want || it.Retries != 0 {
			t.Fatalf("item %d went through %s with %d retries, want %s and none", i, got, it.Retries, want)
		}
	}

	// The vendor: exactly the charged customers, once each, and nothing for the capped ones.
	assertStripeCharged(t, s.stripe, arn, charged, capped)
	if n := s.stripe.Requests(); n != nCovered {
		t.Errorf("Stripe received %d requests, want %d (one per charged customer, none for the %d capped)", n, nCovered, len(capped))
	}
	if n := s.lambda.Errors("charge-customer", "CapExhausted"); n != len(capped) {
		t.Errorf("charge-customer reported errorType CapExhausted %d times, want %d", n, len(capped))
	}

	// The key died with the execution.
	assertRevoked(t, s, out.Vault.KeyID)
	if len(out.Revocation.Revoked) != 1 || out.Revocation.Revoked[0].ID != out.Vault.KeyID {
		t.Errorf("RevokeVaultKey result %+v, want the run's key %s", out.Revocation.Revoked, out.Vault.KeyID)
	}

	// The run summary for the execution ARN: the spend and the 600 denials.
	sum, err := s.admin.RunSummary(context.Background(), arn)
	if err != nil {
		t.Fatal(err)
	}
	if want := keybrake.Micros(budgetUSD) * keybrake.MicrosPerUSD; sum.Spent != want {
		t.Errorf("run summary spent %s, want %s", sum.Spent, want)
	}
	if sum.Allowed != nCovered || sum.Denied != int64(len(capped)) || sum.DeniedByCode[keybrake.CodeCapExhausted] != int64(len(capped)) || sum.Unknown != 0 {
		t.Errorf("run summary: %d allowed, %d denied (%v), %d unknown; want %d, %d cap_exhausted, 0", sum.Allowed, sum.Denied, sum.DeniedByCode, sum.Unknown, nCovered, len(capped))
	}
	if len(sum.Keys) != 1 || sum.Keys[0].ID != out.Vault.KeyID || sum.Keys[0].Status != keybrake.StatusRevoked {
		t.Errorf("run summary keys %+v, want the one revoked key %s", sum.Keys, out.Vault.KeyID)
	}

	// The audit rows carry the Map item index (Keybrake-Item) and the
	// idempotency key of each call.
	calls := allCalls(t, s.admin, out.Vault.KeyID)
	deniedItems := map[int]bool{}
	for _, c := range calls {
		i, err := strconv.Atoi(c.Item)
		if err != nil {
			t.Fatalf("audit row %d has item %q", c.ID, c.Item)
		}
		if c.IdempotencyKey != arn+"-"+c.Item {
			t.Fatalf("audit row %d: Idempotency-Key %q, want %q", c.ID, c.IdempotencyKey, arn+"-"+c.Item)
		}
		if c.Outcome.IsDenied() {
			if c.Code != keybrake.CodeCapExhausted || !capped[i] {
				t.Fatalf("audit row %d: denied item %d with %s", c.ID, i, c.Code)
			}
			deniedItems[i] = true
		} else if !charged[i] {
			t.Fatalf("audit row %d: allowed call for item %d that was not charged", c.ID, i)
		}
	}
	if len(calls) != nCustomers || len(deniedItems) != len(capped) {
		t.Errorf("%d audit rows, %d denied items; want %d and %d", len(calls), len(deniedItems), nCustomers, len(capped))
	}

	// The revoked key stops the very next call, before the vendor.
	before := s.stripe.Requests()
	resp := proxiedCharge(t, s.kb.URL(), out.Vault.VaultKey, arn+"-after", customerID(0))
	if resp.status != http.StatusUnauthorized || resp.code != "key_revoked" {
		t.Errorf("a call with the revoked key answered %d %s, want 401 key_revoked", resp.status, resp.code)
	}
	if s.stripe.Requests() != before {
		t.Error("Stripe received a call made with the revoked key")
	}
}

// TestBillingExecutionRetriesTransientFailures runs the Retry variant while
// Stripe applies every fourth charge and then answers 500. Step Functions
// retries those items (KeybrakeTransient) with the same Idempotency-Key:
// nobody is charged twice and the cap still admits exactly 400.
func TestBillingExecutionRetriesTransientFailures(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end execution of 1,000 items")
	}
	nodeDir(t)
	var mu sync.Mutex
	seen := map[string]bool{}
	faulted := map[string]bool{}
	fault := func(r *http.Request, _ int) sandbox.Fault {
		key := clientKey(r.Header.Get("Idempotency-Key"))
		idx, _ := strconv.Atoi(key[strings.LastIndexByte(key, '-')+1:])
		mu.Lock()
		defer mu.Unlock()
		first := !seen[key]
		seen[key] = true
		if first && idx%4 == 0 {
			faulted[key] = true
			return sandbox.FailAfterApply
		}
		return sandbox.NoFault
	}
	s := startStack(t, stackOptions{customers: customers(nCustomers), chargeInstances: 8, fault: fault})
	arn := executionARN("retry")
	start := time.Now()
	r := s.execute(t, "billing-retry.asl.json", arn, map[string]any{"budget_usd": budgetUSD, "plan_id": "plan_gold"},
		map[string]int{"ChargeOne": 10}) // retry after 10 ms instead of IntervalSeconds
	t.Logf("execution of %d items took %s", nCustomers, time.Since(start).Round(time.Millisecond))
	if r.Status != "SUCCEEDED" {
		t.Fatalf("execution %s: %s: %s", r.Status, r.Error, r.Cause)
	}
	var out billingOutput
	if err := json.Unmarshal(r.Output, &out); err != nil {
		t.Fatal(err)
	}
	results, charged, capped := outcome(t, r)
	if len(charged) != nCovered || len(capped) != nCustomers-nCovered {
		t.Fatalf("charged %d and capped %d items, want %d and %d", len(charged), len(capped), nCovered, nCustomers-nCovered)
	}
	mu.Lock()
	nFaulted := len(faulted)
	mu.Unlock()
	if nFaulted == 0 {
		t.Fatal("no fault was injected")
	}
	retried := 0
	for i := 0; i < nCustomers; i++ {
		it := r.Items[strconv.Itoa(i)]
		wasFaulted := faulted[arn+"-"+strconv.Itoa(i)]
		switch {
		case wasFaulted && (it.Retries != 1 || !charged[i] || len(it.Errors) != 1 || it.Errors[0] != "KeybrakeTransient"):
			t.Errorf("item %d: Stripe failed after applying it; want one KeybrakeTransient retry and a charge, got %+v", i, it)
		case !wasFaulted && it.Retries != 0:
			t.Errorf("item %d was retried %d times without a fault", i, it.Retries)
		}
		retried += it.Retries
	}
	if retried != nFaulted {
		t.Errorf("%d retries for %d injected faults", retried, nFaulted)
	}
	t.Logf("%d charges failed after Stripe applied them and were retried", nFaulted)
	if n := s.lambda.Errors("charge-customer", "KeybrakeTransient"); n != nFaulted {
		t.Errorf("charge-customer reported KeybrakeTransient %d times, want %d", n, nFaulted)
	}
	// Nobody charged twice: 400 PaymentIntents for 400 distinct customers,
	// though Stripe saw a second request for every faulted one.
	assertStripeCharged(t, s.stripe, arn, charged, capped)
	// The retried items got the PaymentIntent their first attempt created.
	piOf := map[string]string{}
	for _, pi := range s.stripe.Intents() {
		piOf[pi.Customer] = pi.ID
	}
	for i := range charged {
		if results[i].PaymentIntent != piOf[customerID(i)] {
			t.Errorf("item %d reports %s, Stripe created %s", i, results[i].PaymentIntent, piOf[customerID(i)])
		}
	}
	if n, want := s.stripe.Requests(), nCovered+nFaulted; n != want {
		t.Errorf("Stripe received %d requests, want %d (%d charges + %d retried)", n, want, nCovered, nFaulted)
	}
	assertRevoked(t, s, out.Vault.KeyID)
	sum, err := s.admin.RunSummary(context.Background(), arn)
	if err != nil {
		t.Fatal(err)
	}
	if want := keybrake.Micros(budgetUSD) * keybrake.MicrosPerUSD; sum.Spent != want {
		t.Errorf("run summary spent %s, want %s: a retried charge was counted twice or lost", sum.Spent, want)
	}
	if sum.Denied != int64(len(capped)) || sum.DeniedByCode[keybrake.CodeCapExhausted] != int64(len(capped)) || sum.Unknown != 0 {
		t.Errorf("run summary: %d denied (%v), %d unknown; want %d cap_exhausted and 0 unknown", sum.Denied, sum.DeniedByCode, sum.Unknown, len(capped))
	}
}

// TestFailedExecutionRevokesKey: without a Retry, a transient failure of
// one item fails the Map; the catch-all revokes the key before the
// execution fails, so nothing more can be charged with it.
func TestFailedExecutionRevokesKey(t *testing.T) {
	nodeDir(t)
	const n = 20
	fault := func(r *http.Request, _ int) sandbox.Fault {
		if strings.HasSuffix(r.Header.Get("Idempotency-Key"), "-7") {
			return sandbox.FailBeforeApply
		}
		return sandbox.NoFault
	}
	s := startStack(t, stackOptions{customers: customers(n), fault: fault})
	arn := executionARN("fail")
	r := s.execute(t, "billing.asl.json", arn, map[string]any{"budget_usd": "1000", "plan_id": "plan_gold"}, nil)
	if r.Status != "FAILED" || r.Error != "KeybrakeTransient" {
		t.Fatalf("execution %s %s (%s), want FAILED with KeybrakeTransient", r.Status, r.Error, r.Cause)
	}
	if got, want := strings.Join(r.States, ","), "IssueVaultKey,FetchCustomers,ChargeCustomers,RevokeVaultKeyAfterFailure,RunFailed"; got != want {
		t.Errorf("states entered: %s, want %s", got, want)
	}
	if it := r.Items["7"]; len(it.Errors) != 1 || it.Errors[0] != "KeybrakeTransient" {
		t.Errorf("item 7: %+v, want one KeybrakeTransient failure", it)
	}
	keys, err := s.admin.ListKeys(context.Background(), client.ListKeysParams{AgentRunLabel: arn})
	if err != nil {
		t.Fatal(err)
	}
	if len(keys.Data) != 1 {
		t.Fatalf("%d keys for the execution, want 1", len(keys.Data))
	}
	assertRevoked(t, s, keys.Data[0].ID)
	// Whatever iterations were in flight, no PaymentIntent exists without
	// a request, and none for the failed item.
	for _, pi := range s.stripe.Intents() {
		if pi.Customer == customerID(7) {
			t.Error("the failed item was charged")
		}
	}
}

// TestIssueAnswerLostRetriesToTheSameKey: Keybrake issued the key but its
// answer never reached the IssueVaultKey Lambda (the load balancer in
// front of the admin API lost it and answered 502). The state's Retry runs
// the Lambda again with the same input, it sends the same Idempotency-Key
// (execution ARN + state name), and gets the same key back: the execution
// runs on one key, one cap, and its revoke leaves no key alive.
func TestIssueAnswerLostRetriesToTheSameKey(t *testing.T) {
	nodeDir(t)
	const n = 6
	var issues, replays atomic.Int32
	front := func(admin http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost || r.URL.Path != "/vault/keys" {
				admin.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			admin.ServeHTTP(rec, r)
			if rec.Header().Get("Keybrake-Idempotent-Replayed") == "true" {
				replays.Add(1)
			}
			if issues.Add(1) == 1 {
				http.Error(w, "upstream connection reset", http.StatusBadGateway) // the key exists; its answer is lost
				return
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes()) //nolint:errcheck
		})
	}
	s := startStack(t, stackOptions{customers: customers(n), adminFront: front})
	arn := executionARN("lost-answer")
	r := s.execute(t, "billing.asl.json", arn, map[string]any{"budget_usd": "1000", "plan_id": "plan_gold"}, map[string]int{"IssueVaultKey": 10})
	if r.Status != "SUCCEEDED" {
		t.Fatalf("execution %s %s (%s)", r.Status, r.Error, r.Cause)
	}
	if issues.Load() != 2 || replays.Load() != 1 {
		t.Fatalf("%d issue requests, %d replayed; want 2 (the lost one, its retry) and 1", issues.Load(), replays.Load())
	}
	keys, err := s.admin.ListKeys(context.Background(), client.ListKeysParams{AgentRunLabel: arn})
	if err != nil {
		t.Fatal(err)
	}
	if len(keys.Data) != 1 {
		t.Fatalf("%d keys for the execution, want 1", len(keys.Data))
	}
	assertRevoked(t, s, keys.Data[0].ID)
	if got := len(s.stripe.Intents()); got != n {
		t.Errorf("%d PaymentIntents, want %d", got, n)
	}
	if v, err := s.admin.GetKey(context.Background(), keys.Data[0].ID); err != nil || v.AllowedCalls == nil || *v.AllowedCalls != n {
		t.Errorf("the key made %v calls, want all %d: %v", v.AllowedCalls, n, err)
	}
}

// TestIssueFailureFailsExecution: a refused key request (an unknown vendor
// in the budget's place: here a cap Keybrake rejects) fails the execution
// through the catch-all without touching Stripe.
func TestIssueFailureFailsExecution(t *testing.T) {
	nodeDir(t)
	s := startStack(t, stackOptions{customers: customers(3)})
	arn := executionARN("badcap")
	r := s.execute(t, "billing.asl.json", arn, map[string]any{"budget_usd": "-5", "plan_id": "plan_gold"}, nil)
	if r.Status != "FAILED" || r.Error != "KeybrakeRefused" {
		t.Fatalf("execution %s %s (%s), want FAILED with KeybrakeRefused", r.Status, r.Error, r.Cause)
	}
	if got, want := strings.Join(r.States, ","), "IssueVaultKey,RevokeRunKeysAfterIssueFailure,RunFailed"; got != want {
		t.Errorf("states entered: %s, want %s", got, want)
	}
	if n := s.stripe.Requests(); n != 0 {
		t.Errorf("Stripe received %d requests", n)
	}
}

func assertStripeCharged(t *testing.T, st *sandbox.Stripe, arn string, charged, capped map[int]bool) {
	t.Helper()
	intents := st.Intents()
	byCustomer := map[string]int{}
	for _, pi := range intents {
		byCustomer[pi.Customer]++
		if pi.Amount != amountCents || pi.Currency != "usd" {
			t.Errorf("PaymentIntent %s: %d %s, want %d usd", pi.ID, pi.Amount, pi.Currency, amountCents)
		}
	}
	if len(intents) != len(charged) {
		t.Errorf("Stripe created %d PaymentIntents, want %d", len(intents), len(charged))
	}
	for i := range charged {
		if byCustomer[customerID(i)] != 1 {
			t.Errorf("customer %s charged %d times, want once", customerID(i), byCustomer[customerID(i)])
		}
	}
	for i := range capped {
		if byCustomer[customerID(i)] != 0 {
			t.Errorf("capped customer %s was charged", customerID(i))
		}
	}
	for _, rq := range st.Received() {
		key := clientKey(rq.Header.Get("Idempotency-Key"))
		idx, err := strconv.Atoi(strings.TrimPrefix(key, arn+"-"))
		if err != nil || !strings.HasPrefix(key, arn+"-") {
			t.Fatalf("Stripe received Idempotency-Key %q, want %s-<index>", key, arn)
		}
		if capped[idx] {
			t.Fatalf("Stripe received a request for capped item %d", idx)
		}
		if !strings.Contains(rq.Body, "customer="+customerID(idx)) {
			t.Fatalf("request with key %s carries another customer: %s", key, rq.Body)
		}
		if rq.Header.Get("Keybrake-Item") != "" || rq.Header.Get("Authorization") != "Bearer "+kbtest.StripeSecret {
			t.Fatalf("Keybrake's own headers reached Stripe: %v", rq.Header)
		}
	}
}

func assertRevoked(t *testing.T, s *stack, keyID string) {
	t.Helper()
	k, err := s.admin.GetKey(context.Background(), keyID)
	if err != nil {
		t.Fatal(err)
	}
	if k.Status != keybrake.StatusRevoked {
		t.Errorf("key %s is %s after the execution, want revoked", keyID, k.Status)
	}
}

func allCalls(t *testing.T, c *client.Client, keyID string) []client.Call {
	t.Helper()
	var out []client.Call
	cursor := ""
	for {
		page, err := c.ListCalls(context.Background(), client.ListCallsParams{KeyID: keyID, Limit: keybrake.MaxPageSize, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page.Data...)
		if !page.HasMore {
			break
		}
		cursor = page.NextCursor
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

type proxied struct {
	status int
	code   string
}

func proxiedCharge(t *testing.T, baseURL, vaultKey, idemKey, customer string) proxied {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, baseURL+"/stripe/v1/payment_intents",
		strings.NewReader(`{"amount":1250,"currency":"usd","customer":"`+customer+`"}`))
	req.Header.Set("Authorization", "Bearer "+vaultKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", idemKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Code string `json:"code"`
	}
	json.NewDecoder(resp.Body).Decode(&body) //nolint:errcheck
	return proxied{resp.StatusCode, body.Code}
}

// clientKey is the client's Idempotency-Key inside the one Keybrake sends
// the vendor: "<namespace>:<client key>", the namespace being the vault
// key's id (or its idempotency scope's).
func clientKey(vendorKey string) string {
	_, k, _ := strings.Cut(vendorKey, ":")
	return k
}
