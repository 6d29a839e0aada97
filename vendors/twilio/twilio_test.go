package twilio

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	twclient "github.com/twilio/twilio-go/client"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/pricing"
)

func TestSegments(t *testing.T) {
	cases := []struct {
		name string
		body string
		n    int
		enc  Encoding
	}{
		{"empty", "", 1, GSM7},
		{"short", "Your code is 123456", 1, GSM7},
		{"160 gsm", strings.Repeat("a", 160), 1, GSM7},
		{"161 gsm", strings.Repeat("a", 161), 2, GSM7},
		{"306 gsm", strings.Repeat("a", 306), 2, GSM7},
		{"307 gsm", strings.Repeat("a", 307), 3, GSM7},
		{"gsm accents", "Ça va? Ødegaard får 5€ på §3", 1, GSM7},
		{"80 euro signs fit one", strings.Repeat("€", 80), 1, GSM7},
		{"81 euro signs need two", strings.Repeat("€", 81), 2, GSM7},
		// 152 'a' + '{' (2 septets) would straddle 153: the escape moves
		// to the next part.
		{"extension not split", strings.Repeat("a", 152) + "{" + strings.Repeat("a", 10), 2, GSM7},
		{"extension straddles", strings.Repeat("a", 152) + "{" + strings.Repeat("a", 152), 3, GSM7},
		{"70 ucs2", strings.Repeat("ж", 70), 1, UCS2},
		{"71 ucs2", strings.Repeat("ж", 71), 2, UCS2},
		{"134 ucs2", strings.Repeat("ж", 134), 2, UCS2},
		{"135 ucs2", strings.Repeat("ж", 135), 3, UCS2},
		{"one emoji makes ucs2", strings.Repeat("a", 69) + "🙂", 2, UCS2}, // 69 + 2 code units = 71
		{"35 emoji", strings.Repeat("🙂", 35), 1, UCS2},
		{"surrogate not split", strings.Repeat("a", 66) + "🙂" + strings.Repeat("a", 10), 2, UCS2},
		{"ascii outside gsm", "back`tick", 1, UCS2},
	}
	for _, c := range cases {
		n, enc, ok := Segments(c.body)
		if !ok || n != c.n || enc != c.enc {
			t.Errorf("%s: Segments = %d %s %v, want %d %s", c.name, n, enc, ok, c.n, c.enc)
		}
	}
	if _, _, ok := Segments("\xff"); ok {
		t.Error("invalid UTF-8 accepted")
	}
}

// FuzzSegments: at least one segment, never fewer than the body's units
// divided by the part size, and never more than one per character.
func FuzzSegments(f *testing.F) {
	for _, s := range []string{"", "hello", strings.Repeat("€", 81), strings.Repeat("🙂", 40), "a{b}c\f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		n, enc, ok := Segments(body)
		if !ok {
			if utf8.ValidString(body) {
				t.Fatal("valid UTF-8 refused")
			}
			return
		}
		if n < 1 {
			t.Fatalf("%d segments", n)
		}
		units := 0
		for _, r := range body {
			switch {
			case enc == GSM7:
				units += gsmUnits[r]
				if gsmUnits[r] == 0 {
					t.Fatalf("GSM-7 chosen for %q", r)
				}
			case r > 0xFFFF:
				units += 2
			default:
				units++
			}
		}
		part, single := gsmPart, gsmSingle
		if enc == UCS2 {
			part, single = ucs2Part, ucs2Single
		}
		if units > single && n < (units+part-1)/part {
			t.Fatalf("%d segments for %d units", n, units)
		}
		if chars := utf8.RuneCountInString(body); chars > 0 && n > chars {
			t.Fatalf("%d segments for %d characters", n, chars)
		}
	})
}

const realSID = "ACreal0000000000000000000000000001"

func newVendor(t testing.TB, mutate ...func(*pricing.Table)) *Vendor {
	t.Helper()
	tb := pricing.Default()
	for _, m := range mutate {
		m(tb)
	}
	v, err := New(Config{AccountSID: realSID, AuthToken: "tok", Prices: tb.Twilio, FX: tb.FX})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func form(kv ...string) []byte {
	f := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		f.Add(kv[i], kv[i+1])
	}
	return []byte(f.Encode())
}

