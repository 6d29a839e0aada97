package sdktest

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twilio/twilio-go"
	twclient "github.com/twilio/twilio-go/client"
	twapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/keybrake/keybrake/internal/kbtest"
)

// agentSID is the account SID the agent's twilio-go believes in. Keybrake
// replaces it with the real one, so an agent never holds it.
const agentSID = "ACagent0000000000000000000000000"

// twilioClient is twilio-go configured as an agent would: a transport that
// sends its requests to Keybrake (its host is hard-coded), the vault key as
// the password.
func twilioClient(t *testing.T, base, vaultKey string) *twilio.RestClient {
	c := &twclient.Client{
		Credentials: twclient.NewCredentials(agentSID, vaultKey),
		HTTPClient:  &http.Client{Transport: newRedirect(t, base), Timeout: 30 * time.Second},
	}
	c.SetAccountSid(agentSID)
	return twilio.NewRestClientWithParams(twilio.ClientParams{Client: c})
}

func twilioErr(t *testing.T, err error, status int, code string) {
	t.Helper()
	var te *twclient.TwilioRestError
	if !errors.As(err, &te) {
		t.Fatalf("error %T %v is not a *TwilioRestError", err, err)
	}
	if te.Status != status || !strings.HasPrefix(te.Message, code+": ") || te.Code != 20000+status {
		t.Fatalf("twilio error %+v; want status %d and message %s: …", te, status, code)
	}
}

func TestTwilioGo(t *testing.T) {
	for _, form := range []struct{ name, prefix string }{{"root", ""}, {"prefixed", "/twilio"}} {
		t.Run(form.name, func(t *testing.T) {
			env, fakes := kbtest.StartWithFakes(t, nil)
			// US SMS is priced at $0.015 a segment: $0.02 allows one.
			key := issue(t, env, "twilio", "0.02", "POST /2010-04-01/Accounts/*/Messages.json")
			tc := twilioClient(t, env.URL+form.prefix, key)

			msg, err := tc.Api.CreateMessage(&twapi.CreateMessageParams{
				To: strPtr("+15551234567"), From: strPtr("+15557654321"), Body: strPtr("Your code is 123456"),
			})
			if err != nil {
				t.Fatalf("message within the cap: %v", err)
			}
			if msg.Sid == nil || !strings.HasPrefix(*msg.Sid, "SM") || msg.Status == nil || *msg.Status != "queued" {
				t.Fatalf("typed result: %+v", msg)
			}
			got := fakes.Twilio.Received()
			if len(got) != 1 || !strings.Contains(got[0].Path, kbtest.TwilioAccountSID) || strings.Contains(got[0].Path, agentSID) {
				t.Fatalf("upstream path: %+v", got)
			}
			if u, p, _ := basicAuth(got[0].Header); u != kbtest.TwilioAccountSID || p != kbtest.TwilioAuthToken {
				t.Fatal("upstream did not get the real account's credentials")
			}
			before := fakes.Twilio.Requests()

			_, err = tc.Api.CreateMessage(&twapi.CreateMessageParams{
				To: strPtr("+15551234567"), From: strPtr("+15557654321"), Body: strPtr("Second message"),
			})
			twilioErr(t, err, http.StatusTooManyRequests, "cap_exhausted")

			_, err = tc.Api.CreateCall(&twapi.CreateCallParams{
				To: strPtr("+15551234567"), From: strPtr("+15557654321"), Url: strPtr("https://example.com/twiml"),
			})
			twilioErr(t, err, http.StatusForbidden, "endpoint_not_allowed")

			if n := fakes.Twilio.Requests(); n != before {
				t.Fatalf("Twilio received %d requests for denied calls", n-before)
			}
			noLeak(t, env)
		})
	}
}

// An unpriced destination is refused before Twilio, in Twilio's shape.
func TestTwilioGoUnpricedDestination(t *testing.T) {
	env, fakes := kbtest.StartWithFakes(t, nil)
	key := issue(t, env, "twilio", "5", "POST /2010-04-01/Accounts/*/Messages.json")
	tc := twilioClient(t, env.URL, key)
	_, err := tc.Api.CreateMessage(&twapi.CreateMessageParams{To: strPtr("+4915112345678"), From: strPtr("+15557654321"), Body: strPtr("hallo")})
	twilioErr(t, err, http.StatusBadRequest, "unpriceable_request")
	mustContain(t, err, "operations.twilio.messages.create.sms.countries.DE")
	if fakes.Twilio.Requests() != 0 {
		t.Fatal("Twilio received an unpriced message")
	}
}

func basicAuth(h http.Header) (string, string, bool) {
	r := &http.Request{Header: h}
	return r.BasicAuth()
}

func strPtr(s string) *string { return &s }
