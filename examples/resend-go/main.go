// Command resend-go sends an email through Keybrake with the official
// resend-go SDK: BaseURL is Keybrake's address, the API key is the vault
// key. Idempotency-Key passes through to Resend.
//
//	KEYBRAKE_URL=http://127.0.0.1:8080 KEYBRAKE_VAULT_KEY=kbvk… go run ./examples/resend-go
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/url"
	"os"

	"github.com/resend/resend-go/v3"
)

func main() {
	rc := resend.NewClient(os.Getenv("KEYBRAKE_VAULT_KEY"))
	base, err := url.Parse(os.Getenv("KEYBRAKE_URL") + "/") // the trailing slash matters
	if err != nil {
		log.Fatal(err)
	}
	rc.BaseURL = base

	sent, err := rc.Emails.SendWithOptions(context.Background(), &resend.SendEmailRequest{
		From:    "orders@example.com",
		To:      []string{"customer@example.com"},
		Subject: "Your order has shipped",
		Text:    "It is on its way.",
	}, &resend.SendEmailOptions{IdempotencyKey: "order-42-shipped"})
	var rl *resend.RateLimitError
	switch {
	case errors.As(err, &rl):
		log.Fatalf("refused with HTTP 429: %s", rl.Message) // "cap_exhausted: … (HTTP 429)"
	case err != nil:
		log.Fatal(err) // "[ERROR]: endpoint_not_allowed: … (HTTP 403)"
	}
	fmt.Println("sent", sent.Id)
}
