package twilio

import (
	"encoding/json"
	"mime"
	"net/url"
	"strings"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/pricing"
)

// The calls that cost money by their content.
var (
	createMessage = keybrake.MustParseRule("POST /2010-04-01/Accounts/*/Messages.json")
	createCall    = keybrake.MustParseRule("POST /2010-04-01/Accounts/*/Calls.json")
)

const formType = "application/x-www-form-urlencoded"

// detail is carried from Prepare to Settle.
type detail struct {
	fixed  keybrake.Micros // the pricing file's price for the endpoint
	priced bool            // a message or call: the response's price counts
}

func unpriceable(format string, args ...any) error {
	return keybrake.Errorf(keybrake.CodeUnpriceableRequest, format, args...)
}

// upstreamPath replaces the {AccountSid} segment of
// /2010-04-01/Accounts/{AccountSid}/… (or …/Accounts/{AccountSid}.json)
// with the real account, so agents never hold it.
func (v *Vendor) upstreamPath(path string) string {
	const accounts = apiPrefix + "Accounts/"
	if !strings.HasPrefix(path, accounts) {
		return path
	}
	rest := path[len(accounts):]
	seg, tail, more := strings.Cut(rest, "/")
	if more {
		return accounts + v.sid + "/" + tail
	}
	if strings.HasSuffix(seg, ".json") {
		return accounts + v.sid + ".json"
	}
	return accounts + v.sid
}

// Prepare prices a Twilio call. Messages: segments × the destination's SMS
// price, or the destination's MMS price when media is attached. Calls: the
// configured per-call maximum. Any endpoint may carry a fixed price from
// the pricing file, added on top. A message or call whose price cannot be
// worked out is refused, never forwarded unpriced.
func (v *Vendor) Prepare(req *keybrake.VendorRequest) (*keybrake.Prepared, error) {
	p := &keybrake.Prepared{Body: req.Body, UpstreamPath: v.upstreamPath(req.Path)}
	d := &detail{}
	d.fixed, _ = v.prices.Endpoints.Lookup(req.Method, req.Path)
	p.Detail = d

	isMessage := createMessage.Match(req.Method, req.Path)
	isCall := createCall.Match(req.Method, req.Path)
	if !isMessage && !isCall {
		p.Estimate = d.fixed
		p.Priced = d.fixed > 0
		return p, nil
	}
	d.priced, p.Priced = true, true
	if err := keybrake.CheckPricedBody(req); err != nil {
		return nil, err
	}
	ct, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type"))
	if ct != formType && ct != "" {
		return nil, unpriceable("Twilio takes form-encoded bodies (Content-Type %s), got %q", formType, ct)
	}
	form, err := url.ParseQuery(string(req.Body))
	if err != nil {
		return nil, unpriceable("form body cannot be parsed: %v", err)
	}
	var est keybrake.Micros
	if isMessage {
		est, err = v.priceMessage(form)
	} else {
		est, err = v.priceCall(form)
	}
	if err != nil {
		return nil, err
	}
	p.Estimate = keybrake.AddCapped(est, d.fixed)
	return p, nil
}

func one(form url.Values, field string) (string, bool, error) {
	switch vals := form[field]; len(vals) {
	case 0:
		return "", false, nil
	case 1:
		return vals[0], true, nil
	default:
		return "", false, unpriceable("%s is given more than once", field)
	}
}

// destination reads To: an E.164 number. Channel addresses (whatsapp:,
// messenger:, rcs:) have their own prices and are refused until priced.
func destination(form url.Values) (string, error) {
	to, ok, err := one(form, "To")
	if err != nil {
		return "", err
	}
	if !ok || to == "" {
		return "", unpriceable("To is required: Keybrake prices a message or call by its destination")
	}
	to = strings.TrimSpace(to)
	if strings.Contains(to, ":") {
		return "", unpriceable("To %q: only phone numbers are priced; channel addresses such as whatsapp: are refused", truncate(to))
	}
	if !pricing.ValidE164(to) {
		return "", unpriceable("To must be an E.164 number such as +15551234567 to be priced, got %q", truncate(to))
	}
	return to, nil
}

