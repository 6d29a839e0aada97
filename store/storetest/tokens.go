package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/store"
)

func testIssuerTokens(t *testing.T, s store.Store) {
	rules, err := keybrake.ParseRules([]string{rulePI})
	if err != nil {
		t.Fatal(err)
	}
	mk := func(name string) (*keybrake.IssuerToken, string) {
		t.Helper()
		hash := keybrake.HashSecret(keybrake.NewVaultKey())
		tok, err := s.CreateToken(ctx(t), &keybrake.IssuerToken{ID: keybrake.NewID("it_"), Name: name, MaxDailyCap: 50 * usd,
			MaxTotalCap: 200 * usd, Vendors: []string{"stripe"}, Endpoints: rules, MaxExpiresIn: 2 * time.Hour}, hash)
		if err != nil {
			t.Fatalf("CreateToken: %v", err)
		}
		return tok, hash
	}
	t1, h1 := mk("sfn-billing")
	t2, _ := mk("temporal")

	got, err := s.TokenByHash(ctx(t), h1)
	if err != nil {
		t.Fatalf("TokenByHash: %v", err)
	}
	if got.ID != t1.ID || got.Name != "sfn-billing" || got.MaxDailyCap != 50*usd || got.MaxTotalCap != 200*usd ||
		!slices.Equal(got.Vendors, []string{"stripe"}) || !slices.Equal(got.Endpoints.Strings(), []string{rulePI}) ||
		got.MaxExpiresIn != 2*time.Hour || !got.CreatedAt.Equal(t1.CreatedAt) || got.RevokedAt != nil {
		t.Errorf("stored token %+v, created %+v", got, t1)
	}
	if _, err := s.TokenByHash(ctx(t), keybrake.HashSecret("nope")); !errors.Is(err, keybrake.ErrNotFound) {
		t.Errorf("TokenByHash(unknown) = %v, want ErrNotFound", err)
	}
	dup := *t1
	if _, err := s.CreateToken(ctx(t), &dup, h1); err == nil {
		t.Error("CreateToken with an existing id and secret succeeded")
	} else {
		notUnavailable(t, err)
	}

	r1, err := s.RevokeToken(ctx(t), t1.ID)
	if err != nil || r1.RevokedAt == nil {
		t.Fatalf("RevokeToken: %+v %v", r1, err)
	}
	r2, err := s.RevokeToken(ctx(t), t1.ID)
	if err != nil || r2.RevokedAt == nil || !r2.RevokedAt.Equal(*r1.RevokedAt) {
		t.Errorf("revoking again: %+v %v, first revoked at %v", r2, err, r1.RevokedAt)
	}
	if got, err := s.TokenByHash(ctx(t), h1); err != nil || got.RevokedAt == nil {
		t.Errorf("a revoked token reads as %+v %v", got, err)
	}
	if _, err := s.RevokeToken(ctx(t), "it_nope"); !errors.Is(err, keybrake.ErrNotFound) {
		t.Errorf("RevokeToken(unknown) = %v, want ErrNotFound", err)
	}

	list, err := s.ListTokens(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{t2.ID, t1.ID}
	if t1.CreatedAt.After(t2.CreatedAt) || (t1.CreatedAt.Equal(t2.CreatedAt) && t1.ID > t2.ID) {
		want = []string{t1.ID, t2.ID}
	}
	var ids []string
	for _, tok := range list {
		ids = append(ids, tok.ID)
	}
	if !slices.Equal(ids, want) {
		t.Errorf("ListTokens = %v, want newest first %v", ids, want)
	}
}

// testReconcile: a 2xx settled at its estimate because the answer did not
// state the cost yet is listed as due; the vendor's final figure reprices it
// (up or down) exactly once, and a vendor that never answers leaves the
// estimate standing after maxAttempts.
func testReconcile(t *testing.T, s store.Store) {
	k, _ := newKey(t, s)
	due := func(est keybrake.Micros) int64 {
		d := mustAllow(t, s, charge(k, est))
		st := ok2xx(d.CallID, est)
		st.ReconcileDue = true
		settle(t, s, st)
		return d.CallID
	}
	c1, c2, c3 := due(2*usd), due(2*usd), due(2*usd)
	plain := mustAllow(t, s, charge(k, 1*usd)).CallID
	settle(t, s, ok2xx(plain, 1*usd)) // not due

	list, err := s.DueForReconcile(ctx(t), "stripe", 0, 10)
	if err != nil {
		t.Fatalf("DueForReconcile: %v", err)
	}
	var ids []int64
	for _, c := range list {
		ids = append(ids, c.ID)
	}
	if !slices.Equal(ids, []int64{c1, c2, c3}) {
		t.Errorf("due calls %v, want %v (oldest first)", ids, []int64{c1, c2, c3})
	}
	if list, err := s.DueForReconcile(ctx(t), "stripe", time.Hour, 10); err != nil || len(list) != 0 {
		t.Errorf("due calls settled over an hour ago: %d %v", len(list), err)
	}
	if list, err := s.DueForReconcile(ctx(t), "twilio", 0, 10); err != nil || len(list) != 0 {
		t.Errorf("due calls of another vendor: %d %v", len(list), err)
	}

	reconcile := func(id int64, cost keybrake.Micros, final bool) {
		t.Helper()
		if err := s.Reconcile(ctx(t), id, cost, final, 2); err != nil {
			t.Fatalf("Reconcile(%d): %v", id, err)
		}
	}
	reconcile(c1, 2_500_000, true) // the vendor charged more than estimated
	reconcile(c1, 9*usd, true)     // already reconciled: no-op
	reconcile(c2, 1_200_000, true) // less
	reconcile(c3, 0, false)        // no figure yet
	reconcile(c3, 0, false)        // gives up: the estimate stands
	reconcile(c3, 9*usd, true)     // too late
	if c := callByID(t, s, k.ID, c1); c.Actual != 2_500_000 {
		t.Errorf("repriced call: %+v", c)
	}
	if list, err := s.DueForReconcile(ctx(t), "stripe", 0, 10); err != nil || len(list) != 0 {
		t.Errorf("still due after reconciling: %d %v", len(list), err)
	}
	wantUsage(t, checkLedger(t, s, k.ID), 2_500_000+1_200_000+2*usd+1*usd, 0)
	if err := s.Reconcile(ctx(t), 1<<40, 1, true, 2); !errors.Is(err, keybrake.ErrNotFound) {
		t.Errorf("Reconcile(unknown call) = %v, want ErrNotFound", err)
	}
}
