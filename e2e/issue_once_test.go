package e2e

// A retried IssueVaultKey gets the same key: POST /vault/keys and
// POST /vault/tokens honour Idempotency-Key, across restarts and replicas.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
)

var (
	secretsKeyA = kbtest.SecretsKey // KEYBRAKE_SECRETS_KEY, hex
	secretsKeyB = strings.Repeat("b2", 32)
)

var sealed = kbtest.Options{Configure: kbtest.Sealing}

// adminPost is one admin API POST, read whole.
type adminAnswer struct {
	status   int
	replayed bool
	body     []byte
}

func adminPost(t testing.TB, base, token, path, idemKey, body string) adminAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return adminAnswer{status: resp.StatusCode, replayed: resp.Header.Get("Keybrake-Idempotent-Replayed") == "true", body: b}
}

type issued struct {
	KeyID    string `json:"key_id"`
	VaultKey string `json:"vault_key"`
	Status   string `json:"status"`
	Code     string `json:"code"`
	Message  string `json:"message"`
}

func (a adminAnswer) issued(t testing.TB) issued {
	t.Helper()
	var k issued
	if err := json.Unmarshal(a.body, &k); err != nil {
		t.Fatalf("answer %d %s: %v", a.status, a.body, err)
	}
	return k
}

const issueBody = `{"vendor":"stripe","daily_usd_cap":50,"allowed_endpoints":["POST /v1/payment_intents"],"expires_in":"2h",
	"agent_run_label":"arn:aws:states:us-east-1:123456789012:execution:billing:run-7","metadata":{"team":"growth","cost":"b2"}}`

// The same request, written another way: field and map order, spacing.
const issueBodyReordered = `{ "metadata": {"cost":"b2","team":"growth"}, "expires_in": "2h", "allowed_endpoints": ["POST /v1/payment_intents"],
	"agent_run_label": "arn:aws:states:us-east-1:123456789012:execution:billing:run-7", "daily_usd_cap": 50, "vendor": "stripe" }`

func labelKeys(t testing.TB, admin *client.Client, label string) []client.Key {
	t.Helper()
	page, err := admin.ListKeys(context.Background(), client.ListKeysParams{AgentRunLabel: label, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	return page.Data
}

func TestIssueKeyIdempotent(t *testing.T) {
	env := kbtest.Start(t, sealed)
	const run = "arn:aws:states:us-east-1:123456789012:execution:billing:run-7"
	const idem = run + "/IssueVaultKey"

	first := adminPost(t, env.URL, kbtest.AdminToken, "/vault/keys", idem, issueBody)
	k1 := first.issued(t)
	if first.status != 201 || first.replayed || !strings.HasPrefix(k1.VaultKey, "kbvk") {
		t.Fatalf("first: %d replayed=%v %s", first.status, first.replayed, first.body)
	}
	again := adminPost(t, env.URL, kbtest.AdminToken, "/vault/keys", idem, issueBodyReordered)
	if again.status != 201 || !again.replayed || !bytes.Equal(again.body, first.body) {
		t.Fatalf("retry: %d replayed=%v\n%s\nwant the first answer\n%s", again.status, again.replayed, again.body, first.body)
	}
	if keys := labelKeys(t, env.Admin, run); len(keys) != 1 || keys[0].ID != k1.KeyID {
		t.Fatalf("keys of the run: %+v, want only %s", keys, k1.KeyID)
	}
	// The replayed secret is the key's.
	if r := env.Do(t, k1.VaultKey, "POST", "/stripe/v1/payment_intents", "application/json", `{"amount":100,"currency":"usd"}`); r.Status != 200 {
		t.Fatalf("charge with the replayed key: %d %s", r.Status, r.Body)
	}

	// The same Idempotency-Key for another request is refused, and makes nothing.
	before := env.Stripe.Requests()
	other := adminPost(t, env.URL, kbtest.AdminToken, "/vault/keys", idem, strings.Replace(issueBody, `"daily_usd_cap":50`, `"daily_usd_cap":60`, 1))
	if e := other.issued(t); other.status != 409 || e.Code != "idempotency_key_reused" || !strings.Contains(e.Message, k1.KeyID) || e.VaultKey != "" {
		t.Fatalf("another body: %d %s", other.status, other.body)
	}
	if n := len(labelKeys(t, env.Admin, run)); n != 1 || env.Stripe.Requests() != before {
		t.Fatalf("%d keys after the refused reuse", n)
	}
	if r := adminPost(t, env.URL, kbtest.AdminToken, "/vault/keys", strings.Repeat("k", 256), issueBody); r.status != 400 || r.issued(t).Code != "invalid_idempotency_key" {
		t.Fatalf("a 256-character key: %d %s", r.status, r.body)
	}
	if r := adminPost(t, env.URL, kbtest.AdminToken, "/vault/keys", "", issueBody); r.status != 201 || r.replayed || r.issued(t).KeyID == k1.KeyID {
		t.Fatalf("without Idempotency-Key: %d %s", r.status, r.body)
	}

	// A revoke does not change what the retry of the issuance answers
	// (the answer it was), and the key stays revoked.
	if _, err := env.Admin.RevokeKey(t.Context(), k1.KeyID); err != nil {
		t.Fatal(err)
	}
	if r := adminPost(t, env.URL, kbtest.AdminToken, "/vault/keys", idem, issueBody); r.status != 201 || !r.replayed || !bytes.Equal(r.body, first.body) {
		t.Fatalf("retry after a revoke: %d %s", r.status, r.body)
	}
	before = env.Stripe.Requests()
	r := env.Do(t, k1.VaultKey, "POST", "/stripe/v1/payment_intents", "application/json", `{"amount":100,"currency":"usd"}`)
	expectDenied(t, env.Stripe, before, r, 401, "key_revoked")

	// The secret is in the database only sealed.
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(env.DB + suffix)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(k1.VaultKey)) {
			t.Fatalf("the vault key is in %s in plaintext", env.DB+suffix)
		}
	}
}