func request(method, path string, body []byte) *keybrake.VendorRequest {
	h := http.Header{}
	if body != nil {
		h.Set("Content-Type", formType)
	}
	return &keybrake.VendorRequest{Method: method, Path: path, Header: h, Body: body}
}

const msgPath = "/2010-04-01/Accounts/ACagent/Messages.json"

func TestPrepareMessages(t *testing.T) {
	v := newVendor(t, func(tb *pricing.Table) {
		if err := tb.Apply("p.yaml", []byte(`twilio:
  sms:
    countries: {GB: "0.05", "+1876": "0.12"}
  mms:
    default: "0.5"
  endpoints:
    "POST /2010-04-01/Accounts/*/Messages.json": "0.001"
`)); err != nil {
			t.Fatal(err)
		}
	})
	cases := []struct {
		name string
		body []byte
		want string
	}{
		{"us one segment", form("To", "+15551234567", "From", "+15550000000", "Body", "hi"), "0.016"},
		{"us three segments", form("To", "+15551234567", "Body", strings.Repeat("x", 307)), "0.046"},
		{"uk ucs2 two segments", form("To", "+447700900123", "Body", strings.Repeat("ж", 71)), "0.101"},
		{"jamaica by prefix", form("To", "+18765551234", "Body", "hi"), "0.121"},
		{"mms by media", form("To", "+15551234567", "MediaUrl", "https://example.com/a.png"), "0.041"},
		{"mms with body", form("To", "+15551234567", "Body", strings.Repeat("x", 500), "MediaUrl", "https://example.com/a.png"), "0.041"},
		{"mms default", form("To", "+447700900123", "MediaUrl", "https://example.com/a.png", "MediaUrl", "https://example.com/b.png"), "0.501"},
		{"send as mms", form("To", "+15551234567", "Body", "hi", "SendAsMms", "true"), "0.041"},
	}
	for _, c := range cases {
		p, err := v.Prepare(request("POST", msgPath, c.body))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		want, _ := keybrake.ParseUSD(c.want)
		if p.Estimate != want || !p.Priced {
			t.Errorf("%s: estimate %v priced %v, want %s", c.name, p.Estimate, p.Priced, c.want)
		}
		if p.UpstreamPath != "/2010-04-01/Accounts/"+realSID+"/Messages.json" {
			t.Errorf("%s: upstream path %s", c.name, p.UpstreamPath)
		}
	}
}

