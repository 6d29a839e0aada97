package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/internal/sandbox"
)

// Canary secrets (the vendor secret and vault keys) must never appear in a
// log line, an audit row, or the database file: keys are stored hashed and
// the vendor secret is only held in memory.
func TestSecretsNeverLeak(t *testing.T) {
	stripe := sandbox.NewStripe(kbtest.StripeSecret)
	stripe.Fault = func(r *http.Request, n int) sandbox.Fault {
		if r.Header.Get("X-Test-Fault") == "500" {
			return sandbox.FailAfterApply
		}
		return sandbox.NoFault
	}
	env := kbtest.Start(t, kbtest.Options{Upstream: stripe})
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "2", AgentRunLabel: "canary-run"})
	revoked := env.Issue(t, client.IssueParams{})
	if _, err := env.Admin.RevokeKey(t.Context(), revoked.ID); err != nil {
		t.Fatal(err)
	}
	form := "application/x-www-form-urlencoded"
	env.Do(t, k.VaultKey, "POST", "/stripe/v1/payment_intents", "application/json", `{"amount":100,"currency":"usd"}`, "Idempotency-Key", "canary-1")
	env.Do(t, k.VaultKey, "POST", "/stripe/v1/payment_intents", "application/json", `{"amount":100,"currency":"usd"}`, "Idempotency-Key", "canary-1")
	env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", form, "amount=100&currency=usd", "X-Test-Fault", "500")
	env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", form, "amount=100&currency=usd")
	env.Do(t, k.VaultKey, "POST", "/v1/../v1/payment_intents", form, "amount=100&currency=usd")
	env.Do(t, k.VaultKey, "GET", "/v1/customers", "", "")
	env.Do(t, revoked.VaultKey, "POST", "/v1/payment_intents", form, "amount=100&currency=usd")
	env.Do(t, mistype(k.VaultKey), "POST", "/v1/payment_intents", form, "amount=100&currency=usd")
	env.Do(t, "", "POST", "/v1/payment_intents", form, "amount=100&currency=usd", "Authorization", "Bearer "+kbtest.StripeSecret)

	canaries := map[string]string{
		"vendor secret":  kbtest.StripeSecret,
		"vault key":      k.VaultKey,
		"revoked key":    revoked.VaultKey,
		"vault key body": k.VaultKey[4:40],
		"admin token":    kbtest.AdminToken,
	}
	logs := env.Logs.String()
	if !strings.Contains(logs, `"msg":"proxied request"`) {
		t.Fatal("no proxied-request log lines were written")
	}
	rows, err := json.Marshal(calls(t, env, client.ListCallsParams{}))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(rows), "canary-1") {
		t.Fatal("the audit rows were not read")
	}
	for name, secret := range canaries {
		if strings.Contains(logs, secret) {
			t.Errorf("the %s appears in the logs", name)
		}
		if strings.Contains(string(rows), secret) {
			t.Errorf("the %s appears in an audit row", name)
		}
	}
	// The database (and its WAL) hold hashes, never the secrets.
	files, _ := filepath.Glob(env.DB + "*")
	if len(files) == 0 {
		t.Fatal("no database files found")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for name, secret := range canaries {
			if strings.Contains(string(b), secret) {
				t.Errorf("the %s appears in %s", name, filepath.Base(f))
			}
		}
	}
}