// The Go client passes the key and reports the replay.
func TestClientIssueKeyIdempotent(t *testing.T) {
	env := kbtest.Start(t, sealed)
	p := client.IssueParams{Vendor: "stripe", DailyUSDCap: "10", AllowedEndpoints: []string{"payment_intents.create"}, ExpiresIn: "1h", AgentRunLabel: "client-run"}
	var replayed bool
	first, err := env.Admin.IssueKey(t.Context(), p, client.IdempotencyKey("client-run/issue"), client.Replayed(&replayed))
	if err != nil || replayed {
		t.Fatalf("first: %v replayed=%v", err, replayed)
	}
	again, err := env.Admin.IssueKey(t.Context(), p, client.IdempotencyKey("client-run/issue"), client.Replayed(&replayed))
	if err != nil || !replayed || again.ID != first.ID || again.VaultKey != first.VaultKey {
		t.Fatalf("retry: %+v %v replayed=%v, want key %s", again, err, replayed, first.ID)
	}
	p.DailyUSDCap = "11"
	_, err = env.Admin.IssueKey(t.Context(), p, client.IdempotencyKey("client-run/issue"))
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 409 || ce.Code != "idempotency_key_reused" {
		t.Fatalf("another cap: %v", err)
	}
}

// Each caller has its own Idempotency-Keys: an issuer token cannot replay
// the admin's answer or another issuer's.
func TestIssueKeyIdempotencyScopedToCaller(t *testing.T) {
	env := kbtest.Start(t, sealed)
	token := func(name string) string {
		tok, err := env.Admin.CreateToken(t.Context(), client.TokenParams{Name: name, MaxDailyUSD: "100", Vendors: []string{"stripe"},
			Endpoints: []string{"POST /v1/payment_intents"}, MaxExpiresIn: "6h"})
		if err != nil {
			t.Fatal(err)
		}
		return tok.Token
	}
	a, b := token("sfn-a"), token("sfn-b")
	const idem = "shared-execution/IssueVaultKey"
	ka := adminPost(t, env.URL, a, "/vault/keys", idem, issueBody).issued(t)
	rb := adminPost(t, env.URL, b, "/vault/keys", idem, issueBody)
	kb := rb.issued(t)
	rAdmin := adminPost(t, env.URL, kbtest.AdminToken, "/vault/keys", idem, issueBody)
	kAdmin := rAdmin.issued(t)
	if ka.KeyID == "" || kb.KeyID == "" || kAdmin.KeyID == "" || ka.KeyID == kb.KeyID || kAdmin.KeyID == ka.KeyID || kAdmin.KeyID == kb.KeyID ||
		rb.replayed || rAdmin.replayed || kb.VaultKey == ka.VaultKey {
		t.Fatalf("three callers, one Idempotency-Key: %+v %+v %+v", ka, kb, kAdmin)
	}
	if again := adminPost(t, env.URL, a, "/vault/keys", idem, issueBody); !again.replayed || again.issued(t).VaultKey != ka.VaultKey {
		t.Fatalf("issuer a's retry: %d %s", again.status, again.body)
	}
	if again := adminPost(t, env.URL, b, "/vault/keys", idem, issueBody); !again.replayed || again.issued(t).KeyID != kb.KeyID {
		t.Fatalf("issuer b's retry: %d %s", again.status, again.body)
	}
}

