package temporal_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	sdktemporal "go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/keybrake/keybrake"
	kbclient "github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/integrations/issuer"
	"github.com/keybrake/keybrake/integrations/temporal"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/internal/sandbox"
)

const (
	workflowID = "billing-2026-11"
	runID      = "default-test-run-id" // the test environment's run id
	cents      = 1250
)

func customers(n int) []temporal.Customer {
	out := make([]temporal.Customer, n)
	for i := range out {
		out[i] = temporal.Customer{ID: fmt.Sprintf("cus_%03d", i), AmountCents: cents}
	}
	return out
}

type fixture struct {
	kb   *kbtest.Env
	st   *sandbox.Stripe
	acts *temporal.Activities
	env  *testsuite.TestWorkflowEnvironment
}

// setup runs a live in-process Keybrake in front of a fault-injecting
// sandbox Stripe, and a Temporal test environment whose activities call it
// for real. chargeWrapper, when set, replaces the ChargeCustomer activity
// (registered under the same name) around the real one.
func setup(t *testing.T, fault func(*http.Request, int) sandbox.Fault,
	chargeWrapper func(real func(context.Context, temporal.ChargeRequest) (*temporal.ChargeResult, error)) any) *fixture {
	t.Helper()
	st := sandbox.NewStripe(kbtest.StripeSecret)
	st.Fault = fault
	kb := kbtest.Start(t, kbtest.Options{Upstream: st, Configure: kbtest.Sealing})
	acts := &temporal.Activities{
		ProxyURL: kb.URL,
		Admin:    issuer.Admin{URL: "http://" + kb.Server.AdminAddr(), Token: issuer.StaticToken(kbtest.AdminToken)},
	}
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestWorkflowEnvironment()
	env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: workflowID})
	env.SetTestTimeout(2 * time.Minute)
	env.RegisterWorkflow(temporal.BillingWorkflow)
	env.RegisterActivity(acts.IssueVaultKey)
	env.RegisterActivity(acts.RevokeVaultKey)
	if chargeWrapper != nil {
		env.RegisterActivityWithOptions(chargeWrapper(acts.ChargeCustomer), activity.RegisterOptions{Name: "ChargeCustomer"})
	} else {
		env.RegisterActivity(acts.ChargeCustomer)
	}
	return &fixture{kb: kb, st: st, acts: acts, env: env}
}

func (f *fixture) keys(t *testing.T) []kbclient.Key {
	t.Helper()
	page, err := f.kb.Admin.ListKeys(context.Background(), kbclient.ListKeysParams{AgentRunLabel: temporal.RunLabel(workflowID, runID)})
	if err != nil {
		t.Fatal(err)
	}
	return page.Data
}

func (f *fixture) assertRevoked(t *testing.T) {
	t.Helper()
	keys := f.keys(t)
	if len(keys) != 1 {
		t.Fatalf("%d keys for the run, want 1", len(keys))
	}
	if keys[0].Status != keybrake.StatusRevoked {
		t.Errorf("the run's key is %s after the run, want revoked", keys[0].Status)
	}
}

// chargedOnce checks that Stripe created one PaymentIntent per charged
// customer and none for the others.
func (f *fixture) chargedOnce(t *testing.T, res *temporal.BillingResult) {
	t.Helper()
	per := map[string]int{}
	for _, pi := range f.st.Intents() {
		per[pi.Customer]++
	}
	if len(f.st.Intents()) != len(res.Charged) {
		t.Errorf("Stripe created %d PaymentIntents, the workflow reports %d charges", len(f.st.Intents()), len(res.Charged))
	}
	for _, c := range res.Charged {
		if per[c.Customer] != 1 {
			t.Errorf("customer %s charged %d times", c.Customer, per[c.Customer])
		}
	}
	for _, i := range res.CapExhausted {
		if per[fmt.Sprintf("cus_%03d", i)] != 0 {
			t.Errorf("capped customer %d was charged", i)
		}
	}
	for _, rq := range f.st.Received() {
		key := clientKey(rq.Header.Get("Idempotency-Key"))
		idx, err := strconv.Atoi(strings.TrimPrefix(key, runID+"-charge-"))
		if err != nil || !strings.Contains(rq.Body, fmt.Sprintf("customer=cus_%03d", idx)) {
			t.Fatalf("Stripe received Idempotency-Key %q for %s; want <run id>-charge-<index> of that customer", key, rq.Body)
		}
		for _, c := range res.CapExhausted {
			if c == idx {
				t.Fatalf("Stripe received a request for capped customer %d", idx)
			}
		}
	}
}

