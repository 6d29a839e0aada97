// Package resend puts Resend's email API behind Keybrake: its operation
// catalogue (catalog.go: sends priced by recipients, to + cc + bcc, each one
// an email to Resend; API keys and webhooks forbidden), the real API key,
// Idempotency-Key passed through (Resend honours it), and Keybrake's
// refusals in Resend's error shape with the code readable in the message,
// the only field resend-go shows.
package resend

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/canon"
)

// DefaultBaseURL is Resend's API host.
const DefaultBaseURL = "https://api.resend.com"

// Config configures the Resend vendor.
type Config struct {
	BaseURL string // default https://api.resend.com
	APIKey  string // the real re_… key
}

// Vendor is the Resend upstream.
type Vendor struct {
	base    *url.URL
	key     string
	catalog *keybrake.Catalog
}

// New returns the Resend vendor; without an API key it is unconfigured
// (every call refused).
func New(c Config) (*Vendor, error) {
	u, err := keybrake.ParseBaseURL("resend", c.BaseURL, DefaultBaseURL)
	if err != nil {
		return nil, err
	}
	v := &Vendor{base: u, key: c.APIKey}
	if v.catalog, err = newCatalog(); err != nil {
		return nil, err
	}
	return v, nil
}

func (v *Vendor) Name() string { return "resend" }

// Catalog is Resend's operation catalogue (catalog.go).
func (v *Vendor) Catalog() *keybrake.Catalog { return v.catalog }

// Prepare parses a JSON body (the only encoding Resend takes) and forwards
// it re-encoded from the parse (canon.ParseJSON): no key twice in an
// object, one spelling of every string, bounded in size and depth. The
// pricers count recipients in exactly what Resend receives.
func (v *Vendor) Prepare(req *keybrake.VendorRequest) (*keybrake.Prepared, error) {
	p := &keybrake.Prepared{Body: req.Body}
	if len(req.Body) == 0 {
		return p, nil
	}
	if ct, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type")); ct != "application/json" {
		return nil, keybrake.Errorf(keybrake.CodeUnpriceableRequest, "Resend takes JSON bodies (Content-Type application/json), got %q", req.Header.Get("Content-Type"))
	}
	doc, err := canon.ParseJSON(req.Body, canon.DefaultLimits)
	if err != nil {
		return nil, err
	}
	if p.Body, err = doc.Encode(); err != nil {
		return nil, err
	}
	p.ContentType = "application/json"
	return p, nil
}

// ObjectID reads the id Resend answered with (the first of a batch).
func (v *Vendor) ObjectID(resp *keybrake.VendorResponse) string {
	if resp.Truncated {
		return ""
	}
	var obj struct {
		ID   string `json:"id"`
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if json.Unmarshal(resp.Body, &obj) != nil {
		return ""
	}
	if obj.ID == "" && len(obj.Data) > 0 {
		return obj.Data[0].ID
	}
	return obj.ID
}

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
