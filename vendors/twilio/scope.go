package twilio

import (
	"fmt"
	"slices"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/pricing"
)

// ScopeFrom is Twilio's scope field: the senders a key may use.
const ScopeFrom = "twilio_from"

// senderParams are the parameters that name who a message or call is from
// (CallerId: the caller id a SIP or client call presents).
var senderParams = []string{"From", "MessagingServiceSid", "CallerId"}

func (v *Vendor) ScopeFields() []keybrake.ScopeField {
	return []keybrake.ScopeField{{Name: ScopeFrom, Doc: "senders the key may use: From and CallerId numbers (+15551234567, whatsapp:+…, an alphanumeric sender id) and MessagingServiceSid values (MG…); a message, call or participant must name one"}}
}

// NormalizeScope accepts senders as Twilio writes them: printable, at most
// 64 characters, no comma.
func (v *Vendor) NormalizeScope(field string, values []string) ([]string, error) {
	if field != ScopeFrom {
		return nil, fmt.Errorf("%s is not a Twilio scope field", field)
	}
	var out []string
	for _, val := range values {
		if val == "" || len(val) > 64 || !printableNoComma(val) {
			return nil, fmt.Errorf("%q is not a sender (a number such as +15551234567, whatsapp:+…, an alphanumeric id, or a MessagingServiceSid MG…)", val)
		}
		if !slices.Contains(out, val) {
			out = append(out, val)
		}
	}
	return out, nil
}

func printableNoComma(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e || s[i] == ',' {
			return false
		}
	}
	return true
}

func (v *Vendor) ScopeRequest(keybrake.Scope, *keybrake.Operation, []string, *keybrake.VendorRequest) *keybrake.Error {
	return nil
}

// ScopeBody refuses a sender outside the key's twilio_from, and a message,
// call or participant (the operations that send) naming none.
func (v *Vendor) ScopeBody(s keybrake.Scope, op *keybrake.Operation, _ []string, _ *keybrake.VendorRequest, p *keybrake.Prepared) *keybrake.Error {
	if !s.Has(ScopeFrom) {
		return nil
	}
	named := false
	for _, f := range senderParams {
		val, ok, err := pricing.FormValue(p.Form, f)
		if err != nil {
			return keybrake.ScopeViolation(ScopeFrom, "%s", keybrake.ErrorMessage(err))
		}
		if !ok {
			continue
		}
		if !s.Allows(ScopeFrom, val) {
			return keybrake.ScopeViolation(ScopeFrom, "%s %s is not one of this key's twilio_from %v", f, truncate(val), s[ScopeFrom])
		}
		named = true
	}
	if !named && (op.Model == keybrake.ModelBody || op.Model == keybrake.ModelBounded) {
		return keybrake.ScopeViolation(ScopeFrom, "%s names no From or MessagingServiceSid, and this key may send only from its twilio_from %v", op.Name, s[ScopeFrom])
	}
	return nil
}

func (v *Vendor) ScopeObject(keybrake.Scope, *keybrake.Operation, string, []byte) *keybrake.Error {
	return nil
}

var _ keybrake.Scoper = (*Vendor)(nil)
