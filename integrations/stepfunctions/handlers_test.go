package stepfunctions_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/integrations/internal/lambdalocal"
	"github.com/keybrake/keybrake/integrations/stepfunctions"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/internal/sandbox"
)

// lambdaEnv runs the handler binaries under the local Lambda runtime in
// front of an in-process Keybrake, so each test sees the errorType that
// aws-lambda-go itself reports to Lambda.
type lambdaEnv struct {
	kb  *kbtest.Env
	svc *lambdalocal.Service
}

func startLambdaEnv(t *testing.T, opts kbtest.Options, extra ...lambdalocal.Function) *lambdaEnv {
	t.Helper()
	bins := handlerBinaries(t)
	kb := kbtest.Start(t, opts)
	adminURL := "http://" + kb.Server.AdminAddr()
	env := []string{"KEYBRAKE_URL=" + kb.URL, "KEYBRAKE_ADMIN_URL=" + adminURL, "KEYBRAKE_ISSUER_TOKEN=" + kbtest.AdminToken}
	fns := []lambdalocal.Function{
		{Name: "issue-vault-key", Path: filepath.Join(bins, "issue-vault-key"), Env: env},
		{Name: "charge-customer", Path: filepath.Join(bins, "charge-customer"), Env: env},
		{Name: "revoke-vault-key", Path: filepath.Join(bins, "revoke-vault-key"), Env: env},
	}
	for _, f := range extra {
		f.Path = filepath.Join(bins, f.Path)
		fns = append(fns, f)
	}
	logs := &kbtest.SyncBuffer{}
	svc, err := lambdalocal.Start(fns, logs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		svc.Close()
		if t.Failed() {
			t.Logf("Lambda logs:\n%s", tail(logs.String(), 30))
		}
	})
	return &lambdaEnv{kb: kb, svc: svc}
}

// invoke calls a function by ARN, as Step Functions does.
func (e *lambdaEnv) invoke(t *testing.T, fn string, payload any) (json.RawMessage, *lambdalocal.FunctionError) {
	t.Helper()
	b, _ := json.Marshal(payload)
	out, fnErr, err := e.svc.Invoke(context.Background(), lambdalocal.ARN(fn), b)
	if err != nil {
		t.Fatal(err)
	}
	return out, fnErr
}

func chargeInput(vaultKey string, idx int, amount int64) map[string]any {
	return map[string]any{
		"customer":     map[string]any{"id": customerID(idx), "amount_cents": amount},
		"vault_key":    vaultKey,
		"execution_id": "arn:aws:states:us-east-1:123456789:execution:agent-billing:unit",
		"item_index":   idx,
	}
}

func TestIssueVaultKeyHandler(t *testing.T) {
	e := startLambdaEnv(t, kbtest.Options{})
	for i, cap := range []any{49.99, "49.99"} {
		out, fnErr := e.invoke(t, "issue-vault-key", map[string]any{
			"vendor": "stripe", "daily_usd_cap": cap, "allowed_endpoints": []string{"POST /v1/payment_intents"},
			"expires_in": "2h", "agent_run_label": "arn:aws:states:us-east-1:123456789:execution:agent-billing:issue",
			"state_name": fmt.Sprint("IssueVaultKey", i),
		})
		if fnErr != nil {
			t.Fatalf("cap %v: %v", cap, fnErr)
		}
		// ResultPath "$.vault" must expose vault_key and key_id.
		var vault struct {
			KeyID         string          `json:"key_id"`
			VaultKey      string          `json:"vault_key"`
			DailyUSDCap   keybrake.Micros `json:"daily_usd_cap"`
			AgentRunLabel string          `json:"agent_run_label"`
			Status        string          `json:"status"`
		}
		if err := json.Unmarshal(out, &vault); err != nil {
			t.Fatal(err)
		}
		if !keybrake.WellFormedVaultKey(vault.VaultKey) || vault.KeyID == "" || vault.Status != "active" {
			t.Fatalf("cap %v: result %s lacks a usable vault_key/key_id", cap, out)
		}
		if vault.DailyUSDCap != 49_990_000 {
			t.Errorf("cap %v became %s, want exactly 49.99", cap, vault.DailyUSDCap)
		}
		if !strings.HasSuffix(vault.AgentRunLabel, ":issue") {
			t.Errorf("agent_run_label %q", vault.AgentRunLabel)
		}
	}
	// A refusal is not retryable: KeybrakeRefused, naming the field.
	_, fnErr := e.invoke(t, "issue-vault-key", map[string]any{
		"vendor": "stripe", "daily_usd_cap": "1e3", "allowed_endpoints": []string{"POST /v1/payment_intents"},
		"expires_in": 7200, "agent_run_label": "x",
	})
	if fnErr == nil || fnErr.Type != "KeybrakeRefused" || !strings.Contains(fnErr.Message, "daily_usd_cap") {
		t.Errorf("bad cap: %+v, want KeybrakeRefused naming daily_usd_cap", fnErr)
	}
	_, fnErr = e.invoke(t, "issue-vault-key", map[string]any{"vendor": "stripe"})
	if fnErr == nil || fnErr.Type != "InvalidInput" {
		t.Errorf("missing parameters: %+v, want InvalidInput", fnErr)
	}
}