func TestCreateTokenIdempotent(t *testing.T) {
	env := kbtest.Start(t, sealed)
	body := `{"name":"sfn-billing","max_daily_usd_cap":500,"vendors":["stripe"],"endpoints":["POST /v1/payment_intents"],"max_expires_in":"6h"}`
	first := adminPost(t, env.URL, kbtest.AdminToken, "/vault/tokens", "deploy-42/token", body)
	again := adminPost(t, env.URL, kbtest.AdminToken, "/vault/tokens", "deploy-42/token", body)
	var tok struct {
		ID    string `json:"token_id"`
		Token string `json:"token"`
	}
	if first.status != 201 || again.status != 201 || first.replayed || !again.replayed || !bytes.Equal(first.body, again.body) ||
		json.Unmarshal(first.body, &tok) != nil || !strings.HasPrefix(tok.Token, "kbit") {
		t.Fatalf("token create and retry: %d %s / %d %v %s", first.status, first.body, again.status, again.replayed, again.body)
	}
	if page, err := env.Admin.ListTokens(t.Context()); err != nil || len(page.Data) != 1 {
		t.Fatalf("tokens: %+v %v", page, err)
	}
	// The replayed token works.
	if _, err := client.New(env.URL, tok.Token).IssueKey(t.Context(), client.IssueParams{Vendor: "stripe", DailyUSDCap: "5",
		AllowedEndpoints: []string{"POST /v1/payment_intents"}, ExpiresIn: "1h"}); err != nil {
		t.Fatalf("issuing with the replayed token: %v", err)
	}
	if r := adminPost(t, env.URL, kbtest.AdminToken, "/vault/tokens", "deploy-42/token", strings.Replace(body, "500", "600", 1)); r.status != 409 || r.issued(t).Code != "idempotency_key_reused" {
		t.Fatalf("another body: %d %s", r.status, r.body)
	}
}

// Identical requests at once make one key; every answer carries it.
func TestIssueKeyConcurrentPairMakesOneKey(t *testing.T) {
	env := kbtest.Start(t, sealed)
	concurrentIssue(t, []string{env.URL}, env.Admin)
}

func concurrentIssue(t *testing.T, bases []string, admin *client.Client) {
	t.Helper()
	const n = 8
	const run = "arn:aws:states:us-east-1:123456789012:execution:billing:run-7"
	answers := make([]adminAnswer, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			answers[i] = adminPost(t, bases[i%len(bases)], kbtest.AdminToken, "/vault/keys", "race/IssueVaultKey", issueBody)
		}()
	}
	close(start)
	wg.Wait()
	fresh := 0
	var want issued
	for i, a := range answers {
		k := a.issued(t)
		if a.status != 201 || k.KeyID == "" {
			t.Fatalf("answer %d: %d %s", i, a.status, a.body)
		}
		if !a.replayed {
			fresh++
		}
		if want.KeyID == "" {
			want = k
		} else if k.KeyID != want.KeyID || k.VaultKey != want.VaultKey {
			t.Errorf("answer %d is key %s, answer 0 key %s", i, k.KeyID, want.KeyID)
		}
	}
	if fresh != 1 {
		t.Errorf("%d answers were not replays, want exactly 1", fresh)
	}
	if keys := labelKeys(t, admin, run); len(keys) != 1 {
		t.Errorf("%d keys for the run, want 1", len(keys))
	}
}

