// Command twilio-go sends an SMS through Keybrake with the official
// twilio-go SDK. twilio-go hard-codes api.twilio.com, so an HTTP transport
// sends its requests to Keybrake instead; the vault key is the password and
// the account SID can be any letters and digits (Keybrake swaps in the real
// one before forwarding).
//
//	KEYBRAKE_URL=http://127.0.0.1:8080 KEYBRAKE_VAULT_KEY=kbvk… go run ./examples/twilio-go
package main

import (
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/twilio/twilio-go"
	twclient "github.com/twilio/twilio-go/client"
	twapi "github.com/twilio/twilio-go/rest/api/v2010"
)

// toKeybrake rewrites every request's scheme and host to Keybrake's.
type toKeybrake struct{ base *url.URL }

func (k toKeybrake) RoundTrip(r *http.Request) (*http.Response, error) {
	out := r.Clone(r.Context())
	out.URL.Scheme, out.URL.Host, out.Host = k.base.Scheme, k.base.Host, k.base.Host
	out.URL.Path = strings.TrimRight(k.base.Path, "/") + r.URL.Path // "/twilio" prefix form works too
	return http.DefaultTransport.RoundTrip(out)
}

func main() {
	base, err := url.Parse(os.Getenv("KEYBRAKE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	const sid = "ACagent" // placeholder: Keybrake replaces it with the real account SID
	c := &twclient.Client{
		Credentials: twclient.NewCredentials(sid, os.Getenv("KEYBRAKE_VAULT_KEY")),
		HTTPClient:  &http.Client{Transport: toKeybrake{base}},
	}
	c.SetAccountSid(sid)
	tw := twilio.NewRestClientWithParams(twilio.ClientParams{Client: c})

	to, from, body := "+15551234567", "+15557654321", "Your order has shipped."
	msg, err := tw.Api.CreateMessage(&twapi.CreateMessageParams{To: &to, From: &from, Body: &body})
	var te *twclient.TwilioRestError
	switch {
	case errors.As(err, &te) && te.Status == http.StatusTooManyRequests:
		log.Fatalf("the run's budget is spent: %s", te.Message) // "cap_exhausted: …"
	case err != nil:
		log.Fatal(err)
	}
	fmt.Println("queued", *msg.Sid)
}
