package e2e

import (
	"net/url"
	"strings"
	"testing"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/internal/sandbox"
	"github.com/keybrake/keybrake/server"
)

func twilioJudge(t testing.TB, env *kbtest.Env, f *kbtest.Fakes, k *client.Key) *judge {
	return &judge{t: t, env: env, key: k, cap: k.DailyUSDCap, received: f.Twilio.Received, moved: f.Twilio.Moved}
}

func twForm(kv ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v.Encode()
}

const twAcct = "/2010-04-01/Accounts/ACagent"

// The issue's third finding: Messages priced only as Messages.json. The
// extension-less and .xml forms are the same operation, priced the same.
func TestTwilioMessageFormsArePriced(t *testing.T) {
	env, f := kbtest.StartWithFakes(t, nil)
	k := env.Issue(t, client.IssueParams{Vendor: "twilio", DailyUSDCap: "1.5", AllowedEndpoints: []string{
		"POST /2010-04-01/Accounts/*/Messages", "POST /2010-04-01/Accounts/*/Messages.json", "POST /2010-04-01/Accounts/*/Messages.xml"}})
	j := twilioJudge(t, env, f, k)
	ucs2 := strings.Repeat("ж", 67*24) // 24 UCS-2 segments
	for _, path := range []string{twAcct + "/Messages", twAcct + "/Messages.json", twAcct + "/Messages.xml", "/twilio" + twAcct + "/Messages"} {
		j.send("POST", path, formCT, twForm("To", "+15551234567", "From", "+15550000000", "Body", ucs2)).ok(t)
		// A destination the pricing does not know is refused in every form.
		j.send("POST", path, formCT, twForm("To", "+4915112345678", "From", "+15550000000", "Body", "hi")).refused(t, "unpriceable_request")
	}
	rows := calls(t, env, client.ListCallsParams{KeyID: k.ID, Outcome: "forwarded"})
	for _, r := range rows {
		if r.Operation != "messages.create" || r.Actual.String() != "0.36" {
			t.Fatalf("row %+v: want messages.create at 24 × $0.015", *r.Call)
		}
	}
	j.send("POST", twAcct+"/Messages.json", formCT, twForm("To", "+15551234567", "Body", ucs2)).refused(t, "cap_exhausted")
}

// An operation rule grants every form of the path.
func TestTwilioOperationRule(t *testing.T) {
	env, f := kbtest.StartWithFakes(t, nil)
	k := env.Issue(t, client.IssueParams{Vendor: "twilio", DailyUSDCap: "1", AllowedEndpoints: []string{"messages.create"}})
	j := twilioJudge(t, env, f, k)
	for _, path := range []string{twAcct + "/Messages", twAcct + "/Messages.xml"} {
		j.send("POST", path, formCT, twForm("To", "+15551234567", "Body", "hi")).ok(t)
	}
	j.send("GET", twAcct+"/Messages.json", "", "").refused(t, "endpoint_not_allowed")
	if len(k.AllowedOperations) != 1 || k.AllowedOperations[0].Operations[0].Path != "/2010-04-01/Accounts/*/Messages" {
		t.Fatalf("allowed operations %+v", k.AllowedOperations)
	}
}

// The issue's fourth finding: every call was reserved at a flat $3.50. A
// call is now bounded: Keybrake sets its TimeLimit from what the key can
// still pay, and its legs are priced from the TwiML.
func TestTwilioCallsAreBounded(t *testing.T) {
	env, f := kbtest.StartWithFakes(t, nil)
	k := env.Issue(t, client.IssueParams{Vendor: "twilio", DailyUSDCap: "0.10", AllowedEndpoints: []string{"calls.create"}})
	j := twilioJudge(t, env, f, k)
	calls := twAcct + "/Calls.json"

	// No TimeLimit: 6 whole minutes fit the $0.10 budget at $0.015.
	j.send("POST", calls, formCT, twForm("To", "+15551234567", "From", "+15550000000", "Twiml", "<Response><Say>Your order shipped</Say></Response>")).ok(t)
	sent := lastForm(t, f.Twilio.Received())
	if sent.Get("TimeLimit") != "360" || sent.Get("Twiml") != "<Response><Say>Your order shipped</Say></Response>" {
		t.Fatalf("forwarded %v: want TimeLimit=360 and the TwiML unchanged", sent)
	}
	// The next call gets what is left: $0.01 is not a minute.
	j.send("POST", calls, formCT, twForm("To", "+15551234567", "Twiml", "<Response/>")).refused(t, "cap_exhausted")
	// What cannot be bounded is refused, whatever the budget.
	for _, body := range []string{
		twForm("To", "+15551234567", "Url", "https://example.com/twiml"),
		twForm("To", "+15551234567", "ApplicationSid", "AP1"),
		twForm("To", "+15551234567", "Twiml", "<Response><Dial><Number>+15550000001</Number><Number>+15550000002</Number></Dial></Response>"),
		twForm("To", "+15551234567", "Twiml", "<Response><Dial><Conference>room</Conference></Dial></Response>"),
		twForm("To", "+15551234567", "Twiml", "<Response><Enqueue>q</Enqueue></Response>"),
		twForm("To", "+15551234567", "Twiml", "<Response><Say>x</Say>", "TimeLimit", "60"),
		twForm("To", "+15551234567", "Twiml", "<Response/>", "TimeLimit", "86401"),
	} {
		j.send("POST", calls, formCT, body).refused(t, "unpriceable_request")
	}
}

