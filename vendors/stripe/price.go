package stripe

import (
	"encoding/json"
	"mime"
	"net/url"
	"strings"

	"github.com/keybrake/keybrake"
)

// moneyEndpoint is a Stripe call that moves money, and where its amount is
// written in the request and in the response.
type moneyEndpoint struct {
	rule           keybrake.Rule
	amountField    string // request field with the amount in minor units
	currencyField  string // request field with the currency; "" if Stripe takes it from an existing object
	currencyNeeded bool   // the currency field is required to price the call
	responseAmount string // response field with the amount actually moved
}

// moneyEndpoints are priced from their bodies. Captures and refunds can move
// "the rest of the amount" when no amount is sent; Keybrake cannot reserve
// an unknown amount, so it requires the amount field on them.
var moneyEndpoints = []moneyEndpoint{
	{keybrake.MustParseRule("POST /v1/payment_intents"), "amount", "currency", true, "amount"},
	{keybrake.MustParseRule("POST /v1/payment_intents/*/capture"), "amount_to_capture", "", false, "amount_received"},
	{keybrake.MustParseRule("POST /v1/charges"), "amount", "currency", true, "amount"},
	{keybrake.MustParseRule("POST /v1/charges/*/capture"), "amount", "", false, "amount_captured"},
	{keybrake.MustParseRule("POST /v1/refunds"), "amount", "currency", false, "amount"},
	{keybrake.MustParseRule("POST /v1/transfers"), "amount", "currency", true, "amount"},
	{keybrake.MustParseRule("POST /v1/payouts"), "amount", "currency", true, "amount"},
}

// detail is carried from Prepare to Settle.
type detail struct {
	ep       *moneyEndpoint  // nil for an endpoint priced only by the pricing file
	currency string          // request currency, if named
	fixed    keybrake.Micros // the pricing file's fixed price for the endpoint
}

const formType = "application/x-www-form-urlencoded"

func unpriceable(format string, args ...any) error {
	return keybrake.Errorf(keybrake.CodeUnpriceableRequest, format, args...)
}

// Prepare converts a JSON body on v1 routes to form encoding and prices the
// money-moving endpoints. A priced request whose amount cannot be read is
// refused, never forwarded unpriced.
func (v *Vendor) Prepare(req *keybrake.VendorRequest) (*keybrake.Prepared, error) {
	p := &keybrake.Prepared{Body: req.Body}
	isV1 := strings.HasPrefix(req.Path, "/v1/")
	ct, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type"))

	var ep *moneyEndpoint
	for i := range moneyEndpoints {
		if moneyEndpoints[i].rule.Match(req.Method, req.Path) {
			ep = &moneyEndpoints[i]
			break
		}
	}
	if ep == nil && req.Method == "POST" && strings.HasPrefix(req.Path, "/v2/money_management/") {
		return nil, unpriceable("Stripe v2 money-management calls are not priced by Keybrake yet; they are refused rather than forwarded unpriced")
	}
	// A fixed price from the pricing file, added to any amount.
	fixed, _ := v.endpoints.Lookup(req.Method, req.Path)
	if ep == nil && fixed > 0 {
		p.Priced = true
		p.Estimate = fixed
		p.Detail = &detail{fixed: fixed}
	}
	if ep != nil {
		p.Priced = true
		if err := keybrake.CheckPricedBody(req); err != nil {
			return nil, err
		}
	}

	var form url.Values
	switch {
	case isV1 && ct == "application/json":
		f, err := JSONToForm(req.Body)
		if err != nil {
			if ep != nil {
				return nil, unpriceable("%v", err)
			}
			return nil, keybrake.Errorf(keybrake.CodeInvalidRequest, "%v", err)
		}
		form = f
		p.Body = EncodeForm(f)
		p.ContentType = formType
	case ct == formType || (ct == "" && isV1):
		f, err := url.ParseQuery(string(req.Body))
		if err != nil && ep != nil {
			return nil, unpriceable("form body cannot be parsed: %v", err)
		}
		form = f
	}
	if ep == nil {
		return p, nil
	}
	if form == nil {
		return nil, unpriceable("body must be form-encoded or JSON to price %s (got Content-Type %q)", ep.rule, ct)
	}

	amount, err := singleValue(form, ep.amountField)
	if err != nil {
		return nil, err
	}
	minor, ok := parseMinor(amount)
	if !ok {
		return nil, keybrake.Errorf(keybrake.CodeUnpriceableRequest, "%s must be a non-negative integer in the currency's smallest unit, got %q", ep.amountField, amount)
	}
	d := &detail{ep: ep}
	if ep.currencyField != "" {
		if vals := form[ep.currencyField]; len(vals) > 1 {
			return nil, unpriceable("%s is given more than once", ep.currencyField)
		} else if len(vals) == 1 {
			d.currency = strings.ToLower(vals[0])
			if len(d.currency) != 3 || strings.Trim(d.currency, "abcdefghijklmnopqrstuvwxyz") != "" {
				return nil, unpriceable("%s must be a three-letter ISO currency code, got %q", ep.currencyField, vals[0])
			}
		} else if ep.currencyNeeded {
			return nil, unpriceable("currency is required to price %s", ep.rule)
		}
	}
	if d.currency != "" {
		p.Estimate, err = v.fx.ToMicros(minor, Exponent(d.currency), d.currency)
	} else {
		p.Estimate, err = v.worstCase(minor)
	}
	if err != nil {
		return nil, err
	}
	d.fixed = fixed
	p.Estimate = keybrake.AddCapped(p.Estimate, fixed)
	p.Detail = d
	return p, nil
}

