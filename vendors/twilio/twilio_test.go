package twilio

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
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

// newVendor builds the vendor with a pricing file laid over its catalogue.
func newVendor(t testing.TB, file ...string) *Vendor {
	t.Helper()
	tb := pricing.Default()
	if err := tb.FX.Set("EUR", "1.10"); err != nil {
		t.Fatal(err)
	}
	for _, f := range file {
		if err := tb.Apply("p.yaml", []byte(f)); err != nil {
			t.Fatal(err)
		}
	}
	v, err := New(Config{AccountSID: realSID, AuthToken: "tok", FX: tb.FX})
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.ApplyTo(v); err != nil {
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

// quote runs a request through what the proxy does before reserving.
func quote(v *Vendor, req *keybrake.VendorRequest) (*keybrake.Quote, *keybrake.Prepared, *keybrake.Operation, error) {
	if err := keybrake.CheckBody(req); err != nil {
		return nil, nil, nil, err
	}
	p, err := v.Prepare(req)
	if err != nil {
		return nil, nil, nil, err
	}
	op, params := v.Catalog().Resolve(req.Method, req.Path)
	if op == nil {
		return nil, p, nil, keybrake.Errorf(keybrake.CodeUnknownOperation, "%s %s", req.Method, req.Path)
	}
	q, err := op.Quote(context.Background(), &keybrake.PriceCall{Method: req.Method, Path: req.Path, Params: params,
		Header: req.Header, Body: p.Body, Form: p.Form})
	return q, p, op, err
}

const msgPath = "/2010-04-01/Accounts/ACagent/Messages.json"

func TestMessageQuotes(t *testing.T) {
	v := newVendor(t, `operations:
  twilio.messages.create:
    sms:
      countries: {GB: "0.05", "+1876": "0.12"}
    mms:
      default: "0.5"
    fixed: "0.001"
`)
	cases := []struct {
		name string
		body []byte
		want string
	}{
		{"us one segment", form("To", "+15551234567", "From", "+15550000000", "Body", "hi"), "0.016"},
		{"us three segments", form("To", "+15551234567", "Body", strings.Repeat("x", 307)), "0.046"},
		{"uk ucs2 two segments", form("To", "+447700900123", "Body", strings.Repeat("ж", 71)), "0.101"},
		{"24 ucs2 segments", form("To", "+15551234567", "Body", strings.Repeat("ж", 67*24)), "0.361"},
		{"jamaica by prefix", form("To", "+18765551234", "Body", "hi"), "0.121"},
		{"mms by media", form("To", "+15551234567", "MediaUrl", "https://example.com/a.png"), "0.041"},
		{"mms with body", form("To", "+15551234567", "Body", strings.Repeat("x", 500), "MediaUrl", "https://example.com/a.png"), "0.041"},
		{"mms default", form("To", "+447700900123", "MediaUrl", "https://example.com/a.png", "MediaUrl", "https://example.com/b.png"), "0.501"},
		{"send as mms", form("To", "+15551234567", "Body", "hi", "SendAsMms", "true"), "0.041"},
	}
	// Messages, Messages.json and Messages.xml are one operation.
	for _, path := range []string{msgPath, "/2010-04-01/Accounts/ACagent/Messages", "/2010-04-01/Accounts/ACagent/Messages.xml"} {
		for _, c := range cases {
			q, p, op, err := quote(v, request("POST", path, c.body))
			if err != nil {
				t.Errorf("%s %s: %v", path, c.name, err)
				continue
			}
			want, _ := keybrake.ParseUSD(c.want)
			if q.Amount != want || op.Name != "messages.create" {
				t.Errorf("%s %s: %s %v, want %s", path, c.name, op.Name, q.Amount, c.want)
			}
			if p.UpstreamPath != "/2010-04-01/Accounts/"+realSID+strings.TrimPrefix(path, "/2010-04-01/Accounts/ACagent") {
				t.Errorf("%s: upstream path %s", c.name, p.UpstreamPath)
			}
		}
	}
}

func TestQuoteRefusals(t *testing.T) {
	v := newVendor(t)
	calls := "/2010-04-01/Accounts/AC1/Calls.json"
	cases := []struct {
		name   string
		req    *keybrake.VendorRequest
		code   keybrake.Code
		substr string
	}{
		{"no To", request("POST", msgPath, form("Body", "hi")), keybrake.CodeUnpriceableRequest, "To is required"},
		{"two To", request("POST", msgPath, form("To", "+15551234567", "To", "+15551234568", "Body", "hi")), keybrake.CodeUnpriceableRequest, "more than once"},
		{"lower-case to", request("POST", msgPath, form("To", "+15551234567", "to", "+4915112345678", "Body", "hi")), keybrake.CodeUnpriceableRequest, `form key "to": parameter names are letters and digits starting with a capital`},
		{"two Body", request("POST", msgPath, form("To", "+15551234567", "Body", "a", "Body", "b")), keybrake.CodeUnpriceableRequest, "more than once"},
		{"whatsapp", request("POST", msgPath, form("To", "whatsapp:+15551234567", "Body", "hi")), keybrake.CodeUnpriceableRequest, "channel"},
		{"national number", request("POST", msgPath, form("To", "5551234567", "Body", "hi")), keybrake.CodeUnpriceableRequest, "E.164"},
		{"unpriced country", request("POST", msgPath, form("To", "+4915112345678", "Body", "hi")), keybrake.CodeUnpriceableRequest, "operations.twilio.messages.create.sms.countries.DE"},
		{"unpriced without extension", request("POST", "/2010-04-01/Accounts/AC1/Messages", form("To", "+4915112345678", "Body", "hi")), keybrake.CodeUnpriceableRequest, "sms.countries.DE"},
		{"unpriced mms country", request("POST", msgPath, form("To", "+4915112345678", "MediaUrl", "https://x/y.png")), keybrake.CodeUnpriceableRequest, "messages.create.mms"},
		{"content template", request("POST", msgPath, form("To", "+15551234567", "ContentSid", "HX123")), keybrake.CodeUnpriceableRequest, "ContentSid"},
		{"shortened urls", request("POST", msgPath, form("To", "+15551234567", "Body", "http://a.co", "ShortenUrls", "true")), keybrake.CodeUnpriceableRequest, "ShortenUrls"},
		{"bad utf8", request("POST", msgPath, []byte("To=%2B15551234567&Body=%FF")), keybrake.CodeUnpriceableRequest, "UTF-8"},
		{"bad form", request("POST", msgPath, []byte("To=%zz")), keybrake.CodeUnpriceableRequest, "not valid percent-encoding"},
		{"json", &keybrake.VendorRequest{Method: "POST", Path: msgPath, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"To":"+15551234567"}`)}, keybrake.CodeUnpriceableRequest, "form-encoded"},
		{"query", &keybrake.VendorRequest{Method: "POST", Path: msgPath, Query: "To=%2B1", Header: http.Header{}, Body: form("To", "+15551234567", "Body", "x")}, keybrake.CodeUnpriceableRequest, "query"},
		{"gzip", &keybrake.VendorRequest{Method: "POST", Path: msgPath, Header: http.Header{"Content-Encoding": {"gzip"}}, Body: []byte("x")}, keybrake.CodeUnpriceableRequest, "Content-Encoding"},
		{"call without To", request("POST", calls, form("Twiml", "<Response/>")), keybrake.CodeUnpriceableRequest, "To is required"},
		{"call by url", request("POST", calls, form("To", "+15551234567", "From", "+15550000000", "Url", "https://x")), keybrake.CodeUnpriceableRequest, "remote_twiml.max_legs"},
		{"call by application", request("POST", calls, form("To", "+15551234567", "ApplicationSid", "AP1")), keybrake.CodeUnpriceableRequest, "remote_twiml"},
		{"call by nothing", request("POST", calls, form("To", "+15551234567")), keybrake.CodeUnpriceableRequest, "exactly one of Twiml"},
		{"call to sip", request("POST", calls, form("To", "sip:a@b.c", "Twiml", "<Response/>")), keybrake.CodeUnpriceableRequest, "SIP"},
		{"call to germany", request("POST", calls, form("To", "+4915112345678", "Twiml", "<Response/>")), keybrake.CodeUnpriceableRequest, "per_minute.countries.DE"},
		{"call too long", request("POST", calls, form("To", "+15551234567", "Twiml", "<Response/>", "TimeLimit", "86401")), keybrake.CodeUnpriceableRequest, "TimeLimit"},
		{"call unknown param", request("POST", calls, form("To", "+15551234567", "Twiml", "<Response/>", "Transcribe", "true")), keybrake.CodeUnpriceableRequest, `"Transcribe"`},
		{"call fallback", request("POST", calls, form("To", "+15551234567", "Twiml", "<Response/>", "FallbackUrl", "https://x")), keybrake.CodeUnpriceableRequest, "FallbackUrl"},
		{"call two numbers", request("POST", calls, form("To", "+15551234567", "Twiml", "<Response><Dial><Number>+15550000001</Number><Number>+15550000002</Number></Dial></Response>")), keybrake.CodeUnpriceableRequest, "exactly one number"},
		{"call conference", request("POST", calls, form("To", "+15551234567", "Twiml", "<Response><Dial><Conference>room</Conference></Dial></Response>")), keybrake.CodeUnpriceableRequest, "<Dial><Conference>"},
		{"redirect call", request("POST", "/2010-04-01/Accounts/AC1/Calls/CA1.json", form("Twiml", "<Response><Dial>+15550000001</Dial></Response>")), keybrake.CodeUnpriceableRequest, "Status=completed or canceled"},
		{"extend call", request("POST", "/2010-04-01/Accounts/AC1/Calls/CA1.json", form("Status", "completed", "TimeLimit", "14400")), keybrake.CodeUnpriceableRequest, "TimeLimit"},
		{"participant unknown param", request("POST", "/2010-04-01/Accounts/AC1/Conferences/CF1/Participants.json", form("To", "+15551234567", "From", "+1555", "Url", "https://x")), keybrake.CodeUnpriceableRequest, `"Url"`},
		{"resend a message", request("POST", "/2010-04-01/Accounts/AC1/Messages/SM1.json", form("Body", "new text")), keybrake.CodeUnpriceableRequest, "redact"},
		{"buy a number", request("POST", "/2010-04-01/Accounts/AC1/IncomingPhoneNumbers.json", form("PhoneNumber", "+15551234567")), keybrake.CodeUnpriceableRequest, "operations.twilio.incoming_phone_numbers.create.fixed"},
		{"auth token", request("GET", "/2010-04-01/Accounts/AC1.json", nil), keybrake.CodeOperationForbidden, "auth_token"},
		{"api key", request("POST", "/2010-04-01/Accounts/AC1/Keys.json", form("FriendlyName", "x")), keybrake.CodeOperationForbidden, "bypassing Keybrake"},
		{"api key without extension", request("POST", "/2010-04-01/Accounts/AC1/Keys", form("FriendlyName", "x")), keybrake.CodeOperationForbidden, "bypassing Keybrake"},
		{"list accounts", request("GET", "/2010-04-01/Accounts.json", nil), keybrake.CodeOperationForbidden, "auth_token"},
		{"recordings", request("POST", "/2010-04-01/Accounts/AC1/Calls/CA1/Recordings.json", form()), keybrake.CodeUnknownOperation, ""},
	}
	for _, c := range cases {
		_, _, _, err := quote(v, c.req)
		if keybrake.ErrorCode(err) != c.code || !strings.Contains(err.Error(), c.substr) {
			t.Errorf("%s: err = %v, want %s mentioning %q", c.name, err, c.code, c.substr)
		}
	}
}

func TestCallQuotes(t *testing.T) {
	v := newVendor(t, `operations:
  twilio.calls.create:
    per_minute: {countries: {GB: "0.10"}}
    default_time_limit: 10m
    remote_twiml: {max_legs: 3, extra_leg_per_minute: "0.20"}
`)
	calls := "/2010-04-01/Accounts/AC1/Calls.json"
	dial := func(n string) string { return "<Response><Say>hi</Say><Dial>" + n + "</Dial></Response>" }
	cases := []struct {
		name        string
		path        string
		body        []byte
		amount      string
		step, floor string // a flexible reservation; "" for an exact one
	}{
		{"time limit rounds up", calls, form("To", "+15551234567", "Twiml", "<Response><Say>hi</Say></Response>", "TimeLimit", "61"), "0.03", "", ""},
		{"one hour", calls, form("To", "+15551234567", "Twiml", "<Response/>", "TimeLimit", "3600"), "0.90", "", ""},
		{"default, flexible", calls, form("To", "+15551234567", "Twiml", "<Response/>"), "0.15", "0.015", "0.015"},
		{"dial a second leg", calls, form("To", "+15551234567", "Twiml", dial("+447700900123"), "TimeLimit", "60"), "0.115", "", ""},
		{"dial a number element", calls, form("To", "+15551234567", "Twiml", "<Response><Dial><Number>+447700900123</Number></Dial></Response>", "TimeLimit", "120"), "0.23", "", ""},
		{"record and amd", calls, form("To", "+15551234567", "Twiml", "<Response/>", "Record", "true", "MachineDetection", "Enable", "TimeLimit", "60"), "0.025", "", ""},
		{"remote twiml vouched for", calls, form("To", "+15551234567", "Url", "https://x", "TimeLimit", "60"), "0.415", "", ""},
		{"participant", "/2010-04-01/Accounts/AC1/Conferences/CF1/Participants.json", form("To", "+15551234567", "From", "+15550000000", "TimeLimit", "60"), "0.017", "", ""},
		{"participant default", "/2010-04-01/Accounts/AC1/Conferences/CF1/Participants", form("To", "+15551234567", "From", "+15550000000"), "0.17", "0.017", "0.017"},
		{"end a call", "/2010-04-01/Accounts/AC1/Calls/CA1.json", form("Status", "completed"), "0", "", ""},
	}
	for _, c := range cases {
		q, p, _, err := quote(v, request("POST", c.path, c.body))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		want, _ := keybrake.ParseUSD(c.amount)
		step, _ := keybrake.ParseUSD(c.step)
		floor, _ := keybrake.ParseUSD(c.floor)
		if q.Amount != want || q.Step != step || q.Floor != floor {
			t.Errorf("%s: amount %v step %v floor %v, want %s %s %s", c.name, q.Amount, q.Step, q.Floor, c.amount, c.step, c.floor)
		}
		if (c.step != "") != (q.Finalize != nil) {
			t.Errorf("%s: finalize %v", c.name, q.Finalize != nil)
		}
		if q.Finalize != nil {
			// Reserved three minutes out of ten: the call is told to stop after three.
			body, err := q.Finalize(3 * step)
			if err != nil || !strings.HasPrefix(string(body), string(p.Body)) || !strings.HasSuffix(string(body), "&TimeLimit=180") {
				t.Errorf("%s: finalized body %q (%v)", c.name, body, err)
			}
		}
	}
}

func TestTwiML(t *testing.T) {
	ok := map[string]TwiMLPlan{
		`<Response/>`: {},
		`<?xml version="1.0" encoding="UTF-8"?><Response><Say voice="alice">Hello <break time="1s"/><prosody rate="slow"><emphasis>you</emphasis></prosody></Say><Pause length="2"/><Play>https://x/a.mp3</Play><Hangup/></Response>`: {},
		`<Response><Gather numDigits="1" input="dtmf"><Say>Press 1</Say></Gather></Response>`:                                                               {},
		`<Response><Record maxLength="30"/></Response>`:                                                                                                     {Recordings: 1},
		`<Response><Dial record="record-from-answer" timeLimit="60" callerId="+15550000000"><Number sendDigits="1">+15550000001</Number></Dial></Response>`: {Dial: []string{"+15550000001"}, Recordings: 1},
		`<Response><Dial> +15550000001 </Dial><Say>bye</Say></Response>`:                                                                                    {Dial: []string{"+15550000001"}},
		`<Response><!-- a comment --><Dial><Number machineDetection="Enable">+15550000001</Number></Dial></Response>`:                                       {Dial: []string{"+15550000001"}, AMD: true},
	}
	for doc, want := range ok {
		got, err := ReadTwiML(doc)
		if err != nil {
			t.Errorf("%s: %v", doc, err)
			continue
		}
		if strings.Join(got.Dial, ",") != strings.Join(want.Dial, ",") || got.Recordings != want.Recordings || got.AMD != want.AMD {
			t.Errorf("%s: %+v, want %+v", doc, got, want)
		}
	}
	bad := map[string]string{
		`<Response><Dial><Number>+15550000001</Number><Number>+15550000002</Number></Dial></Response>`: "exactly one number",
		`<Response><Dial>+15550000001</Dial><Dial>+15550000002</Dial></Response>`:                      "more than one <Dial>",
		`<Response><Dial><Conference>x</Conference></Dial></Response>`:                                 "<Dial><Conference>",
		`<Response><Dial><Sip>sip:a@b</Sip></Dial></Response>`:                                         "<Dial><Sip>",
		`<Response><Dial><Client>joe</Client></Dial></Response>`:                                       "<Dial><Client>",
		`<Response><Dial><Number>+15550000001</Number>+15550000002</Dial></Response>`:                  "exactly one number",
		`<Response><Dial><Number url="https://x/whisper">+15550000001</Number></Dial></Response>`:      "url",
		`<Response><Dial action="https://x/next">+15550000001</Dial></Response>`:                       "action",
		`<Response><Enqueue>q</Enqueue></Response>`:                                                    "<Enqueue>",
		`<Response><Redirect>https://x</Redirect></Response>`:                                          "<Redirect>",
		`<Response><Connect><Stream url="wss://x"/></Connect></Response>`:                              "<Connect>",
		`<Response><dial>+15550000001</dial></Response>`:                                               "<dial>",
		`<Response><Gather action="https://x"><Say>x</Say></Gather></Response>`:                        "action",
		`<Response><Gather input="speech"/></Response>`:                                                "speech",
		`<Response><Gather><Dial>+15550000001</Dial></Gather></Response>`:                              "<Dial> is refused",
		`<Response><Gather/><Dial>+15550000001</Dial></Response>`:                                      "run the document again",
		`<Response><Record transcribe="true"/></Response>`:                                             "transcribe",
		`<Response><Say><Dial>+15550000001</Dial></Say></Response>`:                                    "not SSML",
		`<Response><Dial>+1 555</Dial></Response>`:                                                     "E.164",
		`<Response><Sms to="+15550000001">hi</Sms></Response>`:                                         "<Sms>",
		`<!DOCTYPE x [<!ENTITY a "b">]><Response/>`:                                                    "directives",
		`<Response/><Response/>`:                                                                       "one <Response>",
		`<Say>hi</Say>`:                                                                                "one <Response>",
		`<Response>hello</Response>`:                                                                   "text directly",
		`<Response><Say>`:                                                                              "XML",
		`not xml`:                                                                                      "",
		`<x:Response xmlns:x="y"/>`:                                                                    "one <Response>",
		`<Response>` + strings.Repeat("<Say>", 9) + strings.Repeat("</Say>", 9) + `</Response>`:        "not SSML",
		`<Response>` + strings.Repeat(" ", 4000) + `</Response>`:                                       "longer than",
	}
	for doc, substr := range bad {
		_, err := ReadTwiML(doc)
		if keybrake.ErrorCode(err) != keybrake.CodeUnpriceableRequest || !strings.Contains(err.Error(), substr) {
			t.Errorf("%.60s: err = %v, want unpriceable_request mentioning %q", doc, err, substr)
		}
	}
}

// FuzzTwiML: no document panics the reader; one it accepts dials at most
// one valid number, and carries no verb outside the priced set.
func FuzzTwiML(f *testing.F) {
	for _, s := range []string{`<Response/>`, `<Response><Dial>+15550000001</Dial></Response>`,
		`<Response><Dial><Number>+15550000001</Number></Dial></Response>`, `<Response><Gather><Say>x</Say></Gather></Response>`,
		`<Response><Dial><Conference>x</Conference></Dial></Response>`, `<Response><Say>a<break/></Say></Response>`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		plan, err := ReadTwiML(doc)
		if err != nil {
			if keybrake.ErrorCode(err) != keybrake.CodeUnpriceableRequest {
				t.Fatalf("code %s", keybrake.ErrorCode(err))
			}
			return
		}
		if len(plan.Dial) > 1 {
			t.Fatalf("%d legs accepted", len(plan.Dial))
		}
		for _, n := range plan.Dial {
			if !pricing.ValidE164(n) {
				t.Fatalf("dials %q", n)
			}
		}
		for _, verb := range []string{"<Conference", "<Enqueue", "<Redirect", "<Connect", "<Sip", "<Client", "<Queue"} {
			if strings.Contains(doc, verb) && !strings.Contains(doc, "<![CDATA[") && !strings.Contains(doc, "<!--") {
				t.Fatalf("accepted a document with %s", verb)
			}
		}
	})
}

// FuzzCallQuote: a call is refused or quoted at least one minute of its
// destination's rate, and a flexible quote's finalized body carries exactly
// one TimeLimit no longer than what was reserved.
func FuzzCallQuote(f *testing.F) {
	f.Add(string(form("To", "+15551234567", "Twiml", "<Response/>")))
	f.Add(string(form("To", "+15551234567", "Twiml", "<Response/>", "TimeLimit", "90")))
	f.Add(string(form("To", "+15551234567", "Twiml", "<Response><Dial>+12045551234</Dial></Response>")))
	f.Add("To=%2B15551234567&Twiml=%3CResponse%2F%3E&timelimit=99999")
	v := newVendor(f)
	f.Fuzz(func(t *testing.T, body string) {
		q, _, _, err := quote(v, request("POST", "/2010-04-01/Accounts/AC1/Calls.json", []byte(body)))
		if err != nil {
			if keybrake.ErrorCode(err) != keybrake.CodeUnpriceableRequest {
				t.Fatalf("code %s: %v", keybrake.ErrorCode(err), err)
			}
			return
		}
		if q.Amount < 15000 {
			t.Fatalf("a call quoted at %v", q.Amount)
		}
		if q.Finalize == nil {
			return
		}
		for steps := int64(1); steps <= 3; steps++ {
			out, err := q.Finalize(q.Floor + keybrake.Micros(steps-1)*q.Step)
			if err != nil {
				t.Fatal(err)
			}
			f, err := url.ParseQuery(string(out))
			if err != nil || len(f["TimeLimit"]) != 1 || f.Get("TimeLimit") != strconv.FormatInt(steps*60, 10) {
				t.Fatalf("finalized %q for %d minutes", out, steps)
			}
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
	for in, want := range map[string]string{
		"/2010-04-01/Accounts/ACx.json":              "/2010-04-01/Accounts/" + realSID + ".json",
		"/2010-04-01/Accounts/ACx.xml":               "/2010-04-01/Accounts/" + realSID + ".xml",
		"/2010-04-01/Accounts/ACx":                   "/2010-04-01/Accounts/" + realSID,
		"/2010-04-01/Accounts.json":                  "/2010-04-01/Accounts.json",
		"/2010-04-01/Accounts/ACx/Messages/SM1.json": "/2010-04-01/Accounts/" + realSID + "/Messages/SM1.json",
	} {
		if got := v.upstreamPath(in); got != want {
			t.Errorf("upstreamPath(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestSettleMessage(t *testing.T) {
	v := newVendor(t)
	q, _, _, err := quote(v, request("POST", msgPath, form("To", "+15551234567", "Body", "hi")))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		body   string
		actual keybrake.Micros
		ok     bool
	}{
		{`{"sid":"SM1","price":null,"price_unit":"USD"}`, 0, false},
		{`{"sid":"SM1","price":"-0.00790","price_unit":"USD"}`, 7900, true},
		{`{"sid":"SM1","price":"-0.0000001","price_unit":"USD"}`, 1, true}, // rounds up
		{`{"sid":"SM1","price":-0.0079,"price_unit":"USD"}`, 7900, true},
		{`{"sid":"SM1","price":"-0.01","price_unit":"EUR"}`, 11000, true},
		{`{"sid":"SM1","price":"-0.01","price_unit":"BRL"}`, 0, false}, // no rate
		{`{"sid":"SM1","price":"abc"}`, 0, false},
		{`<TwilioResponse><Message><Sid>SM1</Sid></Message></TwilioResponse>`, 0, false}, // an .xml answer: the estimate stands
		{`not json`, 0, false},
	}
	for _, c := range cases {
		a, ok := q.Settle(&keybrake.VendorResponse{Status: 201, Body: []byte(c.body)})
		if a != c.actual || ok != c.ok {
			t.Errorf("%s: Settle = %v %v, want %v %v", c.body, a, ok, c.actual, c.ok)
		}
	}
	if id := v.ObjectID(&keybrake.VendorResponse{Body: []byte(`{"sid":"SM1"}`)}); id != "SM1" {
		t.Errorf("sid %q", id)
	}
}
