package storetest

import (
	"errors"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/store"
	"github.com/keybrake/keybrake/store/sqlstore"
)

// testKeyPolicyStored: a key's scope, rate limit and idempotency scope, and
// a token's max_outstanding_usd and scope, read back as issued, from every
// read path.
func testKeyPolicyStored(t *testing.T, s store.Store) {
	scope := keybrake.Scope{"stripe_customers": {"cus_1", "cus_2"}, "stripe_accounts": {"acct_1"}}
	k, hash := newKey(t, s, func(k *keybrake.Key, _ *time.Duration) {
		k.Scope, k.MaxCallsPerMinute, k.IdempotencyScope = scope, 7, "msg-1"
	})
	byHash, err := s.KeyByHash(ctx(t), hash)
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]*keybrake.Key{"CreateKey": k, "KeyByHash": byHash, "GetKey": &getKey(t, s, k.ID).Key} {
		if !reflect.DeepEqual(got.Scope, scope) || got.MaxCallsPerMinute != 7 || got.IdempotencyScope != "msg-1" {
			t.Errorf("%s: scope %v, rate %d, idempotency scope %q", name, got.Scope, got.MaxCallsPerMinute, got.IdempotencyScope)
		}
	}
	plain, _ := newKey(t, s)
	if got := getKey(t, s, plain.ID); got.Scope != nil || got.MaxCallsPerMinute != 0 || got.IdempotencyScope != "" {
		t.Errorf("a key issued without them reads %+v", got.Key)
	}

	tok := newToken(t, s, 100*usd, 30*usd, keybrake.Scope{"stripe_customers": {"cus_1"}})
	got, err := s.ListTokens(ctx(t))
	if err != nil || len(got) != 1 || got[0].MaxOutstanding != 30*usd || !reflect.DeepEqual(got[0].Scope, tok.Scope) {
		t.Errorf("tokens %+v %v", got, err)
	}
}

func newToken(t *testing.T, s store.Store, maxDaily, maxOutstanding keybrake.Micros, scope keybrake.Scope) *keybrake.IssuerToken {
	t.Helper()
	rules, err := keybrake.ParseRules([]string{rulePI})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.CreateToken(ctx(t), &keybrake.IssuerToken{ID: keybrake.NewID("it_"), Name: "sfn", MaxDailyCap: maxDaily,
		MaxOutstanding: maxOutstanding, Scope: scope, Vendors: []string{"stripe"}, Endpoints: rules, MaxExpiresIn: 2 * time.Hour},
		keybrake.HashSecret(keybrake.NewIssuerToken()))
	if err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	return tok
}