func TestTwilioCallLegsAndLimits(t *testing.T) {
	env, f := kbtest.StartWithFakes(t, nil)
	k := env.Issue(t, client.IssueParams{Vendor: "twilio", DailyUSDCap: "3", AllowedEndpoints: []string{"calls.create",
		"POST /2010-04-01/Accounts/*/Conferences/*/Participants.json", "calls.update"}})
	j := twilioJudge(t, env, f, k)
	calls := twAcct + "/Calls"
	// A named TimeLimit is priced exactly, rounded up to whole minutes.
	j.send("POST", calls, formCT, twForm("To", "+15551234567", "Twiml", "<Response/>", "TimeLimit", "61")).ok(t)
	if got := lastForm(t, f.Twilio.Received()).Get("TimeLimit"); got != "61" {
		t.Fatalf("TimeLimit %q: a named one is forwarded as is", got)
	}
	// A <Dial> to one number is a second leg for the same duration.
	j.send("POST", calls, formCT, twForm("To", "+15551234567", "Twiml", "<Response><Dial>+12045551234</Dial></Response>")).ok(t)
	// A participant is a call: bounded the same way.
	j.send("POST", twAcct+"/Conferences/CF1/Participants.json", formCT, twForm("To", "+15551234567", "From", "+15550000000")).ok(t)
	// Ending a call is free; redirecting it to new TwiML is refused.
	j.send("POST", twAcct+"/Calls/CA1.json", formCT, twForm("Status", "completed")).ok(t)
	j.send("POST", twAcct+"/Calls/CA1.json", formCT, twForm("Twiml", "<Response><Dial>+15550000009</Dial></Response>")).refused(t, "unpriceable_request")
	// 2 minutes at $0.015, then the default hour: two legs at $0.015, and
	// a participant at $0.015 plus the $0.002 conference fee.
	if got := getKey(t, env, k.ID).SpentUSD.String(); got != "2.85" {
		t.Fatalf("spent %s, want 0.03 + 1.80 + 1.02", got)
	}
}

// Calls driven by TwiML Keybrake cannot see are priced only when the
// operator vouches for their legs in the pricing file.
func TestTwilioRemoteTwimlWhenVouchedFor(t *testing.T) {
	env, f := kbtest.StartWithFakes(t, func(c *server.Config) {
		c.Vendors.Prices = pricingFile(t, `operations:
  twilio.calls.create:
    remote_twiml: {max_legs: 2, extra_leg_per_minute: "0.50"}
    default_time_limit: 5m
`)
	})
	f.Twilio.UrlLegs = 2
	k := env.Issue(t, client.IssueParams{Vendor: "twilio", DailyUSDCap: "10", AllowedEndpoints: []string{"calls.create"}})
	j := twilioJudge(t, env, f, k)
	j.send("POST", twAcct+"/Calls.json", formCT, twForm("To", "+15551234567", "Url", "https://example.com/twiml")).ok(t)
	if got := lastForm(t, f.Twilio.Received()).Get("TimeLimit"); got != "300" {
		t.Fatalf("TimeLimit %q, want the configured 5 minutes", got)
	}
	if got := getKey(t, env, k.ID).SpentUSD.String(); got != "2.575" {
		t.Fatalf("spent %s, want 5 × (0.015 + 0.50)", got)
	}
}

