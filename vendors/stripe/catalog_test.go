package stripe

import (
	"net/http"
	"strings"
	"testing"

	"github.com/keybrake/keybrake"
)

var formHeader = http.Header{"Content-Type": {formType}}

const (
	pi100   = `{"id":"pi_1","object":"payment_intent","amount":10000,"amount_capturable":6000,"amount_received":0,"currency":"usd"}`
	piEUR   = `{"id":"pi_e","object":"payment_intent","amount":1000,"amount_received":1000,"currency":"eur"}`
	ch50    = `{"id":"ch_1","object":"charge","amount":5000,"amount_captured":5000,"amount_refunded":1500,"currency":"usd"}`
	inv     = `{"id":"in_1","object":"invoice","amount_remaining":4200,"currency":"jpy"}`
	tr      = `{"id":"tr_1","object":"transfer","amount":9000,"amount_reversed":1000,"currency":"usd"}`
	notAnPI = `{"id":"pi_1","object":"list"}`
)

var objects = fetcher{
	"/v1/payment_intents/pi_1":    {200, pi100},
	"/v1/payment_intents/pi_e":    {200, piEUR},
	"/v1/payment_intents/pi_x":    {200, notAnPI},
	"/v1/payment_intents/pi_down": {0, ""},
	"/v1/payment_intents/pi_5xx":  {503, `{"error":{"message":"try later"}}`},
	"/v1/charges/ch_1":            {200, ch50},
	"/v1/charges/ch_untyped":      {200, `{"id":"ch_untyped","amount":5000,"amount_refunded":1500,"currency":"usd"}`},
	"/v1/invoices/in_1":           {200, inv},
	"/v1/transfers/tr_1":          {200, tr},
}

// Every money-moving Stripe operation: what it reserves, whether as an
// exposure of the object it acts on, and what its answer settles.
func TestQuotes(t *testing.T) {
	v := fuzzVendor(t)
	cases := []struct {
		name, method, path, body string
		amount                   string
		object                   string // the exposure's object, "" for none
	}{
		{"pi create", "POST", "/v1/payment_intents", "amount=1234&currency=usd", "12.34", ""},
		{"pi create yen", "POST", "/v1/payment_intents", "amount=1000&currency=jpy", "6.70", ""},
		{"pi create dinar", "POST", "/v1/payment_intents", "amount=1000&currency=kwd", "3.25", ""},
		{"pi update to more", "POST", "/v1/payment_intents/pi_1", "amount=99999900&currency=usd", "999999.00", "pi_1"},
		{"pi update metadata", "POST", "/v1/payment_intents/pi_1", "metadata[a]=b", "0", ""},
		{"pi confirm", "POST", "/v1/payment_intents/pi_1/confirm", "payment_method=pm_card_visa", "100.00", "pi_1"},
		{"pi confirm in eur", "POST", "/v1/payment_intents/pi_e/confirm", "", "11.00", "pi_e"},
		{"pi capture all", "POST", "/v1/payment_intents/pi_1/capture", "", "60.00", "pi_1"},
		{"pi capture some", "POST", "/v1/payment_intents/pi_1/capture", "amount_to_capture=2500", "25.00", "pi_1"},
		{"pi increment", "POST", "/v1/payment_intents/pi_1/increment_authorization", "amount=20000", "200.00", "pi_1"},
		{"pi apply balance", "POST", "/v1/payment_intents/pi_1/apply_customer_balance", "", "100.00", "pi_1"},
		{"pi verify microdeposits", "POST", "/v1/payment_intents/pi_1/verify_microdeposits", "amounts[0]=32&amounts[1]=45", "100.00", "pi_1"},
		{"pi cancel", "POST", "/v1/payment_intents/pi_1/cancel", "", "0", ""},
		{"charge create", "POST", "/v1/charges", "amount=700&currency=usd&source=tok_visa", "7.00", ""},
		{"charge capture all", "POST", "/v1/charges/ch_1/capture", "", "50.00", "ch_1"},
		{"charge capture some", "POST", "/v1/charges/ch_1/capture", "amount=100", "1.00", "ch_1"},
		{"charge refund the rest", "POST", "/v1/charges/ch_1/refunds", "", "35.00", ""},
		{"charge refund some", "POST", "/v1/charges/ch_1/refunds", "amount=500", "5.00", ""},
		{"deprecated charge refund", "POST", "/v1/charges/ch_1/refund", "", "35.00", ""},
		{"refund the rest of a charge", "POST", "/v1/refunds", "charge=ch_1", "35.00", ""},
		{"refund the rest of an untyped charge", "POST", "/v1/refunds", "charge=ch_untyped", "35.00", ""},
		{"refund of a payment intent", "POST", "/v1/refunds", "payment_intent=pi_e", "11.00", ""},
		{"refund some of a payment intent", "POST", "/v1/refunds", "payment_intent=pi_e&amount=100", "1.10", ""},
		{"refund from a cash balance", "POST", "/v1/refunds", "customer=cus_1&origin=customer_balance&amount=300&currency=usd", "3.00", ""},
		{"invoice pay", "POST", "/v1/invoices/in_1/pay", "", "28.14", ""},
		{"invoice item", "POST", "/v1/invoiceitems", "customer=cus_1&amount=-2500&currency=usd", "25.00", ""},
		{"invoice item by unit", "POST", "/v1/invoiceitems", "customer=cus_1&unit_amount=250&quantity=4&currency=usd", "10.00", ""},
		{"customer balance", "POST", "/v1/customers/cus_1/balance_transactions", "amount=-5000&currency=usd", "50.00", ""},
		{"transfer", "POST", "/v1/transfers", "amount=900&currency=usd&destination=acct_1", "9.00", ""},
		{"transfer reversal rest", "POST", "/v1/transfers/tr_1/reversals", "", "80.00", ""},
		{"transfer reversal some", "POST", "/v1/transfers/tr_1/reversals", "amount=100", "1.00", ""},
		{"payout", "POST", "/v1/payouts", "amount=5000000&currency=usd", "50000.00", ""},
		{"topup", "POST", "/v1/topups", "amount=5000000&currency=usd", "50000.00", ""},
		{"treasury payment", "POST", "/v1/treasury/outbound_payments", "amount=1000&currency=usd&financial_account=fa_1", "10.00", ""},
		{"customer create", "POST", "/v1/customers", "email=a%40b.c", "0", ""},
		{"invoice create", "POST", "/v1/invoices", "customer=cus_1&auto_advance=false", "0", ""},
		{"balance", "GET", "/v1/balance", "", "0", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := formHeader
			if c.method == "GET" {
				h = http.Header{}
			}
			q, _, err := quote(v, c.method, c.path, h, []byte(c.body), objects)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := keybrake.ParseUSD(c.amount)
			if q.Amount != want {
				t.Errorf("amount %s, want %s", q.Amount, c.amount)
			}
			if q.Exposure != (c.object != "") || q.ObjectID != c.object && c.object != "" {
				t.Errorf("exposure %v of %q, want %q", q.Exposure, q.ObjectID, c.object)
			}
		})
	}
}

