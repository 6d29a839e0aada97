package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/store"
)

func issueClaim(caller, key, fp string) keybrake.IssueClaim {
	return keybrake.IssueClaim{Caller: caller, Key: key, Fingerprint: fp, Secret: "v1:sealed-" + key, TTL: idemTTL}
}

func newPolicy(t *testing.T, lbl string) *keybrake.Key {
	t.Helper()
	rules, err := keybrake.ParseRules([]string{rulePI})
	if err != nil {
		t.Fatal(err)
	}
	return &keybrake.Key{ID: keybrake.NewID("key_"), Vendor: "stripe", DailyCap: 50 * usd, Rules: rules, AgentRunLabel: lbl}
}

// keysLabelled counts the keys of a label.
func keysLabelled(t *testing.T, s store.Store, lbl string) int {
	t.Helper()
	views, _, err := s.ListKeys(ctx(t), keybrake.KeyFilter{AgentRunLabel: lbl, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	return len(views)
}

// A claimed Idempotency-Key creates once: a second issuance under it
// creates nothing and gets the first one's record, per caller.
func testIssueOnce(t *testing.T, s store.Store) {
	first := newPolicy(t, "run-once")
	created, prior, err := s.CreateKeyOnce(ctx(t), first, keybrake.HashSecret(keybrake.NewVaultKey()), time.Hour, issueClaim("admin", "exec-1/IssueVaultKey", "fp-a"))
	if err != nil || prior != nil || created == nil || created.ID != first.ID {
		t.Fatalf("first CreateKeyOnce: %+v %+v %v", created, prior, err)
	}
	again := newPolicy(t, "run-once")
	created2, prior2, err := s.CreateKeyOnce(ctx(t), again, keybrake.HashSecret(keybrake.NewVaultKey()), time.Hour, issueClaim("admin", "exec-1/IssueVaultKey", "fp-b"))
	if err != nil || created2 != nil || prior2 == nil {
		t.Fatalf("second CreateKeyOnce: %+v %+v %v", created2, prior2, err)
	}
	if prior2.ResourceID != first.ID || prior2.Fingerprint != "fp-a" || prior2.Secret != "v1:sealed-exec-1/IssueVaultKey" ||
		prior2.CreatedAt.Sub(created.CreatedAt).Abs() > time.Second {
		t.Errorf("record %+v; want the first issuance's (%s, fp-a, created %v)", prior2, first.ID, created.CreatedAt)
	}
	if _, err := s.GetKey(ctx(t), again.ID); err == nil {
		t.Error("the second issuance created its key")
	}
	// Another caller's key of the same name is its own.
	other := newPolicy(t, "run-once")
	if c, p, err := s.CreateKeyOnce(ctx(t), other, keybrake.HashSecret(keybrake.NewVaultKey()), time.Hour, issueClaim("tok_other", "exec-1/IssueVaultKey", "fp-a")); err != nil || p != nil || c == nil {
		t.Errorf("another caller's CreateKeyOnce: %+v %+v %v", c, p, err)
	}
	if n := keysLabelled(t, s, "run-once"); n != 2 {
		t.Errorf("%d keys, want 2 (one per caller)", n)
	}

	// Tokens share the records, scoped the same way.
	rules, _ := keybrake.ParseRules([]string{rulePI})
	tok := func() *keybrake.IssuerToken {
		return &keybrake.IssuerToken{ID: keybrake.NewID("tok_"), Name: "sfn", MaxDailyCap: 5 * usd, Vendors: []string{"stripe"}, Endpoints: rules, MaxExpiresIn: time.Hour}
	}
	t1 := tok()
	if c, p, err := s.CreateTokenOnce(ctx(t), t1, keybrake.HashSecret(keybrake.NewIssuerToken()), issueClaim("admin", "tok-1", "fp-t")); err != nil || p != nil || c == nil {
		t.Fatalf("CreateTokenOnce: %+v %+v %v", c, p, err)
	}
	if c, p, err := s.CreateTokenOnce(ctx(t), tok(), keybrake.HashSecret(keybrake.NewIssuerToken()), issueClaim("admin", "tok-1", "fp-t")); err != nil || c != nil || p == nil || p.ResourceID != t1.ID {
		t.Errorf("CreateTokenOnce again: %+v %+v %v", c, p, err)
	}
	if got, err := s.GetToken(ctx(t), t1.ID); err != nil || got.Name != "sfn" {
		t.Errorf("GetToken: %+v %v", got, err)
	}
	tokens, err := s.ListTokens(ctx(t))
	if err != nil || len(tokens) != 1 {
		t.Errorf("%d tokens, want 1: %v", len(tokens), err)
	}
}

// Identical issuances at once create one key, whoever wins.
func testIssueOnceConcurrent(t *testing.T, s store.Store) {
	const n = 16
	var wg sync.WaitGroup
	type result struct {
		created *keybrake.Key
		prior   *keybrake.IssueRecord
		err     error
	}
	results := make([]result, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			c, p, err := s.CreateKeyOnce(ctx(t), newPolicy(t, "run-race"), keybrake.HashSecret(keybrake.NewVaultKey()), time.Hour, issueClaim("admin", "race", "fp"))
			results[i] = result{c, p, err}
		}()
	}
	close(start)
	wg.Wait()
	var winner string
	for _, r := range results {
		if r.err != nil {
			t.Fatalf("CreateKeyOnce: %v", r.err)
		}
		if r.created != nil {
			if winner != "" {
				t.Fatalf("two keys created: %s and %s", winner, r.created.ID)
			}
			winner = r.created.ID
		}
	}
	if winner == "" {
		t.Fatal("no issuance created the key")
	}
	for _, r := range results {
		if r.created == nil && (r.prior == nil || r.prior.ResourceID != winner) {
			t.Errorf("a loser got %+v, want the winner's record (%s)", r.prior, winner)
		}
	}
	if got := keysLabelled(t, s, "run-race"); got != 1 {
		t.Errorf("%d keys, want 1", got)
	}
}

// Past its window the key is free again; the sweep drops expired records.
func testIssueOnceExpiry(t *testing.T, s store.Store) {
	short := func(key string) keybrake.IssueClaim {
		c := issueClaim("admin", key, "fp")
		c.TTL = time.Millisecond
		return c
	}
	mk := func(c keybrake.IssueClaim) (*keybrake.Key, *keybrake.IssueRecord) {
		k, p, err := s.CreateKeyOnce(ctx(t), newPolicy(t, "run-exp"), keybrake.HashSecret(keybrake.NewVaultKey()), time.Hour, c)
		if err != nil {
			t.Fatal(err)
		}
		return k, p
	}
	first, _ := mk(short("exp"))
	mk(short("sweep"))
	mk(issueClaim("admin", "keep", "fp"))
	eventually(t, "the store's clock to pass the records' expiry", func() bool {
		now, err := s.Now(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		return now.After(first.CreatedAt.Add(10 * time.Millisecond))
	})
	if k, p := mk(issueClaim("admin", "exp", "fp")); k == nil || p != nil {
		t.Errorf("an expired key replayed: %+v %+v", k, p)
	}
	n, err := s.SweepIssueClaims(ctx(t))
	if err != nil || n != 1 {
		t.Errorf("SweepIssueClaims: %d %v, want 1 (sweep)", n, err)
	}
	if k, p := mk(issueClaim("admin", "exp", "fp")); k != nil || p == nil {
		t.Errorf("the renewed record was lost: %+v %+v", k, p)
	}
	if k, p := mk(issueClaim("admin", "keep", "fp")); k != nil || p == nil {
		t.Errorf("a live record was swept: %+v %+v", k, p)
	}
}
