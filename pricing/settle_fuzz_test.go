package pricing

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/keybrake/keybrake"
)

// settleJSONMap is SettleJSON as it was, through a map of every field: the
// reference the one-pass reader must agree with on every input.
func settleJSONMap(m Minor, amountField, fallback string, resp *keybrake.VendorResponse) (keybrake.Micros, bool) {
	if resp.Truncated {
		return 0, false
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(resp.Body, &obj) != nil {
		return 0, false
	}
	var amount json.Number
	if json.Unmarshal(obj[amountField], &amount) != nil {
		return 0, false
	}
	minor, ok := ParseMinor(amount.String(), true)
	if !ok {
		return 0, false
	}
	currency := fallback
	var c string
	if json.Unmarshal(obj["currency"], &c) == nil && c != "" {
		currency = strings.ToLower(c)
	}
	if currency == "" {
		return 0, false
	}
	usd, err := m.USD(minor, currency)
	return usd, err == nil
}

var settleSeeds = []string{
	`{"id":"pi_1","amount":150,"currency":"usd"}`,
	`{"amount":150,"currency":"USD"}`, `{"amount":"150","currency":"usd"}`, `{"amount":-150}`,
	`{"amount":150,"amount":1,"currency":"usd"}`, `{"\u0061mount":7,"currency":"usd"}`, `{"Amount":9,"amount":3}`,
	`{"amount":1.5}`, `{"amount":1e3}`, `{"amount":null,"currency":"usd"}`, `{"currency":3,"amount":2}`,
	`{"currency":null,"amount":2}`, `{"currency":"\u0075sd","amount":2}`, `{"currency":"eur","amount":2}`,
	`{"nested":{"amount":999,"currency":"usd"},"amount":1}`, `{"a":["}",{"amount":5}],"amount":6}`,
	`[{"amount":1}]`, `null`, `"amount"`, `{}`, `{"amount":1234567890123456}`, `{"amount":"-0"}`,
	` { "amount" : 42 , "currency" : "usd" } `, `{"amount":42,}`, `{"amount":42`, `{"am\"ount":1,"amount":2}`,
	`{"amount":"12\u0033"}`, `{"amount":true}`, `{"amount":{"v":1}}`, `{"amount":[1]}`,
}

func FuzzSettleJSONMatchesMap(f *testing.F) {
	for _, s := range settleSeeds {
		f.Add(s, "")
		f.Add(s, "usd")
	}
	m := Minor{FX: DefaultFX(), Exponent: func(string) int { return 2 }}
	f.Fuzz(func(t *testing.T, body, fallback string) {
		resp := &keybrake.VendorResponse{Status: 200, Body: []byte(body)}
		got, ok := m.SettleJSON("amount", fallback)(resp)
		want, wantOK := settleJSONMap(m, "amount", fallback, resp)
		if got != want || ok != wantOK {
			t.Fatalf("%q (fallback %q): one pass %d,%v; map %d,%v", body, fallback, got, ok, want, wantOK)
		}
	})
}
