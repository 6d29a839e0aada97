package admin

import (
	"strings"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/api"
)

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
	for field, values := range f.Fields() {
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
	return KeyPolicy{ScopeFields: api.ScopeFieldsOf(k.Scope), MaxCallsPerMinute: k.MaxCallsPerMinute, IdempotencyScope: k.IdempotencyScope}
}

// tokenPolicy reads an issuer token's max_outstanding_usd and the ceilings
// of its keys' scope.
func (a *API) tokenPolicy(req *api.TokenRequest, t *keybrake.IssuerToken) (keybrake.Micros, keybrake.Scope, *keybrake.Error) {
	outstanding, e := money("max_outstanding_usd", req.MaxOutstandingUSD, false)
	if e != nil {
		return 0, nil, e
	}
	scope, e := a.scope(&req.ScopeFields, t.Vendors)
	return outstanding, scope, e
}
