package e2e

import (
	"encoding/json"
	"testing"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
)

func TestSmoke(t *testing.T) {
	env := kbtest.Start(t)
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "2"})
	r := env.Do(t, k.VaultKey, "POST", "/stripe/v1/payment_intents", "application/json", `{"amount":100,"currency":"usd","customer":"cus_1"}`)
	t.Logf("%d %s %v", r.Status, r.Body, r.Header)
	r = env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", "application/x-www-form-urlencoded", `amount=100&currency=usd`)
	t.Logf("%d %s", r.Status, r.Body)
	r = env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", "application/x-www-form-urlencoded", `amount=100&currency=usd`)
	t.Logf("%d %s", r.Status, r.Body)
	for _, rec := range env.Stripe.Received() {
		t.Logf("upstream: %s %s %q auth=%q", rec.Method, rec.Path, rec.Body, rec.Header.Get("Authorization"))
	}
	v, err := env.Admin.GetKey(t.Context(), k.ID)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(v)
	t.Logf("%s", b)
	t.Log(env.Logs.String())
}