// testIssuerOutstanding: a token with max_outstanding_usd $25 issuing $5
// keys, 20 at once, mints exactly five; a revoked key frees its cap, an
// expired one too; a revoked token issues nothing.
func testIssuerOutstanding(t *testing.T, s store.Store) {
	tok := newToken(t, s, 10*usd, 25*usd, nil)
	issue := func(d time.Duration) (*keybrake.Key, error) {
		rules, _ := keybrake.ParseRules([]string{rulePI})
		return s.CreateKey(ctx(t), &keybrake.Key{ID: keybrake.NewID("key_"), Vendor: "stripe", DailyCap: 5 * usd, Rules: rules, IssuerID: tok.ID},
			keybrake.HashSecret(keybrake.NewVaultKey()), d)
	}
	var made, refused atomic.Int64
	var first atomic.Value
	err := parallel(20, func(int) error {
		k, err := issue(time.Hour)
		var ke *keybrake.Error
		switch {
		case err == nil:
			made.Add(1)
			first.CompareAndSwap(nil, k.ID)
		case errors.As(err, &ke) && ke.Code == keybrake.CodeIssuerLimitExceeded && ke.Field == "max_outstanding_usd":
			refused.Add(1)
		default:
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("concurrent issuance: %v", err)
	}
	if made.Load() != 5 || refused.Load() != 15 {
		t.Fatalf("20 concurrent $5 keys under a $25 max_outstanding_usd: %d issued, %d refused; want 5 and 15", made.Load(), refused.Load())
	}
	if _, err := s.RevokeKey(ctx(t), first.Load().(string)); err != nil {
		t.Fatal(err)
	}
	short, err := issue(time.Second) // the revoked key's $5 is free again
	if err != nil {
		t.Fatalf("after a revoke: %v", err)
	}
	if _, err := issue(time.Hour); keybrake.ErrorCode(err) != keybrake.CodeIssuerLimitExceeded {
		t.Fatalf("sixth active key: %v, want issuer_limit_exceeded", err)
	}
	eventually(t, "the one-second key expires", func() bool { return getKey(t, s, short.ID).Status == keybrake.StatusExpired })
	if _, err := issue(time.Hour); err != nil {
		t.Fatalf("after an expiry: %v", err)
	}
	if _, err := s.RevokeToken(ctx(t), tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeKey(ctx(t), short.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := issue(time.Hour); keybrake.ErrorCode(err) != keybrake.CodeUnauthorized {
		t.Fatalf("a revoked token's issuance: %v, want unauthorized", err)
	}
	unbounded := newToken(t, s, 10*usd, 0, nil)
	for i := 0; i < 8; i++ {
		rules, _ := keybrake.ParseRules([]string{rulePI})
		if _, err := s.CreateKey(ctx(t), &keybrake.Key{ID: keybrake.NewID("key_"), Vendor: "stripe", DailyCap: 10 * usd, Rules: rules,
			IssuerID: unbounded.ID}, keybrake.HashSecret(keybrake.NewVaultKey()), time.Hour); err != nil {
			t.Fatalf("a token without max_outstanding_usd: %v", err)
		}
	}
}

// testRateLimit: max_calls_per_minute 3 lets three calls through, whether
// they are answered or still pending, 20 at once or one by one; the next
// is rate_limited with a Retry-After within the minute; denials and replays
// do not count.
func testRateLimit(t *testing.T, s store.Store) {
	k, _ := newKey(t, s, func(k *keybrake.Key, _ *time.Duration) { k.MaxCallsPerMinute = 3 })
	mustDeny(t, s, keybrake.Attempt{KeyID: k.ID, Method: "POST", Path: pathPI, Denial: keybrake.Errorf(keybrake.CodeEndpointNotAllowed, "no")},
		keybrake.CodeEndpointNotAllowed)
	var allowed, limited atomic.Int64
	err := parallel(20, func(int) error {
		d, err := s.Decide(ctx(t), charge(k, usd))
		switch {
		case err != nil:
			return err
		case d.Allowed:
			allowed.Add(1)
		case d.Err != nil && d.Err.Code == keybrake.CodeRateLimited:
			if d.RetryAfter <= 0 || d.RetryAfter > time.Minute {
				t.Errorf("Retry-After %s", d.RetryAfter)
			}
			limited.Add(1)
		default:
			t.Errorf("denied %v", d.Err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if allowed.Load() != 3 || limited.Load() != 17 {
		t.Fatalf("20 concurrent calls at 3 a minute: %d allowed, %d rate_limited", allowed.Load(), limited.Load())
	}
	// Nothing was spent by the refusals, and they are not the cap.
	u := checkLedger(t, s, k.ID)
	if u.Reserved != 3*usd || u.DeniedCalls != 18 {
		t.Fatalf("usage %+v", u)
	}
	other, _ := newKey(t, s, func(k *keybrake.Key, _ *time.Duration) { k.MaxCallsPerMinute = 3 })
	for i := 0; i < 3; i++ {
		settle(t, s, ok2xx(mustAllow(t, s, charge(other, usd)).CallID, usd))
	}
	mustDeny(t, s, charge(other, usd), keybrake.CodeRateLimited)
}

// testDenialRowsCarryThePrice: a refused call's audit row says what it
// asked for.
func testDenialRowsCarryThePrice(t *testing.T, s store.Store) {
	k, _ := newKey(t, s, daily(5*usd))
	mustAllow(t, s, charge(k, 5*usd))
	d := mustDeny(t, s, charge(k, usd), keybrake.CodeCapExhausted)
	if c := callByID(t, s, k.ID, d.CallID); c.Estimated != usd || c.Actual != 0 {
		t.Errorf("cap_exhausted row: estimated $%s actual $%s, want $1.00 and $0", c.Estimated, c.Actual)
	}
	a := charge(k, 2*usd)
	a.Denial = keybrake.ScopeViolation("stripe_customers", "no")
	d = mustDeny(t, s, a, keybrake.CodeScopeViolation)
	if c := callByID(t, s, k.ID, d.CallID); c.Estimated != 2*usd {
		t.Errorf("scope_violation row: estimated $%s, want $2.00", c.Estimated)
	}
	checkLedger(t, s, k.ID)
}

// testPruneCalls: a prune removes settled rows of keys that can no longer
// call, in batches, and keeps pending and unknown rows, rows due for
// reconciling, rows an idempotency record answers for, and every row of a
// live key; the keys' counters do not move.
func testPruneCalls(t *testing.T, s store.Store) {
	live, _ := newKey(t, s)
	settle(t, s, ok2xx(mustAllow(t, s, charge(live, usd)).CallID, usd))
	dead, _ := newKey(t, s)
	settled := mustAllow(t, s, charge(dead, usd))
	settle(t, s, ok2xx(settled.CallID, usd))
	pending := mustAllow(t, s, charge(dead, usd))
	unknown := mustAllow(t, s, charge(dead, usd))
	settle(t, s, keybrake.Settlement{CallID: unknown.CallID, Outcome: keybrake.OutcomeUnknown, Status: 502})
	replayable := mustAllow(t, s, idem(charge(dead, usd), "idem-1", "fp", true))
	settle(t, s, keybrake.Settlement{CallID: replayable.CallID, Outcome: keybrake.OutcomeForwarded, Status: 200, Actual: usd,
		Response: storedResponse(`{}`)})
	due := mustAllow(t, s, charge(dead, usd))
	st := ok2xx(due.CallID, usd)
	st.ReconcileDue = true
	settle(t, s, st)
	for i := 0; i < sqlstore.PruneBatch+20; i++ {
		mustDeny(t, s, keybrake.Attempt{KeyID: dead.ID, Method: "POST", Path: pathPI, Denial: keybrake.Errorf(keybrake.CodeEndpointNotAllowed, "no")},
			keybrake.CodeEndpointNotAllowed)
	}
	mustDeny(t, s, keybrake.Attempt{Method: "POST", Path: pathPI}, keybrake.CodeInvalidVaultKey) // no key
	before := getKey(t, s, dead.ID).Usage

	if n, err := s.PruneCalls(ctx(t), time.Hour); err != nil || n != 0 {
		t.Fatalf("pruning rows younger than the retention: %d, %v", n, err)
	}
	if n, err := s.PruneCalls(ctx(t), time.Microsecond); err != nil || n != 1 {
		t.Fatalf("pruning while both keys are live: %d, %v; want only the keyless row", n, err)
	}
	if _, err := s.RevokeKey(ctx(t), dead.ID); err != nil {
		t.Fatal(err)
	}
	n, err := s.PruneCalls(ctx(t), time.Microsecond)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(sqlstore.PruneBatch + 20 + 1); n != want { // the denials and the settled call
		t.Errorf("pruned %d rows, want %d", n, want)
	}
	kept := map[int64]bool{}
	for _, c := range allCalls(t, s, keybrake.CallFilter{KeyID: dead.ID}) {
		kept[c.ID] = true
	}
	for name, id := range map[string]int64{"pending": pending.CallID, "unknown": unknown.CallID, "replayable": replayable.CallID, "reconcile due": due.CallID} {
		if !kept[id] {
			t.Errorf("the %s row was pruned", name)
		}
	}
	if kept[settled.CallID] || len(kept) != 4 {
		t.Errorf("rows kept: %v", kept)
	}
	if len(allCalls(t, s, keybrake.CallFilter{KeyID: live.ID})) != 1 {
		t.Error("a live key's row was pruned")
	}
	if after := getKey(t, s, dead.ID).Usage; after.Spent != before.Spent || after.Reserved != before.Reserved || after.Calls != before.Calls {
		t.Errorf("usage moved: %+v, was %+v", after, before)
	}
}

// testIdempotencyVendorKey: a retry after an unknown outcome is sent with
// the vendor Idempotency-Key its first attempt sent (so the vendor
// deduplicates it), whatever the retry would send on its own; a record from
// before vendor keys were namespaced (none stored) re-sends the client's
// key as it was.
func testIdempotencyVendorKey(t *testing.T, s store.Store) {
	k, _ := newKey(t, s)
	attempt := func(key, vendorKey string) keybrake.Attempt {
		a := idem(charge(k, usd), key, "fp", true)
		a.VendorIdempotencyKey = vendorKey
		return a
	}
	unknown := func(id int64) {
		settle(t, s, keybrake.Settlement{CallID: id, Outcome: keybrake.OutcomeUnknown, Status: 502})
	}
	first := mustAllow(t, s, attempt("k1", "vk_a:k1"))
	if first.VendorIdempotencyKey != "vk_a:k1" {
		t.Fatalf("first attempt sends %q", first.VendorIdempotencyKey)
	}
	unknown(first.CallID)
	retry := mustAllow(t, s, attempt("k1", "vk_changed:k1"))
	if retry.RetryOf != first.CallID || retry.VendorIdempotencyKey != "vk_a:k1" {
		t.Fatalf("retry of %d sends %q (retry of %d)", first.CallID, retry.VendorIdempotencyKey, retry.RetryOf)
	}
	legacy := mustAllow(t, s, attempt("k2", ""))
	unknown(legacy.CallID)
	if r := mustAllow(t, s, attempt("k2", "vk_a:k2")); r.RetryOf != legacy.CallID || r.VendorIdempotencyKey != "k2" {
		t.Fatalf("retry of a legacy record sends %q", r.VendorIdempotencyKey)
	}
	checkLedger(t, s, k.ID)
}
