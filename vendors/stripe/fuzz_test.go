package stripe

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
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

func pricingCode(err error) bool {
	switch keybrake.ErrorCode(err) {
	case keybrake.CodeUnpriceableRequest, keybrake.CodeCurrencyNotPriced, keybrake.CodeLookupFailed, keybrake.CodeRequestTooLarge:
		return true
	}
	return false
}

// FuzzPrepare: whatever body arrives on payment_intents.create, Keybrake
// either refuses it with a pricing code, or prices it, and then the body it
// forwards is form encoding in which amount and currency are exactly the
// ones it priced. A priced call is never forwarded with an amount that was
// not the one reserved.
func FuzzPrepare(f *testing.F) {
	for _, s := range []struct{ ct, body string }{
		{"application/x-www-form-urlencoded", "amount=100&currency=usd"},
		{"application/x-www-form-urlencoded", "amount=1&amount=100000&currency=usd"},
		{"application/x-www-form-urlencoded", "amount=100&currency=jpy&metadata[x]=1"},
		{"application/x-www-form-urlencoded", "amount=100&Amount=99999&currency=usd"},
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
		q, p, err := quote(v, "POST", "/v1/payment_intents", h, []byte(body), nil)
		if err != nil {
			if !pricingCode(err) {
				t.Fatalf("refused with %s: %v", keybrake.ErrorCode(err), err)
			}
			return
		}
		form, err := url.ParseQuery(string(p.Body))
		if err != nil {
			t.Fatalf("forwarded body %q is not form encoding: %v", p.Body, err)
		}
		// What the pricer read is exactly what the body forwarded says.
		if !reflect.DeepEqual(form, p.Form) && (len(form) != 0 || len(p.Form) != 0) {
			t.Fatalf("forwarded %q parses as %v, priced from %v", p.Body, form, p.Form)
		}
		if len(form["amount"]) != 1 || len(form["currency"]) != 1 {
			t.Fatalf("forwarded body %q must carry exactly one amount and currency", p.Body)
		}
		minor, ok := pricing.ParseMinor(form.Get("amount"), false)
		if !ok {
			t.Fatalf("forwarded amount %q is not what was priced", form.Get("amount"))
		}
		want, err := v.fx.ToMicros(minor, Exponent(form.Get("currency")), form.Get("currency"))
		if err != nil || want != q.Amount {
			t.Fatalf("forwarded %q prices at %d (%v), reserved %d", p.Body, want, err, q.Amount)
		}
	})
}

// FuzzPIExposure: an update or confirm of a PaymentIntent, whatever its body
// and whatever the lookup answers, is refused with a pricing code or quoted
// as an exposure of that very PaymentIntent, at exactly the amount the
// forwarded body names (update) or the PaymentIntent holds (confirm).
func FuzzPIExposure(f *testing.F) {
	f.Add(false, "amount=5000&currency=usd", `{"id":"pi_1","object":"payment_intent","amount":100,"currency":"usd"}`)
	f.Add(false, "amount=5000", `{}`)
	f.Add(false, "metadata[a]=1", `{}`)
	f.Add(true, "", `{"id":"pi_1","object":"payment_intent","amount":99999900,"currency":"usd"}`)
	f.Add(true, "", `{"id":"pi_2","object":"payment_intent","amount":1,"currency":"usd"}`)
	f.Add(true, "", `{"id":"pi_1","object":"charge","amount":1,"currency":"usd"}`)
	f.Add(true, "", `{"id":"pi_1","object":"payment_intent","amount":-1,"currency":"usd"}`)
	f.Add(true, "", `{"id":"pi_1","object":"payment_intent","amount":1,"currency":"xyz"}`)
	v := fuzzVendor(f)
	f.Fuzz(func(t *testing.T, confirm bool, body, fetched string) {
		path := "/v1/payment_intents/pi_1"
		if confirm {
			path += "/confirm"
		}
		h := http.Header{"Content-Type": {formType}}
		q, p, err := quote(v, "POST", path, h, []byte(body), fetcher{"/v1/payment_intents/pi_1": {200, fetched}})
		if err != nil {
			if !pricingCode(err) {
				t.Fatalf("refused with %s: %v", keybrake.ErrorCode(err), err)
			}
			return
		}
		form, _ := url.ParseQuery(string(p.Body))
		if !confirm && form.Get("amount") == "" && form.Get("currency") == "" {
			if q.Amount != 0 {
				t.Fatalf("an update without amount priced at %d", q.Amount)
			}
			return
		}
		if !q.Exposure || q.ObjectID != "pi_1" || q.Amount < 0 {
			t.Fatalf("quote %+v", q)
		}
		var minor int64
		var cur string
		if confirm {
			var pi struct {
				Amount   int64  `json:"amount"`
				Currency string `json:"currency"`
			}
			if json.Unmarshal([]byte(fetched), &pi) != nil {
				t.Fatalf("priced from an unreadable PaymentIntent %q", fetched)
			}
			minor, cur = pi.Amount, pi.Currency
		} else {
			n, err := strconv.ParseInt(form.Get("amount"), 10, 64)
			if err != nil || len(form["amount"]) != 1 || len(form["currency"]) != 1 {
				t.Fatalf("forwarded %q priced at %d", p.Body, q.Amount)
			}
			minor, cur = n, form.Get("currency")
		}
		want, err := v.fx.ToMicros(minor, Exponent(cur), cur)
		if err != nil || want != q.Amount {
			t.Fatalf("%s %q / %q: want %d (%v), quoted %d", path, body, fetched, want, err, q.Amount)
		}
	})
}

