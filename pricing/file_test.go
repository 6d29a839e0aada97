package pricing

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keybrake/keybrake"
)

const exampleYAML = `# Keybrake pricing file
version: 1
fx:
  EUR: "1.08"
  JPY: 0.0067
stripe:
  endpoints:
    "POST /v1/customers": 0.01
    "POST /v1/customers/*": "0.002"
    "POST /v1/customers/cus_vip": "0"
twilio:
  sms:
    default: "0.12"
    countries:
      GB: 0.0524
      us: "0.0100"
      "+1876": "0.15"
  mms:
    default: null
    countries:
      CA: null
  call_max: "2.00"
  endpoints:
    "POST /2010-04-01/Accounts/*/IncomingPhoneNumbers.json": "1.15"
resend:
  per_email: "0.001"
`

func TestApplyYAML(t *testing.T) {
	tb := Default()
	if err := tb.Apply("prices.yaml", []byte(exampleYAML)); err != nil {
		t.Fatal(err)
	}
	if got := tb.FX.RateString("eur"); got != "1.08" {
		t.Errorf("EUR rate = %q", got)
	}
	if got := tb.FX.RateString("jpy"); got != "0.0067" {
		t.Errorf("JPY rate = %q", got)
	}
	usd := func(s string) keybrake.Micros { return mustUSD(s) }
	if p, ok := tb.Stripe.Endpoints.Lookup("POST", "/v1/customers"); !ok || p != usd("0.01") {
		t.Errorf("customers = %v %v", p, ok)
	}
	// The literal rule beats the wildcard, whatever the order in the file.
	if p, ok := tb.Stripe.Endpoints.Lookup("POST", "/v1/customers/cus_vip"); !ok || p != 0 {
		t.Errorf("cus_vip = %v %v", p, ok)
	}
	if p, ok := tb.Stripe.Endpoints.Lookup("POST", "/v1/customers/cus_1"); !ok || p != usd("0.002") {
		t.Errorf("cus_1 = %v %v", p, ok)
	}
	if _, ok := tb.Stripe.Endpoints.Lookup("GET", "/v1/customers"); ok {
		t.Error("GET /v1/customers priced")
	}
	cases := []struct {
		number string
		want   string
		key    string
	}{
		{"+15551234567", "0.01", "US"},    // lower-case "us" in the file
		{"+18761234567", "0.15", "+1876"}, // Jamaica by prefix
		{"+12045551234", "0.015", "CA"},   // built-in Canada stays
		{"+447700900123", "0.0524", "GB"},
		{"+4915112345678", "0.12", "default"},
	}
	for _, c := range cases {
		p, key, ok := tb.Twilio.SMS.Lookup(c.number)
		if !ok || p != usd(c.want) || key != c.key {
			t.Errorf("SMS %s = %v %q %v, want %s %s", c.number, p, key, ok, c.want, c.key)
		}
	}
	if _, _, ok := tb.Twilio.MMS.Lookup("+12045551234"); ok {
		t.Error("MMS to Canada still priced after CA: null")
	}
	if p, _, ok := tb.Twilio.MMS.Lookup("+15551234567"); !ok || p != usd("0.04") {
		t.Errorf("MMS US = %v", p)
	}
	if tb.Twilio.CallMax != usd("2") || tb.Resend.PerEmail != usd("0.001") {
		t.Errorf("call max %v, per email %v", tb.Twilio.CallMax, tb.Resend.PerEmail)
	}
	if p, ok := tb.Twilio.Endpoints.Lookup("POST", "/2010-04-01/Accounts/AC1/IncomingPhoneNumbers.json"); !ok || p != usd("1.15") {
		t.Errorf("numbers = %v %v", p, ok)
	}
	// The defaults were not touched.
	if Default().Resend.PerEmail != usd("0.0009") {
		t.Error("Default() changed")
	}
}

func TestApplyJSON(t *testing.T) {
	js := `{
  "fx": {"GBP": 1.27},
  "twilio": {"sms": {"countries": {"US": 0.0083}}, "call_max": "1"},
  "resend": {"per_email": 0.1}
}`
	tb := Default()
	if err := tb.Apply("prices.json", []byte(js)); err != nil {
		t.Fatal(err)
	}
	if tb.Resend.PerEmail != 100000 {
		t.Errorf("0.1 read as %d micros, want exactly 100000", tb.Resend.PerEmail)
	}
	if p, _, _ := tb.Twilio.SMS.Lookup("+15551234567"); p != 8300 {
		t.Errorf("US SMS = %d", p)
	}
	if tb.FX.RateString("gbp") != "1.27" {
		t.Error("GBP")
	}
}

