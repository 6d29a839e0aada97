// Package storetest is the one conformance suite every Keybrake store must
// pass: keys, revoke, expiry, caps (exact under concurrency), reservation
// and settlement, recovery of pending calls, idempotency records, later
// repricing (reconcile), issuer tokens, the audit log and run reports, and
// the ledger's invariants. Each behaviour is tested here once; store/sqlite
// and store/postgres run it against their engines.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return openFresh(t) })
//	}
//
// open must return an empty, migrated store and close it when t ends. The
// suite only uses the store.Store interface, and only the store's clock:
// expiry is observed by polling, never by sleeping a fixed time.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/store"
)

// Opener returns a fresh, empty store that is closed when t ends.
type Opener func(t *testing.T) store.Store

// Run runs the whole suite. Subtests run one after another (a store under
// test may share a small database server with other tests).
func Run(t *testing.T, open Opener) {
	for _, tc := range []struct {
		name string
		f    func(t *testing.T, s store.Store)
	}{
		{"Clock", testClock},
		{"CreateAndGetKey", testCreateAndGetKey},
		{"DuplicateKeyIsNotAnOutage", testDuplicateKey},
		{"ListKeys", testListKeys},
		{"KeySearch", testKeySearch},
		{"Revoke", testRevoke},
		{"RevokeUnderLoad", testRevokeUnderLoad},
		{"Expiry", testExpiry},
		{"UnknownKeyAndEarlierDenial", testUnknownKeyAndDenial},
		{"PerCallCap", testPerCallCap},
		{"DailyCap", testDailyCap},
		{"TotalCap", testTotalCap},
		{"FreeCallsAtFullCap", testFreeCalls},
		{"CapExactUnderConcurrency", testCapExact},
		{"Settle", testSettle},
		{"SettleTwice", testSettleTwice},
		{"SettleTwiceConcurrently", testSettleConcurrently},
		{"RecoverPending", testRecoverPending},
		{"RecoverPendingRacesSettle", testRecoverRacesSettle},
		{"IdempotencyClaimAndReplay", testIdempotencyReplay},
		{"IdempotencyUnknownVendorDedupes", testIdempotencyTakeOver},
		{"IdempotencyUnknownNoDedupe", testIdempotencyNoDedupe},
		{"IdempotencyRelease", testIdempotencyRelease},
		{"IdempotencyUnstored", testIdempotencyUnstored},
		{"IdempotencyExpiryAndSweep", testIdempotencyExpiry},
		{"IdempotencyConcurrentClaims", testIdempotencyConcurrent},
		{"IdempotencyScopedToKey", testIdempotencyScoped},
		{"Reconcile", testReconcile},
		{"Exposure", testExposure},
		{"ExposureConcurrent", testExposureConcurrent},
		{"FlexibleReservation", testFlexible},
		{"IssuerTokens", testIssuerTokens},
		{"IssueOnce", testIssueOnce},
		{"IssueOnceConcurrent", testIssueOnceConcurrent},
		{"IssueOnceExpiryAndSweep", testIssueOnceExpiry},
		{"ListCalls", testListCalls},
		{"RunSummary", testRunSummary},
		{"SpendThresholdEvents", testSpendThresholdEvents},
		{"CapAndRevokeEvents", testCapAndRevokeEvents},
		{"Outbox", testOutbox},
		{"ReportRuns", testReportRuns},
		{"ReportAnomalies", testReportAnomalies},
		{"ReportDaily", testReportDaily},
		{"ExportAndGauges", testExportAndGauges},
		{"KeyPolicyStored", testKeyPolicyStored},
		{"IssuerOutstanding", testIssuerOutstanding},
		{"RateLimit", testRateLimit},
		{"DenialRowsCarryThePrice", testDenialRowsCarryThePrice},
		{"PruneCalls", testPruneCalls},
		{"IdempotencyVendorKey", testIdempotencyVendorKey},
		{"BatchMixesKeys", testBatchMixesKeys},
		{"BatchCapRunsOut", testBatchCapRunsOut},
		{"BatchIdempotencyDuplicates", testBatchIdempotencyDuplicates},
		{"BatchRevokeBetween", testBatchRevokeBetween},
		{"BatchFailures", testBatchFailures},
		{"BatchCancellation", testBatchCancellation},
		{"BatchDeadline", testBatchDeadline},
		{"BatchSettlementsAndRetries", testBatchSettlementsAndRetries},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			tc.f(t, s)
		})
	}
}

// Fixtures.

const (
	usd         = keybrake.MicrosPerUSD
	rulePI      = "POST /v1/payment_intents"
	pathPI      = "/v1/payment_intents"
	instance    = "inst_storetest"
	idemTTL     = time.Hour
	pollTimeout = 30 * time.Second
)