// worstCase prices an amount whose currency the request does not name (a
// capture or refund takes it from the original charge) at the dearest priced
// currency, so the reservation can only over-count; settlement then reads
// the exact amount and currency from Stripe's answer.
func (v *Vendor) worstCase(minor int64) (keybrake.Micros, error) {
	var best keybrake.Micros
	for _, cur := range v.fx.Currencies() {
		m, err := v.fx.ToMicros(minor, Exponent(cur), cur)
		if err != nil {
			return 0, err
		}
		if m > best {
			best = m
		}
	}
	return best, nil
}

func singleValue(form url.Values, field string) (string, error) {
	vals := form[field]
	switch len(vals) {
	case 0:
		return "", keybrake.Errorf(keybrake.CodeUnpriceableRequest, "%s is required: Keybrake reserves the amount before the call", field)
	case 1:
		return vals[0], nil
	default:
		return "", keybrake.Errorf(keybrake.CodeUnpriceableRequest, "%s is given more than once", field)
	}
}

// parseMinor reads a non-negative integer of at most 15 digits (Stripe's
// largest amounts are 8 digits; 15 keeps every conversion far from overflow).
func parseMinor(s string) (int64, bool) {
	if s == "" || len(s) > 15 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int64(s[i]-'0')
	}
	return n, true
}

// Settle reads the object id of any JSON answer, and for money-moving calls
// the amount and currency Stripe reports.
func (v *Vendor) Settle(p *keybrake.Prepared, resp *keybrake.VendorResponse) (keybrake.Micros, string, bool) {
	if resp.Truncated {
		return 0, "", false
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(resp.Body, &obj); err != nil {
		return 0, "", false
	}
	var id string
	_ = json.Unmarshal(obj["id"], &id)
	d, _ := p.Detail.(*detail)
	if !p.Priced || d == nil {
		return 0, id, true
	}
	if d.ep == nil {
		return d.fixed, id, true
	}
	var amount json.Number
	if err := json.Unmarshal(obj[d.ep.responseAmount], &amount); err != nil {
		return 0, id, false
	}
	minor, ok := parseMinor(amount.String())
	if !ok {
		return 0, id, false
	}
	currency := d.currency
	var respCurrency string
	if err := json.Unmarshal(obj["currency"], &respCurrency); err == nil && respCurrency != "" {
		currency = strings.ToLower(respCurrency)
	}
	if currency == "" {
		return 0, id, false
	}
	m, err := v.fx.ToMicros(minor, Exponent(currency), currency)
	if err != nil {
		return 0, id, false
	}
	return keybrake.AddCapped(m, d.fixed), id, true
}
