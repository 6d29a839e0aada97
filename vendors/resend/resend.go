// Package resend puts Resend's email API behind Keybrake: it prices sends
// by recipients (to + cc + bcc, each one an email to Resend), injects the
// real API key, passes Idempotency-Key through (Resend honours it), and
// renders Keybrake's refusals in Resend's error shape with the code
// readable in the message, the only field resend-go shows.
package resend

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/pricing"
)

// DefaultBaseURL is Resend's API host.
const DefaultBaseURL = "https://api.resend.com"

// Config configures the Resend vendor.
type Config struct {
	BaseURL string // default https://api.resend.com
	APIKey  string // the real re_… key
	Prices  pricing.ResendPrices
}

// Vendor is the Resend upstream.
type Vendor struct {
	base   *url.URL
	key    string
	prices pricing.ResendPrices
}

// New returns the Resend vendor; without an API key it is unconfigured
// (every call refused).
func New(c Config) (*Vendor, error) {
	u, err := keybrake.ParseBaseURL("resend", c.BaseURL, DefaultBaseURL)
	if err != nil {
		return nil, err
	}
	if err := c.Prices.Endpoints.Owned(owns); err != nil {
		return nil, fmt.Errorf("pricing file, resend: %w", err)
	}
	return &Vendor{base: u, key: c.APIKey, prices: c.Prices}, nil
}

func (v *Vendor) Name() string { return "resend" }

// resources are the first path segments of Resend's API.
var resources = map[string]bool{
	"emails": true, "domains": true, "api-keys": true, "audiences": true, "contacts": true,
	"broadcasts": true, "segments": true, "templates": true, "topics": true, "webhooks": true,
	"contact-properties": true,
}

func owns(path string) bool {
	first, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	return strings.HasPrefix(path, "/") && resources[first]
}

// Owns claims Resend's resources at the root (/emails, /emails/batch, …),
// for clients whose base URL is Keybrake's bare address.
func (v *Vendor) Owns(path string) bool { return owns(path) }

func (v *Vendor) Configured() bool { return v.key != "" }

// DedupesIdempotency is true: Resend keeps an Idempotency-Key for 24 hours
// and answers a concurrent or mismatched reuse with 409.
func (v *Vendor) DedupesIdempotency() bool { return true }

// Direct aims the request at Resend with the real key as Bearer.
func (v *Vendor) Direct(out *http.Request, p *keybrake.Prepared) {
	keybrake.Aim(out, v.base, p)
	out.Header.Set("Authorization", "Bearer "+v.key)
}

// RequestID: Resend does not document a request-id header; x-request-id is
// kept when present.
func (v *Vendor) RequestID(h http.Header) string { return h.Get("X-Request-Id") }

// resendError is Resend's error body {"statusCode","name","message"} with
// Keybrake's refusal alongside: a top-level code (what the seed's Lambdas
// read), the key id and the cap figures. resend-go shows only message, so
// the message starts with the code.
type resendError struct {
	StatusCode int    `json:"statusCode"`
	Name       string `json:"name"`
	Message    string `json:"message"`
	*keybrake.ErrorReply
}

// ErrorResponse renders a refusal in Resend's shape. A 429 becomes
// resend-go's RateLimitError{Message: "cap_exhausted: … (HTTP 429)"}.
func (v *Vendor) ErrorResponse(r *keybrake.ErrorReply) (http.Header, any) {
	return nil, resendError{
		StatusCode: r.Status(),
		Name:       string(r.Code),
		Message:    fmt.Sprintf("%s: %s (HTTP %d)", r.Code, r.Message, r.Status()),
		ErrorReply: r,
	}
}
