package resend

import (
	"fmt"
	"slices"
	"strings"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/canon"
)

// ScopeFromDomains is Resend's scope field: the domains a key may send from.
const ScopeFromDomains = "resend_from_domains"

func (v *Vendor) ScopeFields() []keybrake.ScopeField {
	return []keybrake.ScopeField{{Name: ScopeFromDomains, Doc: "domains the key may send from (the from address's domain, exactly: example.com does not admit mail.example.com); every email must name a from"}}
}

// NormalizeScope lower-cases domain names and checks their shape.
func (v *Vendor) NormalizeScope(field string, values []string) ([]string, error) {
	if field != ScopeFromDomains {
		return nil, fmt.Errorf("%s is not a Resend scope field", field)
	}
	var out []string
	for _, val := range values {
		d := strings.ToLower(val)
		if !domainName(d) {
			return nil, fmt.Errorf("%q is not a domain name such as example.com", val)
		}
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out, nil
}

func domainName(d string) bool {
	if len(d) == 0 || len(d) > 253 || !strings.Contains(d, ".") {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func (v *Vendor) ScopeRequest(keybrake.Scope, *keybrake.Operation, []string, *keybrake.VendorRequest) *keybrake.Error {
	return nil
}

// ScopeBody refuses an email (each email of a batch) whose from is outside
// the key's domains, or that names no from on a send.
func (v *Vendor) ScopeBody(s keybrake.Scope, op *keybrake.Operation, _ []string, _ *keybrake.VendorRequest, p *keybrake.Prepared) *keybrake.Error {
	if !s.Has(ScopeFromDomains) || len(p.Body) == 0 {
		return nil
	}
	doc, err := canon.ParseJSON(p.Body, canon.DefaultLimits)
	if err != nil {
		return keybrake.ScopeViolation(ScopeFromDomains, "the body cannot be read: %s", keybrake.ErrorMessage(err))
	}
	emails := []*canon.JSON{doc}
	if doc.Kind == canon.Array {
		emails = doc.Vals
	}
	for i, email := range emails {
		where := op.Name
		if doc.Kind == canon.Array {
			where = fmt.Sprintf("email %d of the batch", i)
		}
		if email.Kind != canon.Object {
			continue // the pricer refuses it
		}
		var from *canon.JSON
		for j, k := range email.Keys {
			switch {
			case k == "from":
				from = email.Vals[j]
			case strings.EqualFold(k, "from"):
				return keybrake.ScopeViolation(ScopeFromDomains, "%s: write %q as \"from\"", where, k)
			}
		}
		if from == nil {
			if op.Model == keybrake.ModelBody {
				return keybrake.ScopeViolation(ScopeFromDomains, "%s names no from, and this key may send only from %v", where, s[ScopeFromDomains])
			}
			continue
		}
		domain, ok := fromDomain(from)
		if !ok {
			return keybrake.ScopeViolation(ScopeFromDomains, "%s: from must be one address, such as \"Acme <billing@example.com>\"", where)
		}
		if !s.Allows(ScopeFromDomains, domain) {
			return keybrake.ScopeViolation(ScopeFromDomains, "%s sends from %s, which is not one of this key's resend_from_domains %v", where, domain, s[ScopeFromDomains])
		}
	}
	return nil
}

// fromDomain reads the domain of "Name <user@domain>" or "user@domain".
func fromDomain(v *canon.JSON) (string, bool) {
	if v.Kind != canon.String {
		return "", false
	}
	addr := strings.TrimSpace(v.Str)
	if i := strings.LastIndexByte(addr, '<'); i >= 0 {
		if !strings.HasSuffix(addr, ">") {
			return "", false
		}
		addr = addr[i+1 : len(addr)-1]
	}
	if strings.ContainsAny(addr, ",<> \t\r\n") || strings.Count(addr, "@") != 1 {
		return "", false
	}
	_, domain, _ := strings.Cut(addr, "@")
	domain = strings.ToLower(domain)
	return domain, domainName(domain)
}

func (v *Vendor) ScopeObject(keybrake.Scope, *keybrake.Operation, string, []byte) *keybrake.Error {
	return nil
}

var _ keybrake.Scoper = (*Vendor)(nil)
