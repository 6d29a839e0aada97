package e2e

import (
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/internal/sandbox"
)

// `keybrake serve` refuses to start without an admin token and says how to
// set one.
func TestServeRefusesWithoutAdminToken(t *testing.T) {
	cmd := exec.Command(kbtest.Binary(t), "serve", "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "k.db"))
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("serve started without KEYBRAKE_ADMIN_TOKEN:\n%s", out)
	}
	if !strings.Contains(string(out), "KEYBRAKE_ADMIN_TOKEN") || !strings.Contains(string(out), "openssl rand") {
		t.Fatalf("the error does not say how to set the token:\n%s", out)
	}
}

// SIGTERM: stop accepting, let in-flight calls finish and settle, exit 0.
func TestSIGTERMDrainsInFlightCalls(t *testing.T) {
	stripe := sandbox.NewStripe(kbtest.StripeSecret)
	var arrived sync.WaitGroup
	const inFlight = 20
	arrived.Add(inFlight)
	release := make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Done()
		<-release
		stripe.ServeHTTP(w, r)
	})
	upstream := startUpstream(t, slow)
	db := filepath.Join(t.TempDir(), "keybrake.db")
	env := kbtest.EnvVars("KEYBRAKE_ADMIN_TOKEN", kbtest.AdminToken, "KEYBRAKE_DB", db,
		"KEYBRAKE_STRIPE_SECRET_KEY", kbtest.StripeSecret, "KEYBRAKE_STRIPE_BASE_URL", upstream)
	p := kbtest.Serve(t, env)
	admin := client.New(p.URL(), kbtest.AdminToken)
	k, err := admin.IssueKey(t.Context(), client.IssueParams{Vendor: "stripe", DailyUSDCap: "100", ExpiresIn: "1h", AllowedEndpoints: []string{"POST /v1/payment_intents"}})
	if err != nil {
		t.Fatal(err)
	}
	statuses := make(chan int, inFlight)
	for i := 0; i < inFlight; i++ {
		go func(i int) {
			req, _ := http.NewRequest("POST", p.URL()+"/v1/payment_intents", strings.NewReader("amount=100&currency=usd"))
			req.Header.Set("Authorization", "Bearer "+k.VaultKey)
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := httpClient.Do(req)
			if err != nil {
				statuses <- 0
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}(i)
	}
	arrived.Wait() // every call is at the vendor
	done := make(chan error, 1)
	go func() { done <- p.Stop(60 * time.Second) }()
	// Once shutdown has begun, new connections are refused.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := httpClient.Get(p.URL() + "/healthz")
		if err != nil {
			break
		}
		resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting connections 10s after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(release)
	for i := 0; i < inFlight; i++ {
		if s := <-statuses; s != 200 {
			t.Fatalf("an in-flight call ended with %d during shutdown", s)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("serve did not exit 0 after SIGTERM: %v\n%s", err, p.Logs())
	}
	// Restart on the same database: everything settled, nothing pending.
	p2 := kbtest.Serve(t, env)
	v, err := client.New(p2.URL(), kbtest.AdminToken).GetKey(t.Context(), k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if v.SpentUSD.String() != fmt.Sprintf("%d.00", inFlight) || v.ReservedUSD.String() != "0.00" {
		t.Fatalf("after restart: spent %s reserved %s, want %d.00 and 0.00", v.SpentUSD, v.ReservedUSD, inFlight)
	}
	if strings.Contains(p2.Logs(), "outcome unknown") {
		t.Fatalf("a graceful shutdown left calls pending:\n%s", p2.Logs())
	}
}