func (v *Vendor) priceMessage(form url.Values) (keybrake.Micros, error) {
	to, err := destination(form)
	if err != nil {
		return 0, err
	}
	body, _, err := one(form, "Body")
	if err != nil {
		return 0, err
	}
	mms := len(form["MediaUrl"]) > 0
	if s, _, err := one(form, "SendAsMms"); err != nil {
		return 0, err
	} else if strings.EqualFold(s, "true") {
		mms = true
	}
	if len(form["ContentSid"]) > 0 {
		// The template, not Body, is what Twilio sends: its length (and so
		// its segments) is unknown here.
		return 0, unpriceable("messages sent from a ContentSid template cannot be priced before sending (their length is unknown); send Body instead")
	}
	if mms {
		price, _, ok := v.prices.MMS.Lookup(to)
		if !ok {
			return 0, unpriceable("no MMS price for %s (%s); add twilio.mms.countries.%s or twilio.mms.default to the pricing file", maskNumber(to), countryName(to), countryName(to))
		}
		return price, nil
	}
	n, _, ok := Segments(body)
	if !ok {
		return 0, unpriceable("Body is not valid UTF-8")
	}
	price, _, ok := v.prices.SMS.Lookup(to)
	if !ok {
		return 0, unpriceable("no SMS price for %s (%s); add twilio.sms.countries.%s or twilio.sms.default to the pricing file", maskNumber(to), countryName(to), countryName(to))
	}
	return mul(price, n), nil
}

func (v *Vendor) priceCall(form url.Values) (keybrake.Micros, error) {
	if _, err := destination(form); err != nil {
		return 0, err
	}
	return v.prices.CallMax, nil
}

func mul(price keybrake.Micros, n int) keybrake.Micros {
	var total keybrake.Micros
	for i := 0; i < n; i++ {
		total = keybrake.AddCapped(total, price)
	}
	return total
}

func countryName(number string) string {
	if cc, ok := pricing.CountryOf(number); ok {
		return cc
	}
	return "unknown country"
}

// maskNumber keeps a destination out of error messages and logs beyond its
// country prefix: phone numbers are personal data.
func maskNumber(n string) string {
	if len(n) <= 5 {
		return "+…"
	}
	return n[:5] + "…"
}

func truncate(s string) string {
	if len(s) > 32 {
		s = s[:32] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// Settle reads the resource's sid and, for messages and calls, its price:
// Twilio reports it as a negative decimal string in price_unit ("-0.00750",
// "USD"), usually null at creation. A null price leaves the estimate
// standing.
func (v *Vendor) Settle(p *keybrake.Prepared, resp *keybrake.VendorResponse) (keybrake.Micros, string, bool) {
	d, _ := p.Detail.(*detail)
	if d == nil {
		d = &detail{}
	}
	if resp.Truncated {
		return 0, "", false
	}
	var obj struct {
		Sid       string          `json:"sid"`
		Price     json.RawMessage `json:"price"`
		PriceUnit string          `json:"price_unit"`
	}
	if err := json.Unmarshal(resp.Body, &obj); err != nil {
		return 0, "", !d.priced && d.fixed == 0
	}
	if !d.priced {
		return d.fixed, obj.Sid, true
	}
	cost, ok := v.ParsePrice(obj.Price, obj.PriceUnit)
	if !ok {
		return 0, obj.Sid, false
	}
	return keybrake.AddCapped(cost, d.fixed), obj.Sid, true
}

// ParsePrice converts Twilio's price (a JSON string or number such as
// "-0.00750", negative for a charge) in unit (default USD) to micro-dollars,
// rounding up. ok is false for null, unparseable or unpriced currencies.
func (v *Vendor) ParsePrice(raw json.RawMessage, unit string) (keybrake.Micros, bool) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return 0, false
	}
	if strings.HasPrefix(s, `"`) {
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, false
		}
		s = strings.TrimSpace(s)
	}
	s = strings.TrimPrefix(strings.TrimPrefix(s, "-"), "+")
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" || len(whole)+len(frac) > 15 || strings.Trim(whole+frac, "0123456789") != "" {
		return 0, false
	}
	minor := int64(0)
	for _, c := range whole + frac {
		minor = minor*10 + int64(c-'0')
	}
	if unit == "" {
		unit = "usd"
	}
	m, err := v.fx.ToMicros(minor, len(frac), strings.ToLower(unit))
	if err != nil {
		return 0, false
	}
	return m, true
}
