package sdktest

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/resend/resend-go/v3"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
)

// resendClient is resend-go configured as an agent would: BaseURL set to
// Keybrake, the vault key as the API key.
func resendClient(t *testing.T, base, vaultKey string) *resend.Client {
	c := resend.NewClient(vaultKey)
	u, err := url.Parse(strings.TrimRight(base, "/") + "/")
	if err != nil {
		t.Fatal(err)
	}
	c.BaseURL = u
	return c
}

func TestResendGo(t *testing.T) {
	for _, form := range []struct{ name, prefix string }{{"root", ""}, {"prefixed", "/resend"}} {
		t.Run(form.name, func(t *testing.T) {
			env, fakes := kbtest.StartWithFakes(t, nil)
			// Two recipients at $0.0009 = $0.0018; the cap allows one such send.
			key := issue(t, env, "resend", "0.002", "POST /emails")
			rc := resendClient(t, env.URL+form.prefix, key)
			ctx := context.Background()

			sent, err := rc.Emails.SendWithOptions(ctx, &resend.SendEmailRequest{
				From: "agent@example.com", To: []string{"a@example.com"}, Cc: []string{"b@example.com"},
				Subject: "Order shipped", Text: "Your order is on its way.",
			}, &resend.SendEmailOptions{IdempotencyKey: "order-42-shipped"})
			if err != nil {
				t.Fatalf("send within the cap: %v", err)
			}
			if !strings.HasPrefix(sent.Id, "em_sandbox_") {
				t.Fatalf("typed result: %+v", sent)
			}
			got := fakes.Resend.Received()
			// The SDK's Idempotency-Key reaches Resend namespaced to the vault key.
			if len(got) != 1 || !strings.HasSuffix(got[0].Header.Get("Idempotency-Key"), ":order-42-shipped") ||
				!strings.HasPrefix(got[0].Header.Get("Idempotency-Key"), "vk_") || got[0].Header.Get("Authorization") != "Bearer "+kbtest.ResendAPIKey {
				t.Fatalf("upstream saw %+v", got)
			}
			before := fakes.Resend.Requests()

			_, err = rc.Emails.Send(&resend.SendEmailRequest{
				From: "agent@example.com", To: []string{"c@example.com"}, Subject: "Again", Text: "x",
			})
			var rl *resend.RateLimitError
			if !errors.As(err, &rl) {
				t.Fatalf("past the cap: %T %v, want *resend.RateLimitError (HTTP 429)", err, err)
			}
			mustContain(t, err, "cap_exhausted", "HTTP 429")

			_, err = rc.Batch.Send([]*resend.SendEmailRequest{{From: "agent@example.com", To: []string{"d@example.com"}, Subject: "s", Text: "t"}})
			mustContain(t, err, "endpoint_not_allowed", "HTTP 403")

			if n := fakes.Resend.Requests(); n != before {
				t.Fatalf("Resend received %d requests for denied calls", n-before)
			}
			noLeak(t, env)
		})
	}
}

// A permissive batch is charged only for the emails Resend accepted.
func TestResendGoBatchSettlesAccepted(t *testing.T) {
	env, fakes := kbtest.StartWithFakes(t, nil)
	k := env.Issue(t, client.IssueParams{Vendor: "resend", DailyUSDCap: "1", AllowedEndpoints: []string{"POST /emails/batch"}})
	rc := resendClient(t, env.URL, k.VaultKey)
	resp, err := rc.Batch.SendWithOptions(context.Background(), []*resend.SendEmailRequest{
		{From: "agent@example.com", To: []string{"a@example.com", "b@example.com"}, Subject: "one", Text: "t"},
		{From: "agent@example.com", To: []string{"c@example.com"}, Text: "no subject: rejected"},
		{From: "agent@example.com", To: []string{"d@example.com"}, Bcc: []string{"e@example.com"}, Subject: "three", Text: "t"},
	}, &resend.BatchSendEmailOptions{BatchValidation: resend.BatchValidationPermissive})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Data) != 2 || len(resp.Errors) != 1 || resp.Errors[0].Index != 1 {
		t.Fatalf("%+v", resp)
	}
	if fakes.Resend.Recipients() != 4 {
		t.Fatalf("sandbox sent to %d recipients", fakes.Resend.Recipients())
	}
	k, err = env.Admin.GetKey(context.Background(), k.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Reserved 5 × $0.0009, settled 4 × $0.0009.
	if k.SpentUSD == nil || k.SpentUSD.String() != "0.0036" {
		t.Fatalf("spent %v, want 0.0036", k.SpentUSD)
	}
}
