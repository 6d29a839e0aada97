package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/internal/sandbox"
	"github.com/keybrake/keybrake/server"
)

const formCT = "application/x-www-form-urlencoded"

// slowArrivals counts requests that reached the "slow" fake before it
// answers (only TestIdempotencyInProgress uses it).
var slowArrivals atomic.Int32

// slowGate holds "slow" requests until the test closes it.
var slowGate = make(chan struct{})

// faultyStripe is the sandbox with per-request faults chosen by a test
// header, plus a few canned answers.
func faultyStripe() (*sandbox.Stripe, http.Handler) {
	stripe := sandbox.NewStripe(kbtest.StripeSecret)
	stripe.Fault = func(r *http.Request, n int) sandbox.Fault {
		switch r.Header.Get("X-Test-Fault") {
		case "500-after":
			return sandbox.FailAfterApply
		case "drop-after":
			return sandbox.DropAfterApply
		case "500-before":
			return sandbox.FailBeforeApply
		}
		return sandbox.NoFault
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("X-Test-Fault") {
		case "402":
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Request-Id", "req_declined")
			w.WriteHeader(402)
			fmt.Fprint(w, `{"error":{"type":"card_error","code":"card_declined","message":"Your card was declined."}}`)
		case "amount-differs":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"id":"pi_partial","object":"payment_intent","amount":40,"currency":"usd"}`)
		case "429":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(429)
			fmt.Fprint(w, `{"error":{"type":"invalid_request_error","code":"rate_limit","message":"Too many requests"}}`)
		case "huge":
			stripe.ServeHTTP(&discard{h: w.Header()}, r) // apply the charge
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":"pi_huge","object":"payment_intent","amount":100,"currency":"usd","metadata":{"pad":"%s"}}`, strings.Repeat("x", 2<<20))
		case "slow":
			slowArrivals.Add(1)
			<-slowGate
			stripe.ServeHTTP(w, r)
		default:
			stripe.ServeHTTP(w, r)
		}
	})
	return stripe, h
}

type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return http.Header{} }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

func TestIdempotentReplay(t *testing.T) {
	stripe, h := faultyStripe()
	env := kbtest.Start(t, kbtest.Options{Upstream: h})
	k := env.Issue(t, client.IssueParams{DailyUSDCap: "10"})
	first := env.Do(t, k.VaultKey, "POST", "/stripe/v1/payment_intents", "application/json", `{"amount":100,"currency":"usd"}`, "Idempotency-Key", "exec-1-0")
	if first.Status != 200 || first.Header.Get("Keybrake-Idempotent-Replayed") != "" {
		t.Fatalf("first: %d %v", first.Status, first.Header)
	}
	for i := 0; i < 3; i++ {
		again := env.Do(t, k.VaultKey, "POST", "/stripe/v1/payment_intents", "application/json", `{"amount":100,"currency":"usd"}`, "Idempotency-Key", "exec-1-0")
		if again.Status != 200 || !bytes.Equal(again.Body, first.Body) || again.Header.Get("Keybrake-Idempotent-Replayed") != "true" ||
			again.Header.Get("Content-Type") != first.Header.Get("Content-Type") || again.Header.Get("Request-Id") != first.Header.Get("Request-Id") {
			t.Fatalf("replay %d: %d %v %s", i, again.Status, again.Header, again.Body)
		}
	}
	if n := stripe.Requests(); n != 1 {
		t.Fatalf("the vendor was called %d times, want once", n)
	}
	v := getKey(t, env, k.ID)
	if v.SpentUSD.String() != "1.00" || *v.Calls != 4 {
		t.Fatalf("spent %s calls %d; replays must not spend", v.SpentUSD, *v.Calls)
	}
	rows := calls(t, env, client.ListCallsParams{KeyID: k.ID})
	if rows[0].Outcome != "replayed" || rows[0].RetryOf != rows[3].ID || rows[0].Actual.String() != "0.00" {
		t.Fatalf("replay audit row: %+v", rows[0].Call)
	}

	// The same Idempotency-Key for a different request is refused.
	before := stripe.Requests()
	r := env.Do(t, k.VaultKey, "POST", "/stripe/v1/payment_intents", "application/json", `{"amount":200,"currency":"usd"}`, "Idempotency-Key", "exec-1-0")
	e := expectDenied(t, stripe, before, r, 409, "idempotency_key_reused")
	if e.Error == nil || e.Error.Type != "idempotency_error" {
		t.Fatalf("Stripe error type: %s", r.Body)
	}
	// ... and the same key on another vault key is another request
	// altogether: Keybrake scopes it to the vault key, and so does what
	// Stripe receives (<key id>:<client key>), so key B can neither read
	// nor poison key A's PaymentIntent through Stripe's idempotency cache.
	other := env.Issue(t, client.IssueParams{})
	before = stripe.Requests()
	if r := env.Do(t, other.VaultKey, "POST", "/stripe/v1/payment_intents", "application/json", `{"amount":100,"currency":"usd"}`, "Idempotency-Key", "exec-1-0"); r.Status != 200 || r.Header.Get("Keybrake-Idempotent-Replayed") != "" || stripe.Requests() != before+1 {
		t.Fatalf("other key, same Idempotency-Key: %d %v", r.Status, r.Header)
	}
	got := stripe.Received()
	if a, b := got[0].Header.Get("Idempotency-Key"), got[len(got)-1].Header.Get("Idempotency-Key"); a != k.ID+":exec-1-0" || b != other.ID+":exec-1-0" {
		t.Fatalf("Stripe received Idempotency-Keys %q and %q", a, b)
	}
	if v := getKey(t, env, other.ID); v.SpentUSD.String() != "1.00" || len(stripe.Intents()) != 2 {
		t.Fatalf("other key spent %s; charges %d: it made its own PaymentIntent and paid for it", v.SpentUSD, len(stripe.Intents()))
	}
}