// Without KEYBRAKE_SECRETS_KEY the retry cannot be shown the secret: it is
// refused, naming the key it made, and never gets a second key.
func TestIssueKeyRetryWithoutSecretsKey(t *testing.T) {
	env := kbtest.Start(t)
	first := adminPost(t, env.URL, kbtest.AdminToken, "/vault/keys", "run-9/IssueVaultKey", issueBody)
	k := first.issued(t)
	if first.status != 201 || k.VaultKey == "" {
		t.Fatalf("first: %d %s", first.status, first.body)
	}
	again := adminPost(t, env.URL, kbtest.AdminToken, "/vault/keys", "run-9/IssueVaultKey", issueBody)
	e := again.issued(t)
	if again.status != 409 || e.Code != "idempotency_replay_unavailable" || !strings.Contains(e.Message, k.KeyID) ||
		!strings.Contains(e.Message, "KEYBRAKE_SECRETS_KEY") || e.VaultKey != "" {
		t.Fatalf("retry without a secrets key: %d %s", again.status, again.body)
	}
	if keys := labelKeys(t, env.Admin, "arn:aws:states:us-east-1:123456789012:execution:billing:run-7"); len(keys) != 1 {
		t.Fatalf("%d keys, want 1", len(keys))
	}
	if !strings.Contains(env.Logs.String(), "a retried key issuance (same Idempotency-Key) is refused") {
		t.Errorf("no start-up warning:\n%s", env.Logs.String())
	}
}

// The headline: a real keybrake serve is killed after issuing, restarted,
// and the retry gets the same key and secret. Restarted with another
// KEYBRAKE_SECRETS_KEY, the retry is refused rather than answered with a
// second key.
func TestIssueKeyReplaysAcrossRestart(t *testing.T) {
	db := t.TempDir() + "/keybrake.db"
	env := func(secretsKey string) []string {
		return kbtest.EnvVars("KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken, "KEYBRAKE_DB", db,
			"KEYBRAKE_STRIPE_SECRET_KEY", kbtest.StripeSecret, "KEYBRAKE_SECRETS_KEY", secretsKey)
	}
	p := kbtest.Serve(t, env(secretsKeyA))
	first := adminPost(t, p.URL(), kbtest.AdminToken, "/vault/keys", "run-7/IssueVaultKey", issueBody)
	k := first.issued(t)
	if first.status != 201 {
		t.Fatalf("first: %d %s", first.status, first.body)
	}
	p.Kill()

	p = kbtest.Serve(t, env(secretsKeyA))
	again := adminPost(t, p.URL(), kbtest.AdminToken, "/vault/keys", "run-7/IssueVaultKey", issueBody)
	if again.status != 201 || !again.replayed || !bytes.Equal(again.body, first.body) {
		t.Fatalf("retry after kill -9 and restart: %d %v %s\nwant\n%s", again.status, again.replayed, again.body, first.body)
	}
	if err := p.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}

	p = kbtest.Serve(t, env(secretsKeyB))
	rotated := adminPost(t, p.URL(), kbtest.AdminToken, "/vault/keys", "run-7/IssueVaultKey", issueBody)
	if e := rotated.issued(t); rotated.status != 409 || e.Code != "idempotency_replay_unavailable" || !strings.Contains(e.Message, "another KEYBRAKE_SECRETS_KEY") || e.VaultKey != "" {
		t.Fatalf("retry after the secrets key changed: %d %s", rotated.status, rotated.body)
	}
	if keys := labelKeys(t, client.New(p.URL(), kbtest.AdminToken), "arn:aws:states:us-east-1:123456789012:execution:billing:run-7"); len(keys) != 1 || keys[0].ID != k.KeyID {
		t.Fatalf("keys: %+v, want only %s", keys, k.KeyID)
	}
}

// On PostgreSQL, identical requests spread over two replicas make one key.
func TestReplicasIssueKeyOnce(t *testing.T) {
	rs := startReplicas(t, 2, "KEYBRAKE_SECRETS_KEY", secretsKeyA)
	concurrentIssue(t, []string{rs.procs[0].AdminURL(), rs.procs[1].AdminURL()}, rs.admins[1])
}