func TestQuoteRefusals(t *testing.T) {
	v := fuzzVendor(t)
	cases := []struct {
		name, method, path, body string
		code                     keybrake.Code
		substr                   string
	}{
		{"amount missing", "POST", "/v1/payment_intents", "currency=usd", keybrake.CodeUnpriceableRequest, "amount is required"},
		{"amount twice", "POST", "/v1/payment_intents", "amount=1&amount=100000&currency=usd", keybrake.CodeUnpriceableRequest, "more than once"},
		{"amount in capitals", "POST", "/v1/payment_intents", "amount=1&Amount=100000&currency=usd", keybrake.CodeUnpriceableRequest, `write it "amount"`},
		{"negative amount", "POST", "/v1/payment_intents", "amount=-100&currency=usd", keybrake.CodeUnpriceableRequest, "integer"},
		{"currency missing", "POST", "/v1/charges", "amount=100", keybrake.CodeUnpriceableRequest, "currency is required"},
		{"currency unpriced", "POST", "/v1/transfers", "amount=100&currency=gbp", keybrake.CodeCurrencyNotPriced, "gbp"},
		{"update amount alone", "POST", "/v1/payment_intents/pi_1", "amount=99999900", keybrake.CodeUnpriceableRequest, "must name both"},
		{"update currency alone", "POST", "/v1/payment_intents/pi_1", "currency=kwd", keybrake.CodeUnpriceableRequest, "must name both"},
		{"confirm unknown pi", "POST", "/v1/payment_intents/pi_404/confirm", "", keybrake.CodeUnpriceableRequest, "answered 404 (No such object)"},
		{"confirm wrong object", "POST", "/v1/payment_intents/pi_x/confirm", "", keybrake.CodeUnpriceableRequest, "did not answer the payment_intent"},
		{"confirm vendor down", "POST", "/v1/payment_intents/pi_down/confirm", "", keybrake.CodeLookupFailed, "could not read"},
		{"confirm vendor 503", "POST", "/v1/payment_intents/pi_5xx/confirm", "", keybrake.CodeLookupFailed, "could not read"},
		{"increment without amount", "POST", "/v1/payment_intents/pi_1/increment_authorization", "", keybrake.CodeUnpriceableRequest, "amount is required"},
		{"refund of both", "POST", "/v1/refunds", "charge=ch_1&payment_intent=pi_1", keybrake.CodeUnpriceableRequest, "either"},
		{"refund of nothing", "POST", "/v1/refunds", "amount=100", keybrake.CodeUnpriceableRequest, "names a charge or payment_intent"},
		{"refund steered", "POST", "/v1/refunds", "charge=ch_1/refunds", keybrake.CodeUnpriceableRequest, "not a Stripe object id"},
		{"invoice item by price", "POST", "/v1/invoiceitems", "customer=cus_1&price=price_1&currency=usd", keybrake.CodeUnpriceableRequest, "Price objects"},
		{"invoice item both", "POST", "/v1/invoiceitems", "customer=cus_1&amount=1&unit_amount=5&quantity=9&currency=usd", keybrake.CodeUnpriceableRequest, "not both"},
		{"customer balance", "POST", "/v1/customers/cus_1", "balance=-99999", keybrake.CodeUnpriceableRequest, "balance_transactions"},
		{"invoice auto advance", "POST", "/v1/invoices", "customer=cus_1", keybrake.CodeUnpriceableRequest, "auto_advance=false"},
		{"invoice finalize auto", "POST", "/v1/invoices/in_1/finalize", "auto_advance=true", keybrake.CodeUnpriceableRequest, "auto_advance=false"},
		{"subscription", "POST", "/v1/subscriptions", "customer=cus_1&items[0][price]=p", keybrake.CodeOperationForbidden, "recurring"},
		{"other content type", "POST", "/v1/customers", "x", keybrake.CodeUnpriceableRequest, "form-encoded or JSON"},
		{"bad JSON", "POST", "/v1/payment_intents", `{"amount":`, keybrake.CodeUnpriceableRequest, "JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := formHeader
			if c.name == "other content type" {
				h = http.Header{"Content-Type": {"text/plain"}}
			}
			if c.name == "bad JSON" {
				h = http.Header{"Content-Type": {"application/json"}}
			}
			_, _, err := quote(v, c.method, c.path, h, []byte(c.body), objects)
			if keybrake.ErrorCode(err) != c.code || !strings.Contains(err.Error(), c.substr) {
				t.Errorf("err = %v, want %s mentioning %q", err, c.code, c.substr)
			}
		})
	}
}

