package keybrake

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Vendor is one upstream API behind the proxy (Stripe, Twilio, Resend). A new
// vendor is a new package implementing this interface; the proxy knows
// nothing vendor-specific.
//
// A vendor is transport (where its API lives, how the credential is sent,
// how its bodies are encoded and its errors shaped) plus its Catalog, the
// one table of what Keybrake forwards and how each operation is priced.
// The proxy resolves a call to an operation, calls Prepare to encode it,
// has the operation price it, reserves, then Direct while forwarding.
type Vendor interface {
	// Name is the route prefix and the key's vendor: "stripe".
	Name() string
	// Owns reports whether a root-form path (/v1/...) belongs to this
	// vendor's API, for clients whose SDK cannot take a base path.
	Owns(path string) bool
	// Catalog is the vendor's operations: a path it does not resolve is
	// refused (unknown_operation).
	Catalog() *Catalog
	// Prepare checks and encodes the request for forwarding (Stripe: JSON
	// converted to form encoding; Twilio: the real account SID in the
	// path). It does not price. Errors are *Error.
	Prepare(req *VendorRequest) (*Prepared, error)
	// Direct points the outgoing request at the vendor and injects the
	// real credential. The client's Authorization is already removed.
	Direct(out *http.Request, p *Prepared)
	// ObjectID reads the id of the object a 2xx answer describes ("" if
	// none); Body may be truncated at the proxy's read limit.
	ObjectID(resp *VendorResponse) string
	// DedupesIdempotency reports whether the vendor itself honours
	// Idempotency-Key, making a retry after an unknown outcome safe.
	DedupesIdempotency() bool
	// ErrorResponse renders a Keybrake refusal in the shape the vendor's
	// own SDKs decode, so that callers see the code (cap_exhausted).
	ErrorResponse(r *ErrorReply) (http.Header, any)
	// RequestID extracts the vendor's request id from response headers.
	RequestID(h http.Header) string
	// Configured reports whether the real credential is set; a vendor
	// without one refuses every call (vendor_not_configured).
	Configured() bool
}

// Reconciler is implemented by vendors that state a call's final cost only
// later (Twilio fills in a message's price minutes after creation). The
// optional reconciler asks for it and reprices calls settled at their
// estimate.
type Reconciler interface {
	// FinalCost looks up the final cost of the object a call created.
	// known is false while the vendor has not priced it yet.
	FinalCost(ctx context.Context, hc *http.Client, objectID string) (cost Micros, known bool, err error)
}

// ReplayDetector is implemented by vendors that mark an answer replayed from
// their own idempotency cache (Stripe's Idempotent-Replayed: true). Such an
// answer moved no money: the proxy settles it at zero, unless the call is a
// retry that took over the reservation of an attempt with an unknown outcome
// (then the replay proves that attempt's charge, and it stays counted).
type ReplayDetector interface {
	VendorReplayed(h http.Header) bool
}

// VendorRequest is the part of a client request a vendor prices.
type VendorRequest struct {
	Method string
	Path   string // canonical vendor path, without the /{vendor} prefix
	Query  string
	Header http.Header
	Body   []byte
}

// VendorResponse is the vendor's answer as Settle sees it.
type VendorResponse struct {
	Status    int
	Header    http.Header
	Body      []byte
	Truncated bool

	jsonChecked int8 // JSONField: 0 not yet, 1 Body is valid JSON, -1 not
}

// Prepared is a request encoded for forwarding.
type Prepared struct {
	Body        []byte // what to forward (a bounded call's body is finalised after the reservation)
	ContentType string // set when Body was re-encoded
	// Form is Body's parameters when it is form-encoded (Stripe, Twilio),
	// for the operation's pricer.
	Form url.Values
	// UpstreamPath is the path to send; empty means the client's path.
	UpstreamPath string
	// FetchHeader is sent with the lookups that price the call, so they read
	// the object the call acts on (Stripe-Account, Stripe-Version).
	FetchHeader http.Header
	// Header holds the client headers the vendor read and forwards on
	// purpose (Stripe-Account, Stripe-Context, Stripe-Version). The proxy
	// sets them on the forwarded request itself, so a Connection header
	// naming one cannot make the vendor act without it.
	Header http.Header
}

// ErrorReply is a Keybrake refusal. Every vendor shape carries at least the
// code and the message; the default (and Stripe's) shape is this struct's
// JSON with a top-level "code", which the seed's Lambda reads.
type ErrorReply struct {
	Code         Code    `json:"code"`
	Message      string  `json:"message"`
	Field        string  `json:"field,omitempty"`
	KeyID        string  `json:"key_id,omitempty"`
	CallID       int64   `json:"call_id,omitempty"`
	CapName      string  `json:"cap,omitempty"`
	CapUSD       *Micros `json:"cap_usd,omitempty"`
	SpentUSD     *Micros `json:"spent_usd,omitempty"`
	ReservedUSD  *Micros `json:"reserved_usd,omitempty"`
	RequestedUSD *Micros `json:"requested_usd,omitempty"`
	// RetryAfter, in seconds, for rate_limited (also the Retry-After header).
	RetryAfter int `json:"retry_after,omitempty"`
}

// Status is the HTTP status the reply is sent with.
func (r *ErrorReply) Status() int { return r.Code.HTTPStatus() }

// ParseBaseURL reads a vendor's upstream base URL (raw, or def when raw is
// empty): http(s)://host[:port] with an optional path prefix and no query.
func ParseBaseURL(vendor, raw, def string) (*url.URL, error) {
	if raw == "" {
		raw = def
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%s base URL %q: want http(s)://host[:port]", vendor, raw)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	return u, nil
}

// Aim points an outgoing request at base + the vendor path Prepare chose
// (the client's path when it chose none). Vendors call it from Direct
// before injecting their credential.
func Aim(out *http.Request, base *url.URL, p *Prepared) {
	path := out.URL.Path
	if p.UpstreamPath != "" {
		path = p.UpstreamPath
	}
	out.URL.Scheme = base.Scheme
	out.URL.Host = base.Host
	out.URL.Path = base.Path + path
	out.URL.RawPath = ""
	out.Host = base.Host
}

// CheckBody refuses what would let a call carry something Keybrake did not
// read: a compressed body (the vendor would decompress what Keybrake could
// not read), query parameters on a call that is not a GET (the vendor could
// read them as parameters Keybrake did not price), or a body on a GET or
// DELETE. The proxy applies it to every call.
func CheckBody(req *VendorRequest) error {
	if enc := req.Header.Get("Content-Encoding"); enc != "" && enc != "identity" {
		return Errorf(CodeUnpriceableRequest, "Content-Encoding %q: Keybrake reads the body it forwards, so it must be uncompressed", enc)
	}
	if req.Query != "" && req.Method != http.MethodGet {
		return Errorf(CodeUnpriceableRequest, "query parameters are not accepted on %s %s: the vendor could read them as parameters Keybrake did not price; send them in the body", req.Method, req.Path)
	}
	if len(req.Body) > 0 && (req.Method == http.MethodGet || req.Method == http.MethodDelete) {
		return Errorf(CodeUnpriceableRequest, "a %s request carries no body", req.Method)
	}
	return nil
}
