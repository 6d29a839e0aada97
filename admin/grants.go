package admin

import (
	"fmt"
	"strings"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/api"
)

// grants lists what each rule of a key grants in its vendor's catalogue.
func (a *API) grants(vendor string, rules keybrake.Rules) []api.RuleGrant {
	v, ok := a.vendors[vendor]
	if !ok {
		return nil
	}
	cat := v.Catalog()
	out := make([]api.RuleGrant, 0, len(rules))
	for _, r := range rules {
		g := api.RuleGrant{Rule: r.String(), Operations: []api.Operation{}}
		for _, op := range cat.Covers(r) {
			g.Operations = append(g.Operations, api.Operation{Operation: op.Name, Method: op.Method, Path: op.Path(), PriceModel: op.Model})
		}
		out = append(out, g)
	}
	return out
}

// checkRules resolves every rule of a key against its vendor's catalogue:
// a rule that covers a forbidden operation is refused, naming both; one
// that covers no operation is refused as a probable typo. Operation rules
// are stored by their bare name.
func checkRules(v VendorInfo, rules keybrake.Rules) (keybrake.Rules, *keybrake.Error) {
	cat := v.Catalog()
	seen := map[string]bool{}
	var out keybrake.Rules
	for _, r := range rules {
		if !r.IsOperation() && !v.Owns(r.Path()) {
			return nil, keybrake.FieldError("allowed_endpoints", "%q is not a %s API path", r.String(), v.Name())
		}
		ops := cat.Covers(r)
		if len(ops) == 0 {
			if r.IsOperation() {
				return nil, keybrake.FieldError("allowed_endpoints", "%q is not an operation of the %s catalogue (a typo? `keybrake pricing` lists them)", r.String(), v.Name())
			}
			return nil, keybrake.FieldError("allowed_endpoints", "%q covers no operation of the %s catalogue, so it would allow nothing (a typo? `keybrake pricing` lists them)", r.String(), v.Name())
		}
		var forbidden []string
		var why string
		for _, op := range ops {
			if op.Model == keybrake.ModelForbidden {
				if why == "" {
					why = op.Note
				}
				if len(forbidden) < 5 {
					forbidden = append(forbidden, fmt.Sprintf("%s (%s %s)", op.Name, op.Method, op.Path()))
				} else if len(forbidden) == 5 {
					forbidden = append(forbidden, "…")
				}
			}
		}
		if len(forbidden) > 0 {
			return nil, keybrake.FieldError("allowed_endpoints", "%q covers forbidden operations, which Keybrake never forwards: %s (%s); narrow the rule",
				r.String(), strings.Join(forbidden, ", "), why)
		}
		if r.IsOperation() {
			r = keybrake.Rule{Op: ops[0].Name}
		}
		if seen[r.String()] {
			continue
		}
		seen[r.String()] = true
		out = append(out, r)
	}
	return out, nil
}

// checkTokenRules checks an issuer token's endpoints: each must cover an
// operation of at least one of its vendors.
func checkTokenRules(vendors []VendorInfo, names []string, rules keybrake.Rules) *keybrake.Error {
	for _, r := range rules {
		covered := false
		for _, v := range vendors {
			if r.IsOperation() || v.Owns(r.Path()) {
				covered = covered || len(v.Catalog().Covers(r)) > 0
			}
		}
		if !covered {
			return keybrake.FieldError("endpoints", "%q is not an API path or operation of %s", r.String(), strings.Join(names, ", "))
		}
	}
	return nil
}
