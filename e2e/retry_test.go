package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/internal/sandbox"
)

// The seed's retry scenario: a Map-style fan-out of 1,000 charges sharing one
// key, Idempotency-Key <execution>-<index>, against a Stripe that applies the
// charge and then answers 500 for 10% of requests; the client retries each
// failure up to 3 times with the same key. No customer is charged twice,
// every customer within the cap is charged once, and Keybrake's recorded
// spend equals what the vendor charged.
func TestSeedRetryScenario(t *testing.T) {
	stripe := sandbox.NewStripe(kbtest.StripeSecret)
	stripe.Fault = func(r *http.Request, n int) sandbox.Fault {
		if n%10 == 3 {
			return sandbox.FailAfterApply
		}
		return sandbox.NoFault
	}
	env := kbtest.Start(t, kbtest.Options{Upstream: stripe})
	const customers, capUSD = 1000, 600
	execution := "arn:aws:states:us-east-1:123456789012:execution:billing:retry-run"
	k := env.Issue(t, client.IssueParams{DailyUSDCap: fmt.Sprint(capUSD), AgentRunLabel: execution})

	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: 2 * time.Minute}
	var charged, capped, failed, retries atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 200)
	for i := 0; i < customers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			for attempt := 0; attempt <= 3; attempt++ {
				if attempt > 0 {
					retries.Add(1)
				}
				req, _ := http.NewRequest("POST", env.URL+"/stripe/v1/payment_intents",
					strings.NewReader(fmt.Sprintf(`{"amount":100,"currency":"usd","customer":"cus_%04d"}`, i)))
				req.Header.Set("Authorization", "Bearer "+k.VaultKey)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Idempotency-Key", fmt.Sprintf("%s-%d", execution, i))
				resp, err := hc.Do(req)
				if err != nil {
					continue
				}
				var b strings.Builder
				fmt.Fprint(&b, resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == 200:
					charged.Add(1)
					return
				case resp.StatusCode == 429:
					capped.Add(1)
					return
				case resp.StatusCode >= 500 || resp.StatusCode == 409:
					continue // transient: retry with the same key
				default:
					failed.Add(1)
					t.Errorf("customer %d: unexpected %d", i, resp.StatusCode)
					return
				}
			}
			failed.Add(1)
		}(i)
	}
	wg.Wait()

	perCustomer := map[string]int{}
	for _, pi := range stripe.Intents() {
		perCustomer[pi.Customer]++
	}
	for c, n := range perCustomer {
		if n != 1 {
			t.Errorf("%s was charged %d times", c, n)
		}
	}
	if len(perCustomer) != capUSD {
		t.Fatalf("%d customers charged, want exactly the %d within the cap", len(perCustomer), capUSD)
	}
	if charged.Load()+failed.Load() < capUSD || capped.Load()+charged.Load()+failed.Load() != customers {
		t.Fatalf("charged %d, capped %d, gave up %d", charged.Load(), capped.Load(), failed.Load())
	}
	v := getKey(t, env, k.ID)
	if v.SpentUSD.String() != fmt.Sprintf("%d.00", capUSD) || v.ReservedUSD.String() != "0.00" {
		t.Fatalf("Keybrake recorded $%s spent ($%s reserved); the vendor charged $%d", v.SpentUSD, v.ReservedUSD, len(perCustomer))
	}
	if retries.Load() == 0 {
		t.Fatal("no retries happened: the fault injection did not fire")
	}
	t.Logf("%d charged, %d capped, %d gave up after retries, %d retries", charged.Load(), capped.Load(), failed.Load(), retries.Load())
}