func TestIdempotencyInProgress(t *testing.T) {
	stripe, h := faultyStripe()
	env := kbtest.Start(t, kbtest.Options{Upstream: h})
	k := env.Issue(t, client.IssueParams{})
	done := make(chan *kbtest.Response)
	go func() {
		done <- env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd", "Idempotency-Key", "dup", "X-Test-Fault", "slow")
	}()
	for slowArrivals.Load() == 0 { // the first attempt is at the vendor
		time.Sleep(5 * time.Millisecond)
	}
	r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd", "Idempotency-Key", "dup", "X-Test-Fault", "slow")
	expectDenied(t, stripe, 0, r, 409, "idempotency_in_progress")
	close(slowGate)
	if r.Header.Get("Stripe-Should-Retry") != "true" {
		t.Fatalf("an in-progress duplicate should tell Stripe SDKs to retry: %v", r.Header)
	}
	if first := <-done; first.Status != 200 {
		t.Fatalf("first: %d %s", first.Status, first.Body)
	}
	if r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd", "Idempotency-Key", "dup"); r.Header.Get("Keybrake-Idempotent-Replayed") != "true" {
		t.Fatalf("after completion the duplicate is a replay: %d %v", r.Status, r.Header)
	}
	if len(stripe.Intents()) != 1 {
		t.Fatalf("%d charges", len(stripe.Intents()))
	}
}

// A retry after an unknown outcome (5xx, a cut connection) is forwarded again
// with the same Idempotency-Key, reusing the first reservation; Stripe's own
// idempotency answers with the first charge, and it is counted once.
func TestRetryAfterUnknownOutcome(t *testing.T) {
	for _, fault := range []string{"500-after", "drop-after"} {
		t.Run(fault, func(t *testing.T) {
			stripe, h := faultyStripe()
			env := kbtest.Start(t, kbtest.Options{Upstream: h})
			k := env.Issue(t, client.IssueParams{DailyUSDCap: "1.50"})
			r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd", "Idempotency-Key", "retry-me", "X-Test-Fault", fault)
			if r.Status < 500 {
				t.Fatalf("first attempt: %d", r.Status)
			}
			if v := getKey(t, env, k.ID); v.SpentUSD.String() != "1.00" {
				t.Fatalf("after the unknown outcome: spent %s, want the estimate 1.00 counted", v.SpentUSD)
			}
			if n := len(calls(t, env, client.ListCallsParams{Outcome: "unknown"})); n != 1 {
				t.Fatalf("%d unknown calls listed", n)
			}
			// $1.00 is counted of $1.50: a second reservation would not fit,
			// so the retry must reuse the first.
			r = env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd", "Idempotency-Key", "retry-me")
			if r.Status != 200 || !strings.Contains(string(r.Body), "pi_sandbox_000001") {
				t.Fatalf("retry: %d %s", r.Status, r.Body)
			}
			if n := len(stripe.Intents()); n != 1 {
				t.Fatalf("the customer was charged %d times", n)
			}
			v := getKey(t, env, k.ID)
			if v.SpentUSD.String() != "1.00" || v.ReservedUSD.String() != "0.00" {
				t.Fatalf("spent %s reserved %s, want 1.00 once", v.SpentUSD, v.ReservedUSD)
			}
			rows := calls(t, env, client.ListCallsParams{KeyID: k.ID})
			if len(rows) != 2 || rows[0].Outcome != "forwarded" || rows[0].RetryOf != rows[1].ID || rows[1].Outcome != "unknown_retried" || rows[1].Actual.String() != "0.00" {
				t.Fatalf("audit rows: %+v / %+v", rows[0].Call, rows[1].Call)
			}
			if n := len(calls(t, env, client.ListCallsParams{Outcome: "unknown"})); n != 0 {
				t.Fatalf("%d calls still unknown after the retry settled", n)
			}
			// And now it replays.
			r = env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd", "Idempotency-Key", "retry-me")
			if r.Header.Get("Keybrake-Idempotent-Replayed") != "true" || stripe.Requests() != 2 {
				t.Fatalf("third attempt: %d %v; vendor requests %d", r.Status, r.Header, stripe.Requests())
			}
		})
	}
}

