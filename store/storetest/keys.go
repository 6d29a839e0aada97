package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/store"
)

func testClock(t *testing.T, s store.Store) {
	if err := s.Ping(ctx(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	now, err := s.Now(ctx(t))
	if err != nil {
		t.Fatalf("Now: %v", err)
	}
	if now.IsZero() || now.Location() != time.UTC {
		t.Fatalf("Now = %v, want a UTC instant", now)
	}
}

func testCreateAndGetKey(t *testing.T, s store.Store) {
	before, err := s.Now(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	k, hash := newKey(t, s, total(250*usd), perCall(5*usd), issuer("iss_1"), label("run-create"), func(k *keybrake.Key, _ *time.Duration) {
		k.Metadata = map[string]string{"team": "growth", "ticket": "OPS-1"}
	})
	after, err := s.Now(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if k.CreatedAt.Before(before.Truncate(time.Microsecond)) || k.CreatedAt.After(after) {
		t.Errorf("CreatedAt %v is not the store's clock (between %v and %v)", k.CreatedAt, before, after)
	}
	if !k.ExpiresAt.Equal(k.CreatedAt.Add(time.Hour)) {
		t.Errorf("ExpiresAt %v, want CreatedAt + 1h = %v", k.ExpiresAt, k.CreatedAt.Add(time.Hour))
	}

	got, err := s.KeyByHash(ctx(t), hash)
	if err != nil {
		t.Fatalf("KeyByHash: %v", err)
	}
	samePolicy(t, got, k)

	if _, err := s.KeyByHash(ctx(t), keybrake.HashSecret("not a key")); !errors.Is(err, keybrake.ErrNotFound) {
		t.Errorf("KeyByHash(unknown) = %v, want ErrNotFound", err)
	}
	v := getKey(t, s, k.ID)
	samePolicy(t, &v.Key, k)
	if v.Status != keybrake.StatusActive {
		t.Errorf("status %s, want active", v.Status)
	}
	if v.Usage != (keybrake.Usage{}) {
		t.Errorf("usage of a new key: %+v, want zero", v.Usage)
	}
	if _, err := s.GetKey(ctx(t), "key_doesnotexist"); !errors.Is(err, keybrake.ErrNotFound) {
		t.Errorf("GetKey(unknown) = %v, want ErrNotFound", err)
	}
}

func samePolicy(t *testing.T, got, want *keybrake.Key) {
	t.Helper()
	if got.ID != want.ID || got.Vendor != want.Vendor || got.DailyCap != want.DailyCap || got.TotalCap != want.TotalCap ||
		got.MaxPerCall != want.MaxPerCall || got.AgentRunLabel != want.AgentRunLabel || got.AgentName != want.AgentName ||
		got.IssuerID != want.IssuerID || !got.CreatedAt.Equal(want.CreatedAt) || !got.ExpiresAt.Equal(want.ExpiresAt) ||
		!slices.Equal(got.Rules.Strings(), want.Rules.Strings()) || fmt.Sprint(got.Metadata) != fmt.Sprint(want.Metadata) ||
		(got.RevokedAt == nil) != (want.RevokedAt == nil) {
		t.Errorf("stored key differs:\n got %+v\nwant %+v", got, want)
	}
}

func testDuplicateKey(t *testing.T, s store.Store) {
	k, hash := newKey(t, s)
	dup := *k
	_, err := s.CreateKey(ctx(t), &dup, keybrake.HashSecret("another secret"), time.Hour)
	if err == nil {
		t.Fatal("CreateKey with an existing id succeeded")
	}
	notUnavailable(t, err)
	dup.ID = keybrake.NewID("key_")
	if _, err = s.CreateKey(ctx(t), &dup, hash, time.Hour); err == nil {
		t.Fatal("CreateKey with an existing secret hash succeeded")
	}
	notUnavailable(t, err)
}

func testListKeys(t *testing.T, s store.Store) {
	var a1, a2, a3, b1, b2, e1 *keybrake.Key
	a1, _ = newKey(t, s, label("run-a"), issuer("iss_1"))
	a2, _ = newKey(t, s, label("run-a"), issuer("iss_1"))
	b1, _ = newKey(t, s, label("run-b"), issuer("iss_2"))
	a3, _ = newKey(t, s, label("run-a"), issuer("iss_1"))
	e1, _ = newKey(t, s, label("run-a"), issuer("iss_1"), ttl(time.Millisecond))
	b2, _ = newKey(t, s, label("run-b"), issuer("iss_2"))
	if _, err := s.RevokeKey(ctx(t), a2.ID); err != nil {
		t.Fatal(err)
	}
	d := mustAllow(t, s, charge(a1, 3*usd))
	settle(t, s, ok2xx(d.CallID, 3*usd))
	eventually(t, "the 1ms key to expire by the store's clock", func() bool { return getKey(t, s, e1.ID).Status == keybrake.StatusExpired })

	all := []*keybrake.Key{a1, a2, a3, b1, b2, e1}
	sort.Slice(all, func(i, j int) bool {
		if !all[i].CreatedAt.Equal(all[j].CreatedAt) {
			return all[i].CreatedAt.After(all[j].CreatedAt)
		}
		return all[i].ID > all[j].ID
	})
	ids := func(keys ...*keybrake.Key) []string {
		out := make([]string, len(keys))
		for i, k := range keys {
			out[i] = k.ID
		}
		return out
	}
	inOrder := func(keys ...*keybrake.Key) []string { // the subset, in listing order
		var out []string
		for _, k := range all {
			if slices.Contains(keys, k) {
				out = append(out, k.ID)
			}
		}
		return out
	}
	list := func(f keybrake.KeyFilter) ([]string, []*keybrake.KeyView) {
		t.Helper()
		views, next, err := s.ListKeys(ctx(t), f)
		if err != nil {
			t.Fatalf("ListKeys(%+v): %v", f, err)
		}
		if next != "" {
			t.Fatalf("ListKeys(%+v): unexpected next page", f)
		}
		out := make([]string, len(views))
		for i, v := range views {
			out[i] = v.ID
		}
		return out, views
	}

	got, views := list(keybrake.KeyFilter{})
	if !slices.Equal(got, ids(all...)) {
		t.Errorf("all keys, newest first:\n got %v\nwant %v", got, ids(all...))
	}
	for _, v := range views {
		want := keybrake.StatusActive
		switch v.ID {
		case a2.ID:
			want = keybrake.StatusRevoked
		case e1.ID:
			want = keybrake.StatusExpired
		}
		if v.Status != want {
			t.Errorf("listed key %s: status %s, want %s", v.ID, v.Status, want)
		}
		if v.ID == a1.ID && (v.Usage.Spent != 3*usd || v.Usage.SpentToday != 3*usd || v.Usage.Calls != 1) {
			t.Errorf("listed key %s: usage %+v, want $3 spent in one call", v.ID, v.Usage)
		}
	}

	for _, tc := range []struct {
		f    keybrake.KeyFilter
		want []string
	}{
		{keybrake.KeyFilter{AgentRunLabel: "run-a"}, inOrder(a1, a2, a3, e1)},
		{keybrake.KeyFilter{IssuerID: "iss_2"}, inOrder(b1, b2)},
		{keybrake.KeyFilter{Status: keybrake.StatusActive}, inOrder(a1, a3, b1, b2)},
		{keybrake.KeyFilter{Status: keybrake.StatusRevoked}, inOrder(a2)},
		{keybrake.KeyFilter{Status: keybrake.StatusExpired}, inOrder(e1)},
		{keybrake.KeyFilter{AgentRunLabel: "run-a", Status: keybrake.StatusActive}, inOrder(a1, a3)},
		{keybrake.KeyFilter{AgentRunLabel: "run-none"}, nil},
	} {
		if got, _ := list(tc.f); !slices.Equal(got, tc.want) {
			t.Errorf("ListKeys(%+v):\n got %v\nwant %v", tc.f, got, tc.want)
		}
	}

	// Pages of two chain through every key exactly once, in order.
	var paged []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > len(all) {
			t.Fatal("pagination does not end")
		}
		views, next, err := s.ListKeys(ctx(t), keybrake.KeyFilter{Limit: 2, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		if len(views) > 2 {
			t.Fatalf("page of %d keys, limit 2", len(views))
		}
		for _, v := range views {
			paged = append(paged, v.ID)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if !slices.Equal(paged, ids(all...)) {
		t.Errorf("paged listing:\n got %v\nwant %v", paged, ids(all...))
	}

	for _, f := range []keybrake.KeyFilter{{Status: "bogus"}, {Cursor: "!!not-a-cursor"}} {
		_, _, err := s.ListKeys(ctx(t), f)
		if keybrake.ErrorCode(err) != keybrake.CodeInvalidRequest {
			t.Errorf("ListKeys(%+v) = %v, want invalid_request", f, err)
		}
	}
}

func testRevoke(t *testing.T, s store.Store) {
	k, _ := newKey(t, s)
	d := mustAllow(t, s, charge(k, 1*usd))
	settle(t, s, ok2xx(d.CallID, 1*usd))
	inFlight := mustAllow(t, s, charge(k, 2*usd)) // reserved before the revoke

	r1, err := s.RevokeKey(ctx(t), k.ID)
	if err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	if r1.RevokedAt == nil {
		t.Fatal("RevokeKey returned no revoked_at")
	}
	r2, err := s.RevokeKey(ctx(t), k.ID)
	if err != nil {
		t.Fatalf("RevokeKey again: %v", err)
	}
	if r2.RevokedAt == nil || !r2.RevokedAt.Equal(*r1.RevokedAt) {
		t.Errorf("revoking again changed revoked_at: %v then %v", r1.RevokedAt, r2.RevokedAt)
	}
	v := getKey(t, s, k.ID)
	if v.Status != keybrake.StatusRevoked || v.RevokedAt == nil || !v.RevokedAt.Equal(*r1.RevokedAt) {
		t.Errorf("after revoke: status %s revoked_at %v", v.Status, v.RevokedAt)
	}

	den := mustDeny(t, s, charge(k, 1*usd), keybrake.CodeKeyRevoked)
	if den.Status != keybrake.StatusRevoked || den.Key == nil || den.Key.ID != k.ID {
		t.Errorf("denial: status %s key %v", den.Status, den.Key)
	}
	// The key's status wins over a refusal decided before the ledger.
	a := charge(k, 1*usd)
	a.Denial = keybrake.Errorf(keybrake.CodeEndpointNotAllowed, "not allowed")
	mustDeny(t, s, a, keybrake.CodeKeyRevoked)
	if c := callByID(t, s, k.ID, den.CallID); c.Outcome != keybrake.DeniedOutcome(keybrake.CodeKeyRevoked) || c.Status != 401 {
		t.Errorf("audit row of the denial: outcome %s status %d", c.Outcome, c.Status)
	}

	// A call reserved before the revoke still settles.
	settle(t, s, ok2xx(inFlight.CallID, 2*usd))
	u := checkLedger(t, s, k.ID)
	wantUsage(t, u, 3*usd, 0)
	if u.DeniedCalls != 2 {
		t.Errorf("denied calls %d, want 2", u.DeniedCalls)
	}

	if _, err := s.RevokeKey(ctx(t), "key_doesnotexist"); !errors.Is(err, keybrake.ErrNotFound) {
		t.Errorf("RevokeKey(unknown) = %v, want ErrNotFound", err)
	}
}

// testRevokeUnderLoad: once RevokeKey returns, no decision that starts
// afterwards is allowed, while other decisions race it.
func testRevokeUnderLoad(t *testing.T, s store.Store) {
	k, _ := newKey(t, s, daily(1000*usd))
	var revoked atomic.Bool
	var allowedBefore atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				after := revoked.Load()
				d, err := s.Decide(ctx(t), charge(k, 10_000))
				if err != nil {
					errs <- err
					return
				}
				if d.Allowed {
					if after {
						errs <- fmt.Errorf("call %d allowed after RevokeKey returned", d.CallID)
						return
					}
					allowedBefore.Add(1)
					continue
				}
				if d.Err == nil || d.Err.Code != keybrake.CodeKeyRevoked {
					errs <- fmt.Errorf("denied with %v, want key_revoked", d.Err)
					return
				}
				if after {
					return
				}
			}
		}()
	}
	eventually(t, "some decisions before the revoke", func() bool { return allowedBefore.Load() >= 20 || len(errs) > 0 })
	if _, err := s.RevokeKey(ctx(t), k.ID); err != nil {
		t.Fatal(err)
	}
	revoked.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkLedger(t, s, k.ID)
}

// testExpiry: a short-lived key is allowed while the store's clock says it
// is live and refused once it says it expired; the test polls the store's
// clock and never asserts on a sleep.
func testExpiry(t *testing.T, s store.Store) {
	k, _ := newKey(t, s, ttl(time.Second))
	var lastAllowed *keybrake.Decision
	eventually(t, "the key to expire", func() bool {
		t0, err := s.Now(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		d := decide(t, s, charge(k, 1))
		t1, err := s.Now(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			if !t0.Before(k.ExpiresAt) {
				t.Fatalf("allowed although the store's clock read %v before deciding, past expiry %v", t0, k.ExpiresAt)
			}
			lastAllowed = &d
			return false
		}
		if d.Err == nil || d.Err.Code != keybrake.CodeKeyExpired {
			t.Fatalf("denied with %v, want key_expired", d.Err)
		}
		if t1.Before(k.ExpiresAt) {
			t.Fatalf("refused as expired although the store's clock read %v after deciding, before expiry %v", t1, k.ExpiresAt)
		}
		if d.Status != keybrake.StatusExpired {
			t.Fatalf("decision status %s, want expired", d.Status)
		}
		return true
	})
	mustDeny(t, s, charge(k, 1), keybrake.CodeKeyExpired)
	if v := getKey(t, s, k.ID); v.Status != keybrake.StatusExpired {
		t.Errorf("GetKey status %s, want expired", v.Status)
	}
	if lastAllowed != nil { // a call in flight at expiry still settles
		settle(t, s, ok2xx(lastAllowed.CallID, 1))
	}
	checkLedger(t, s, k.ID)
}

func testUnknownKeyAndDenial(t *testing.T, s store.Store) {
	d := mustDeny(t, s, keybrake.Attempt{Method: "POST", Path: pathPI}, keybrake.CodeInvalidVaultKey)
	if d.Key != nil {
		t.Errorf("denial of a missing key carries key %v", d.Key)
	}
	mustDeny(t, s, keybrake.Attempt{Method: "POST", Path: "/v1/../x",
		Denial: keybrake.Errorf(keybrake.CodeNonCanonicalPath, "no")}, keybrake.CodeNonCanonicalPath)
	ghost := mustDeny(t, s, keybrake.Attempt{KeyID: "key_doesnotexist", Method: "POST", Path: pathPI}, keybrake.CodeInvalidVaultKey)

	k, _ := newKey(t, s)
	a := charge(k, 1*usd)
	a.Denial = keybrake.Errorf(keybrake.CodeEndpointNotAllowed, "POST /v1/refunds is not allowed")
	a.Path, a.Rule = "/v1/refunds", ""
	den := mustDeny(t, s, a, keybrake.CodeEndpointNotAllowed)
	if den.Key == nil || den.Usage.DeniedCalls != 1 {
		t.Errorf("denial: key %v usage %+v", den.Key, den.Usage)
	}
	c := callByID(t, s, k.ID, den.CallID)
	if c.Outcome != keybrake.DeniedOutcome(keybrake.CodeEndpointNotAllowed) || c.Code != keybrake.CodeEndpointNotAllowed ||
		c.Status != 403 || c.Path != "/v1/refunds" || c.AgentRunLabel != k.AgentRunLabel {
		t.Errorf("audit row: %+v", c)
	}
	wantUsage(t, checkLedger(t, s, k.ID), 0, 0)

	var keyless int
	for _, c := range allCalls(t, s, keybrake.CallFilter{}) {
		if c.KeyID == "" {
			keyless++
		}
		if c.ID == ghost.CallID && c.KeyID != "" {
			t.Errorf("a denial for an unknown key id names key %q", c.KeyID)
		}
	}
	if keyless != 3 {
		t.Errorf("%d audit rows without a key, want 3", keyless)
	}
}