// The issue's last finding: reading the account handed out its auth_token,
// and Keys minted API keys. Both are forbidden: refused at issuance, and at
// call time for a key with a wildcard rule.
func TestTwilioCredentialsNeverLeave(t *testing.T) {
	env, f := kbtest.StartWithFakes(t, nil)
	for rule, op := range map[string]string{
		"GET /2010-04-01/Accounts/*":         "accounts.fetch",
		"GET /2010-04-01/Accounts/*.json":    "",
		"POST /2010-04-01/Accounts/*/Keys":   "keys.create",
		"POST /2010-04-01/Accounts/*/*.json": "keys.create",
		"GET /2010-04-01/Accounts":           "accounts.list",
		"keys.create":                        "keys.create",
		"POST /2010-04-01/Accounts/*/*":      "signing_keys.create",
	} {
		if strings.Contains(rule, "*.json") {
			continue // not a rule: "*" is a whole segment
		}
		issueRefused(t, env, client.IssueParams{Vendor: "twilio", AllowedEndpoints: []string{rule}}, op)
	}
	k := env.Issue(t, client.IssueParams{Vendor: "twilio", DailyUSDCap: "1", AllowedEndpoints: []string{"GET /2010-04-01/Accounts/*/Messages"}})
	j := twilioJudge(t, env, f, k)
	for _, path := range []string{"/2010-04-01/Accounts/ACx.json", "/2010-04-01/Accounts/ACx", "/2010-04-01/Accounts.json",
		"/2010-04-01/Accounts/ACx/Keys.json", "/2010-04-01/Accounts/ACx/SigningKeys"} {
		v := j.send("GET", path, "", "").refused(t, "operation_forbidden")
		if strings.Contains(string(v.r.Body), kbtest.TwilioAuthToken) {
			t.Fatal("the auth token reached the client")
		}
	}
	j.send("POST", "/2010-04-01/Accounts/ACx/Keys.json", formCT, "FriendlyName=agent").refused(t, "operation_forbidden")
	j.send("POST", "/2010-04-01/Accounts/ACx/Recordings.json", formCT, "").refused(t, "unknown_operation")
	j.send("GET", twAcct+"/Messages", "", "").ok(t)
	// A path rule matches literally: the .json form needs its own rule.
	j.send("GET", twAcct+"/Messages.json", "", "").refused(t, "endpoint_not_allowed")
}

// Buying a number has no built-in price: refused until the pricing file
// sets one, naming the key to add.
func TestTwilioFixedPrice(t *testing.T) {
	env, f := kbtest.StartWithFakes(t, nil)
	k := env.Issue(t, client.IssueParams{Vendor: "twilio", DailyUSDCap: "5", AllowedEndpoints: []string{"POST /2010-04-01/Accounts/*/IncomingPhoneNumbers.json"}})
	j := twilioJudge(t, env, f, k)
	v := j.send("POST", twAcct+"/IncomingPhoneNumbers.json", formCT, "PhoneNumber=%2B15551234567").refused(t, "unpriceable_request")
	if !strings.Contains(string(v.r.Body), "operations.twilio.incoming_phone_numbers.create.fixed") {
		t.Fatalf("refusal does not name the setting: %s", v.r.Body)
	}

	env, f = kbtest.StartWithFakes(t, func(c *server.Config) {
		c.Vendors.Prices = pricingFile(t, "operations:\n  twilio.incoming_phone_numbers.create: {fixed: \"1.50\"}\n")
	})
	k = env.Issue(t, client.IssueParams{Vendor: "twilio", DailyUSDCap: "5", AllowedEndpoints: []string{"incoming_phone_numbers.create"}})
	j = twilioJudge(t, env, f, k)
	j.send("POST", twAcct+"/IncomingPhoneNumbers", formCT, "PhoneNumber=%2B15551234567").ok(t)
	if got := getKey(t, env, k.ID).SpentUSD.String(); got != "1.50" {
		t.Fatalf("spent %s", got)
	}
}

func lastForm(t testing.TB, got []sandbox.Received) url.Values {
	t.Helper()
	if len(got) == 0 {
		t.Fatal("nothing received")
	}
	f, err := url.ParseQuery(got[len(got)-1].Body)
	if err != nil {
		t.Fatal(err)
	}
	return f
}
