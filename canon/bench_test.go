package canon

import (
	"net/url"
	"testing"
)

// The cost of reading a typical PaymentIntent body Keybrake's way (parse,
// check, re-encode) against Go's url.ParseQuery alone:
//
//	go test -run XXX -bench . ./canon/
var typical = []byte("amount=1250&currency=usd&customer=cus_123&metadata[order_id]=A-42&metadata[run]=arn%3Aaws%3Astates&description=Invoice+42")

func BenchmarkBracketFormParseAndEncode(b *testing.B) {
	for i := 0; i < b.N; i++ {
		f, err := ParseBracketForm(typical, Limits{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.Encode(); err != nil {
			b.Fatal(err)
		}
		_ = f.Values()
	}
}

func BenchmarkURLParseQuery(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if _, err := url.ParseQuery(string(typical)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkJSONToForm(b *testing.B) {
	body := []byte(`{"amount":1250,"currency":"usd","customer":"cus_123","metadata":{"order_id":"A-42","run":"arn:aws:states"}}`)
	for i := 0; i < b.N; i++ {
		v, err := ParseJSON(body, Limits{})
		if err != nil {
			b.Fatal(err)
		}
		f, err := FormFromJSON(v, Limits{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}
