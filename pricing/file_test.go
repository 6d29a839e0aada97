package pricing_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/pricing"
	"github.com/keybrake/keybrake/vendors/resend"
	"github.com/keybrake/keybrake/vendors/stripe"
	"github.com/keybrake/keybrake/vendors/twilio"
)

const exampleYAML = `# Keybrake pricing file
version: 1
fx:
  EUR: "1.08"
  JPY: 0.0067
operations:
  stripe.customers.create:
    fixed: 0.01
  stripe.payment_intents.create:
    fixed: "0.30"
  stripe.credit_notes.create:
    method: POST
    path: /v1/credit_notes
    fixed: "2.00"
  twilio.messages.create:
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
  twilio.calls.create:
    per_minute:
      countries: {GB: "0.02"}
    default_time_limit: 10m
    remote_twiml: {max_legs: 2, extra_leg_per_minute: "0.10"}
  twilio.incoming_phone_numbers.create:
    fixed: "1.15"
  twilio.recordings.list:
    method: GET
    path: /2010-04-01/Accounts/*/Recordings.json
    fixed: "0"
  resend.emails.send:
    per_recipient: "0.001"
  resend.broadcasts.send:
    fixed: "5.00"
`

type vendors struct {
	stripe *stripe.Vendor
	twilio *twilio.Vendor
	resend *resend.Vendor
}