// Definite vendor errors are stored and replayed like successes; a 409 or
// 429 from the vendor (it did not act) frees the key for a fresh attempt.
func TestIdempotencyWithVendorErrors(t *testing.T) {
	stripe, h := faultyStripe()
	env := kbtest.Start(t, kbtest.Options{Upstream: h})
	k := env.Issue(t, client.IssueParams{})
	r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd", "Idempotency-Key", "declined", "X-Test-Fault", "402")
	if r.Status != 402 {
		t.Fatalf("402: %d", r.Status)
	}
	again := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd", "Idempotency-Key", "declined")
	if again.Status != 402 || !bytes.Equal(again.Body, r.Body) || again.Header.Get("Keybrake-Idempotent-Replayed") != "true" {
		t.Fatalf("replayed decline: %d %s", again.Status, again.Body)
	}
	r = env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd", "Idempotency-Key", "limited", "X-Test-Fault", "429")
	if r.Status != 429 {
		t.Fatalf("429: %d", r.Status)
	}
	r = env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd", "Idempotency-Key", "limited")
	if r.Status != 200 || r.Header.Get("Keybrake-Idempotent-Replayed") != "" {
		t.Fatalf("after a vendor 429 the retry goes through: %d %v", r.Status, r.Header)
	}
	if v := getKey(t, env, k.ID); v.SpentUSD.String() != "1.00" {
		t.Fatalf("spent %s", v.SpentUSD)
	}
	_ = stripe
}

// An answer too large to keep cannot be replayed: the retry is refused
// rather than sent again (a resend could charge twice once the vendor's
// own idempotency window has passed).
func TestReplayUnavailableForHugeAnswers(t *testing.T) {
	stripe, h := faultyStripe()
	env := kbtest.Start(t, kbtest.Options{Upstream: h})
	k := env.Issue(t, client.IssueParams{})
	r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd", "Idempotency-Key", "huge", "X-Test-Fault", "huge")
	if r.Status != 200 || len(r.Body) < 2<<20 {
		t.Fatalf("huge answer: %d, %d bytes", r.Status, len(r.Body))
	}
	before := stripe.Requests()
	r = env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd", "Idempotency-Key", "huge")
	expectDenied(t, stripe, before, r, 409, "idempotency_replay_unavailable")
	if v := getKey(t, env, k.ID); v.SpentUSD.String() != "1.00" {
		t.Fatalf("spent %s: an unreadable answer keeps the estimate", v.SpentUSD)
	}
}

// Stored answers expire after the idempotency TTL; the key is then new.
func TestIdempotencyTTL(t *testing.T) {
	c := &offsetClock{}
	env := kbtest.Start(t, kbtest.Options{Configure: func(cfg *server.Config) {
		cfg.Clock = c.now
		cfg.IdempotencyTTL = time.Hour
	}})
	k := env.Issue(t, client.IssueParams{ExpiresIn: "3h"})
	env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd", "Idempotency-Key", "ttl")
	if r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd", "Idempotency-Key", "ttl"); r.Header.Get("Keybrake-Idempotent-Replayed") != "true" {
		t.Fatal("within the TTL the retry must replay")
	}
	c.advance(61 * time.Minute)
	if r := env.Do(t, k.VaultKey, "POST", "/v1/payment_intents", formCT, "amount=100&currency=usd", "Idempotency-Key", "ttl"); r.Status != 200 || r.Header.Get("Keybrake-Idempotent-Replayed") != "" {
		t.Fatalf("after the TTL: %d %v", r.Status, r.Header)
	}
	// Forwarded again: the vendor saw it, and (like Stripe) answered from its
	// own idempotency cache with Idempotent-Replayed: true, so no money
	// moved and nothing more is counted.
	if n := env.Stripe.Requests(); n != 2 {
		t.Fatalf("the vendor saw %d requests, want 2", n)
	}
	if n := len(env.Stripe.Intents()); n != 1 {
		t.Fatalf("%d charges, want 1", n)
	}
	if v := getKey(t, env, k.ID); v.SpentUSD.String() != "1.00" {
		t.Fatalf("spent %s, want 1.00: a vendor replay moves no money", v.SpentUSD)
	}
}
