package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/internal/sandbox"
)

// kill -9 at any moment loses no money: a real `keybrake serve` is killed
// several times under concurrent load and restarted on the same database.
// Every reservation is durable before the vendor is contacted, so after each
// restart the recorded spend (settled + unknown) is at least what the vendor
// charged, and never more than the cap.
func TestKill9LosesNoSpend(t *testing.T) {
	stripe := sandbox.NewStripe(kbtest.StripeSecret)
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(15 * time.Millisecond) // keep calls in flight at the moment of the kill
		stripe.ServeHTTP(w, r)
	})
	upstream := startUpstream(t, slow)
	dir := t.TempDir()
	env := kbtest.EnvVars("KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken, "KEYBRAKE_DB", dir+"/keybrake.db",
		"KEYBRAKE_STRIPE_SECRET_KEY", kbtest.StripeSecret, "KEYBRAKE_STRIPE_BASE_URL", upstream)

	const capUSD = 120
	var key *client.Key
	unknownSeen := 0
	check := func(p *kbtest.Proc, round int) {
		t.Helper()
		admin := client.New(p.URL(), kbtest.AdminToken)
		v, err := admin.GetKey(t.Context(), key.ID)
		if err != nil {
			t.Fatal(err)
		}
		var charged keybrake.Micros
		for _, pi := range stripe.Intents() {
			charged += keybrake.Micros(pi.Amount) * 10_000 // cents → micros
		}
		spent := *v.SpentUSD
		t.Logf("round %d: vendor charged $%s, Keybrake recorded $%s (reserved $%s)", round, charged, spent, v.ReservedUSD)
		if spent < charged {
			t.Fatalf("round %d: recorded spend $%s is below what the vendor charged ($%s)", round, spent, charged)
		}
		if spent > capUSD*keybrake.MicrosPerUSD {
			t.Fatalf("round %d: recorded spend $%s is above the $%d cap", round, spent, capUSD)
		}
		if *v.ReservedUSD != 0 {
			t.Fatalf("round %d: $%s still reserved after recovery", round, v.ReservedUSD)
		}
		page, err := admin.ListCalls(t.Context(), client.ListCallsParams{KeyID: key.ID, Outcome: "unknown", Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		unknownSeen = len(page.Data)
	}

	for round := 0; round < 4; round++ {
		p := kbtest.Serve(t, env)
		if key == nil {
			var err error
			key, err = client.New(p.URL(), kbtest.AdminToken).IssueKey(t.Context(), client.IssueParams{
				Vendor: "stripe", DailyUSDCap: fmt.Sprint(capUSD), ExpiresIn: "1h", AllowedEndpoints: []string{"POST /v1/payment_intents"}})
			if err != nil {
				t.Fatal(err)
			}
		} else {
			check(p, round)
		}
		// Load: 24 workers charging $1 each with unique idempotency keys
		// until the process dies under them.
		wait, sent := chargeUntilGone(p.URL(), key.VaultKey, fmt.Sprintf("crash-r%d-", round), 24)
		// Kill once the vendor is busy with this round's traffic.
		start := stripe.Requests()
		for stripe.Requests() < start+30 && sent.Load() < 400 {
			time.Sleep(2 * time.Millisecond)
		}
		p.Kill()
		wait()
	}
	p := kbtest.Serve(t, env)
	check(p, 4)
	// Calls were at the vendor at each kill: the restart recovered them as
	// unknown outcomes (counted as spend) and lists them.
	if unknownSeen == 0 {
		t.Fatalf("no call was recovered as unknown; the kills did not hit in-flight calls\n%s", p.Logs())
	}
	t.Logf("calls with outcome unknown after the last restart: %d", unknownSeen)
}
