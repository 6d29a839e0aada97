// Package stripe puts Stripe's API behind Keybrake: its operation catalogue
// (catalog.go: every call Keybrake forwards and how it is priced, from the
// amount in the body or the object it acts on), the conversion of the JSON
// bodies the seed's Lambdas send into Stripe's form encoding, the real
// secret, and Keybrake's refusals in Stripe's error shape so stripe-go and
// stripe-node surface the code to their callers.
package stripe

import (
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/canon"
	"github.com/keybrake/keybrake/pricing"
)

// DefaultBaseURL is Stripe's API host.
const DefaultBaseURL = "https://api.stripe.com"

// Vendor is the Stripe upstream.
type Vendor struct {
	base    *url.URL
	secret  string
	fx      *pricing.FX
	catalog *keybrake.Catalog
}

// New returns the Stripe vendor. secret is the real sk_… key; an empty
// secret leaves the vendor unconfigured (every call refused). fx converts
// amounts to dollars (nil: USD only).
func New(baseURL, secret string, fx *pricing.FX) (*Vendor, error) {
	u, err := keybrake.ParseBaseURL("stripe", baseURL, DefaultBaseURL)
	if err != nil {
		return nil, err
	}
	if fx == nil {
		fx = pricing.DefaultFX()
	}
	v := &Vendor{base: u, secret: secret, fx: fx}
	if v.catalog, err = newCatalog(fx); err != nil {
		return nil, err
	}
	return v, nil
}

func (v *Vendor) Name() string { return "stripe" }

// Catalog is Stripe's operation catalogue (catalog.go).
func (v *Vendor) Catalog() *keybrake.Catalog { return v.catalog }

const formType = "application/x-www-form-urlencoded"

// forwardedHeaders are the Stripe headers Keybrake reads and forwards on
// purpose: the connected account or context a call acts on, and the API
// version that gives its parameters their meaning.
var forwardedHeaders = []string{"Stripe-Account", "Stripe-Context", "Stripe-Version"}

// Prepare parses a v1 body as Stripe reads it and re-encodes it from what
// was parsed: a JSON body (what the seed's Lambdas send) becomes Stripe's
// form encoding, a form body is read under Stripe's key grammar
// (canon.ParseBracketForm). Either way the body forwarded is exactly the
// parameters the operation's pricer sees. Stripe's v1 API takes only
// form-encoded bodies, so anything else is refused: what Keybrake cannot
// read, it does not forward.
func (v *Vendor) Prepare(req *keybrake.VendorRequest) (*keybrake.Prepared, error) {
	p := &keybrake.Prepared{Body: req.Body, FetchHeader: http.Header{}, Header: http.Header{}}
	for _, h := range forwardedHeaders {
		if val := req.Header.Get(h); val != "" {
			p.Header.Set(h, val)
			p.FetchHeader.Set(h, val) // the lookups read the object in the account the call acts in

		}
	}
	if req.Method == http.MethodGet || req.Method == http.MethodDelete || !strings.HasPrefix(req.Path, "/v1/") {
		return p, nil
	}
	var ct string
	if raw := req.Header.Get("Content-Type"); raw != "" {
		var err error
		if ct, _, err = mime.ParseMediaType(raw); err != nil {
			return nil, keybrake.Errorf(keybrake.CodeUnpriceableRequest, "Content-Type %q cannot be parsed", raw)
		}
	}
	var form *canon.Form
	var err error
	switch {
	case len(req.Body) == 0:
		form, err = canon.ParseBracketForm(nil, canon.DefaultLimits)
	case ct == "application/json":
		var doc *canon.JSON
		if doc, err = canon.ParseJSON(req.Body, canon.DefaultLimits); err == nil {
			form, err = canon.FormFromJSON(doc, canon.DefaultLimits)
		}
	case ct == formType || ct == "":
		form, err = canon.ParseBracketForm(req.Body, canon.DefaultLimits)
	default:
		return nil, keybrake.Errorf(keybrake.CodeUnpriceableRequest, "Stripe takes form-encoded or JSON bodies, got Content-Type %q", ct)
	}
	if err != nil {
		return nil, err
	}
	if p.Body, err = form.Encode(); err != nil {
		return nil, err
	}
	p.Form = form.Values()
	if len(p.Body) > 0 {
		p.ContentType = formType
	}
	return p, nil
}

// ObjectID reads the id of the object Stripe answered with.
func (v *Vendor) ObjectID(resp *keybrake.VendorResponse) string {
	if resp.Truncated {
		return ""
	}
	id, _ := resp.JSONString("id") // the parse settlement already validated
	return id
}

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
// idempotent request still in flight and for a key's rate limit (the SDKs
// then wait and retry by themselves; a 429 cap_exhausted they do not).
func (v *Vendor) ErrorResponse(r *keybrake.ErrorReply) (http.Header, any) {
	typ := "invalid_request_error"
	if r.Status() >= 500 {
		typ = "api_error"
	}
	if r.Code == keybrake.CodeIdempotencyKeyReused || r.Code == keybrake.CodeIdempotencyInProgress {
		typ = "idempotency_error"
	}
	h := http.Header{}
	if r.Code == keybrake.CodeIdempotencyInProgress || r.Code == keybrake.CodeRateLimited {
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