// FuzzSettle: any answer body yields either "unreadable" (the reservation
// stands) or a non-negative cost; never a panic.
func FuzzSettle(f *testing.F) {
	for _, s := range []string{
		`{"id":"pi_1","amount":100,"currency":"usd"}`, `{"id":"pi_1","amount":-5,"currency":"usd"}`,
		`{"amount":1e99,"currency":"usd"}`, `{"amount":100,"currency":"xyz"}`, `not json`, `{"amount":"100"}`,
	} {
		f.Add(s)
	}
	v := fuzzVendor(f)
	q, _, err := quote(v, "POST", "/v1/payment_intents", http.Header{"Content-Type": {formType}}, []byte("amount=100&currency=usd"), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body string) {
		m, ok := q.Settle(&keybrake.VendorResponse{Status: 200, Body: []byte(body)})
		if ok && m < 0 {
			t.Fatalf("negative cost %d from %q", m, body)
		}
	})
}

// fetcher answers lookups from a table: path → status and body.
type fetcher map[string]struct {
	status int
	body   string
}

func (f fetcher) Fetch(_ context.Context, path string) ([]byte, error) {
	a, ok := f[path]
	if !ok {
		return nil, &keybrake.FetchError{Path: path, Status: 404, Body: []byte(`{"error":{"message":"No such object"}}`)}
	}
	if a.status == 0 {
		return nil, context.DeadlineExceeded
	}
	if a.status >= 300 {
		return nil, &keybrake.FetchError{Path: path, Status: a.status, Body: []byte(a.body)}
	}
	return []byte(a.body), nil
}

// quote runs a request through what the proxy does before reserving:
// the body checks, the vendor's encoding, the catalogue, the operation's
// price.
func quote(v *Vendor, method, path string, h http.Header, body []byte, f keybrake.Fetcher) (*keybrake.Quote, *keybrake.Prepared, error) {
	req := &keybrake.VendorRequest{Method: method, Path: path, Header: h, Body: body}
	if err := keybrake.CheckBody(req); err != nil {
		return nil, nil, err
	}
	p, err := v.Prepare(req)
	if err != nil {
		return nil, nil, err
	}
	op, params := v.Catalog().Resolve(method, path)
	if op == nil {
		return nil, nil, keybrake.Errorf(keybrake.CodeUnknownOperation, "%s %s", method, path)
	}
	q, err := op.Quote(context.Background(), &keybrake.PriceCall{Method: method, Path: path, Params: params, Header: h,
		Body: p.Body, Form: p.Form, Fetch: f})
	return q, p, err
}
