package twilio_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/internal/sandbox"
)

// These run the whole server with the Twilio sandbox behind it and talk raw
// HTTP, for what the SDK tests in sdktest do not reach.

const messages = "/2010-04-01/Accounts/ACanything/Messages.json"

func sms(to, body string) string {
	return url.Values{"To": {to}, "From": {"+15557654321"}, "Body": {body}}.Encode()
}

func spent(t *testing.T, env *kbtest.Env, keyID string) string {
	t.Helper()
	k, err := env.Admin.GetKey(context.Background(), keyID)
	if err != nil {
		t.Fatal(err)
	}
	return k.SpentUSD.String()
}

func TestBearerAndPrefixForms(t *testing.T) {
	env, fakes := kbtest.StartWithFakes(t, nil)
	k := env.Issue(t, client.IssueParams{Vendor: "twilio", DailyUSDCap: "1", AllowedEndpoints: []string{"POST /2010-04-01/Accounts/*/Messages.json"}})
	for _, target := range []string{messages, "/twilio" + messages} {
		r := env.Do(t, k.VaultKey, "POST", target, "application/x-www-form-urlencoded", sms("+15551234567", "hi"))
		if r.Status != http.StatusCreated {
			t.Fatalf("%s: %d %s", target, r.Status, r.Body)
		}
	}
	for _, got := range fakes.Twilio.Received() {
		if got.Path != "/2010-04-01/Accounts/"+kbtest.TwilioAccountSID+"/Messages.json" {
			t.Errorf("upstream path %s", got.Path)
		}
	}
	if s := spent(t, env, k.ID); s != "0.03" {
		t.Errorf("spent %s, want 0.03 (two US segments at the estimate: price was null)", s)
	}
	// A Stripe path with a Twilio key is not a Twilio endpoint.
	r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", "application/x-www-form-urlencoded", "amount=1&currency=usd")
	if r.Status != http.StatusForbidden {
		t.Errorf("stripe path with a twilio key: %d", r.Status)
	}
}

func TestSettlesFromTwilioPrice(t *testing.T) {
	env, fakes := kbtest.StartWithFakes(t, nil)
	fakes.Twilio.CreationPrice = "-0.00790"
	k := env.Issue(t, client.IssueParams{Vendor: "twilio", DailyUSDCap: "1", AllowedEndpoints: []string{"POST /2010-04-01/Accounts/*/Messages.json"}})
	r := env.Do(t, k.VaultKey, "POST", messages, "application/x-www-form-urlencoded", sms("+15551234567", "hi"))
	if r.Status != http.StatusCreated {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if s := spent(t, env, k.ID); s != "0.0079" {
		t.Errorf("spent %s, want Twilio's 0.0079", s)
	}
}

// Twilio does not deduplicate: after an unknown outcome a retry with the
// same Idempotency-Key is refused, not forwarded a second time.
func TestUnknownOutcomeIsNotRetried(t *testing.T) {
	env, fakes := kbtest.StartWithFakes(t, nil)
	fakes.Twilio.Fault = func(r *http.Request, n int) sandbox.Fault {
		if n == 1 {
			return sandbox.FailAfterApply
		}
		return sandbox.NoFault
	}
	k := env.Issue(t, client.IssueParams{Vendor: "twilio", DailyUSDCap: "1", AllowedEndpoints: []string{"POST /2010-04-01/Accounts/*/Messages.json"}})
	first := env.Do(t, k.VaultKey, "POST", messages, "application/x-www-form-urlencoded", sms("+15551234567", "hi"), "Idempotency-Key", "order-1")
	if first.Status != http.StatusInternalServerError {
		t.Fatalf("first: %d %s", first.Status, first.Body)
	}
	retry := env.Do(t, k.VaultKey, "POST", messages, "application/x-www-form-urlencoded", sms("+15551234567", "hi"), "Idempotency-Key", "order-1")
	var body struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  int    `json:"status"`
	}
	if err := json.Unmarshal(retry.Body, &body); err != nil {
		t.Fatalf("%s: %v", retry.Body, err)
	}
	if retry.Status != http.StatusConflict || body.Status != 409 || body.Code != 20409 || !strings.HasPrefix(body.Message, "outcome_unknown: ") {
		t.Fatalf("retry: %d %s", retry.Status, retry.Body)
	}
	if n := fakes.Twilio.Requests(); n != 1 {
		t.Fatalf("Twilio received %d requests, want 1", n)
	}
	if s := spent(t, env, k.ID); s != "0.015" {
		t.Errorf("spent %s: the unknown outcome must stay counted", s)
	}
}

func TestDenialsReachNothing(t *testing.T) {
	env, fakes := kbtest.StartWithFakes(t, nil)
	k := env.Issue(t, client.IssueParams{Vendor: "twilio", DailyUSDCap: "0.01", AllowedEndpoints: []string{"POST /2010-04-01/Accounts/*/Messages.json", "POST /2010-04-01/Accounts/*/Calls.json"}})
	cases := []struct {
		path, body string
		status     int
		code       string
	}{
		{messages, sms("+15551234567", "hi"), 429, "cap_exhausted"},                                                                          // $0.015 > $0.01
		{"/2010-04-01/Accounts/AC1/Calls.json", url.Values{"To": {"+15551234567"}, "Twiml": {"<Response/>"}}.Encode(), 429, "cap_exhausted"}, // a minute is $0.015
		{messages, sms("whatsapp:+15551234567", "hi"), 400, "unpriceable_request"},                                                           // channel
		{messages, "To=%2B15551234567&Body=" + url.QueryEscape("x") + "&To=%2B1", 400, "unpriceable_request"},                                // two To
		{"/2010-04-01/Accounts/AC1/Messages/SM1.json", "", 403, "endpoint_not_allowed"},
	}
	for _, c := range cases {
		method := "POST"
		if c.body == "" {
			method = "GET"
		}
		r := env.Do(t, k.VaultKey, method, c.path, "application/x-www-form-urlencoded", c.body)
		var body struct {
			Message string `json:"message"`
			Status  int    `json:"status"`
		}
		json.Unmarshal(r.Body, &body) //nolint:errcheck
		if r.Status != c.status || body.Status != c.status || !strings.HasPrefix(body.Message, c.code+": ") {
			t.Errorf("%s %s: %d %s", method, c.path, r.Status, r.Body)
		}
	}
	if n := fakes.Twilio.Requests(); n != 0 {
		t.Fatalf("Twilio received %d requests for denied calls", n)
	}
}
