package stripe

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/pricing"
)

// Stripe's scope fields (see keybrake.Scope).
const (
	ScopeAccounts  = "stripe_accounts"
	ScopeCustomers = "stripe_customers"
)

// accountFields are the body parameters that send money to, or act for, a
// connected account.
var accountFields = []string{"destination", "transfer_data[destination]", "on_behalf_of"}

func (v *Vendor) ScopeFields() []keybrake.ScopeField {
	return []keybrake.ScopeField{
		{Name: ScopeAccounts, Doc: "connected accounts (acct_…) the key may act on with Stripe-Account or Stripe-Context, or name as destination, transfer_data[destination] or on_behalf_of; without it a Stripe-Account or Stripe-Context header is refused"},
		{Name: ScopeCustomers, Doc: "customers (cus_…) the key may act on: a customer named in the body or the path, and the customer of the object a lookup-priced call acts on; a money-moving create must name one"},
	}
}

// NormalizeScope checks that values are Stripe ids of the field's kind.
func (v *Vendor) NormalizeScope(field string, values []string) ([]string, error) {
	prefix := map[string]string{ScopeAccounts: "acct_", ScopeCustomers: "cus_"}[field]
	if prefix == "" {
		return nil, fmt.Errorf("%s is not a Stripe scope field", field)
	}
	var out []string
	for _, val := range values {
		if !strings.HasPrefix(val, prefix) || !validID(val) {
			return nil, fmt.Errorf("%q is not a Stripe %s id (%s…)", val, strings.TrimSuffix(strings.TrimPrefix(field, "stripe_"), "s"), prefix)
		}
		if !slices.Contains(out, val) {
			out = append(out, val)
		}
	}
	return out, nil
}

// ScopeRequest refuses a Stripe-Account or Stripe-Context outside the key's
// accounts (any, when it names none), and a /v1/customers/{id}/… path for a
// customer outside its customers.
func (v *Vendor) ScopeRequest(s keybrake.Scope, op *keybrake.Operation, params []string, req *keybrake.VendorRequest) *keybrake.Error {
	for _, h := range []string{"Stripe-Account", "Stripe-Context"} {
		val := req.Header.Get(h)
		switch {
		case val == "":
		case !s.Has(ScopeAccounts):
			return keybrake.ScopeViolation(ScopeAccounts, "%s is set, but this key acts only on the platform account: it was issued without stripe_accounts", h)
		case !s.Allows(ScopeAccounts, val):
			return keybrake.ScopeViolation(ScopeAccounts, "%s %s is not one of this key's stripe_accounts %v", h, truncate(val), s[ScopeAccounts])
		}
	}
	if s.Has(ScopeCustomers) && len(op.Pattern) > 2 && op.Pattern[1] == "customers" && op.Pattern[2] == "*" && len(params) > 0 {
		if !s.Allows(ScopeCustomers, params[0]) {
			return keybrake.ScopeViolation(ScopeCustomers, "customer %s is not one of this key's stripe_customers %v", truncate(params[0]), s[ScopeCustomers])
		}
	}
	return nil
}

// ScopeBody refuses a customer or connected account named in the body
// outside the key's scope, and a money-moving create that names no
// customer when the key is confined to customers.
func (v *Vendor) ScopeBody(s keybrake.Scope, op *keybrake.Operation, _ []string, _ *keybrake.VendorRequest, p *keybrake.Prepared) *keybrake.Error {
	form := p.Form
	if form == nil && len(p.Body) > 0 && (s.Has(ScopeAccounts) || s.Has(ScopeCustomers)) {
		// A body Prepare did not parse (an operation the pricing file added
		// outside /v1): what it names cannot be checked, so it is refused.
		return keybrake.ScopeViolation(ScopeCustomers, "%s carries a body Keybrake does not read, so this key's scope cannot be checked on it", op.Name)
	}
	if s.Has(ScopeAccounts) {
		for _, f := range accountFields {
			for _, val := range form[f] {
				if strings.HasPrefix(val, "acct_") && !s.Allows(ScopeAccounts, val) {
					return keybrake.ScopeViolation(ScopeAccounts, "%s %s is not one of this key's stripe_accounts %v", f, truncate(val), s[ScopeAccounts])
				}
			}
		}
	}
	if !s.Has(ScopeCustomers) {
		return nil
	}
	for k := range form {
		if strings.HasPrefix(k, "customer[") {
			return keybrake.ScopeViolation(ScopeCustomers, "customer must be a customer id, not %s", truncate(k))
		}
	}
	cus, ok, err := pricing.FormValue(form, "customer")
	switch {
	case err != nil:
		return keybrake.ScopeViolation(ScopeCustomers, "%s", keybrake.ErrorMessage(err))
	case ok && !s.Allows(ScopeCustomers, cus):
		return keybrake.ScopeViolation(ScopeCustomers, "customer %s is not one of this key's stripe_customers %v", truncate(cus), s[ScopeCustomers])
	case !ok && op.Model == keybrake.ModelBody && !slices.Contains(op.Pattern, "*"):
		return keybrake.ScopeViolation(ScopeCustomers, "%s names no customer, and this key may move money only for its stripe_customers %v", op.Name, s[ScopeCustomers])
	}
	return nil
}

// ScopeObject refuses a call priced from an object (the PaymentIntent a
// confirm acts on, the charge a refund empties) whose customer is outside
// the key's customers.
func (v *Vendor) ScopeObject(s keybrake.Scope, op *keybrake.Operation, path string, body []byte) *keybrake.Error {
	if !s.Has(ScopeCustomers) {
		return nil
	}
	var obj struct {
		Customer json.RawMessage `json:"customer"`
	}
	_ = json.Unmarshal(body, &obj)
	var id string
	if json.Unmarshal(obj.Customer, &id) != nil {
		var expanded struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(obj.Customer, &expanded)
		id = expanded.ID
	}
	if id == "" || !s.Allows(ScopeCustomers, id) {
		shown := id
		if shown == "" {
			shown = "no customer"
		}
		return keybrake.ScopeViolation(ScopeCustomers, "%s acts on %s, which belongs to %s: this key may act only for its stripe_customers %v",
			op.Name, path, truncate(shown), s[ScopeCustomers])
	}
	return nil
}

var _ keybrake.Scoper = (*Vendor)(nil)