func ctx(t *testing.T) context.Context { return t.Context() }

type keyOpt func(*keybrake.Key, *time.Duration)

func daily(m keybrake.Micros) keyOpt {
	return func(k *keybrake.Key, _ *time.Duration) { k.DailyCap = m }
}
func total(m keybrake.Micros) keyOpt {
	return func(k *keybrake.Key, _ *time.Duration) { k.TotalCap = m }
}
func perCall(m keybrake.Micros) keyOpt {
	return func(k *keybrake.Key, _ *time.Duration) { k.MaxPerCall = m }
}
func label(l string) keyOpt      { return func(k *keybrake.Key, _ *time.Duration) { k.AgentRunLabel = l } }
func issuer(i string) keyOpt     { return func(k *keybrake.Key, _ *time.Duration) { k.IssuerID = i } }
func ttl(d time.Duration) keyOpt { return func(_ *keybrake.Key, t *time.Duration) { *t = d } }

// newKey issues a key (default: Stripe, $100 daily cap, one hour) and
// returns it with its secret's hash.
func newKey(t *testing.T, s store.Store, opts ...keyOpt) (*keybrake.Key, string) {
	t.Helper()
	rules, err := keybrake.ParseRules([]string{rulePI, "GET /v1/payment_intents/*"})
	if err != nil {
		t.Fatal(err)
	}
	k := &keybrake.Key{
		ID: keybrake.NewID("key_"), Vendor: "stripe", DailyCap: 100 * usd, Rules: rules,
		AgentRunLabel: "run-default", AgentName: "agent-1",
	}
	d := time.Hour
	for _, o := range opts {
		o(k, &d)
	}
	hash := keybrake.HashSecret(keybrake.NewVaultKey())
	out, err := s.CreateKey(ctx(t), k, hash, d)
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	return out, hash
}

// charge is a priced attempt on k's payment-intents endpoint.
func charge(k *keybrake.Key, estimate keybrake.Micros) keybrake.Attempt {
	return keybrake.Attempt{
		KeyID: k.ID, Vendor: k.Vendor, Method: "POST", Path: pathPI, Rule: rulePI,
		Estimate: estimate, Instance: instance,
	}
}

func idem(a keybrake.Attempt, key, fp string, dedupes bool) keybrake.Attempt {
	a.IdempotencyKey, a.Fingerprint, a.VendorDedupes, a.IdempotencyTTL = key, fp, dedupes, idemTTL
	return a
}

func decide(t *testing.T, s store.Store, a keybrake.Attempt) keybrake.Decision {
	t.Helper()
	d, err := s.Decide(ctx(t), a)
	if err != nil {
		t.Fatalf("Decide: %v", err)
	}
	if d.CallID == 0 {
		t.Fatalf("Decide wrote no audit row: %+v", d)
	}
	return d
}

func mustAllow(t *testing.T, s store.Store, a keybrake.Attempt) keybrake.Decision {
	t.Helper()
	d := decide(t, s, a)
	if !d.Allowed || d.Replay != nil {
		t.Fatalf("Decide: want allowed (reserved), got allowed=%v err=%v replay=%v", d.Allowed, d.Err, d.Replay != nil)
	}
	return d
}

func mustDeny(t *testing.T, s store.Store, a keybrake.Attempt, code keybrake.Code) keybrake.Decision {
	t.Helper()
	d := decide(t, s, a)
	if d.Allowed || d.Err == nil || d.Err.Code != code {
		t.Fatalf("Decide: want denied %s, got allowed=%v err=%v", code, d.Allowed, d.Err)
	}
	return d
}

func settle(t *testing.T, s store.Store, st keybrake.Settlement) keybrake.Usage {
	t.Helper()
	u, err := s.Settle(ctx(t), st)
	if err != nil {
		t.Fatalf("Settle(call %d): %v", st.CallID, err)
	}
	return u
}

// ok2xx settles a call as a 2xx answer costing actual.
func ok2xx(id int64, actual keybrake.Micros) keybrake.Settlement {
	return keybrake.Settlement{CallID: id, Outcome: keybrake.OutcomeForwarded, Status: 200, Actual: actual,
		ObjectID: fmt.Sprintf("pi_%d", id), VendorRequestID: fmt.Sprintf("req_%d", id), Latency: 42 * time.Millisecond}
}

func getKey(t *testing.T, s store.Store, id string) *keybrake.KeyView {
	t.Helper()
	v, err := s.GetKey(ctx(t), id)
	if err != nil {
		t.Fatalf("GetKey(%s): %v", id, err)
	}
	return v
}

