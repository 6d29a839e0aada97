package sdktest

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	twapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A malformed pricing file stops `keybrake serve` (and `keybrake pricing`)
// with an error naming the file, line and field.
func TestMalformedPricingFileStopsServe(t *testing.T) {
	bin := kbtest.Binary(t)
	bad := writeFile(t, "pricing.yaml", "operations:\n  twilio.messages.create:\n    sms:\n      countries:\n        GB: 0.05\n        DE: 0,08\n")
	for _, args := range [][]string{
		{"serve", "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "kb.db"), "--pricing", bad},
		{"pricing", "--pricing", bad},
	} {
		cmd := exec.Command(bin, args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "KEYBRAKE_ADMIN_TOKEN=" + kbtest.AdminToken}
		done := make(chan struct{})
		var out []byte
		var err error
		go func() { out, err = cmd.CombinedOutput(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			cmd.Process.Kill() //nolint:errcheck
			<-done
			t.Fatalf("%s did not stop on a malformed pricing file", args[0])
		}
		if err == nil {
			t.Fatalf("%s exited 0 with a malformed pricing file:\n%s", args[0], out)
		}
		want := bad + ":6:13: operations.twilio.messages.create.sms.countries.DE: "
		if !strings.Contains(string(out), want) {
			t.Fatalf("%s: output %q does not name %q", args[0], out, want)
		}
	}
}

// `keybrake serve --pricing FILE` with Twilio credentials from the
// environment: the file's prices are what a message is charged, and
// `keybrake pricing --json` prints them.
func TestServeWithPricingFile(t *testing.T) {
	fakes := kbtest.StartFakes(t)
	file := writeFile(t, "pricing.json", `{"operations": {"twilio.messages.create": {"sms": {"countries": {"GB": "0.05"}}}, "resend.emails.send": {"per_recipient": 0.001}}}`)

	cmd := exec.Command(kbtest.Binary(t), "pricing", "--json", "--pricing", file)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("keybrake pricing: %v", err)
	}
	var view struct {
		Source     string `json:"source"`
		Operations []struct {
			Operation string `json:"operation"`
			Model     string `json:"price_model"`
			Settings  struct {
				SMS struct {
					Countries map[string]string `json:"countries"`
				} `json:"sms"`
				PerRecipient string `json:"per_recipient"`
			} `json:"settings"`
		} `json:"operations"`
	}
	if err := json.Unmarshal(out, &view); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	found := 0
	for _, op := range view.Operations {
		switch op.Operation {
		case "twilio.messages.create":
			if sms := op.Settings.SMS.Countries; sms["GB"] != "0.05" || sms["US"] != "0.015" || op.Model != "body" {
				t.Fatalf("messages.create: %+v", op)
			}
			found++
		case "resend.emails.send":
			if op.Settings.PerRecipient != "0.001" {
				t.Fatalf("emails.send: %+v", op)
			}
			found++
		case "twilio.keys.create":
			if op.Model != "forbidden" {
				t.Fatalf("keys.create: %+v", op)
			}
			found++
		}
	}
	if view.Source != file || found != 3 {
		t.Fatalf("effective catalogue: %s", out)
	}

	proc := kbtest.Serve(t, kbtest.EnvVars(
		"KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken,
		"KEYBRAKE_DB", filepath.Join(t.TempDir(), "kb.db"),
		"KEYBRAKE_TWILIO_ACCOUNT_SID", kbtest.TwilioAccountSID,
		"KEYBRAKE_TWILIO_AUTH_TOKEN", kbtest.TwilioAuthToken,
		"KEYBRAKE_TWILIO_BASE_URL", fakes.TwilioServer.URL,
	), "--pricing", file)
	admin := client.New(proc.AdminURL(), kbtest.AdminToken)
	k, err := admin.IssueKey(context.Background(), client.IssueParams{
		Vendor: "twilio", DailyUSDCap: "1", ExpiresIn: "1h",
		AllowedEndpoints: []string{"POST /2010-04-01/Accounts/*/Messages.json"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tc := twilioClient(t, proc.URL(), k.VaultKey)
	// 71 Cyrillic characters: UCS-2, two segments, $0.05 each.
	if _, err := tc.Api.CreateMessage(&twapi.CreateMessageParams{
		To: strPtr("+447700900123"), From: strPtr("+15557654321"), Body: strPtr(strings.Repeat("ж", 71)),
	}); err != nil {
		t.Fatal(err)
	}
	got, err := admin.GetKey(context.Background(), k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.SpentUSD == nil || got.SpentUSD.String() != "0.10" {
		t.Fatalf("spent %v, want 0.10", got.SpentUSD)
	}
	if strings.Contains(proc.Logs(), kbtest.TwilioAuthToken) {
		t.Fatal("the Twilio auth token leaked into the logs")
	}
	if !strings.Contains(proc.Logs(), "twilio") || !strings.Contains(proc.Logs(), "resend(unconfigured)") {
		t.Errorf("start-up line does not describe the vendors:\n%s", proc.Logs())
	}
}
