package e2e

import (
	"net/http"
	"testing"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/internal/sandbox"
	"github.com/keybrake/keybrake/server"
)

// A key of one vendor cannot reach another vendor's route.
func TestVendorMismatch(t *testing.T) {
	env, fakes := kbtest.StartWithFakes(t, nil)
	k := env.Issue(t, client.IssueParams{})
	for _, target := range []string{"/resend/emails", "/twilio/2010-04-01/Accounts/AC1/Messages.json"} {
		before := env.Stripe.Requests()
		r := env.Do(t, k.VaultKey, "POST", target, "application/json", `{"to":"a@example.com"}`)
		expectDenied(t, env.Stripe, before, r, 403, "vendor_mismatch")
	}
	if fakes.Twilio.Requests()+fakes.Resend.Requests() != 0 {
		t.Fatal("a mismatched call reached another vendor")
	}
	// And the Twilio key on the Stripe route.
	tk := env.Issue(t, client.IssueParams{Vendor: "twilio", AllowedEndpoints: []string{"POST /2010-04-01/Accounts/*/Messages.json"}})
	r := env.Do(t, tk.VaultKey, "POST", "/stripe/v1/payment_intents", formCT, "amount=100&currency=usd")
	if r.Status != 403 || env.Stripe.Requests() != 0 {
		t.Fatalf("twilio key on the stripe route: %d %s", r.Status, r.Body)
	}
}

// Twilio has no idempotency of its own: Keybrake provides it. A retried SMS
// is never sent twice — replayed after a success, refused (outcome_unknown)
// after an unknown outcome rather than resent blindly.
func TestTwilioRetriesNeverSendTwice(t *testing.T) {
	fakes := kbtest.StartFakes(t)
	fakes.Twilio.Fault = func(r *http.Request, n int) sandbox.Fault {
		if r.Header.Get("X-Test-Fault") == "500-after" {
			return sandbox.FailAfterApply
		}
		return sandbox.NoFault
	}
	env := kbtest.Start(t, kbtest.Options{Configure: func(c *server.Config) { fakes.Configure(c) }})
	k := env.Issue(t, client.IssueParams{Vendor: "twilio", DailyUSDCap: "5", AllowedEndpoints: []string{"POST /2010-04-01/Accounts/*/Messages.json"}})
	path := "/twilio/2010-04-01/Accounts/ACanything/Messages.json"
	sms := "To=%2B14155550100&From=%2B14155550199&Body=Your+order+shipped"

	r := env.Do(t, k.VaultKey, "POST", path, formCT, sms, "Idempotency-Key", "sms-1")
	if r.Status != 201 && r.Status != 200 {
		t.Fatalf("send: %d %s", r.Status, r.Body)
	}
	again := env.Do(t, k.VaultKey, "POST", path, formCT, sms, "Idempotency-Key", "sms-1")
	if again.Header.Get("Keybrake-Idempotent-Replayed") != "true" || string(again.Body) != string(r.Body) {
		t.Fatalf("retry after success: %d %v", again.Status, again.Header)
	}
	if n := len(fakes.Twilio.Messages()); n != 1 {
		t.Fatalf("%d messages sent, want 1", n)
	}

	r = env.Do(t, k.VaultKey, "POST", path, formCT, sms, "Idempotency-Key", "sms-2", "X-Test-Fault", "500-after")
	if r.Status != 500 {
		t.Fatalf("injected 500: %d %s", r.Status, r.Body)
	}
	before := fakes.Twilio.Requests()
	for i := 0; i < 3; i++ {
		r = env.Do(t, k.VaultKey, "POST", path, formCT, sms, "Idempotency-Key", "sms-2")
		if r.Status != 409 {
			t.Fatalf("retry after an unknown outcome: %d %s", r.Status, r.Body)
		}
	}
	if fakes.Twilio.Requests() != before {
		t.Fatal("a retry after an unknown outcome was resent to Twilio")
	}
	if n := len(fakes.Twilio.Messages()); n != 2 {
		t.Fatalf("%d messages sent, want 2 (each once)", n)
	}
	rows := calls(t, env, client.ListCallsParams{KeyID: k.ID, Outcome: "denied_outcome_unknown"})
	if len(rows) != 3 {
		t.Fatalf("%d outcome_unknown refusals audited, want 3", len(rows))
	}
	unknown := calls(t, env, client.ListCallsParams{KeyID: k.ID, Outcome: "unknown"})
	if len(unknown) != 1 || unknown[0].Actual == 0 {
		t.Fatalf("the unknown send stays counted: %+v", unknown)
	}
}
