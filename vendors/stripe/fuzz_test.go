package stripe

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/pricing"
)

func fuzzVendor(t testing.TB) *Vendor {
	fx := pricing.DefaultFX()
	if err := fx.ParseFXList("EUR=1.10,JPY=0.0067,KWD=3.25"); err != nil {
		t.Fatal(err)
	}
	v, err := New("http://127.0.0.1:1", "sk_test_123", fx)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// FuzzPrepare: whatever body arrives on a money-moving endpoint, Prepare
// either refuses with a pricing code, or prices it, and then the body it
// forwards is form encoding in which amount and currency are exactly the
// ones it priced. A priced call is never forwarded with an amount that was
// not the one reserved.
func FuzzPrepare(f *testing.F) {
	for _, s := range []struct{ ct, body string }{
		{"application/x-www-form-urlencoded", "amount=100&currency=usd"},
		{"application/x-www-form-urlencoded", "amount=1&amount=100000&currency=usd"},
		{"application/x-www-form-urlencoded", "amount=100&currency=jpy&metadata[x]=1"},
		{"application/json", `{"amount":100,"currency":"usd","customer":"cus_1"}`},
		{"application/json", `{"amount":100,"currency":"eur","metadata":{"amount":"999999"}}`},
		{"application/json", `{"amount":"100","currency":"usd","amount[x]":1}`},
		{"application/json", `{"amount":1e3,"currency":"usd"}`},
		{"application/json", `[{"amount":100}]`},
		{"", "amount=100&currency=kwd"},
		{"text/plain", "amount=100&currency=usd"},
	} {
		f.Add(s.ct, s.body)
	}
	v := fuzzVendor(f)
	f.Fuzz(func(t *testing.T, ct, body string) {
		h := http.Header{}
		h.Set("Content-Type", ct)
		p, err := v.Prepare(&keybrake.VendorRequest{Method: "POST", Path: "/v1/payment_intents", Header: h, Body: []byte(body)})
		if err != nil {
			switch keybrake.ErrorCode(err) {
			case keybrake.CodeUnpriceableRequest, keybrake.CodeCurrencyNotPriced:
				return
			default:
				t.Fatalf("refused with %s: %v", keybrake.ErrorCode(err), err)
			}
		}
		if !p.Priced || p.Estimate < 0 {
			t.Fatalf("priced=%v estimate=%d", p.Priced, p.Estimate)
		}
		form, err := url.ParseQuery(string(p.Body))
		if err != nil {
			t.Fatalf("forwarded body %q is not form encoding: %v", p.Body, err)
		}
		if len(form["amount"]) != 1 || len(form["currency"]) != 1 {
			t.Fatalf("forwarded body %q must carry exactly one amount and currency", p.Body)
		}
		minor, ok := parseMinor(form.Get("amount"))
		if !ok {
			t.Fatalf("forwarded amount %q is not what was priced", form.Get("amount"))
		}
		want, err := v.fx.ToMicros(minor, Exponent(form.Get("currency")), form.Get("currency"))
		if err != nil || want != p.Estimate {
			t.Fatalf("forwarded %q prices at %d (%v), reserved %d", p.Body, want, err, p.Estimate)
		}
	})
}

// FuzzSettle: any answer body yields either "unreadable" (the estimate
// stands) or a non-negative cost; never a panic.
func FuzzSettle(f *testing.F) {
	for _, s := range []string{
		`{"id":"pi_1","amount":100,"currency":"usd"}`, `{"id":"pi_1","amount":-5,"currency":"usd"}`,
		`{"amount":1e99,"currency":"usd"}`, `{"amount":100,"currency":"xyz"}`, `not json`, `{"amount":"100"}`,
	} {
		f.Add(s)
	}
	v := fuzzVendor(f)
	p, err := v.Prepare(&keybrake.VendorRequest{Method: "POST", Path: "/v1/payment_intents",
		Header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, Body: []byte("amount=100&currency=usd")})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body string) {
		m, _, ok := v.Settle(p, &keybrake.VendorResponse{Status: 200, Body: []byte(body)})
		if ok && m < 0 {
			t.Fatalf("negative cost %d from %q", m, body)
		}
	})
}