// A retried IssueVaultKey (a Lambda or state retry: the same input) gets
// the key the first attempt made, never a second cap; the Idempotency-Key
// is the execution ARN and the state name.
func TestIssueVaultKeyRetryGetsTheSameKey(t *testing.T) {
	e := startLambdaEnv(t, kbtest.Options{Configure: kbtest.Sealing})
	exec := "arn:aws:states:us-east-1:123456789:execution:agent-billing:" + strings.Repeat("r", 80)
	input := func(state string, capUSD any) map[string]any {
		return map[string]any{
			"vendor": "stripe", "daily_usd_cap": capUSD, "allowed_endpoints": []string{"POST /v1/payment_intents"},
			"expires_in": "2h", "agent_run_label": exec, "execution_id": exec, "state_name": state,
		}
	}
	issue := func(in map[string]any) (key struct {
		KeyID    string `json:"key_id"`
		VaultKey string `json:"vault_key"`
	}) {
		t.Helper()
		out, fnErr := e.invoke(t, "issue-vault-key", in)
		if fnErr != nil {
			t.Fatalf("issue-vault-key: %+v", fnErr)
		}
		if err := json.Unmarshal(out, &key); err != nil || key.VaultKey == "" {
			t.Fatalf("result %s: %v", out, err)
		}
		return key
	}
	first := issue(input("IssueVaultKey", 50))
	if retry := issue(input("IssueVaultKey", 50)); retry != first {
		t.Fatalf("retry got %+v, want the first key %+v", retry, first)
	}
	// A second issuing state of the same execution (after a wait) gets its own.
	if later := issue(input("IssueVaultKeyAfterApproval", 50)); later.KeyID == first.KeyID {
		t.Fatal("another state got the first state's key")
	}
	keys, err := e.kb.Admin.ListKeys(context.Background(), client.ListKeysParams{AgentRunLabel: exec})
	if err != nil || len(keys.Data) != 2 {
		t.Fatalf("keys of the execution: %d %v, want 2 (one per state)", len(keys.Data), err)
	}
	// The same state with other parameters is a mistake, not a retry.
	_, fnErr := e.invoke(t, "issue-vault-key", input("IssueVaultKey", 60))
	if fnErr == nil || fnErr.Type != "KeybrakeRefused" || !strings.Contains(fnErr.Message, "idempotency_key_reused") {
		t.Fatalf("other parameters: %+v, want KeybrakeRefused idempotency_key_reused", fnErr)
	}
	if in := (stepfunctions.IssueInput{AgentRunLabel: exec + strings.Repeat("x", 300)}); len(in.IdempotencyKey()) != 255 ||
		!strings.HasPrefix(in.IdempotencyKey(), "arn:aws:states:") {
		t.Errorf("a long execution ARN's Idempotency-Key: %d %q", len(in.IdempotencyKey()), in.IdempotencyKey())
	}
	if got := (stepfunctions.IssueInput{AgentRunLabel: "arn:x"}).IdempotencyKey(); got != "arn:x/IssueVaultKey" {
		t.Errorf("the seed's Parameters give %q", got)
	}
}

