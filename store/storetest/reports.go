package storetest

import (
	"errors"
	"slices"
	"testing"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/store"
)

func testListCalls(t *testing.T, s store.Store) {
	k1, _ := newKey(t, s, label("run-x"))
	k2, _ := newKey(t, s, label("run-y"))

	a := charge(k1, 1*usd)
	a.Item = "item-7"
	c1 := mustAllow(t, s, a).CallID
	settle(t, s, ok2xx(c1, 1*usd))
	c2 := mustAllow(t, s, idem(charge(k1, 1*usd), "ik-list", "fp", true)).CallID
	settle(t, s, ok2xx(c2, 1*usd))
	c3 := mustAllow(t, s, charge(k1, 1*usd)).CallID // stays pending
	den := charge(k1, 1*usd)
	den.Denial = keybrake.Errorf(keybrake.CodeEndpointNotAllowed, "no")
	c4 := mustDeny(t, s, den, keybrake.CodeEndpointNotAllowed).CallID
	c5 := mustAllow(t, s, charge(k2, 1*usd)).CallID
	c6 := mustAllow(t, s, charge(k2, 1*usd)).CallID

	ids := func(f keybrake.CallFilter) []int64 {
		t.Helper()
		var out []int64
		for _, c := range allCalls(t, s, f) {
			out = append(out, c.ID)
		}
		return out
	}
	for _, tc := range []struct {
		f    keybrake.CallFilter
		want []int64
	}{
		{keybrake.CallFilter{KeyID: k1.ID}, []int64{c4, c3, c2, c1}},
		{keybrake.CallFilter{AgentRunLabel: "run-y"}, []int64{c6, c5}},
		{keybrake.CallFilter{KeyID: k1.ID, Outcome: keybrake.OutcomeForwarded}, []int64{c2, c1}},
		{keybrake.CallFilter{Outcome: keybrake.DeniedOutcome(keybrake.CodeEndpointNotAllowed)}, []int64{c4}},
		{keybrake.CallFilter{AgentRunLabel: "run-x", Outcome: keybrake.OutcomePending}, []int64{c3}},
		{keybrake.CallFilter{KeyID: "key_nobody"}, nil},
	} {
		if got := ids(tc.f); !slices.Equal(got, tc.want) {
			t.Errorf("ListCalls(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}

	c := callByID(t, s, k1.ID, c1)
	if c.KeyID != k1.ID || c.AgentRunLabel != "run-x" || c.Vendor != "stripe" || c.Method != "POST" || c.Path != pathPI ||
		c.Rule != rulePI || c.Item != "item-7" || c.Time.IsZero() || c.Estimated != 1*usd {
		t.Errorf("audit row fields: %+v", c)
	}
	if c := callByID(t, s, k1.ID, c2); c.IdempotencyKey != "ik-list" {
		t.Errorf("idempotency key not kept: %+v", c)
	}
	if c := callByID(t, s, k1.ID, c4); c.Code != keybrake.CodeEndpointNotAllowed || c.Status != 403 {
		t.Errorf("denial row: %+v", c)
	}

	// Pages of one chain through every row exactly once.
	var paged []int64
	f := keybrake.CallFilter{Limit: 1}
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("pagination does not end")
		}
		page, next, err := s.ListCalls(ctx(t), f)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > 1 {
			t.Fatalf("page of %d rows, limit 1", len(page))
		}
		for _, c := range page {
			paged = append(paged, c.ID)
		}
		if next == "" {
			break
		}
		f.Cursor = next
	}
	if want := []int64{c6, c5, c4, c3, c2, c1}; !slices.Equal(paged, want) {
		t.Errorf("paged calls %v, want %v", paged, want)
	}
	if _, _, err := s.ListCalls(ctx(t), keybrake.CallFilter{Cursor: "!!not-a-cursor"}); keybrake.ErrorCode(err) != keybrake.CodeInvalidRequest {
		t.Errorf("bad cursor: %v, want invalid_request", err)
	}
}

func testRunSummary(t *testing.T, s store.Store) {
	k1, _ := newKey(t, s, label("run-sum"), perCall(10*usd))
	k2, _ := newKey(t, s, label("run-sum"))
	other, _ := newKey(t, s, label("run-other"))

	settle(t, s, ok2xx(mustAllow(t, s, charge(k1, 2*usd)).CallID, 1_500_000))
	settle(t, s, ok2xx(mustAllow(t, s, charge(k1, 2*usd)).CallID, 2*usd))
	settle(t, s, keybrake.Settlement{CallID: mustAllow(t, s, charge(k1, 3*usd)).CallID, Outcome: keybrake.OutcomeUnknown, Status: 502})
	mustDeny(t, s, charge(k1, 11*usd), keybrake.CodeCapExhausted)
	den := charge(k1, 1*usd)
	den.Denial = keybrake.Errorf(keybrake.CodeEndpointNotAllowed, "no")
	mustDeny(t, s, den, keybrake.CodeEndpointNotAllowed)
	mustAllow(t, s, charge(k2, 4*usd)) // pending
	get := charge(k2, 0)
	get.Method, get.Path, get.Rule = "GET", "/v1/payment_intents/pi_1", "GET /v1/payment_intents/*"
	settle(t, s, ok2xx(mustAllow(t, s, get).CallID, 0))
	if _, err := s.RevokeKey(ctx(t), k2.ID); err != nil {
		t.Fatal(err)
	}
	settle(t, s, ok2xx(mustAllow(t, s, charge(other, 1*usd)).CallID, 1*usd))

	sum, err := s.RunSummary(ctx(t), "run-sum")
	if err != nil {
		t.Fatalf("RunSummary: %v", err)
	}
	wantKeys := []keybrake.RunKey{
		{ID: k1.ID, Vendor: "stripe", Status: keybrake.StatusActive, Spent: 6_500_000},
		{ID: k2.ID, Vendor: "stripe", Status: keybrake.StatusRevoked, Spent: 0},
	}
	if k2.CreatedAt.Before(k1.CreatedAt) || (k2.CreatedAt.Equal(k1.CreatedAt) && k2.ID < k1.ID) {
		wantKeys[0], wantKeys[1] = wantKeys[1], wantKeys[0]
	}
	if !slices.Equal(sum.Keys, wantKeys) {
		t.Errorf("keys %+v, want %+v", sum.Keys, wantKeys)
	}
	if sum.AgentRunLabel != "run-sum" || sum.Calls != 7 || sum.Allowed != 5 || sum.Denied != 2 || sum.Unknown != 1 ||
		sum.Spent != 6_500_000 || sum.Reserved != 4*usd {
		t.Errorf("totals: calls %d allowed %d denied %d unknown %d spent $%s reserved $%s",
			sum.Calls, sum.Allowed, sum.Denied, sum.Unknown, sum.Spent, sum.Reserved)
	}
	if len(sum.DeniedByCode) != 2 || sum.DeniedByCode[keybrake.CodeCapExhausted] != 1 || sum.DeniedByCode[keybrake.CodeEndpointNotAllowed] != 1 {
		t.Errorf("denied by code: %v", sum.DeniedByCode)
	}
	wantEndpoints := []keybrake.EndpointSpend{
		{Vendor: "stripe", Endpoint: "GET /v1/payment_intents/*", Calls: 1, Spent: 0},
		{Vendor: "stripe", Endpoint: rulePI, Calls: 4, Spent: 6_500_000},
	}
	if !slices.Equal(sum.ByEndpoint, wantEndpoints) {
		t.Errorf("by endpoint %+v, want %+v", sum.ByEndpoint, wantEndpoints)
	}
	if sum.FirstCall == nil || sum.LastCall == nil || sum.LastCall.Before(*sum.FirstCall) {
		t.Errorf("first/last call: %v %v", sum.FirstCall, sum.LastCall)
	}
	if _, err := s.RunSummary(ctx(t), "run-never"); !errors.Is(err, keybrake.ErrNotFound) {
		t.Errorf("RunSummary(unknown label) = %v, want ErrNotFound", err)
	}
}