func usage(t *testing.T, s store.Store, id string) keybrake.Usage {
	t.Helper()
	return getKey(t, s, id).Usage
}

func wantUsage(t *testing.T, got keybrake.Usage, spent, reserved keybrake.Micros) {
	t.Helper()
	if got.Spent != spent || got.Reserved != reserved {
		t.Fatalf("usage: spent $%s reserved $%s, want spent $%s reserved $%s", got.Spent, got.Reserved, spent, reserved)
	}
}

// allCalls reads every audit row matching f, following the cursor.
func allCalls(t *testing.T, s store.Store, f keybrake.CallFilter) []*keybrake.Call {
	t.Helper()
	f.Limit = keybrake.MaxPageSize
	var out []*keybrake.Call
	for {
		page, next, err := s.ListCalls(ctx(t), f)
		if err != nil {
			t.Fatalf("ListCalls: %v", err)
		}
		out = append(out, page...)
		if next == "" {
			return out
		}
		f.Cursor = next
	}
}

func callByID(t *testing.T, s store.Store, keyID string, id int64) *keybrake.Call {
	t.Helper()
	for _, c := range allCalls(t, s, keybrake.CallFilter{KeyID: keyID}) {
		if c.ID == id {
			return c
		}
	}
	t.Fatalf("call %d of key %s not in the audit log", id, keyID)
	return nil
}

// checkLedger asserts the ledger's invariants for one key against its
// audit rows: spent is the sum of actual over settled rows (unknown rows
// count their estimate as actual), reserved is the sum of estimates over
// pending rows, calls and denied_calls count the rows, and — when every row
// and the store's clock fall on one UTC day — today's counters equal the
// lifetime ones.
func checkLedger(t *testing.T, s store.Store, keyID string) keybrake.Usage {
	t.Helper()
	now0, err := s.Now(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	v := getKey(t, s, keyID)
	calls := allCalls(t, s, keybrake.CallFilter{KeyID: keyID})
	now1, err := s.Now(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var spent, reserved keybrake.Micros
	var allowed, denied int64
	oneDay := day(now0) == day(now1)
	for _, c := range calls {
		if day(c.Time) != day(now0) {
			oneDay = false
		}
		switch {
		case c.Outcome.IsDenied():
			denied++
			if c.Actual != 0 || c.Estimated < 0 { // estimated is the price the refused call asked
				t.Errorf("denied call %d carries money: estimated $%s actual $%s", c.ID, c.Estimated, c.Actual)
			}
			continue
		case c.Outcome == keybrake.OutcomePending:
			reserved += c.Estimated
		case c.Outcome == keybrake.OutcomeUnknown && c.Actual != c.Estimated:
			t.Errorf("unknown call %d counts $%s, want its estimate $%s", c.ID, c.Actual, c.Estimated)
		}
		allowed++
		spent += c.Actual
	}
	u := v.Usage
	if u.Spent != spent || u.Reserved != reserved {
		t.Errorf("key %s: spent $%s reserved $%s, but its audit rows sum to spent $%s reserved $%s",
			keyID, u.Spent, u.Reserved, spent, reserved)
	}
	if u.Calls != allowed || u.DeniedCalls != denied {
		t.Errorf("key %s: calls %d denied %d, but the audit log has %d allowed and %d denied rows",
			keyID, u.Calls, u.DeniedCalls, allowed, denied)
	}
	if oneDay && (u.SpentToday != u.Spent || u.ReservedToday != u.Reserved) {
		t.Errorf("key %s: today spent $%s reserved $%s, lifetime spent $%s reserved $%s (all on one day)",
			keyID, u.SpentToday, u.ReservedToday, u.Spent, u.Reserved)
	}
	if u.Reserved < 0 || u.ReservedToday < 0 {
		t.Errorf("key %s: negative reservation: %+v", keyID, u)
	}
	return u
}

func day(t time.Time) string { return t.UTC().Format("2006-01-02") }

// eventually polls cond until it holds, failing after pollTimeout. It is for
// waiting on the store's clock (expiry), never a timing assertion.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(pollTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// parallel runs f(i) for i in [0,n) on n goroutines released together, and
// returns the first error.
func parallel(n int, f func(i int) error) error {
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := f(i); err != nil {
				errs <- err
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	return <-errs
}

func notUnavailable(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, keybrake.ErrStoreUnavailable) {
		t.Fatalf("a constraint violation reads as an outage (ErrStoreUnavailable): %v", err)
	}
}

func storedResponse(body string) *keybrake.StoredResponse {
	return &keybrake.StoredResponse{Status: 200, Body: []byte(body), Header: http.Header{
		"Content-Type": {"application/json"}, "Request-Id": {"req_first"}}}
}
