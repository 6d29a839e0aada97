package keybrake

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"slices"
	"sort"
	"strings"
)

// Scope confines a key to named vendor objects, beyond the operations its
// allow-list grants: the Connect accounts, customers, senders or sender
// domains it may act on (the hosted Keybrake's "merchant scope"). Each field
// belongs to one vendor, which declares it (Scoper.ScopeFields), validates
// its values at issue and enforces it on every call. A field that is absent
// restricts nothing, unless its vendor says otherwise (Stripe: without
// stripe_accounts a key acts on the platform account only).
type Scope map[string][]string

// Has reports whether the scope restricts field.
func (s Scope) Has(field string) bool {
	_, ok := s[field]
	return ok
}

// Allows reports whether value is one of the values field allows. A field
// the scope does not restrict allows everything.
func (s Scope) Allows(field, value string) bool {
	vals, ok := s[field]
	return !ok || slices.Contains(vals, value)
}

// Fields lists the restricted fields, sorted.
func (s Scope) Fields() []string {
	out := make([]string, 0, len(s))
	for f := range s {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// Within reports whether every field ceiling restricts is restricted in s
// too, to a subset of ceiling's values; it names the first field that is
// not. An issuer token's scope is such a ceiling for the keys it issues.
func (s Scope) Within(ceiling Scope) (string, bool) {
	for _, f := range ceiling.Fields() {
		vals, ok := s[f]
		if !ok {
			return f, false
		}
		for _, v := range vals {
			if !slices.Contains(ceiling[f], v) {
				return f, false
			}
		}
	}
	return "", true
}

// MaxScopeValues bounds the values of one scope field.
const MaxScopeValues = 100

// ScopeField is one scope field a vendor enforces.
type ScopeField struct {
	Name string // "stripe_customers"
	Doc  string // what it confines, for errors and docs
}

// Scoper is implemented by vendors whose keys can be confined by a Scope.
// The proxy asks it three times per call, so that nothing outside the scope
// is read or forwarded: before the body is read (the request line and
// headers: Stripe-Account), once the body is prepared (a customer, a
// sender), and for each object a lookup read to price the call (the
// customer of the PaymentIntent a confirm acts on). A refusal is a
// *Error with CodeScopeViolation whose Field names the scope field.
type Scoper interface {
	ScopeFields() []ScopeField
	// NormalizeScope validates one field's values at issue and returns them
	// in the form the checks compare (Resend domains lower-cased).
	NormalizeScope(field string, values []string) ([]string, error)
	ScopeRequest(s Scope, op *Operation, params []string, req *VendorRequest) *Error
	ScopeBody(s Scope, op *Operation, params []string, req *VendorRequest, p *Prepared) *Error
	ScopeObject(s Scope, op *Operation, path string, body []byte) *Error
}

// ScopeViolation is the refusal of a call outside its key's scope.
func ScopeViolation(field, format string, args ...any) *Error {
	e := Errorf(CodeScopeViolation, format, args...)
	e.Field = field
	return e
}

// MaxVendorIdempotencyKey is the longest Idempotency-Key Keybrake sends a
// vendor: Stripe's limit (Resend's is 256).
const MaxVendorIdempotencyKey = 255

// IdempotencyNamespace is the prefix of every Idempotency-Key this key's
// calls carry to the vendor: the key id, so two keys never share a vendor
// idempotency entry (one run cannot read or poison another's results). A
// key issued with an IdempotencyScope shares its namespace with the other
// keys its issuer gave the same scope: an SQS message's redeliveries, each
// with a new key, still deduplicate at the vendor.
func (k *Key) IdempotencyNamespace() string {
	if k.IdempotencyScope == "" {
		return k.ID
	}
	sum := sha256.Sum256([]byte(k.IssuerID + "\x00" + k.IdempotencyScope))
	return "vs_" + hex.EncodeToString(sum[:12])
}

// VendorIdempotencyKey is the Idempotency-Key a vendor receives for the
// client's key in a namespace: "<namespace>:<client key>" when that fits
// the vendor's limit, else "<namespace>#<SHA-256 of the client key>". A
// namespace holds neither ':' nor '#', so the two forms never collide, and
// the same client key always maps to the same vendor key.
func VendorIdempotencyKey(namespace, clientKey string) string {
	if len(namespace)+1+len(clientKey) <= MaxVendorIdempotencyKey {
		return namespace + ":" + clientKey
	}
	sum := sha256.Sum256([]byte(clientKey))
	return namespace + "#" + hex.EncodeToString(sum[:])
}

// SingleHeaders are the request headers Keybrake reads, or forwards on
// purpose, that must come as exactly one value: with two, Keybrake would
// read one and the vendor might read another (or both, joined). NoComma
// marks those whose values never hold a comma, so a comma list is two
// values too.
var SingleHeaders = []struct {
	Name    string
	NoComma bool
}{
	{"Authorization", false},
	{"Content-Type", false},
	{"Content-Encoding", true},
	{"Content-Length", true},
	{"Idempotency-Key", false},
	{"Stripe-Account", true},
	{"Stripe-Context", true},
	{"Stripe-Version", true},
}

// CheckSingleHeaders refuses a request that repeats a header of
// SingleHeaders, or carries a Content-Length together with a
// Transfer-Encoding (Go moves Transfer-Encoding out of the header map into
// transferEncoding).
func CheckSingleHeaders(h http.Header, transferEncoding []string) *Error {
	for _, sh := range SingleHeaders {
		vals := h.Values(sh.Name)
		if len(vals) > 1 || (sh.NoComma && len(vals) == 1 && strings.Contains(vals[0], ",")) {
			e := Errorf(CodeAmbiguousHeader, "%s is given more than once: Keybrake reads one value and the vendor might read another; send it once", sh.Name)
			e.Field = sh.Name
			return e
		}
	}
	if len(transferEncoding) > 0 && (h.Get("Content-Length") != "" || len(h.Values("Transfer-Encoding")) > 0) {
		e := Errorf(CodeAmbiguousHeader, "Transfer-Encoding together with Content-Length: the body's length is ambiguous")
		e.Field = "Transfer-Encoding"
		return e
	}
	return nil
}
