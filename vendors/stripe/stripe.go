// Package stripe puts Stripe's API behind Keybrake: it prices money-moving
// calls from their amount and currency, converts the JSON bodies that the
// seed's Lambdas send into Stripe's form encoding, injects the real secret,
// and renders Keybrake's refusals in Stripe's error shape so stripe-go and
// stripe-node surface the code to their callers.
package stripe

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/pricing"
)

// DefaultBaseURL is Stripe's API host.
const DefaultBaseURL = "https://api.stripe.com"

// Vendor is the Stripe upstream.
type Vendor struct {
	base      *url.URL
	secret    string
	fx        *pricing.FX
	endpoints pricing.Endpoints
}

// New returns the Stripe vendor. secret is the real sk_… key; an empty
// secret leaves the vendor unconfigured (every call refused).
func New(baseURL, secret string, fx *pricing.FX) (*Vendor, error) {
	u, err := keybrake.ParseBaseURL("stripe", baseURL, DefaultBaseURL)
	if err != nil {
		return nil, err
	}
	return &Vendor{base: u, secret: secret, fx: fx}, nil
}

// SetEndpointPrices adds the pricing file's fixed per-call prices
// (stripe.endpoints): a priced endpoint that moves no amount is charged the
// fixed price; one that does is charged its amount plus the fixed price.
// Call it before serving; every rule must name a Stripe API path.
func (v *Vendor) SetEndpointPrices(eps pricing.Endpoints) error {
	if err := eps.Owned(v.Owns); err != nil {
		return fmt.Errorf("pricing file, stripe: %w", err)
	}
	v.endpoints = append(pricing.Endpoints(nil), eps...)
	return nil
}

func (v *Vendor) Name() string { return "stripe" }

// Owns claims Stripe's v1 and v2 APIs at the root, where stripe-go sends them
// (it refuses a base URL with a path).
func (v *Vendor) Owns(path string) bool {
	return strings.HasPrefix(path, "/v1/") || strings.HasPrefix(path, "/v2/")
}

func (v *Vendor) Configured() bool { return v.secret != "" }

func (v *Vendor) DedupesIdempotency() bool { return true }

// Direct aims the request at Stripe with the real secret as Bearer.
func (v *Vendor) Direct(out *http.Request, p *keybrake.Prepared) {
	keybrake.Aim(out, v.base, p)
	out.Header.Set("Authorization", "Bearer "+v.secret)
}

func (v *Vendor) RequestID(h http.Header) string { return h.Get("Request-Id") }

// VendorReplayed reports an answer Stripe replayed from its idempotency
// cache (Idempotent-Replayed: true): it moved no money.
func (v *Vendor) VendorReplayed(h http.Header) bool { return h.Get("Idempotent-Replayed") == "true" }

// stripeError is Stripe's own error object: {"error":{"type","code","message"}}.
type stripeError struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Param   string `json:"param,omitempty"`
}

// ErrorResponse keeps Keybrake's top-level code and message (the seed's
// Lambda reads body.code) and adds Stripe's error object, which stripe-go
// decodes into *stripe.Error{Code, Msg, HTTPStatusCode}. Stripe-Should-Retry
// tells the SDKs whether retrying can help: never for a refusal, yes for an
// idempotent request still in flight.
func (v *Vendor) ErrorResponse(r *keybrake.ErrorReply) (http.Header, any) {
	typ := "invalid_request_error"
	if r.Status() >= 500 {
		typ = "api_error"
	}
	if r.Code == keybrake.CodeIdempotencyKeyReused || r.Code == keybrake.CodeIdempotencyInProgress {
		typ = "idempotency_error"
	}
	h := http.Header{}
	if r.Code == keybrake.CodeIdempotencyInProgress {
		h.Set("Stripe-Should-Retry", "true")
	} else {
		h.Set("Stripe-Should-Retry", "false")
	}
	body := struct {
		*keybrake.ErrorReply
		Error stripeError `json:"error"`
	}{r, stripeError{Type: typ, Code: string(r.Code), Message: r.Message, Param: r.Field}}
	return h, body
}
