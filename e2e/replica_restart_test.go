package e2e

import (
	"context"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/internal/sandbox"
	"github.com/keybrake/keybrake/store/postgres/pgtest"
)

// A PostgreSQL replica with a stable --instance-id that is killed with calls
// in flight recovers them the moment it restarts: they are counted as
// unknown spend and listed, without waiting for the periodic sweep. A second
// live process cannot take the same name.
func TestReplicaRestartRecoversItsCalls(t *testing.T) {
	url, _ := pgtest.Schema(t, kbtest.PostgresURL(t))
	stripe := sandbox.NewStripe(kbtest.StripeSecret)
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond) // calls are in flight at the kill
		stripe.ServeHTTP(w, r)
	})
	env := kbtest.EnvVars("KEYBRAKE_DB", url, "KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken, "KEYBRAKE_INSTANCE_ID", "replica-a",
		"KEYBRAKE_STRIPE_SECRET_KEY", kbtest.StripeSecret, "KEYBRAKE_STRIPE_BASE_URL", startUpstream(t, slow))
	p := kbtest.Serve(t, env)

	// A second process with the same name is refused.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	dup := exec.CommandContext(ctx, kbtest.Binary(t), "serve", "--addr", "127.0.0.1:0")
	dup.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
	out, err := dup.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "replica-a") || !strings.Contains(string(out), "held by another live") {
		t.Fatalf("a second replica-a started: %v\n%s", err, out)
	}

	k, err := client.New(p.URL(), kbtest.AdminToken).IssueKey(t.Context(), client.IssueParams{
		Vendor: "stripe", DailyUSDCap: "1000", ExpiresIn: "1h", AllowedEndpoints: []string{"POST /v1/payment_intents"}})
	if err != nil {
		t.Fatal(err)
	}
	wait, _ := chargeUntilGone(p.URL(), k.VaultKey, "restart-", 16)
	for stripe.Requests() < 40 {
		time.Sleep(2 * time.Millisecond)
	}
	p.Kill()
	wait()

	// Same name: the restart sees that the killed process did not release
	// it, watches its heartbeat stand still (10s), then takes it over.
	p = kbtest.Serve(t, env)
	admin := client.New(p.URL(), kbtest.AdminToken)
	v, err := admin.GetKey(t.Context(), k.ID)
	if err != nil {
		t.Fatal(err)
	}
	charged := len(stripe.Intents())
	if v.ReservedUSD.String() != "0.00" {
		t.Fatalf("after the restart $%s is still reserved: in-flight calls were not recovered", v.ReservedUSD)
	}
	if spent := *v.SpentUSD; spent < keybrake.Micros(charged)*keybrake.MicrosPerUSD {
		t.Fatalf("recorded spend $%s is below what the vendor charged ($%d)", spent, charged)
	}
	page, err := admin.ListCalls(t.Context(), client.ListCallsParams{KeyID: k.ID, Outcome: "unknown", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) == 0 || !strings.Contains(p.Logs(), "outcome unknown") {
		t.Fatalf("no call was recovered as unknown at start\n%s", p.Logs())
	}
	t.Logf("vendor charged %d, recorded $%s, %d calls recovered as unknown at restart", charged, v.SpentUSD, len(page.Data))
}