// TestBillingWorkflowRetriesAfterAppliedCharge: 40 customers at $12.50, a
// $200 cap (16 of them). Stripe applies every third charge and answers 500:
// Temporal retries those activities with the same activity id, so the same
// Idempotency-Key; Keybrake forwards the retry, Stripe deduplicates it.
func TestBillingWorkflowRetriesAfterAppliedCharge(t *testing.T) {
	var mu sync.Mutex
	seen, faulted := map[string]bool{}, map[string]bool{}
	f := setup(t, func(r *http.Request, _ int) sandbox.Fault {
		key := clientKey(r.Header.Get("Idempotency-Key"))
		idx, _ := strconv.Atoi(key[strings.LastIndexByte(key, '-')+1:])
		mu.Lock()
		defer mu.Unlock()
		first := !seen[key]
		seen[key] = true
		if first && idx%3 == 0 {
			faulted[key] = true
			return sandbox.FailAfterApply
		}
		return sandbox.NoFault
	}, nil)
	f.env.ExecuteWorkflow(temporal.BillingWorkflow, temporal.BillingInput{DailyUSDCap: "200", Customers: customers(40)})
	if !f.env.IsWorkflowCompleted() || f.env.GetWorkflowError() != nil {
		t.Fatalf("workflow: completed %v, error %v", f.env.IsWorkflowCompleted(), f.env.GetWorkflowError())
	}
	var res temporal.BillingResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if len(res.Charged) != 16 || len(res.CapExhausted) != 24 || !res.Revoked {
		t.Fatalf("charged %d, capped %d, revoked %v; want 16, 24, true", len(res.Charged), len(res.CapExhausted), res.Revoked)
	}
	retried := 0
	for _, c := range res.Charged {
		if faulted[runID+"-charge-"+strconv.Itoa(c.Index)] {
			retried++
			if c.Attempt != 2 {
				t.Errorf("customer %d: answered on attempt %d, want 2 (after the 500)", c.Index, c.Attempt)
			}
		} else if c.Attempt != 1 {
			t.Errorf("customer %d retried without a fault", c.Index)
		}
	}
	if retried == 0 || retried != len(faulted) {
		t.Fatalf("%d retried charges for %d faults", retried, len(faulted))
	}
	f.chargedOnce(t, &res)
	if n, want := f.st.Requests(), 16+retried; n != want {
		t.Errorf("Stripe received %d requests, want %d", n, want)
	}
	f.assertRevoked(t)
	sum, err := f.kb.Admin.RunSummary(context.Background(), res.RunLabel)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Spent != 200*keybrake.MicrosPerUSD || sum.Denied != 24 || sum.DeniedByCode[keybrake.CodeCapExhausted] != 24 {
		t.Errorf("run summary: spent %s, %d denied (%v); want 200.00 and 24 cap_exhausted", sum.Spent, sum.Denied, sum.DeniedByCode)
	}
}

// TestActivityFailingAfterTheChargeIsRetriedSafely: the activity got its
// 200 from Keybrake, then the worker "crashed" before reporting it. Temporal
// runs the activity again; Keybrake answers from its stored response and
// Stripe is not called a second time.
func TestActivityFailingAfterTheChargeIsRetriedSafely(t *testing.T) {
	f := setup(t, nil, func(real func(context.Context, temporal.ChargeRequest) (*temporal.ChargeResult, error)) any {
		return func(ctx context.Context, req temporal.ChargeRequest) (*temporal.ChargeResult, error) {
			res, err := real(ctx, req)
			if err == nil && req.Index%2 == 0 && activity.GetInfo(ctx).Attempt == 1 {
				return nil, sdktemporal.NewApplicationError("worker lost after the charge", temporal.ErrKeybrakeTransient)
			}
			return res, err
		}
	})
	f.env.ExecuteWorkflow(temporal.BillingWorkflow, temporal.BillingInput{DailyUSDCap: "1000", Customers: customers(10)})
	if err := f.env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	var res temporal.BillingResult
	f.env.GetWorkflowResult(&res) //nolint:errcheck
	if len(res.Charged) != 10 {
		t.Fatalf("%d charged, want 10", len(res.Charged))
	}
	for _, c := range res.Charged {
		even := c.Index%2 == 0
		if even != c.Replayed || (even && c.Attempt != 2) {
			t.Errorf("customer %d: replayed %v on attempt %d; want the retries of even customers replayed on attempt 2", c.Index, c.Replayed, c.Attempt)
		}
	}
	f.chargedOnce(t, &res)
	if n := f.st.Requests(); n != 10 {
		t.Errorf("Stripe received %d requests for 10 customers, want 10: the retries must be answered by Keybrake", n)
	}
	f.assertRevoked(t)
}