func TestChargeCustomerErrorTypes(t *testing.T) {
	var failNext atomic.Bool
	st := sandbox.NewStripe(kbtest.StripeSecret)
	st.Fault = func(*http.Request, int) sandbox.Fault {
		if failNext.CompareAndSwap(true, false) {
			return sandbox.FailBeforeApply
		}
		return sandbox.NoFault
	}
	// A port nothing listens on, for "Keybrake unreachable".
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "http://" + ln.Addr().String()
	ln.Close()
	e := startLambdaEnv(t, kbtest.Options{Upstream: st},
		lambdalocal.Function{Name: "charge-unreachable", Path: "charge-customer", Env: []string{"KEYBRAKE_URL=" + deadURL}})
	key := e.kb.Issue(t, client.IssueParams{DailyUSDCap: "20"})

	// Success, then a retry of the same item: replayed, not charged again.
	out, fnErr := e.invoke(t, "charge-customer", chargeInput(key.VaultKey, 0, 1250))
	if fnErr != nil {
		t.Fatal(fnErr)
	}
	var res stepfunctions.ChargeResult
	json.Unmarshal(out, &res) //nolint:errcheck
	if res.PaymentIntent == "" || res.ItemIndex != 0 || res.Customer != customerID(0) || res.Replayed {
		t.Fatalf("first charge: %s", out)
	}
	out, fnErr = e.invoke(t, "charge-customer", chargeInput(key.VaultKey, 0, 1250))
	var again stepfunctions.ChargeResult
	json.Unmarshal(out, &again) //nolint:errcheck
	if fnErr != nil || again.PaymentIntent != res.PaymentIntent || !again.Replayed {
		t.Fatalf("retry: %s %v, want the replay of %s", out, fnErr, res.PaymentIntent)
	}
	if len(st.Intents()) != 1 || st.Requests() != 1 {
		t.Fatalf("Stripe: %d intents from %d requests, want 1 and 1", len(st.Intents()), st.Requests())
	}
	// Idempotency-Key and Keybrake-Item as the seed builds them.
	rq := st.Received()[0]
	if got := rq.Header.Get("Idempotency-Key"); got != key.ID+":arn:aws:states:us-east-1:123456789:execution:agent-billing:unit-0" {
		t.Errorf("Idempotency-Key %q", got)
	}

	// $12.50 more does not fit in $20: errorType exactly CapExhausted, Stripe untouched.
	_, fnErr = e.invoke(t, "charge-customer", chargeInput(key.VaultKey, 1, 1250))
	if fnErr == nil || fnErr.Type != "CapExhausted" {
		t.Fatalf("over the cap: %+v, want errorType CapExhausted", fnErr)
	}
	if st.Requests() != 1 {
		t.Error("Stripe received the capped call")
	}

	// Vendor 500 before applying: retryable.
	failNext.Store(true)
	_, fnErr = e.invoke(t, "charge-customer", chargeInput(key.VaultKey, 2, 100))
	if fnErr == nil || fnErr.Type != "KeybrakeTransient" {
		t.Fatalf("vendor 500: %+v, want KeybrakeTransient", fnErr)
	}
	// Keybrake unreachable: retryable.
	_, fnErr = e.invoke(t, "charge-unreachable", chargeInput(key.VaultKey, 3, 100))
	if fnErr == nil || fnErr.Type != "KeybrakeTransient" {
		t.Fatalf("Keybrake unreachable: %+v, want KeybrakeTransient", fnErr)
	}
	// Missing item_index: the request is never sent.
	in := chargeInput(key.VaultKey, 4, 100)
	delete(in, "item_index")
	before := st.Requests()
	_, fnErr = e.invoke(t, "charge-customer", in)
	if fnErr == nil || fnErr.Type != "InvalidInput" {
		t.Fatalf("no item_index: %+v, want InvalidInput", fnErr)
	}

	// Revoked: KeybrakeRefused (not retryable), Stripe untouched.
	out, fnErr = e.invoke(t, "revoke-vault-key", map[string]any{"key_id": key.ID})
	if fnErr != nil || !strings.Contains(string(out), key.ID) {
		t.Fatalf("revoke: %s %v", out, fnErr)
	}
	_, fnErr = e.invoke(t, "charge-customer", chargeInput(key.VaultKey, 5, 100))
	if fnErr == nil || fnErr.Type != "KeybrakeRefused" || !strings.Contains(fnErr.Message, "key_revoked") {
		t.Fatalf("revoked key: %+v, want KeybrakeRefused key_revoked", fnErr)
	}
	if st.Requests() != before {
		t.Errorf("Stripe received %d requests for refused or invalid calls, want none", st.Requests()-before)
	}
	if strings.Contains(fnErr.Message, key.VaultKey) {
		t.Error("the error message carries the vault key")
	}
}

