package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
)

// chargeRun issues a key through the CLI and charges it once per amount.
func chargeRun(t *testing.T, env *kbtest.Env, label, agent string, cents ...int) string {
	t.Helper()
	code, out, errOut := cli(t, "--json", "key", "issue", "--daily-usd-cap", "100", "--endpoint", "POST /v1/payment_intents",
		"--label", label, "--agent-name", agent)
	var k struct {
		ID       string `json:"key_id"`
		VaultKey string `json:"vault_key"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &k) != nil {
		t.Fatalf("key issue: %d %s %s", code, out, errOut)
	}
	for _, c := range cents {
		if r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", "application/x-www-form-urlencoded", fmt.Sprintf("amount=%d&currency=usd", c)); r.Status != 200 {
			t.Fatalf("charge: %d %s", r.Status, r.Body)
		}
	}
	return k.ID
}

func TestReportCommands(t *testing.T) {
	env := kbtest.Start(t)
	t.Setenv("KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken)
	t.Setenv("KEYBRAKE_URL", env.URL)
	chargeRun(t, env, "acme:billing:1", "billing", 150, 150)
	chargeRun(t, env, "acme:billing:2", "billing", 100)
	chargeRun(t, env, "acme:billing:3", "billing", 120)
	chargeRun(t, env, "acme:billing:4", "billing", 2500)

	code, out, errOut := cli(t, "report", "runs")
	if code != 0 || !strings.Contains(out, "RUN") || !strings.Contains(out, "acme:billing:4") || !strings.Contains(out, "$25.00") || strings.Count(out, "\n") != 5 {
		t.Fatalf("report runs: %d\n%s%s", code, out, errOut)
	}
	code, out, _ = cli(t, "--json", "report", "runs", "--limit", "1", "--all")
	var runs []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &runs) != nil || len(runs) != 4 || runs[3]["spent_usd"] != "3.00" {
		t.Fatalf("report runs --json --all: %d %s", code, out)
	}
	code, out, _ = cli(t, "report", "runs", "--csv", "--label-prefix", "acme:billing:1")
	if recs, err := csv.NewReader(strings.NewReader(out)).ReadAll(); code != 0 || err != nil || len(recs) != 2 || recs[1][7] != "3.00" {
		t.Fatalf("report runs --csv: %d %v\n%s", code, err, out)
	}
	code, out, _ = cli(t, "report", "agents")
	if code != 0 || !strings.Contains(out, "AGENT") || !strings.Contains(out, "billing") || !strings.Contains(out, "$30.20") {
		t.Fatalf("report agents: %d\n%s", code, out)
	}
	code, out, _ = cli(t, "report", "agents", "--group-by", "label_prefix", "--depth", "1")
	if code != 0 || !strings.Contains(out, "LABEL PREFIX") || !strings.Contains(out, "acme ") {
		t.Fatalf("report agents by prefix: %d\n%s", code, out)
	}
	code, out, _ = cli(t, "report", "daily")
	if code != 0 || !strings.Contains(out, "stripe") || !strings.Contains(out, "$30.20") || !strings.Contains(out, "projected") {
		t.Fatalf("report daily: %d\n%s", code, out)
	}
	code, out, _ = cli(t, "report", "anomalies")
	if code != 0 || !strings.Contains(out, "acme:billing:4") || !strings.Contains(out, "$1.20") || !strings.Contains(out, "20.83×") {
		t.Fatalf("report anomalies: %d\n%s", code, out)
	}
	code, out, _ = cli(t, "--json", "report", "anomalies", "--factor", "21")
	var an struct{ Data []any }
	if code != 0 || json.Unmarshal([]byte(out), &an) != nil || len(an.Data) != 0 {
		t.Fatalf("report anomalies --factor 20: %d %s", code, out)
	}
	// The one-run summary is still `report LABEL`.
	if code, out, _ = cli(t, "report", "acme:billing:1"); code != 0 || !strings.Contains(out, "2 allowed") || !strings.Contains(out, "$3.00") {
		t.Fatalf("report LABEL: %d\n%s", code, out)
	}
	if code, _, errOut = cli(t, "report", "runs", "--since", "last week"); code == 0 || !strings.Contains(errOut, "since") {
		t.Fatalf("bad --since: %d %s", code, errOut)
	}
}

func TestWebhookCommands(t *testing.T) {
	env := kbtest.Start(t)
	t.Setenv("KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken)
	t.Setenv("KEYBRAKE_URL", env.URL)
	code, out, errOut := cli(t, "--json", "webhook", "create", "--url", "http://127.0.0.1:9/hook", "--event", "key.revoked", "--description", "ops")
	var h client.Webhook
	if code != 0 || json.Unmarshal([]byte(out), &h) != nil || !strings.HasPrefix(h.Secret, "whsec_") {
		t.Fatalf("webhook create: %d %s %s", code, out, errOut)
	}
	code, out, _ = cli(t, "webhook", "list")
	if code != 0 || !strings.Contains(out, h.ID) || !strings.Contains(out, "key.revoked") || strings.Contains(out, h.Secret) {
		t.Fatalf("webhook list: %d\n%s", code, out)
	}
	k := chargeRun(t, env, "run-hook", "a")
	if code, _, _ = cli(t, "key", "revoke", k); code != 0 {
		t.Fatal("revoke")
	}
	code, out, _ = cli(t, "webhook", "deliveries", h.ID)
	if code != 0 || !strings.Contains(out, "key.revoked") || !strings.Contains(out, "EVENT_ID") {
		t.Fatalf("webhook deliveries: %d\n%s", code, out)
	}
	if code, out, _ = cli(t, "webhook", "delete", h.ID); code != 0 || !strings.Contains(out, "deleted") {
		t.Fatalf("webhook delete: %d %s", code, out)
	}
	if code, _, errOut = cli(t, "webhook", "deliveries", h.ID); code == 0 || !strings.Contains(errOut, "not_found") {
		t.Fatalf("deliveries of a deleted webhook: %d %s", code, errOut)
	}
	if code, _, errOut = cli(t, "webhook", "create", "--url", "file:///etc/passwd"); code == 0 || !strings.Contains(errOut, "url") {
		t.Fatalf("bad url: %d %s", code, errOut)
	}
}

func TestCallsExportCommand(t *testing.T) {
	env := kbtest.Start(t)
	t.Setenv("KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken)
	t.Setenv("KEYBRAKE_URL", env.URL)
	chargeRun(t, env, "run-a", "a", 100, 200)
	chargeRun(t, env, "run-b", "b", 300)
	code, out, errOut := cli(t, "calls", "--csv")
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if code != 0 || err != nil || len(recs) != 4 || recs[0][0] != "id" || !strings.Contains(errOut, "exported 3 rows") {
		t.Fatalf("calls --csv: %d %v\n%s\n%s", code, err, out, errOut)
	}
	code, out, errOut = cli(t, "calls", "--ndjson", "--label", "run-a")
	if code != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(out, `"agent_run_label":"run-a"`) || !strings.Contains(errOut, "exported 2 rows") {
		t.Fatalf("calls --ndjson: %d\n%s\n%s", code, out, errOut)
	}
	if code, _, errOut = cli(t, "calls", "--csv", "--ndjson"); code == 0 {
		t.Fatalf("--csv with --ndjson: %d %s", code, errOut)
	}
}

func TestAlertThresholdsFlag(t *testing.T) {
	env := kbtest.Start(t)
	t.Setenv("KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken)
	t.Setenv("KEYBRAKE_URL", env.URL)
	for flag, want := range map[string]string{"": "[50,80,100]", "90,25": "[25,90]", "none": "[]"} {
		args := []string{"--json", "key", "issue", "--daily-usd-cap", "5", "--endpoint", "POST /v1/payment_intents"}
		if flag != "" {
			args = append(args, "--alert-thresholds", flag)
		}
		code, out, errOut := cli(t, args...)
		var k struct {
			Thresholds []int `json:"alert_thresholds"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &k) != nil {
			t.Fatalf("--alert-thresholds %q: %d %s %s", flag, code, out, errOut)
		}
		if got, _ := json.Marshal(k.Thresholds); string(got) != want {
			t.Errorf("--alert-thresholds %q: %s, want %s", flag, got, want)
		}
	}
	if code, _, errOut := cli(t, "key", "issue", "--daily-usd-cap", "5", "--endpoint", "POST /v1/payment_intents", "--alert-thresholds", "150"); code == 0 || !strings.Contains(errOut, "alert_thresholds") {
		t.Errorf("threshold 150: %d %s", code, errOut)
	}
}
