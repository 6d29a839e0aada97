package admin

import (
	"strings"

	"github.com/keybrake/keybrake"
)

// ScopeFields are the optional scope fields of a key, and the ceilings of
// an issuer token's keys (keybrake.Scope): absent restricts nothing (but
// see stripe_accounts), a list allows exactly those values. Each belongs to
// one vendor, which validates and enforces it.
type ScopeFields struct {
	StripeAccounts    []string `json:"stripe_accounts,omitempty"`
	StripeCustomers   []string `json:"stripe_customers,omitempty"`
	TwilioFrom        []string `json:"twilio_from,omitempty"`
	ResendFromDomains []string `json:"resend_from_domains,omitempty"`
}

func (f *ScopeFields) fields() map[string][]string {
	return map[string][]string{
		"stripe_accounts": f.StripeAccounts, "stripe_customers": f.StripeCustomers,
		"twilio_from": f.TwilioFrom, "resend_from_domains": f.ResendFromDomains,
	}
}

// scopeFieldsOf shows a scope in the API's shape.
func scopeFieldsOf(s keybrake.Scope) ScopeFields {
	return ScopeFields{StripeAccounts: s["stripe_accounts"], StripeCustomers: s["stripe_customers"],
		TwilioFrom: s["twilio_from"], ResendFromDomains: s["resend_from_domains"]}
}

// KeyPolicy is what issue 12 added to a key: its scope, a rate limit, and
// an idempotency scope shared with the issuer's other keys.
type KeyPolicy struct {
	ScopeFields
	// MaxCallsPerMinute bounds the calls the key forwards in any 60
	// seconds (429 rate_limited past it); absent or 0: no limit.
	MaxCallsPerMinute int `json:"max_calls_per_minute,omitempty"`
	// IdempotencyScope makes the keys one issuer gives the same scope share
	// their Idempotency-Keys at the vendor (an SQS message's redeliveries,
	// each with its own key); absent: every key its own.
	IdempotencyScope string `json:"idempotency_scope,omitempty"`
}

// MaxRateLimit bounds max_calls_per_minute: the decision counts the last
// minute's calls under the key's lock.
const MaxRateLimit = 10_000

// validatePolicy reads a key's scope, rate limit and idempotency scope.
// Every scope field must be one of the key's vendor's, with values that
// vendor accepts.
func (a *API) validatePolicy(p *KeyPolicy, vendor string, k *keybrake.Key) *keybrake.Error {
	scope, e := a.scope(&p.ScopeFields, []string{vendor})
	if e != nil {
		return e
	}
	k.Scope = scope
	if p.MaxCallsPerMinute < 0 || p.MaxCallsPerMinute > MaxRateLimit {
		return keybrake.FieldError("max_calls_per_minute", "max_calls_per_minute must be from 1 to %d (omit it for no limit)", MaxRateLimit)
	}
	k.MaxCallsPerMinute = p.MaxCallsPerMinute
	if len(p.IdempotencyScope) > 255 || !printable(p.IdempotencyScope) {
		return keybrake.FieldError("idempotency_scope", "idempotency_scope must be at most 255 printable characters")
	}
	k.IdempotencyScope = p.IdempotencyScope
	return nil
}

// scope reads scope fields, each of which must belong to one of vendors.
func (a *API) scope(f *ScopeFields, vendors []string) (keybrake.Scope, *keybrake.Error) {
	var out keybrake.Scope
	for field, values := range f.fields() {
		if values == nil {
			continue
		}
		if len(values) == 0 {
			return nil, keybrake.FieldError(field, "%s is an empty list, which would allow nothing; omit the field for no restriction", field)
		}
		if len(values) > keybrake.MaxScopeValues {
			return nil, keybrake.FieldError(field, "%s holds at most %d values", field, keybrake.MaxScopeValues)
		}
		sc := a.scoperOf(field, vendors)
		if sc == nil {
			return nil, keybrake.FieldError(field, "%s is not a scope field of %s", field, strings.Join(vendors, " or "))
		}
		norm, err := sc.NormalizeScope(field, values)
		if err != nil {
			return nil, keybrake.FieldError(field, "%s: %v", field, err)
		}
		if out == nil {
			out = keybrake.Scope{}
		}
		out[field] = norm
	}
	return out, nil
}

func (a *API) scoperOf(field string, vendors []string) keybrake.Scoper {
	for _, name := range vendors {
		sc, ok := a.vendors[name].(keybrake.Scoper)
		if !ok {
			continue
		}
		for _, f := range sc.ScopeFields() {
			if f.Name == field {
				return sc
			}
		}
	}
	return nil
}

// policyJSON shows a key's scope, rate limit and idempotency scope.
func policyJSON(k *keybrake.Key) KeyPolicy {
	return KeyPolicy{ScopeFields: scopeFieldsOf(k.Scope), MaxCallsPerMinute: k.MaxCallsPerMinute, IdempotencyScope: k.IdempotencyScope}
}

// tokenPolicy reads an issuer token's max_outstanding_usd and the ceilings
// of its keys' scope.
func (a *API) tokenPolicy(req *TokenRequest, t *keybrake.IssuerToken) (keybrake.Micros, keybrake.Scope, *keybrake.Error) {
	outstanding, e := money("max_outstanding_usd", req.MaxOutstandingUSD, false)
	if e != nil {
		return 0, nil, e
	}
	scope, e := a.scope(&req.ScopeFields, t.Vendors)
	return outstanding, scope, e
}