func TestPrepareRefusals(t *testing.T) {
	v := newVendor(t)
	cases := []struct {
		name   string
		req    *keybrake.VendorRequest
		substr string
	}{
		{"no To", request("POST", msgPath, form("Body", "hi")), "To is required"},
		{"two To", request("POST", msgPath, form("To", "+15551234567", "To", "+15551234568", "Body", "hi")), "more than once"},
		{"two Body", request("POST", msgPath, form("To", "+15551234567", "Body", "a", "Body", "b")), "more than once"},
		{"whatsapp", request("POST", msgPath, form("To", "whatsapp:+15551234567", "Body", "hi")), "channel"},
		{"national number", request("POST", msgPath, form("To", "5551234567", "Body", "hi")), "E.164"},
		{"unpriced country", request("POST", msgPath, form("To", "+4915112345678", "Body", "hi")), "twilio.sms.countries.DE"},
		{"unpriced mms country", request("POST", msgPath, form("To", "+4915112345678", "MediaUrl", "https://x/y.png")), "twilio.mms"},
		{"content template", request("POST", msgPath, form("To", "+15551234567", "ContentSid", "HX123")), "ContentSid"},
		{"content template with body", request("POST", msgPath, form("To", "+15551234567", "Body", "hi", "ContentSid", "HX123")), "ContentSid"},
		{"bad utf8", request("POST", msgPath, []byte("To=%2B15551234567&Body=%FF")), "UTF-8"},
		{"bad form", request("POST", msgPath, []byte("To=%zz")), "cannot be parsed"},
		{"json", &keybrake.VendorRequest{Method: "POST", Path: msgPath, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"To":"+15551234567"}`)}, "form-encoded"},
		{"query", &keybrake.VendorRequest{Method: "POST", Path: msgPath, Query: "To=%2B1", Header: http.Header{}, Body: form("To", "+15551234567", "Body", "x")}, "query"},
		{"gzip", &keybrake.VendorRequest{Method: "POST", Path: msgPath, Header: http.Header{"Content-Encoding": {"gzip"}}, Body: []byte("x")}, "Content-Encoding"},
		{"call without To", request("POST", "/2010-04-01/Accounts/AC1/Calls.json", form("Url", "https://x")), "To is required"},
	}
	for _, c := range cases {
		_, err := v.Prepare(c.req)
		if keybrake.ErrorCode(err) != keybrake.CodeUnpriceableRequest || !strings.Contains(err.Error(), c.substr) {
			t.Errorf("%s: err = %v, want unpriceable_request mentioning %q", c.name, err, c.substr)
		}
	}
}

func TestPrepareOtherEndpoints(t *testing.T) {
	v := newVendor(t, func(tb *pricing.Table) {
		if err := tb.Apply("p", []byte(`twilio: {endpoints: {"POST /2010-04-01/Accounts/*/IncomingPhoneNumbers.json": "1.15"}}`)); err != nil {
			t.Fatal(err)
		}
	})
	p, err := v.Prepare(request("POST", "/2010-04-01/Accounts/AC1/Calls.json", form("To", "+15551234567", "From", "+15550000000", "Url", "https://x")))
	if err != nil || p.Estimate != 3_500_000 {
		t.Fatalf("call: %v %v", p, err)
	}
	p, err = v.Prepare(request("GET", "/2010-04-01/Accounts/AC1/Messages/SM1.json", nil))
	if err != nil || p.Estimate != 0 || p.Priced || p.UpstreamPath != "/2010-04-01/Accounts/"+realSID+"/Messages/SM1.json" {
		t.Fatalf("fetch: %+v %v", p, err)
	}
	p, err = v.Prepare(request("POST", "/2010-04-01/Accounts/AC1/IncomingPhoneNumbers.json", form("PhoneNumber", "+15551234567")))
	if err != nil || p.Estimate != 1_150_000 || !p.Priced {
		t.Fatalf("numbers: %+v %v", p, err)
	}
	for in, want := range map[string]string{
		"/2010-04-01/Accounts/ACx.json": "/2010-04-01/Accounts/" + realSID + ".json",
		"/2010-04-01/Accounts/ACx":      "/2010-04-01/Accounts/" + realSID,
		"/2010-04-01/Accounts.json":     "/2010-04-01/Accounts.json",
	} {
		if got := v.upstreamPath(in); got != want {
			t.Errorf("upstreamPath(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestSettle(t *testing.T) {
	v := newVendor(t, func(tb *pricing.Table) {
		if err := tb.FX.Set("EUR", "1.10"); err != nil {
			t.Fatal(err)
		}
	})
	p, err := v.Prepare(request("POST", msgPath, form("To", "+15551234567", "Body", "hi")))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		body   string
		actual keybrake.Micros
		id     string
		ok     bool
	}{
		{`{"sid":"SM1","price":null,"price_unit":"USD"}`, 0, "SM1", false},
		{`{"sid":"SM1","price":"-0.00790","price_unit":"USD"}`, 7900, "SM1", true},
		{`{"sid":"SM1","price":"-0.0000001","price_unit":"USD"}`, 1, "SM1", true}, // rounds up
		{`{"sid":"SM1","price":-0.0079,"price_unit":"USD"}`, 7900, "SM1", true},
		{`{"sid":"SM1","price":"-0.01","price_unit":"EUR"}`, 11000, "SM1", true},
		{`{"sid":"SM1","price":"-0.01","price_unit":"BRL"}`, 0, "SM1", false}, // no rate
		{`{"sid":"SM1","price":"abc"}`, 0, "SM1", false},
		{`not json`, 0, "", false},
	}
	for _, c := range cases {
		a, id, ok := v.Settle(p, &keybrake.VendorResponse{Status: 201, Body: []byte(c.body)})
		if a != c.actual || id != c.id || ok != c.ok {
			t.Errorf("%s: Settle = %v %q %v, want %v %q %v", c.body, a, id, ok, c.actual, c.id, c.ok)
		}
	}
	get, _ := v.Prepare(request("GET", "/2010-04-01/Accounts/AC1/Messages/SM1.json", nil))
	if a, id, ok := v.Settle(get, &keybrake.VendorResponse{Status: 200, Body: []byte(`{"sid":"SM1","price":"-0.5"}`)}); a != 0 || id != "SM1" || !ok {
		t.Errorf("a fetch costs nothing, whatever the message cost: %v %v %v", a, id, ok)
	}
}

// FuzzPrepareMessage: no body panics the pricer, a priced message is never
// free, and only unpriceable_request refuses.
func FuzzPrepareMessage(f *testing.F) {
	f.Add(string(form("To", "+15551234567", "Body", "hi")))
	f.Add(string(form("To", "+447700900123", "MediaUrl", "x")))
	f.Add("To=%2B1&Body=%F0%9F%99%82")
	f.Add("To=+15551234567&Body=a&Body=b")
	v := newVendor(f)
	f.Fuzz(func(t *testing.T, body string) {
		p, err := v.Prepare(request("POST", msgPath, []byte(body)))
		if err != nil {
			if keybrake.ErrorCode(err) != keybrake.CodeUnpriceableRequest {
				t.Fatalf("code %s", keybrake.ErrorCode(err))
			}
			return
		}
		if p.Estimate <= 0 || !p.Priced {
			t.Fatalf("message forwarded at %v", p.Estimate)
		}
	})
}

// FuzzParsePrice: any answer either gives a non-negative cost or leaves the
// estimate standing.
func FuzzParsePrice(f *testing.F) {
	for _, s := range []string{`"-0.0075"`, `null`, `-1`, `"1e5"`, `"-99999999999999999999"`, `""`} {
		f.Add(s, "USD")
	}
	v := newVendor(f)
	f.Fuzz(func(t *testing.T, raw, unit string) {
		m, ok := v.ParsePrice(json.RawMessage(raw), unit)
		if ok && m < 0 {
			t.Fatalf("%s → %v", raw, m)
		}
	})
}

// The refusal decodes into twilio-go's own error type with a numeric code
// and cap_exhausted in the message.
func TestErrorResponseDecodesInTwilioGo(t *testing.T) {
	v := newVendor(t)
	capUSD := keybrake.Micros(1_000_000)
	_, body := v.ErrorResponse(&keybrake.ErrorReply{Code: keybrake.CodeCapExhausted, Message: "daily cap of $1.00 reached", CapUSD: &capUSD})
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	var te twclient.TwilioRestError
	if err := json.Unmarshal(b, &te); err != nil {
		t.Fatalf("twilio-go cannot decode %s: %v", b, err)
	}
	if te.Status != 429 || te.Code != 20429 || !strings.HasPrefix(te.Message, "cap_exhausted: ") || te.Details["code"] != "cap_exhausted" {
		t.Errorf("%+v", te)
	}
	if !strings.Contains(te.Error(), "cap_exhausted") {
		t.Errorf("Error() = %s", te.Error())
	}
}

func TestDirect(t *testing.T) {
	v, err := New(Config{BaseURL: "http://127.0.0.1:9/base/", AccountSID: realSID, AuthToken: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := http.NewRequest("POST", "http://keybrake/2010-04-01/Accounts/ACx/Messages.json", nil)
	v.Direct(out, &keybrake.Prepared{UpstreamPath: "/2010-04-01/Accounts/" + realSID + "/Messages.json"})
	if out.URL.String() != "http://127.0.0.1:9/base/2010-04-01/Accounts/"+realSID+"/Messages.json" {
		t.Errorf("url %s", out.URL)
	}
	u, p, ok := out.BasicAuth()
	if !ok || u != realSID || p != "tok" {
		t.Errorf("auth %q %q", u, p)
	}
	if !v.Configured() || v.DedupesIdempotency() || !v.Owns("/2010-04-01/Accounts/x/Messages.json") || v.Owns("/v1/charges") {
		t.Error("flags")
	}
	if _, err := New(Config{BaseURL: "ftp://x"}); err == nil {
		t.Error("ftp base URL accepted")
	}
	if _, err := New(Config{AccountSID: "AC-1"}); err == nil {
		t.Error("non-alphanumeric SID accepted")
	}
	unconf, _ := New(Config{})
	if unconf.Configured() {
		t.Error("configured without credentials")
	}
	tb := pricing.Default()
	if err := tb.Apply("p.yaml", []byte("twilio:\n  endpoints:\n    \"POST /v1/charges\": 1\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Prices: tb.Twilio}); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("foreign endpoint price: %v", err)
	}
}
