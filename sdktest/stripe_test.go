package sdktest

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v82"

	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/server"
)

// stripeClient is stripe-go configured as an agent would: Keybrake's bare
// address as the API backend (stripe-go refuses a base URL with a path),
// the vault key as the API key.
func stripeClient(base, vaultKey string) *stripe.Client {
	backend := stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
		URL:               stripe.String(base),
		MaxNetworkRetries: stripe.Int64(0),
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
	})
	return stripe.NewClient(vaultKey, stripe.WithBackends(&stripe.Backends{API: backend, Connect: backend, Uploads: backend, MeterEvents: backend}))
}

// stripeErr unwraps the SDK's typed error.
func stripeErr(t *testing.T, err error, status int, code string) {
	t.Helper()
	var se *stripe.Error
	if !errors.As(err, &se) {
		t.Fatalf("error %T %v is not a *stripe.Error", err, err)
	}
	if se.HTTPStatusCode != status || string(se.Code) != code {
		t.Fatalf("stripe error: status %d code %q (%s); want %d %s", se.HTTPStatusCode, se.Code, se.Msg, status, code)
	}
}

// exerciseStripeGo runs the three cases against one Keybrake: within the
// cap, past it, outside the allow-list. upstream counts what reached the
// vendor.
func exerciseStripeGo(t *testing.T, env *kbtest.Env, upstream func() int) {
	ctx := context.Background()
	key := issue(t, env, "stripe", "10", "POST /v1/payment_intents")
	sc := stripeClient(env.URL, key)

	pi, err := sc.V1PaymentIntents.Create(ctx, &stripe.PaymentIntentCreateParams{
		Amount: stripe.Int64(600), Currency: stripe.String("usd"),
		PaymentMethodTypes: []*string{stripe.String("card")},
	})
	if err != nil {
		t.Fatalf("payment intent within the cap: %v", err)
	}
	if pi.ID == "" || pi.Amount != 600 || pi.Currency != "usd" {
		t.Fatalf("typed result: %+v", pi)
	}
	if pi.LastResponse == nil || pi.LastResponse.Header.Get("Keybrake-Spent-Usd") != "6.00" {
		t.Errorf("Keybrake-Spent-Usd = %q", pi.LastResponse.Header.Get("Keybrake-Spent-Usd"))
	}
	before := upstream()

	// $6 spent of $10: $5 more is past the cap.
	_, err = sc.V1PaymentIntents.Create(ctx, &stripe.PaymentIntentCreateParams{
		Amount: stripe.Int64(500), Currency: stripe.String("usd"),
		PaymentMethodTypes: []*string{stripe.String("card")},
	})
	stripeErr(t, err, http.StatusTooManyRequests, "cap_exhausted")

	_, err = sc.V1Customers.Create(ctx, &stripe.CustomerCreateParams{Email: stripe.String("a@example.com")})
	stripeErr(t, err, http.StatusForbidden, "endpoint_not_allowed")

	if got := upstream(); got != before {
		t.Fatalf("the vendor received %d requests for denied calls", got-before)
	}
	noLeak(t, env)
}

func TestStripeGoSandbox(t *testing.T) {
	env := kbtest.Start(t)
	exerciseStripeGo(t, env, env.Stripe.Requests)
	// stripe-go sent an Idempotency-Key with the POST, and it reached the
	// vendor with the real secret, never the vault key.
	got := env.Stripe.Received()
	if len(got) != 1 || got[0].Header.Get("Idempotency-Key") == "" || got[0].Header.Get("Authorization") != "Bearer "+kbtest.StripeSecret {
		t.Fatalf("upstream saw %+v", got)
	}
}

// stripe-mock validates every request against Stripe's OpenAPI spec and
// echoes the amount, so Keybrake is exercised against Stripe's schema, not
// only our own sandbox.
func TestStripeGoStripeMock(t *testing.T) {
	addr := startStripeMock(t)
	count, front := newCounter(t, "http://"+addr)
	env := kbtest.Start(t, kbtest.Options{Configure: func(cfg *server.Config) {
		cfg.Vendors.StripeBaseURL = front.URL
	}})
	exerciseStripeGo(t, env, func() int { return int(count.n.Load()) })
}

var listening = regexp.MustCompile(`Listening for HTTP at address: (\S+)`)

// startStripeMock runs stripe-mock on a free loopback port (HTTP only) and
// returns its address.
func startStripeMock(t *testing.T) string {
	t.Helper()
	bin := kbtest.RequireTool(t, "stripe-mock", "go install github.com/stripe/stripe-mock@v0.203.0 (or .ci/setup.d/10-stripe-mock.sh)")
	cmd := exec.Command(bin, "-http-addr", "127.0.0.1:0", "-https-addr", "127.0.0.1:0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill() //nolint:errcheck
		cmd.Wait()         //nolint:errcheck
	})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case addr := <-found:
		if strings.HasPrefix(addr, "[::]") || strings.HasPrefix(addr, ":") {
			t.Fatalf("stripe-mock listens on %s, not loopback", addr)
		}
		return addr
	case <-time.After(60 * time.Second):
		t.Fatal("stripe-mock did not start within 60s")
	}
	return ""
}

// Lookup pricing reads objects in Stripe's own schema: stripe-go confirms,
// captures and refunds through Keybrake, which reads each PaymentIntent or
// charge from stripe-mock before reserving what it can move.
func TestStripeGoLookupsAgainstStripeMock(t *testing.T) {
	addr := startStripeMock(t)
	count, front := newCounter(t, "http://"+addr)
	env := kbtest.Start(t, kbtest.Options{Configure: func(cfg *server.Config) {
		cfg.Vendors.StripeBaseURL = front.URL
	}})
	ctx := context.Background()
	key := issue(t, env, "stripe", "50", "payment_intents.confirm", "payment_intents.capture", "POST /v1/refunds")
	sc := stripeClient(env.URL, key)
	pi, err := sc.V1PaymentIntents.Confirm(ctx, "pi_lookup1", &stripe.PaymentIntentConfirmParams{PaymentMethod: stripe.String("pm_card_visa")})
	if err != nil {
		t.Fatalf("confirm: %v", err)
	}
	spent := pi.LastResponse.Header.Get("Keybrake-Spent-Usd")
	if spent == "" || spent == "0.00" {
		t.Fatalf("confirm of a PaymentIntent someone else created reserved nothing (spent %q)", spent)
	}
	// stripe-mock answers every PaymentIntent with the same amount: the
	// capture of the one just confirmed through the key adds nothing.
	pi, err = sc.V1PaymentIntents.Capture(ctx, "pi_lookup1", &stripe.PaymentIntentCaptureParams{})
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	if got := pi.LastResponse.Header.Get("Keybrake-Spent-Usd"); got != spent {
		t.Fatalf("capture after confirm: spent %s, want still %s", got, spent)
	}
	re, err := sc.V1Refunds.Create(ctx, &stripe.RefundCreateParams{Charge: stripe.String("ch_lookup1")})
	if err != nil {
		t.Fatalf("refund of the rest: %v", err)
	}
	if got := re.LastResponse.Header.Get("Keybrake-Spent-Usd"); got == spent {
		t.Fatalf("a refund of the rest was free (spent %s)", got)
	}
	if count.n.Load() < 6 {
		t.Fatalf("stripe-mock received %d requests: three lookups and three calls expected", count.n.Load())
	}
}