// Settlement reads what the answer says was moved; exposures keep their
// reservation.
func TestSettle(t *testing.T) {
	v := fuzzVendor(t)
	q, _, err := quote(v, "POST", "/v1/refunds", formHeader, []byte("charge=ch_1"), objects)
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := q.Settle(&keybrake.VendorResponse{Status: 200, Body: []byte(`{"id":"re_1","amount":3500,"currency":"usd"}`)}); !ok || m != 35_000_000 {
		t.Errorf("refund settled %v %v", m, ok)
	}
	q, _, _ = quote(v, "POST", "/v1/payment_intents/pi_1/confirm", formHeader, nil, objects)
	if q.Settle != nil {
		t.Error("an exposure is settled at its reservation, not from the answer")
	}
	if id := v.ObjectID(&keybrake.VendorResponse{Body: []byte(`{"id":"pi_9"}`)}); id != "pi_9" {
		t.Errorf("object id %q", id)
	}
}

// JSON bodies are converted to Stripe's form encoding, for every POST.
func TestPrepareConvertsJSON(t *testing.T) {
	v := fuzzVendor(t)
	p, err := v.Prepare(&keybrake.VendorRequest{Method: "POST", Path: "/v1/customers", Header: http.Header{"Content-Type": {"application/json"}},
		Body: []byte(`{"email":"a@b.c","metadata":{"k":"v"}}`)})
	if err != nil || string(p.Body) != "email=a%40b.c&metadata[k]=v" || p.ContentType != formType {
		t.Fatalf("%+v %v", p, err)
	}
	p, err = v.Prepare(&keybrake.VendorRequest{Method: "GET", Path: "/v1/balance", Header: http.Header{"Stripe-Account": {"acct_1"}}})
	if err != nil || p.FetchHeader.Get("Stripe-Account") != "acct_1" {
		t.Fatalf("%+v %v", p, err)
	}
}

func TestCatalogIsComplete(t *testing.T) {
	v := fuzzVendor(t)
	for _, op := range v.Catalog().Operations() {
		if op.Note == "" {
			t.Errorf("%s has no note", op.Name)
		}
		if op.Model == keybrake.ModelFree && op.Method == "POST" && op.Pricer == nil && strings.Contains(op.Name, "create") &&
			!strings.HasPrefix(op.Name, "payment_methods") && !strings.HasPrefix(op.Name, "setup_intents") &&
			!strings.HasPrefix(op.Name, "products") && !strings.HasPrefix(op.Name, "prices") {
			t.Errorf("%s creates something for free: check it moves no money", op.Name)
		}
	}
}
