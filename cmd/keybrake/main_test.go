package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/keybrake/keybrake/internal/kbtest"
)

// cli runs the keybrake command in-process and returns its exit code and
// output.
func cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestKeyCommands(t *testing.T) {
	env := kbtest.Start(t)
	t.Setenv("KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken)
	t.Setenv("KEYBRAKE_URL", env.URL)

	code, out, errOut := cli(t, "key", "issue", "--daily-usd-cap", "50", "--endpoint", "POST /v1/payment_intents",
		"--expires-in", "2h", "--label", "arn:aws:states:us-east-1:1:execution:sm:cli")
	if code != 0 || !strings.Contains(out, "vault_key") || !strings.Contains(out, "$50.00") {
		t.Fatalf("key issue: %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = cli(t, "--json", "key", "issue", "--daily-usd-cap", "5", "--endpoint", "POST /v1/payment_intents", "--label", "cli-json")
	var issued struct {
		ID       string `json:"key_id"`
		VaultKey string `json:"vault_key"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &issued) != nil || issued.VaultKey == "" {
		t.Fatalf("key issue --json: %d %s", code, out)
	}
	env.Do(t, issued.VaultKey, "POST", "/v1/payment_intents", "application/x-www-form-urlencoded", "amount=100&currency=usd")

	code, out, _ = cli(t, "key", "list")
	if code != 0 || !strings.Contains(out, "KEY_ID") || !strings.Contains(out, issued.ID) || strings.Count(out, "\n") != 3 {
		t.Fatalf("key list: %d\n%s", code, out)
	}
	code, out, _ = cli(t, "key", "show", issued.ID)
	if code != 0 || !strings.Contains(out, "spent_usd") || !strings.Contains(out, "$1.00") {
		t.Fatalf("key show: %d\n%s", code, out)
	}
	code, out, _ = cli(t, "calls", "--key", issued.ID)
	if code != 0 || !strings.Contains(out, "forwarded") || !strings.Contains(out, "pi_sandbox_000001") {
		t.Fatalf("calls: %d\n%s", code, out)
	}
	code, out, _ = cli(t, "report", "cli-json")
	if code != 0 || !strings.Contains(out, "$1.00") || !strings.Contains(out, "1 allowed") {
		t.Fatalf("report: %d\n%s", code, out)
	}
	code, out, _ = cli(t, "key", "revoke", issued.ID)
	if code != 0 || !strings.Contains(out, "revoked at") {
		t.Fatalf("key revoke: %d\n%s", code, out)
	}
	code, out, _ = cli(t, "--json", "key", "list", "--status", "revoked")
	var listed []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &listed) != nil || len(listed) != 1 || listed[0]["key_id"] != issued.ID {
		t.Fatalf("key list --json --status revoked: %d %s", code, out)
	}

	// Failures: non-zero exit and a message naming what was wrong.
	code, _, errOut = cli(t, "key", "issue", "--daily-usd-cap", "0", "--endpoint", "POST /v1/payment_intents")
	if code == 0 || !strings.Contains(errOut, "daily_usd_cap") || !strings.Contains(errOut, "invalid_request") {
		t.Fatalf("bad cap: %d %s", code, errOut)
	}
	code, _, errOut = cli(t, "--json", "key", "show", "vk_nope")
	var e map[string]string
	if code == 0 || json.Unmarshal([]byte(errOut), &e) != nil || e["code"] != "not_found" {
		t.Fatalf("show unknown --json: %d %s", code, errOut)
	}
	t.Setenv("KEYBRAKE_ADMIN_TOKEN", "")
	if code, _, errOut = cli(t, "key", "list"); code == 0 || !strings.Contains(errOut, "KEYBRAKE_ADMIN_TOKEN") {
		t.Fatalf("no token: %d %s", code, errOut)
	}
}

func TestHelpEverywhere(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"serve", "--help"}, {"demo", "--help"}, {"key", "--help"}, {"key", "issue", "--help"},
		{"key", "list", "--help"}, {"key", "show", "--help"}, {"key", "revoke", "--help"}, {"calls", "--help"}, {"report", "--help"}, {"pricing", "--help"},
		{"report", "runs", "--help"}, {"report", "agents", "--help"}, {"report", "daily", "--help"}, {"report", "anomalies", "--help"},
		{"webhook", "--help"}, {"webhook", "create", "--help"}, {"webhook", "list", "--help"}, {"webhook", "delete", "--help"}, {"webhook", "deliveries", "--help"}} {
		code, out, errOut := cli(t, args...)
		if code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("%v: %d\n%s%s", args, code, out, errOut)
		}
	}
	if code, _, errOut := cli(t, "key", "frobnicate"); code == 0 && !strings.Contains(errOut, "unknown") {
		t.Errorf("unknown subcommand: %d %s", code, errOut)
	}
}

// The README's first command: the demo, run as a newcomer would.
func TestDemo(t *testing.T) {
	code, out, errOut := cli(t, "--json", "demo", "--charges", "120", "--cap", "25")
	if code != 0 {
		t.Fatalf("demo: %d\n%s\n%s", code, out, errOut)
	}
	var r struct {
		Succeeded      int    `json:"succeeded"`
		CapExhausted   int    `json:"cap_exhausted"`
		SandboxCharges int    `json:"sandbox_charges"`
		SpentUSD       string `json:"spent_usd"`
		AfterRevoke    int    `json:"after_revoke_status"`
		AfterRevokeErr string `json:"after_revoke_code"`
		Summary        struct {
			Denied int `json:"denied_calls"`
		} `json:"run_summary"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("demo --json output: %v\n%s", err, out)
	}
	if r.Succeeded != 25 || r.CapExhausted != 95 || r.SandboxCharges != 25 || r.SpentUSD != "25.00" ||
		r.AfterRevoke != 401 || r.AfterRevokeErr != "key_revoked" || r.Summary.Denied != 95 {
		t.Fatalf("demo result: %+v", r)
	}
	code, out, _ = cli(t, "demo", "--charges", "30", "--cap", "10")
	if code != 0 || !strings.Contains(out, "succeeded       10") || !strings.Contains(out, "LOCAL STRIPE SANDBOX") || !strings.Contains(out, "401 key_revoked") {
		t.Fatalf("demo text output: %d\n%s", code, out)
	}
}

func TestServeRejectsMalformedEnvironment(t *testing.T) {
	t.Setenv("KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken)
	t.Setenv("KEYBRAKE_UPSTREAM_TIMEOUT", "sixty")
	code, _, errOut := cli(t, "serve", "--addr", "127.0.0.1:0", "--db", t.TempDir()+"/k.db")
	if code == 0 || !strings.Contains(errOut, "KEYBRAKE_UPSTREAM_TIMEOUT") {
		t.Fatalf("serve with a malformed duration: %d %s", code, errOut)
	}
}

func TestTokenCommands(t *testing.T) {
	env := kbtest.Start(t)
	t.Setenv("KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken)
	t.Setenv("KEYBRAKE_URL", env.URL)
	code, out, errOut := cli(t, "--json", "token", "create", "--name", "sfn-billing", "--max-daily-usd-cap", "500",
		"--vendors", "stripe", "--endpoints", "POST /v1/payment_intents", "--max-expires-in", "6h")
	var tok struct {
		ID    string `json:"token_id"`
		Token string `json:"token"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &tok) != nil || !strings.HasPrefix(tok.Token, "kbit") {
		t.Fatalf("token create: %d %s %s", code, out, errOut)
	}
	// The token issues keys within its ceilings, through the same CLI.
	t.Setenv("KEYBRAKE_ADMIN_TOKEN", tok.Token)
	if code, out, errOut = cli(t, "key", "issue", "--daily-usd-cap", "600", "--endpoint", "POST /v1/payment_intents"); code == 0 || !strings.Contains(errOut, "issuer_limit_exceeded") {
		t.Fatalf("above the ceiling: %d %s %s", code, out, errOut)
	}
	if code, out, _ = cli(t, "key", "issue", "--daily-usd-cap", "400", "--endpoint", "POST /v1/payment_intents"); code != 0 {
		t.Fatalf("within the ceiling: %d %s", code, out)
	}
	t.Setenv("KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken)
	if code, out, _ = cli(t, "token", "list"); code != 0 || !strings.Contains(out, "sfn-billing") || strings.Contains(out, tok.Token) {
		t.Fatalf("token list: %d %s", code, out)
	}
	if code, out, _ = cli(t, "token", "revoke", tok.ID); code != 0 || !strings.Contains(out, "revoked at") {
		t.Fatalf("token revoke: %d %s", code, out)
	}
}