func TestApplyErrorsNameLineAndField(t *testing.T) {
	cases := []struct {
		name, doc     string
		line          int
		field, substr string
	}{
		{"float-ish", "resend:\n  per_email: 1e-3\n", 2, "resend.per_email", "not a dollar amount"},
		{"negative", "twilio:\n  sms:\n    default: \"-0.1\"\n", 3, "twilio.sms.default", "not a dollar amount"},
		{"seven decimals", "twilio:\n  call_max: 0.0000001\n", 2, "twilio.call_max", "not a dollar amount"},
		{"zero call max", "twilio:\n  call_max: 0\n", 2, "twilio.call_max", "greater than 0"},
		{"unknown section", "paypal: {}\n", 1, "paypal", "unknown section"},
		{"unknown field", "resend:\n  per_mail: 1\n", 2, "resend.per_mail", "unknown field"},
		{"bad country", "twilio:\n  sms:\n    countries:\n      XX: 1\n", 4, "twilio.sms.countries.XX", "unknown country"},
		{"bad prefix", "twilio:\n  sms:\n    countries:\n      \"+0\": 1\n", 4, "twilio.sms.countries.+0", "E.164 prefix"},
		{"bad rule", "stripe:\n  endpoints:\n    \"post /v1/x\": 1\n", 3, "stripe.endpoints.post /v1/x", "method"},
		{"non canonical rule", "stripe:\n  endpoints:\n    \"POST /v1/../x\": 1\n", 3, "stripe.endpoints.POST /v1/../x", "dot segment"},
		{"duplicate", "resend:\n  per_email: 1\n  per_email: 2\n", 3, "", "already defined"},
		{"list", "fx: [1, 2]\n", 1, "fx", "want a mapping"},
		{"bad rate", "fx:\n  EUR: 1/2\n", 2, "fx.EUR", "positive decimal"},
		{"bad currency", "fx:\n  EURO: 1\n", 2, "fx.EURO", "three-letter"},
		{"anchor", "resend:\n  per_email: &a 1\n", 2, "resend.per_email", "anchors"},
		{"tag", "resend:\n  per_email: !!float 1\n", 2, "resend.per_email", "tags"},
		{"boolean money", "resend:\n  per_email: true\n", 2, "resend.per_email", "got a boolean"},
		{"syntax", "twilio:\n  sms: [\n", 0, "", "not valid YAML"},
		{"two docs", "fx: {}\n---\nfx: {}\n", 3, "", "one document"},
		{"version", "version: 2\n", 1, "version", "only version 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Default().Apply("p.yaml", []byte(c.doc))
			var fe *FileError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want *FileError", err)
			}
			if c.line != 0 && fe.Line != c.line {
				t.Errorf("line = %d, want %d (%v)", fe.Line, c.line, err)
			}
			if fe.Field != c.field {
				t.Errorf("field = %q, want %q (%v)", fe.Field, c.field, err)
			}
			if !strings.Contains(err.Error(), c.substr) || !strings.HasPrefix(err.Error(), "p.yaml:") {
				t.Errorf("error %q lacks %q", err, c.substr)
			}
		})
	}
}

func TestApplyEmptyAndComments(t *testing.T) {
	for _, doc := range []string{"", "# only a comment\n", "{}", "---\n"} {
		tb := Default()
		if err := tb.Apply("p.yaml", []byte(doc)); err != nil {
			t.Errorf("%q: %v", doc, err)
		}
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(path, []byte(exampleYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	tb, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if tb.Source != path || tb.Twilio.CallMax != 2_000_000 {
		t.Errorf("%+v", tb)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("missing file loaded")
	}
}

func TestClone(t *testing.T) {
	a := Default()
	b := a.Clone()
	if err := b.Apply("p", []byte("fx: {EUR: 1}\ntwilio: {sms: {countries: {US: 1}}}\n")); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.FX.Rate("eur"); ok {
		t.Error("clone shares FX")
	}
	if p, _, _ := a.Twilio.SMS.Lookup("+15551234567"); p != 15000 {
		t.Error("clone shares SMS prices")
	}
}

func TestCountryOf(t *testing.T) {
	cases := map[string]string{
		"+15551234567":  "US",
		"+14165551234":  "CA",
		"+18765551234":  "JM",
		"+17875551234":  "PR",
		"+447700900123": "GB",
		"+441534123456": "JE",
		"+77011234567":  "KZ",
		"+74951234567":  "RU",
		"+33612345678":  "FR",
		"+5999123456":   "CW",
		"+6701234567":   "TL",
		"+16701234567":  "MP",
	}
	for n, want := range cases {
		if got, ok := CountryOf(n); !ok || got != want {
			t.Errorf("CountryOf(%s) = %q %v, want %s", n, got, ok, want)
		}
	}
	for _, bad := range []string{"", "+", "15551234567", "+0123456789", "+1555123456789012", "+1555-123-4567", "whatsapp:+15551234567"} {
		if _, ok := CountryOf(bad); ok {
			t.Errorf("CountryOf(%q) ok", bad)
		}
	}
}

// FuzzApply: no input panics, and whatever a file sets is exact and
// non-negative.
func FuzzApply(f *testing.F) {
	f.Add([]byte(exampleYAML))
	f.Add([]byte(`{"resend":{"per_email":0.1}}`))
	f.Add([]byte("twilio:\n  sms:\n    countries:\n      \"+1\": 1\n"))
	f.Add([]byte("fx:\n  EUR: 1e5\n"))
	f.Add([]byte("- a\n- b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tb := Default()
		if err := tb.Apply("fuzz.yaml", data); err != nil {
			var fe *FileError
			if !errors.As(err, &fe) {
				t.Fatalf("error is %T, not *FileError: %v", err, err)
			}
			return
		}
		if tb.Resend.PerEmail < 0 || tb.Twilio.CallMax <= 0 {
			t.Fatalf("negative price: %+v", tb)
		}
		for _, cp := range []CountryPrices{tb.Twilio.SMS, tb.Twilio.MMS} {
			for k, v := range cp.ByKey {
				if v < 0 {
					t.Fatalf("%s = %v", k, v)
				}
			}
		}
	})
}