// TestFailedRunRevokesKey: a charge that can never succeed fails the run;
// the deferred cleanup still revokes the key.
func TestFailedRunRevokesKey(t *testing.T) {
	f := setup(t, nil, nil)
	cs := customers(3)
	cs[1].AmountCents = 0 // InvalidInput: not retried
	f.env.ExecuteWorkflow(temporal.BillingWorkflow, temporal.BillingInput{DailyUSDCap: "100", Customers: cs})
	err := f.env.GetWorkflowError()
	var appErr *sdktemporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != "ChargesFailed" {
		t.Fatalf("workflow error %v, want ChargesFailed", err)
	}
	if !strings.Contains(err.Error(), "1 of 3") {
		t.Errorf("error %v does not count the failed charges", err)
	}
	f.assertRevoked(t)
	if f.st.Requests() != 2 {
		t.Errorf("Stripe received %d requests, want 2 (none for the invalid customer)", f.st.Requests())
	}
}

// TestCancelledRunRevokesKey: the workflow is cancelled while its charges
// are in flight; the cleanup activity runs on a disconnected context and
// revokes the key.
func TestCancelledRunRevokesKey(t *testing.T) {
	var once sync.Once
	var f *fixture
	f = setup(t, nil, func(func(context.Context, temporal.ChargeRequest) (*temporal.ChargeResult, error)) any {
		return func(ctx context.Context, req temporal.ChargeRequest) (*temporal.ChargeResult, error) {
			once.Do(f.env.CancelWorkflow)
			select { // stuck until cancelled (or the test gives up)
			case <-ctx.Done():
			case <-time.After(10 * time.Second):
			}
			return nil, ctx.Err()
		}
	})
	f.env.ExecuteWorkflow(temporal.BillingWorkflow, temporal.BillingInput{DailyUSDCap: "100", Customers: customers(3)})
	if err := f.env.GetWorkflowError(); !sdktemporal.IsCanceledError(err) {
		t.Fatalf("workflow error %v, want canceled", err)
	}
	f.assertRevoked(t)
	if f.st.Requests() != 0 {
		t.Errorf("Stripe received %d requests", f.st.Requests())
	}
}

// TestIssueRefusedFailsRun: a budget Keybrake refuses fails the run before
// any charge, with a non-retryable KeybrakeRefused.
func TestIssueRefusedFailsRun(t *testing.T) {
	f := setup(t, nil, nil)
	f.env.ExecuteWorkflow(temporal.BillingWorkflow, temporal.BillingInput{DailyUSDCap: "lots", Customers: customers(2)})
	var appErr *sdktemporal.ApplicationError
	if err := f.env.GetWorkflowError(); !errors.As(err, &appErr) || appErr.Type() != temporal.ErrKeybrakeRefused {
		t.Fatalf("workflow error %v, want KeybrakeRefused", err)
	}
	if len(f.keys(t)) != 0 || f.st.Requests() != 0 {
		t.Error("a key was issued or Stripe was called")
	}
}

// losingTransport loses the answer to the first POST /vault/keys after
// Keybrake made the key, as a connection cut on the way back would.
type losingTransport struct{ lost atomic.Bool }

func (l *losingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil && r.Method == http.MethodPost && r.URL.Path == "/vault/keys" && l.lost.CompareAndSwap(false, true) {
		resp.Body.Close()
		return nil, errors.New("connection reset by peer")
	}
	return resp, err
}

// TestIssueAnswerLostIsRetriedToTheSameKey: the IssueVaultKey activity's
// first answer is lost after Keybrake made the key; Temporal retries the
// activity, which sends the same Idempotency-Key (run id + activity id)
// and gets the same key: the run has one key, and it ends revoked.
func TestIssueAnswerLostIsRetriedToTheSameKey(t *testing.T) {
	f := setup(t, nil, nil)
	lose := &losingTransport{}
	f.acts.Admin.HTTP = &http.Client{Transport: lose, Timeout: 30 * time.Second}
	f.env.ExecuteWorkflow(temporal.BillingWorkflow, temporal.BillingInput{DailyUSDCap: "100", Customers: customers(3)})
	if err := f.env.GetWorkflowError(); err != nil {
		t.Fatalf("workflow: %v", err)
	}
	var res temporal.BillingResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if !lose.lost.Load() {
		t.Fatal("no answer was lost")
	}
	f.assertRevoked(t)
	if k := f.keys(t)[0]; k.ID != res.KeyID {
		t.Errorf("the run's key is %s, the workflow used %s", k.ID, res.KeyID)
	}
	f.chargedOnce(t, &res)
	if len(res.Charged) != 3 {
		t.Errorf("%d charged, want 3", len(res.Charged))
	}
}

// clientKey is the client's Idempotency-Key inside the one Keybrake sends
// the vendor: "<namespace>:<client key>", the namespace being the vault
// key's id (or its idempotency scope's).
func clientKey(vendorKey string) string {
	_, k, _ := strings.Cut(vendorKey, ":")
	return k
}
