package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/internal/sandbox"
)

// Delivery is at least once and nothing is lost: events decided while the
// receiver is down stay in the outbox through a kill -9 of keybrake serve
// and are delivered, signed, by the restarted process once the receiver is
// back. The receiver also refuses its first deliveries on purpose.
func TestWebhooksSurviveKill9AndReceiverOutage(t *testing.T) {
	stripe := sandbox.NewStripe(kbtest.StripeSecret)
	upstream := startUpstream(t, stripe)
	env := kbtest.EnvVars("KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken, "KEYBRAKE_DB", t.TempDir()+"/keybrake.db",
		"KEYBRAKE_STRIPE_SECRET_KEY", kbtest.StripeSecret, "KEYBRAKE_STRIPE_BASE_URL", upstream,
		"KEYBRAKE_SECRETS_KEY", "7f3c0e9a1b2d4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f506",
		"KEYBRAKE_WEBHOOK_POLL_INTERVAL", "50ms", "KEYBRAKE_WEBHOOK_MIN_BACKOFF", "100ms", "KEYBRAKE_WEBHOOK_MAX_BACKOFF", "400ms",
		"KEYBRAKE_ANOMALY_INTERVAL", "0")
	rv := &receiver{failFirst: 2}
	startReceiver(t, rv, "127.0.0.1:0")
	addr := rv.addr

	p := kbtest.Serve(t, env)
	admin := client.New(p.URL(), kbtest.AdminToken)
	ctx := context.Background()
	hook, err := admin.CreateWebhook(ctx, client.WebhookParams{URL: rv.url(), Events: []string{"*"}})
	if err != nil {
		t.Fatal(err)
	}
	rv.setSecret(hook.Secret)
	charge := func(p *kbtest.Proc, vaultKey string, want int) {
		t.Helper()
		status, err := chargeProc(p, vaultKey)
		if err != nil || status != want {
			t.Fatalf("charge: %d %v, want %d", status, err, want)
		}
	}
	issue := func(c *client.Client, label string) *client.Key {
		t.Helper()
		th := []int{50, 100}
		k, err := c.IssueKey(ctx, client.IssueParams{Vendor: "stripe", DailyUSDCap: "2", ExpiresIn: "1h", AgentRunLabel: label,
			AllowedEndpoints: []string{"POST /v1/payment_intents"}, AlertThresholds: &th})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}

	// Round 1, receiver up: 50%, 100%, cap_exhausted; two refused first.
	k1 := issue(admin, "run-crash-1")
	charge(p, k1.VaultKey, 200)
	charge(p, k1.VaultKey, 200)
	charge(p, k1.VaultKey, 429)
	waitFor(t, time.Minute, "round 1's three events", func() bool { n, _, _ := rv.count(); return n == 3 })

	// Round 2, receiver down: the same three events plus two revocations
	// wait in the outbox while delivery attempts fail.
	rv.stop()
	k2 := issue(admin, "run-crash-2")
	charge(p, k2.VaultKey, 200)
	charge(p, k2.VaultKey, 200)
	charge(p, k2.VaultKey, 429)
	for _, k := range []*client.Key{k1, k2} {
		if _, err := admin.RevokeKey(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, time.Minute, "failed attempts while the receiver is down", func() bool {
		page, err := admin.ListDeliveries(ctx, hook.ID, 100, "")
		if err != nil {
			return false
		}
		failing := 0
		for _, d := range page.Data {
			if d.State == "pending" && d.Attempts > 0 && d.LastError != "" {
				failing++
			}
		}
		return failing == 5
	})

	// kill -9, restart on the same database, receiver back on its port.
	p.Kill()
	p = kbtest.Serve(t, env)
	admin = client.New(p.URL(), kbtest.AdminToken)
	startReceiver(t, rv, addr)
	waitFor(t, time.Minute, "all eight events after the restart", func() bool { n, _, _ := rv.count(); return n == 8 })

	got := rv.received()
	if len(got["key.spend_threshold"]) != 4 || len(got["key.cap_exhausted"]) != 2 || len(got["key.revoked"]) != 2 {
		t.Fatalf("events by type: %v", got)
	}
	page := allDelivered(t, admin, hook.ID, 8)
	for _, d := range page.Data {
		found := false
		for _, list := range got {
			for _, e := range list {
				found = found || e.ID == d.EventID
			}
		}
		if !found {
			t.Errorf("event %s in the outbox never reached the receiver", d.EventID)
		}
	}
	if _, _, forged := rv.count(); forged != 0 {
		t.Fatalf("%d deliveries failed signature verification", forged)
	}
	// The proxy never waited for the receiver: 4 charges reached the vendor.
	if n := len(stripe.Intents()); n != 4 {
		t.Fatalf("vendor intents: %d, want 4", n)
	}
}

// chargeProc sends a $1 charge to a serve process and returns the status.
func chargeProc(p *kbtest.Proc, vaultKey string) (int, error) {
	req, _ := http.NewRequest("POST", p.URL()+"/v1/payment_intents", strings.NewReader("amount=100&currency=usd"))
	req.Header.Set("Authorization", "Bearer "+vaultKey)
	req.Header.Set("Content-Type", formCT)
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
