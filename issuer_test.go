package keybrake

import (
	"testing"
	"time"
)

func TestIssuerTokenPermits(t *testing.T) {
	rules, _ := ParseRules([]string{"POST /v1/payment_intents", "POST /v1/payment_intents/*/capture"})
	tok := &IssuerToken{Name: "t", MaxDailyCap: 500 * MicrosPerUSD, MaxTotalCap: 1000 * MicrosPerUSD, Vendors: []string{"stripe"}, Endpoints: rules, MaxExpiresIn: 6 * time.Hour}
	key := func(mod func(*Key)) *Key {
		r, _ := ParseRules([]string{"POST /v1/payment_intents"})
		k := &Key{Vendor: "stripe", DailyCap: 100 * MicrosPerUSD, TotalCap: 200 * MicrosPerUSD, Rules: r}
		if mod != nil {
			mod(k)
		}
		return k
	}
	if e := tok.Permits(key(nil), time.Hour, nil); e != nil {
		t.Fatalf("within ceilings: %v", e)
	}
	for field, k := range map[string]*Key{
		"vendors":           key(func(k *Key) { k.Vendor = "twilio" }),
		"max_daily_usd_cap": key(func(k *Key) { k.DailyCap = 501 * MicrosPerUSD }),
		"max_total_usd_cap": key(func(k *Key) { k.TotalCap = 0 }),
		"endpoints":         key(func(k *Key) { k.Rules, _ = ParseRules([]string{"POST /v1/payment_intents/*"}) }),
	} {
		if e := tok.Permits(k, time.Hour, nil); e == nil || e.Field != field || e.Code != CodeIssuerLimitExceeded {
			t.Errorf("%s: %v", field, e)
		}
	}
	if e := tok.Permits(key(nil), 7*time.Hour, nil); e == nil || e.Field != "max_expires_in" {
		t.Errorf("max_expires_in: %v", e)
	}
}
