// Command stripe-go creates a payment intent through Keybrake with the
// official stripe-go SDK. Only two things differ from calling Stripe
// directly: the API key is the vault key, and the API backend is Keybrake's
// bare address (stripe-go refuses a base URL with a path, so Keybrake serves
// Stripe's /v1 paths at its root and picks the vendor from the key).
//
//	KEYBRAKE_URL=http://127.0.0.1:8080 KEYBRAKE_VAULT_KEY=kbvk… go run ./examples/stripe-go
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/stripe/stripe-go/v82"
)

func main() {
	backend := stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
		URL: stripe.String(os.Getenv("KEYBRAKE_URL")), // e.g. http://127.0.0.1:8080, no path
	})
	sc := stripe.NewClient(os.Getenv("KEYBRAKE_VAULT_KEY"), stripe.WithBackends(&stripe.Backends{
		API: backend, Connect: backend, Uploads: backend, MeterEvents: backend,
	}))

	pi, err := sc.V1PaymentIntents.Create(context.Background(), &stripe.PaymentIntentCreateParams{
		Amount:   stripe.Int64(500),
		Currency: stripe.String(string(stripe.CurrencyUSD)),
	})
	var se *stripe.Error
	switch {
	case errors.As(err, &se) && se.Code == "cap_exhausted":
		log.Fatalf("the run's budget is spent (HTTP %d): %s", se.HTTPStatusCode, se.Msg)
	case err != nil:
		log.Fatal(err)
	}
	fmt.Println("created", pi.ID, "spent so far $"+pi.LastResponse.Header.Get("Keybrake-Spent-Usd"))
}