func TestRevokeVaultKeyByLabel(t *testing.T) {
	e := startLambdaEnv(t, kbtest.Options{})
	label := "arn:aws:states:us-east-1:123456789:execution:agent-billing:orphans"
	// Two keys for one execution (an IssueVaultKey retried after its answer
	// was lost) and one for another.
	a := e.kb.Issue(t, client.IssueParams{AgentRunLabel: label})
	b := e.kb.Issue(t, client.IssueParams{AgentRunLabel: label})
	other := e.kb.Issue(t, client.IssueParams{AgentRunLabel: label + "-other"})
	out, fnErr := e.invoke(t, "revoke-vault-key", map[string]any{"agent_run_label": label})
	if fnErr != nil {
		t.Fatal(fnErr)
	}
	var res stepfunctions.RevokeOutput
	json.Unmarshal(out, &res) //nolint:errcheck
	if len(res.Revoked) != 2 {
		t.Fatalf("revoked %s, want both keys of the label", out)
	}
	for _, k := range []*client.Key{a, b, other} {
		got, err := e.kb.Admin.GetKey(context.Background(), k.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := keybrake.StatusRevoked
		if k == other {
			want = keybrake.StatusActive
		}
		if got.Status != want {
			t.Errorf("key %s is %s, want %s", k.ID, got.Status, want)
		}
	}
	// Revoking again (a retried RevokeVaultKey) is harmless.
	if _, fnErr := e.invoke(t, "revoke-vault-key", map[string]any{"key_id": a.ID, "agent_run_label": label}); fnErr != nil {
		t.Errorf("second revoke: %v", fnErr)
	}
	if _, fnErr := e.invoke(t, "revoke-vault-key", map[string]any{}); fnErr == nil || fnErr.Type != "InvalidInput" {
		t.Errorf("empty revoke: %+v, want InvalidInput", fnErr)
	}
}

// TestIssuerTokenFromExtension: the token is read through the Parameters
// and Secrets extension, with the session token, once; after a 401 it is
// read again (rotation).
func TestIssuerTokenFromExtension(t *testing.T) {
	kb := kbtest.Start(t, kbtest.Options{Configure: kbtest.Sealing}) // the three issues below replay the first
	var fetches atomic.Int32
	current := atomic.Value{}
	current.Store("stale-token")
	ext := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Aws-Parameters-Secrets-Token") != "session-token" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		fetches.Add(1)
		switch r.URL.Path {
		case "/systemsmanager/parameters/get":
			if r.URL.Query().Get("name") != "/keybrake/issuer" || r.URL.Query().Get("withDecryption") != "true" {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			json.NewEncoder(w).Encode(map[string]any{"Parameter": map[string]any{"Value": current.Load()}}) //nolint:errcheck
		case "/secretsmanager/get":
			json.NewEncoder(w).Encode(map[string]any{"SecretString": current.Load()}) //nolint:errcheck
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer ext.Close()
	t.Setenv("AWS_SESSION_TOKEN", "session-token")
	t.Setenv("KEYBRAKE_URL", kb.URL)
	t.Setenv("KEYBRAKE_ADMIN_URL", "http://"+kb.Server.AdminAddr())
	t.Setenv("KEYBRAKE_ISSUER_TOKEN_SSM_PARAMETER", "/keybrake/issuer")
	cfg, err := stepfunctions.ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	tok := cfg.Token.(*stepfunctions.ExtensionToken)
	tok.Endpoint = ext.URL
	h := stepfunctions.New(cfg)
	in := stepfunctions.IssueInput{Vendor: "stripe", DailyUSDCap: "10", AllowedEndpoints: []string{"POST /v1/payment_intents"}, ExpiresIn: "30m", AgentRunLabel: "run"}

	// The stale token is refused (401), refreshed, and the call succeeds.
	current.Store("stale-token")
	_, err = h.IssueVaultKey(context.Background(), in)
	var refused *stepfunctions.KeybrakeRefused
	if err == nil || !errors.As(err, &refused) || refused.Status != http.StatusUnauthorized {
		t.Fatalf("stale token: %v, want a 401 refusal after one refresh", err)
	}
	if n := fetches.Load(); n != 2 {
		t.Errorf("%d fetches, want 2 (first use, refresh after 401)", n)
	}
	current.Store(kbtest.AdminToken)
	tok.Refresh()
	for i := 0; i < 3; i++ {
		if _, err := h.IssueVaultKey(context.Background(), in); err != nil {
			t.Fatal(err)
		}
	}
	if n := fetches.Load(); n != 3 {
		t.Errorf("%d fetches after three issues, want 3: the token is cached", n)
	}

	// No extension listening: a transient error that says what to check.
	down := &stepfunctions.ExtensionToken{SecretID: "keybrake/issuer", Endpoint: "http://127.0.0.1:1"}
	h2 := stepfunctions.New(stepfunctions.Config{URL: kb.URL, AdminURL: "http://" + kb.Server.AdminAddr(), Token: down})
	_, err = h2.IssueVaultKey(context.Background(), in)
	var tr *stepfunctions.KeybrakeTransient
	if !errors.As(err, &tr) || !strings.Contains(tr.Message, "layer") {
		t.Errorf("extension down: %v, want KeybrakeTransient mentioning the layer", err)
	}
}

// TestScopedIssuerToken: with a token limited to $500 keys, issue-vault-key
// gets its refusals as KeybrakeRefused (issuer_limit_exceeded, not
// retried), and revoke-vault-key by label revokes only the token's own keys.
func TestScopedIssuerToken(t *testing.T) {
	kb := kbtest.Start(t)
	tok, err := kb.Admin.CreateToken(context.Background(), client.TokenParams{
		Name: "sfn-billing", MaxDailyUSD: "500", Vendors: []string{"stripe"},
		Endpoints: []string{"POST /v1/payment_intents"}, MaxExpiresIn: "6h",
	})
	if err != nil {
		t.Fatal(err)
	}
	h := stepfunctions.New(stepfunctions.Config{URL: kb.URL, AdminURL: "http://" + kb.Server.AdminAddr(), Token: stepfunctions.StaticToken(tok.Token)})
	label := "arn:aws:states:us-east-1:123456789:execution:agent-billing:scoped"
	in := stepfunctions.IssueInput{Vendor: "stripe", DailyUSDCap: "500", AllowedEndpoints: []string{"POST /v1/payment_intents"}, ExpiresIn: "2h", AgentRunLabel: label}
	own, err := h.IssueVaultKey(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	for _, over := range []func(*stepfunctions.IssueInput){
		func(in *stepfunctions.IssueInput) { in.DailyUSDCap = "500.01" },
		func(in *stepfunctions.IssueInput) { in.ExpiresIn = "7h" },
		func(in *stepfunctions.IssueInput) { in.AllowedEndpoints = []string{"POST /v1/refunds"} },
	} {
		bad := in
		over(&bad)
		_, err := h.IssueVaultKey(context.Background(), bad)
		var refused *stepfunctions.KeybrakeRefused
		if !errors.As(err, &refused) || refused.Code != string(keybrake.CodeIssuerLimitExceeded) {
			t.Errorf("%+v: %v, want KeybrakeRefused issuer_limit_exceeded", bad, err)
		}
	}
	// A key of the same label issued by someone else (the admin) is not
	// this token's to revoke.
	foreign := kb.Issue(t, client.IssueParams{AgentRunLabel: label})
	out, err := h.RevokeVaultKey(context.Background(), stepfunctions.RevokeInput{KeyID: own.ID, AgentRunLabel: label})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Revoked) != 1 || out.Revoked[0].ID != own.ID {
		t.Errorf("revoked %+v, want only the token's own key %s", out.Revoked, own.ID)
	}
	if k, _ := kb.Admin.GetKey(context.Background(), foreign.ID); k.Status != keybrake.StatusActive {
		t.Errorf("the admin's key is %s", k.Status)
	}
}

func TestDecimalAndDuration(t *testing.T) {
	var in stepfunctions.IssueInput
	for raw, want := range map[string]string{`500`: "500", `49.99`: "49.99", `"49.99"`: "49.99", `0.000001`: "0.000001", `12345678901234567890.5`: "12345678901234567890.5"} {
		if err := json.Unmarshal([]byte(`{"daily_usd_cap":`+raw+`}`), &in); err != nil || string(in.DailyUSDCap) != want {
			t.Errorf("daily_usd_cap %s -> %q, %v; want %q", raw, in.DailyUSDCap, err, want)
		}
	}
	for raw, want := range map[string]string{`"2h"`: "2h", `7200`: "7200s"} {
		if err := json.Unmarshal([]byte(`{"expires_in":`+raw+`}`), &in); err != nil || string(in.ExpiresIn) != want {
			t.Errorf("expires_in %s -> %q, %v; want %q", raw, in.ExpiresIn, err, want)
		}
	}
	for _, raw := range []string{`{"daily_usd_cap":true}`, `{"expires_in":1.5}`} {
		if err := json.Unmarshal([]byte(raw), &in); err == nil {
			t.Errorf("%s accepted", raw)
		}
	}
}
