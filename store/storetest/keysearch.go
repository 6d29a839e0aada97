package storetest

import (
	"slices"
	"testing"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/store"
)

// testKeySearch covers the dashboard's key filters: a label substring
// (case-insensitive, its characters literal, never a pattern) and the keys
// that spend today, whatever their status.
func testKeySearch(t *testing.T, s store.Store) {
	arn, _ := newKey(t, s, label("arn:aws:states:us-east-1:1:execution:Billing:run-7"))
	pct, _ := newKey(t, s, label("50%_off-campaign"))
	other, _ := newKey(t, s, label("nightly-report"))
	none, _ := newKey(t, s, label("")) // no label: matches no search

	list := func(f keybrake.KeyFilter) []string {
		t.Helper()
		views, _, err := s.ListKeys(ctx(t), f)
		if err != nil {
			t.Fatalf("ListKeys(%+v): %v", f, err)
		}
		var ids []string
		for _, v := range views {
			ids = append(ids, v.ID)
		}
		slices.Sort(ids)
		return ids
	}
	sorted := func(keys ...*keybrake.Key) []string {
		var ids []string
		for _, k := range keys {
			ids = append(ids, k.ID)
		}
		slices.Sort(ids)
		return ids
	}
	for _, tc := range []struct {
		q    string
		want []string
	}{
		{"billing", sorted(arn)},
		{"EXECUTION:BILLING", sorted(arn)},
		{"run-", sorted(arn)},
		{"%", sorted(pct)}, // literal, not a LIKE wildcard
		{"_", sorted(pct)},
		{"-", sorted(arn, pct, other)},
		{"", sorted(arn, pct, other, none)}, // no search
		{"nothing-like-this", nil},
	} {
		if got := list(keybrake.KeyFilter{LabelContains: tc.q}); !slices.Equal(got, tc.want) {
			t.Errorf("LabelContains %q:\n got %v\nwant %v", tc.q, got, tc.want)
		}
	}

	// Spending today: settled spend, or a reservation still pending; not a
	// call whose reservation was released, nor a key that never called.
	if got := list(keybrake.KeyFilter{SpendingToday: true}); got != nil {
		t.Errorf("SpendingToday before any call: %v, want none", got)
	}
	settle(t, s, ok2xx(mustAllow(t, s, charge(arn, 2*usd)).CallID, 2*usd))
	mustAllow(t, s, charge(pct, 1*usd)) // pending
	d := mustAllow(t, s, charge(other, 1*usd))
	settle(t, s, keybrake.Settlement{CallID: d.CallID, Outcome: keybrake.OutcomeForwarded, Status: 402})
	if _, err := s.RevokeKey(ctx(t), arn.ID); err != nil {
		t.Fatal(err)
	}
	if got, want := list(keybrake.KeyFilter{SpendingToday: true}), sorted(arn, pct); !slices.Equal(got, want) {
		t.Errorf("SpendingToday: got %v, want %v (the revoked key spent today too)", got, want)
	}
	if got, want := list(keybrake.KeyFilter{SpendingToday: true, Status: keybrake.StatusActive}), sorted(pct); !slices.Equal(got, want) {
		t.Errorf("SpendingToday and active: got %v, want %v", got, want)
	}
	if got, want := list(keybrake.KeyFilter{SpendingToday: true, LabelContains: "BILLING"}), sorted(arn); !slices.Equal(got, want) {
		t.Errorf("SpendingToday with a label search: got %v, want %v", got, want)
	}
}
