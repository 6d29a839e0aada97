package e2e

import (
	"testing"
	"time"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/server"
)

// Twilio answers price: null at creation, so a message is settled at its
// estimate. With the reconciler on, Keybrake later fetches the message and
// settles Twilio's final price, moving the key's spend to the truth.
func TestTwilioReconciler(t *testing.T) {
	env, fakes := kbtest.StartWithFakes(t, func(c *server.Config) { c.ReconcileInterval = 50 * time.Millisecond })
	k := env.Issue(t, client.IssueParams{Vendor: "twilio", DailyUSDCap: "1", AllowedEndpoints: []string{"POST /2010-04-01/Accounts/*/Messages.json"}})
	r := env.Do(t, k.VaultKey, "POST", "/2010-04-01/Accounts/ACagent/Messages.json", formCT, "To=%2B14155550100&From=%2B14155550199&Body=hello")
	if r.Status != 201 {
		t.Fatalf("send: %d %s", r.Status, r.Body)
	}
	if v := getKey(t, env, k.ID); v.SpentUSD.String() != "0.015" {
		t.Fatalf("at creation the estimate is spent: %s", v.SpentUSD)
	}
	time.Sleep(300 * time.Millisecond) // a few reconciler rounds find no price yet
	if v := getKey(t, env, k.ID); v.SpentUSD.String() != "0.015" {
		t.Fatalf("repriced before Twilio priced the message: %s", v.SpentUSD)
	}
	fakes.Twilio.PriceMessages("-0.00790")
	deadline := time.Now().Add(20 * time.Second)
	for {
		v := getKey(t, env, k.ID)
		if v.SpentUSD.String() == "0.0079" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reconciler did not settle Twilio's final price: spent %s\n%s", v.SpentUSD, env.Logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	rows := calls(t, env, client.ListCallsParams{KeyID: k.ID})
	if len(rows) != 1 || rows[0].Actual.String() != "0.0079" || rows[0].Estimated.String() != "0.015" {
		t.Fatalf("audit row: %+v", rows[0].Call)
	}
}