func newVendors(t testing.TB, fx *pricing.FX) vendors {
	t.Helper()
	sv, err := stripe.New("", "", fx)
	if err != nil {
		t.Fatal(err)
	}
	tv, err := twilio.New(twilio.Config{FX: fx})
	if err != nil {
		t.Fatal(err)
	}
	rv, err := resend.New(resend.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return vendors{sv, tv, rv}
}

func (v vendors) targets() []pricing.Target { return []pricing.Target{v.stripe, v.twilio, v.resend} }

// apply parses doc and lays it over fresh catalogues.
func apply(t testing.TB, doc string) (*pricing.Table, vendors, error) {
	t.Helper()
	tb := pricing.Default()
	if err := tb.Apply("p.yaml", []byte(doc)); err != nil {
		return nil, vendors{}, err
	}
	v := newVendors(t, tb.FX)
	return tb, v, tb.ApplyTo(v.targets()...)
}

func settings(t *testing.T, view pricing.View, op string) pricing.OperationView {
	t.Helper()
	for _, o := range view.Operations {
		if o.Operation == op {
			return o
		}
	}
	t.Fatalf("%s not in the view", op)
	return pricing.OperationView{}
}

func TestApplyYAML(t *testing.T) {
	tb, v, err := apply(t, exampleYAML)
	if err != nil {
		t.Fatal(err)
	}
	if got := tb.FX.RateString("eur"); got != "1.08" {
		t.Errorf("EUR rate = %q", got)
	}
	cat := v.stripe.Catalog()
	if op := cat.Lookup("customers.create"); !op.HasFixed || op.Fixed != 10_000 {
		t.Errorf("customers.create fixed %v %v", op.Fixed, op.HasFixed)
	}
	added, _ := cat.Resolve("POST", "/v1/credit_notes")
	if added == nil || added.Name != "credit_notes.create" || !added.Added || added.Model != keybrake.ModelFixed || added.Fixed != 2_000_000 {
		t.Fatalf("added operation: %+v", added)
	}
	// Twilio's added operation is matched without its extension.
	rec, _ := v.twilio.Catalog().Resolve("GET", "/2010-04-01/Accounts/AC1/Recordings")
	if rec == nil || rec.Name != "recordings.list" || !rec.HasFixed || rec.Fixed != 0 {
		t.Fatalf("recordings.list: %+v", rec)
	}
	if op := v.twilio.Catalog().Lookup("incoming_phone_numbers.create"); !op.HasFixed || op.Fixed != 1_150_000 {
		t.Errorf("numbers: %+v", op)
	}
	view := tb.ViewOf(v.targets()...)
	sms := settings(t, view, "twilio.messages.create").Settings["sms"].(pricing.CountryView)
	if sms.Countries["US"].String() != "0.01" || sms.Countries["+1876"].String() != "0.15" || sms.Countries["CA"].String() != "0.015" ||
		sms.Default == nil || sms.Default.String() != "0.12" {
		t.Errorf("sms settings %+v", sms)
	}
	mms := settings(t, view, "twilio.messages.create").Settings["mms"].(pricing.CountryView)
	if _, ok := mms.Countries["CA"]; ok || mms.Countries["US"].String() != "0.04" || mms.Default != nil {
		t.Errorf("mms settings %+v", mms)
	}
	calls := settings(t, view, "twilio.calls.create").Settings
	if calls["default_time_limit"] != (10*time.Minute).String() || calls["remote_twiml"].(map[string]any)["max_legs"] != 2 {
		t.Errorf("calls settings %+v", calls)
	}
	if p := settings(t, view, "resend.emails.send").Settings["per_recipient"].(keybrake.Micros); p != 1000 {
		t.Errorf("per recipient %v", p)
	}
	if s := settings(t, view, "resend.broadcasts.send").Price; s != "5.00 per call" {
		t.Errorf("broadcast price %q", s)
	}
	if s := settings(t, view, "stripe.subscriptions.create").Price; s != "never forwarded: recurring charges: unbounded" {
		t.Errorf("forbidden price %q", s)
	}
	// Fresh catalogues are untouched by another's file.
	if newVendors(t, nil).stripe.Catalog().Lookup("customers.create").HasFixed {
		t.Error("a catalogue shares state with another")
	}
}

func TestApplyJSON(t *testing.T) {
	js := `{
  "fx": {"GBP": 1.27},
  "operations": {"twilio.messages.create": {"sms": {"countries": {"US": 0.0083}}}, "resend.emails.send": {"per_recipient": 0.1}}
}`
	tb, v, err := apply(t, js)
	if err != nil {
		t.Fatal(err)
	}
	view := tb.ViewOf(v.targets()...)
	if p := settings(t, view, "resend.emails.send").Settings["per_recipient"].(keybrake.Micros); p != 100000 {
		t.Errorf("0.1 read as %d micros, want exactly 100000", p)
	}
	if sms := settings(t, view, "twilio.messages.create").Settings["sms"].(pricing.CountryView); sms.Countries["US"] != 8300 {
		t.Errorf("US SMS = %v", sms.Countries["US"])
	}
	if tb.FX.RateString("gbp") != "1.27" {
		t.Error("GBP")
	}
}

func TestApplyErrorsNameLineAndField(t *testing.T) {
	ops := func(s string) string { return "operations:\n" + s }
	cases := []struct {
		name, doc     string
		line          int
		field, substr string
	}{
		{"float-ish", ops("  resend.emails.send:\n    per_recipient: 1e-3\n"), 3, "operations.resend.emails.send.per_recipient", "not a dollar amount"},
		{"negative", ops("  twilio.messages.create:\n    sms:\n      default: \"-0.1\"\n"), 4, "operations.twilio.messages.create.sms.default", "not a dollar amount"},
		{"seven decimals", ops("  stripe.customers.create:\n    fixed: 0.0000001\n"), 3, "operations.stripe.customers.create.fixed", "not a dollar amount"},
		{"unknown section", "paypal: {}\n", 1, "paypal", "unknown section"},
		{"old stripe section", "stripe:\n  endpoints: {}\n", 1, "stripe", "replaced by operations"},
		{"old twilio section", "twilio:\n  sms: {}\n", 1, "twilio", "twilio.incoming_phone_numbers.create"},
		{"unknown field", ops("  resend.emails.send:\n    per_mail: 1\n"), 3, "operations.resend.emails.send.per_mail", "unknown field (want fixed, per_recipient)"},
		{"bad country", ops("  twilio.messages.create:\n    sms:\n      countries:\n        XX: 1\n"), 5, "operations.twilio.messages.create.sms.countries.XX", "unknown country"},
		{"bad prefix", ops("  twilio.messages.create:\n    sms:\n      countries:\n        \"+0\": 1\n"), 5, "operations.twilio.messages.create.sms.countries.+0", "E.164 prefix"},
		{"unknown vendor", ops("  paypal.charges.create: {fixed: 1}\n"), 2, "operations.paypal.charges.create", "unknown vendor"},
		{"unqualified", ops("  charges.create: {fixed: 1}\n"), 2, "operations.charges.create", "qualified by its vendor"},
		{"bad name", ops("  Stripe.Charges: {fixed: 1}\n"), 2, "operations.Stripe.Charges", "qualified by its vendor"},
		{"forbidden", ops("  twilio.keys.create: {fixed: 1}\n"), 2, "operations.twilio.keys.create", "forbidden and cannot be priced"},
		{"forbidden subscription", ops("  stripe.subscriptions.create: {fixed: 100}\n"), 2, "operations.stripe.subscriptions.create", "forbidden"},
		{"path on a catalogued op", ops("  stripe.charges.create: {path: /v1/x}\n"), 2, "operations.stripe.charges.create.path", "already POST /v1/charges"},
		{"added without path", ops("  stripe.credit_notes.create: {fixed: 1}\n"), 2, "operations.stripe.credit_notes.create", "give method, path and fixed"},
		{"added with settings", ops("  stripe.credit_notes.create: {method: POST, path: /v1/credit_notes, sms: {}}\n"), 2, "operations.stripe.credit_notes.create.sms", "only be added with method, path and fixed"},
		{"added overlapping", ops("  stripe.cards.special:\n    method: POST\n    path: /v1/issuing/cards/ic_1\n    fixed: 1\n"), 4, "operations.stripe.cards.special.path", "issuing.cards.update"},
		{"added shadowing a priced op", ops("  stripe.pi.special:\n    method: POST\n    path: /v1/payment_intents/pi_1/confirm\n    fixed: 0\n"), 4, "operations.stripe.pi.special.path", "payment_intents.confirm"},
		{"added foreign path", ops("  stripe.x.y:\n    method: POST\n    path: /emails\n    fixed: 1\n"), 4, "operations.stripe.x.y.path", "not a path of the stripe API"},
		{"added bad rule", ops("  stripe.x.y:\n    method: post\n    path: /v1/x\n    fixed: 1\n"), 3, "operations.stripe.x.y.method", "method"},
		{"added non canonical", ops("  stripe.x.y:\n    method: POST\n    path: /v1/../x\n    fixed: 1\n"), 3, "operations.stripe.x.y.method", "dot segment"},
		{"bad duration", ops("  twilio.calls.create:\n    default_time_limit: forever\n"), 3, "operations.twilio.calls.create.default_time_limit", "not a positive duration"},
		{"bad legs", ops("  twilio.calls.create:\n    remote_twiml: {max_legs: -1}\n"), 3, "operations.twilio.calls.create.remote_twiml.max_legs", "whole number"},
		{"participants have no settings", ops("  twilio.conferences.participants.create:\n    per_minute: {}\n"), 3, "operations.twilio.conferences.participants.create.per_minute", "want fixed"},
		{"duplicate", ops("  resend.emails.send:\n    per_recipient: 1\n    per_recipient: 2\n"), 4, "", "already defined"},
		{"list", "fx: [1, 2]\n", 1, "fx", "want a mapping"},
		{"operations list", "operations: [1]\n", 1, "operations", "want a mapping"},
		{"bad rate", "fx:\n  EUR: 1/2\n", 2, "fx.EUR", "positive decimal"},
		{"bad currency", "fx:\n  EURO: 1\n", 2, "fx.EURO", "three-letter"},
		{"anchor", ops("  resend.emails.send:\n    per_recipient: &a 1\n"), 3, "operations.resend.emails.send.per_recipient", "anchors"},
		{"tag", ops("  resend.emails.send:\n    per_recipient: !!float 1\n"), 3, "operations.resend.emails.send.per_recipient", "tags"},
		{"boolean money", ops("  resend.emails.send:\n    per_recipient: true\n"), 3, "operations.resend.emails.send.per_recipient", "got a boolean"},
		{"syntax", "operations:\n  x: [\n", 0, "", "not valid YAML"},
		{"two docs", "fx: {}\n---\nfx: {}\n", 3, "", "one document"},
		{"version", "version: 2\n", 1, "version", "only version 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := apply(t, c.doc)
			var fe *pricing.FileError
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
	for _, doc := range []string{"", "# only a comment\n", "{}", "---\n", "operations: {}\n", "operations:\n"} {
		if _, _, err := apply(t, doc); err != nil {
			t.Errorf("%q: %v", doc, err)
		}
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(path, []byte(exampleYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	tb, err := pricing.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	v := newVendors(t, tb.FX)
	if err := tb.ApplyTo(v.targets()...); err != nil {
		t.Fatal(err)
	}
	if tb.Source != path || !v.resend.Catalog().Lookup("broadcasts.send").HasFixed {
		t.Errorf("%+v", tb)
	}
	if _, err := pricing.Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("missing file loaded")
	}
}

func TestClone(t *testing.T) {
	a := pricing.Default()
	b := a.Clone()
	if err := b.Apply("p", []byte("fx: {EUR: 1}\n")); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.FX.Rate("eur"); ok {
		t.Error("clone shares FX")
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
		if got, ok := pricing.CountryOf(n); !ok || got != want {
			t.Errorf("CountryOf(%s) = %q %v, want %s", n, got, ok, want)
		}
	}
	for _, bad := range []string{"", "+", "15551234567", "+0123456789", "+1555123456789012", "+1555-123-4567", "whatsapp:+15551234567"} {
		if _, ok := pricing.CountryOf(bad); ok {
			t.Errorf("CountryOf(%q) ok", bad)
		}
	}
}

// FuzzApply: no input panics, every error is a *FileError, and nothing a
// file sets makes a forbidden operation priced or a price negative.
func FuzzApply(f *testing.F) {
	f.Add([]byte(exampleYAML))
	f.Add([]byte(`{"operations":{"resend.emails.send":{"per_recipient":0.1}}}`))
	f.Add([]byte("operations:\n  twilio.messages.create:\n    sms:\n      countries:\n        \"+1\": 1\n"))
	f.Add([]byte("operations:\n  stripe.subscriptions.create: {fixed: 1}\n"))
	f.Add([]byte("fx:\n  EUR: 1e5\n"))
	f.Add([]byte("- a\n- b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tb := pricing.Default()
		v := newVendors(t, tb.FX)
		err := tb.Apply("fuzz.yaml", data)
		if err == nil {
			err = tb.ApplyTo(v.targets()...)
		}
		if err != nil {
			var fe *pricing.FileError
			if !errors.As(err, &fe) {
				t.Fatalf("error is %T, not *FileError: %v", err, err)
			}
			return
		}
		for _, target := range v.targets() {
			for _, op := range target.Catalog().Operations() {
				if op.Fixed < 0 || (op.Model == keybrake.ModelForbidden && op.HasFixed) {
					t.Fatalf("%s: fixed %v (%s)", op.FullName(), op.Fixed, op.Model)
				}
			}
		}
	})
}

// The pricing file documented in docs/vendors.md is one Keybrake takes.
func TestDocumentedPricingFile(t *testing.T) {
	doc, err := os.ReadFile("../docs/vendors.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no yaml block in docs/vendors.md")
	}
	if _, _, err := apply(t, block); err != nil {
		t.Fatalf("the documented pricing file: %v", err)
	}
}
