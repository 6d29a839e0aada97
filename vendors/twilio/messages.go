package twilio

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/pricing"
)

func unpriceable(format string, args ...any) error {
	return keybrake.Errorf(keybrake.CodeUnpriceableRequest, format, args...)
}

func one(form url.Values, field string) (string, bool, error) {
	return pricing.FormValue(form, field)
}

// destination reads To: an E.164 number. Channel addresses (whatsapp:,
// messenger:, rcs:), SIP URIs and clients have their own prices and are
// refused until priced.
func destination(form url.Values, field string) (string, error) {
	to, ok, err := one(form, field)
	if err != nil {
		return "", err
	}
	if !ok || to == "" {
		return "", unpriceable("%s is required: Keybrake prices a message or call by its destination", field)
	}
	to = strings.TrimSpace(to)
	if strings.Contains(to, ":") {
		return "", unpriceable("%s %q: only phone numbers are priced; channel addresses, SIP URIs and clients are refused", field, truncate(to))
	}
	if !pricing.ValidE164(to) {
		return "", unpriceable("%s must be an E.164 number such as +15551234567 to be priced, got %q", field, truncate(to))
	}
	return to, nil
}

// messagePricer prices messages.create: segments × the destination's SMS
// price, or the destination's MMS price when media is attached, and settles
// from the price Twilio states (usually null at creation: the estimate
// stands, or the reconciler fetches it later).
type messagePricer struct {
	fx  *pricing.FX
	SMS pricing.CountryPrices
	MMS pricing.CountryPrices
}

func (p *messagePricer) Params() pricing.Params {
	return pricing.Params{
		{Name: "sms", Doc: "price of one SMS segment by destination", Value: &p.SMS},
		{Name: "mms", Doc: "price of one MMS message by destination", Value: &p.MMS},
	}
}

func (p *messagePricer) Describe() string {
	return "segments × SMS price (" + p.SMS.String() + "); MMS (" + p.MMS.String() + ")"
}

func (p *messagePricer) Price(_ context.Context, c *keybrake.PriceCall) (*keybrake.Quote, error) {
	form := c.Form
	to, err := destination(form, "To")
	if err != nil {
		return nil, err
	}
	body, _, err := one(form, "Body")
	if err != nil {
		return nil, err
	}
	mms := len(form["MediaUrl"]) > 0
	if s, _, err := one(form, "SendAsMms"); err != nil {
		return nil, err
	} else if strings.EqualFold(s, "true") {
		mms = true
	}
	for k := range form {
		switch {
		case strings.EqualFold(k, "ContentSid"):
			// The template, not Body, is what Twilio sends: its length
			// (and so its segments) is unknown here.
			return nil, unpriceable("messages sent from a ContentSid template cannot be priced before sending (their length is unknown); send Body instead")
		case strings.EqualFold(k, "ShortenUrls"):
			// Shortened links replace the URLs in Body: the length Twilio
			// sends is not the one Keybrake counted.
			if v := form.Get(k); !strings.EqualFold(v, "false") {
				return nil, unpriceable("ShortenUrls changes the length of Body after Keybrake counted its segments; it is refused")
			}
		case strings.EqualFold(k, "MediaUrl") && k != "MediaUrl":
			return nil, unpriceable("parameter %q: write it MediaUrl", k)
		}
	}
	var est keybrake.Micros
	if mms {
		price, _, ok := p.MMS.Lookup(to)
		if !ok {
			return nil, unpriceable("no MMS price for %s (%s); add operations.twilio.messages.create.mms.countries.%s (or .default) to the pricing file", maskNumber(to), countryName(to), countryName(to))
		}
		est = price
	} else {
		n, _, ok := Segments(body)
		if !ok {
			return nil, unpriceable("Body is not valid UTF-8")
		}
		price, _, ok := p.SMS.Lookup(to)
		if !ok {
			return nil, unpriceable("no SMS price for %s (%s); add operations.twilio.messages.create.sms.countries.%s (or .default) to the pricing file", maskNumber(to), countryName(to), countryName(to))
		}
		est = pricing.Mul(price, int64(n))
	}
	return &keybrake.Quote{Amount: est, Settle: p.settle}, nil
}

// settle reads the message's price: Twilio reports it as a negative decimal
// string in price_unit ("-0.00750", "USD"), usually null at creation.
func (p *messagePricer) settle(resp *keybrake.VendorResponse) (keybrake.Micros, bool) {
	if resp.Truncated {
		return 0, false
	}
	var obj struct {
		Price     json.RawMessage `json:"price"`
		PriceUnit string          `json:"price_unit"`
	}
	if json.Unmarshal(resp.Body, &obj) != nil {
		return 0, false
	}
	return parsePrice(p.fx, obj.Price, obj.PriceUnit)
}

// messageUpdate accepts only what a message update does without sending:
// redacting its body (Body="") and canceling a scheduled message.
type messageUpdate struct{}

func (messageUpdate) Price(_ context.Context, c *keybrake.PriceCall) (*keybrake.Quote, error) {
	for k, vals := range c.Form {
		switch {
		case k == "Body" && len(vals) == 1 && vals[0] == "":
		case k == "Status" && len(vals) == 1 && vals[0] == "canceled":
		default:
			return nil, unpriceable("a message update may only redact the body (Body=) or cancel a scheduled message (Status=canceled); %q is refused", truncate(k))
		}
	}
	return &keybrake.Quote{}, nil
}

func (messageUpdate) Describe() string { return "0 (Body= or Status=canceled only)" }

// statusOnly accepts an update that only ends a call or a conference.
type statusOnly []string

func (s statusOnly) Price(_ context.Context, c *keybrake.PriceCall) (*keybrake.Quote, error) {
	for k, vals := range c.Form {
		ok := k == "Status" && len(vals) == 1
		if ok {
			ok = false
			for _, want := range s {
				ok = ok || vals[0] == want
			}
		}
		if !ok {
			return nil, unpriceable("%s only ends the call (Status=%s); %q is refused: new TwiML or a new TimeLimit could run calls Keybrake did not price",
				c.Op.Name, strings.Join(s, " or "), truncate(k))
		}
	}
	if len(c.Form["Status"]) == 0 {
		return nil, unpriceable("%s needs Status=%s", c.Op.Name, strings.Join(s, " or "))
	}
	return &keybrake.Quote{}, nil
}

func (s statusOnly) Describe() string { return "0 (Status=" + strings.Join(s, "|") + " only)" }

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

// ParsePrice converts Twilio's price (a JSON string or number such as
// "-0.00750", negative for a charge) in unit (default USD) to micro-dollars,
// rounding up. ok is false for null, unparseable or unpriced currencies.
func (v *Vendor) ParsePrice(raw json.RawMessage, unit string) (keybrake.Micros, bool) {
	return parsePrice(v.fx, raw, unit)
}

func parsePrice(fx *pricing.FX, raw json.RawMessage, unit string) (keybrake.Micros, bool) {
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
	m, err := fx.ToMicros(minor, len(frac), strings.ToLower(unit))
	if err != nil {
		return 0, false
	}
	return m, true
}
