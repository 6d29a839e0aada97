package stripe

import (
	"net/http"
	"strings"
	"testing"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/pricing"
)

func formReq(method, path, body string) *keybrake.VendorRequest {
	return &keybrake.VendorRequest{Method: method, Path: path, Header: http.Header{"Content-Type": {formType}}, Body: []byte(body)}
}

func vendorWith(t *testing.T, file string) *Vendor {
	t.Helper()
	tb := pricing.Default()
	if err := tb.Apply("p.yaml", []byte(file)); err != nil {
		t.Fatal(err)
	}
	v, err := New("", "sk_test_x", tb.FX)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.SetEndpointPrices(tb.Stripe.Endpoints); err != nil {
		t.Fatal(err)
	}
	return v
}

// Without a pricing file nothing changes: amounts price money endpoints,
// everything else is free.
func TestNoEndpointPricesKeepsBehaviour(t *testing.T) {
	v := vendorWith(t, "")
	p, err := v.Prepare(formReq("POST", "/v1/payment_intents", "amount=1234&currency=usd"))
	if err != nil || p.Estimate != 12_340_000 || !p.Priced {
		t.Fatalf("%+v %v", p, err)
	}
	a, id, ok := v.Settle(p, &keybrake.VendorResponse{Status: 200, Body: []byte(`{"id":"pi_1","amount":1000,"currency":"usd"}`)})
	if a != 10_000_000 || id != "pi_1" || !ok {
		t.Errorf("settle %v %q %v", a, id, ok)
	}
	p, err = v.Prepare(formReq("POST", "/v1/customers", "email=a%40x.com"))
	if err != nil || p.Estimate != 0 || p.Priced {
		t.Fatalf("%+v %v", p, err)
	}
	if a, id, ok := v.Settle(p, &keybrake.VendorResponse{Status: 200, Body: []byte(`{"id":"cus_1"}`)}); a != 0 || id != "cus_1" || !ok {
		t.Errorf("settle %v %q %v", a, id, ok)
	}
}

func TestEndpointPrices(t *testing.T) {
	v := vendorWith(t, `stripe:
  endpoints:
    "POST /v1/customers": "0.01"
    "POST /v1/payment_intents": "0.30"
    "GET /v1/balance": "0.000001"
`)
	p, err := v.Prepare(formReq("POST", "/v1/customers", "email=a%40x.com"))
	if err != nil || p.Estimate != 10_000 || !p.Priced {
		t.Fatalf("customers: %+v %v", p, err)
	}
	if a, id, ok := v.Settle(p, &keybrake.VendorResponse{Status: 200, Body: []byte(`{"id":"cus_1"}`)}); a != 10_000 || id != "cus_1" || !ok {
		t.Errorf("customers settle %v %q %v", a, id, ok)
	}
	// An unreadable answer: the estimate (the fixed price) stands.
	if _, _, ok := v.Settle(p, &keybrake.VendorResponse{Status: 200, Body: []byte(`<html>`)}); ok {
		t.Error("unreadable answer settled")
	}
	p, err = v.Prepare(formReq("POST", "/v1/payment_intents", "amount=1000&currency=usd"))
	if err != nil || p.Estimate != 10_300_000 {
		t.Fatalf("payment intent: %+v %v", p, err)
	}
	if a, _, ok := v.Settle(p, &keybrake.VendorResponse{Status: 200, Body: []byte(`{"id":"pi_1","amount":500,"currency":"usd"}`)}); a != 5_300_000 || !ok {
		t.Errorf("payment intent settle %v %v", a, ok)
	}
	p, err = v.Prepare(&keybrake.VendorRequest{Method: "GET", Path: "/v1/balance", Header: http.Header{}})
	if err != nil || p.Estimate != 1 {
		t.Fatalf("balance: %+v %v", p, err)
	}
	// Priced endpoints still refuse what they cannot price.
	if _, err := v.Prepare(formReq("POST", "/v1/payment_intents", "currency=usd")); keybrake.ErrorCode(err) != keybrake.CodeUnpriceableRequest {
		t.Errorf("missing amount: %v", err)
	}
}

func TestEndpointPricesMustBeStripePaths(t *testing.T) {
	tb := pricing.Default()
	if err := tb.Apply("p.yaml", []byte("stripe:\n  endpoints:\n    \"POST /emails\": 1\n")); err != nil {
		t.Fatal(err)
	}
	v, _ := New("", "sk", nil)
	if err := v.SetEndpointPrices(tb.Stripe.Endpoints); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("err = %v", err)
	}
}
