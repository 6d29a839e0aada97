package pricing

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/keybrake/keybrake"
)

// The generic price models the vendors' catalogues compose: an amount in
// the request, a price per unit (segment, recipient), a price per minute of
// a bounded duration. Vendor-specific ones (a PaymentIntent's exposure,
// TwiML legs) live with each vendor's catalogue.

func unpriceable(format string, args ...any) error {
	return keybrake.Errorf(keybrake.CodeUnpriceableRequest, format, args...)
}

// FormValue returns the one value of a form field, and whether it is
// present. A field given twice, or under another letter case ("Amount" for
// "amount", "to" for "To"), is refused: some parser downstream might read it
// where Keybrake did not.
func FormValue(form url.Values, field string) (string, bool, error) {
	for k := range form {
		if k != field && strings.EqualFold(k, field) {
			return "", false, unpriceable("parameter %q: write it %q", k, field)
		}
	}
	switch vals := form[field]; len(vals) {
	case 0:
		return "", false, nil
	case 1:
		return vals[0], true, nil
	default:
		return "", false, unpriceable("%s is given more than once", field)
	}
}

// ParseMinor reads an integer amount in a currency's minor units, at most 15
// digits (Stripe's largest amounts have 8; 15 keeps every conversion far
// from overflow), optionally with a leading "-" when signed. It returns the
// absolute value.
func ParseMinor(s string, signed bool) (int64, bool) {
	if signed && strings.HasPrefix(s, "-") {
		s = s[1:]
	}
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

// FormAmount reads a required amount field.
func FormAmount(form url.Values, field string, signed bool) (int64, error) {
	s, ok, err := FormValue(form, field)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, unpriceable("%s is required: Keybrake reserves the amount before the call", field)
	}
	minor, valid := ParseMinor(s, signed)
	if !valid {
		return 0, unpriceable("%s must be an integer in the currency's smallest unit, got %q", field, truncate(s))
	}
	return minor, nil
}

// FormCurrency reads a required three-letter currency field, lower-cased.
func FormCurrency(form url.Values, field string) (string, error) {
	s, ok, err := FormValue(form, field)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", unpriceable("%s is required to price the call", field)
	}
	return CheckCurrency(field, s)
}

// CheckCurrency validates a currency code and lower-cases it.
func CheckCurrency(field, s string) (string, error) {
	c := strings.ToLower(s)
	if len(c) != 3 || strings.Trim(c, "abcdefghijklmnopqrstuvwxyz") != "" {
		return "", unpriceable("%s must be a three-letter ISO currency code, got %q", field, truncate(s))
	}
	return c, nil
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

// Minor converts an amount in minor units of a currency with the given
// number of decimals.
type Minor struct {
	FX       *FX
	Exponent func(currency string) int
}

// USD prices minor units of currency in micro-dollars, rounding up.
func (m Minor) USD(minor int64, currency string) (keybrake.Micros, error) {
	return m.FX.ToMicros(minor, m.Exponent(currency), currency)
}

// parseMinorBytes is ParseMinor(string(b), true) without the copy.
func parseMinorBytes(b []byte) (int64, bool) {
	if len(b) > 0 && b[0] == '-' {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 15 {
		return 0, false
	}
	var n int64
	for _, ch := range b {
		if ch < '0' || ch > '9' {
			return 0, false
		}
		n = n*10 + int64(ch-'0')
	}
	return n, true
}

// plainJSONString reads a JSON string literal with no escapes; ok=false
// for anything else (which json.Unmarshal then reads).
func plainJSONString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' || bytes.IndexByte(raw, '\\') >= 0 || !utf8.Valid(raw) {
		return "", false
	}
	return string(raw[1 : len(raw)-1]), true
}

// SettleJSON reads the amount moved from a JSON answer: the integer field
// amountField in the currency of its "currency" field (fallback when the
// answer names none), by absolute value.
func (m Minor) SettleJSON(amountField, fallback string) func(*keybrake.VendorResponse) (keybrake.Micros, bool) {
	return func(resp *keybrake.VendorResponse) (keybrake.Micros, bool) {
		if resp.Truncated {
			return 0, false
		}
		rawAmount, ok := resp.JSONField(amountField)
		if !ok {
			return 0, false
		}
		rawCurrency, _ := resp.JSONField("currency")
		var minor int64
		if len(rawAmount) > 0 && (rawAmount[0] == '-' || rawAmount[0] >= '0' && rawAmount[0] <= '9') {
			// A number literal, valid JSON: its text is what json.Number holds.
			minor, ok = parseMinorBytes(rawAmount)
		} else {
			var amount json.Number
			if json.Unmarshal(rawAmount, &amount) != nil {
				return 0, false
			}
			minor, ok = ParseMinor(amount.String(), true)
		}
		if !ok {
			return 0, false
		}
		currency := fallback
		if c, isString := plainJSONString(rawCurrency); isString {
			if c != "" {
				currency = strings.ToLower(c)
			}
		} else if c := ""; json.Unmarshal(rawCurrency, &c) == nil && c != "" {
			currency = strings.ToLower(c)
		}
		if currency == "" {
			return 0, false
		}
		usd, err := m.USD(minor, currency)
		return usd, err == nil
	}
}

// Amount prices a call by an amount in its form body, in minor units of the
// currency a second field names (Stripe's charges, transfers, payouts,
// top-ups), and settles from the amount the answer reports.
type Amount struct {
	Minor
	Field    string // "amount"
	Currency string // "currency"
	// Signed: the amount may be negative (a credit) and is priced by its
	// absolute value, since either sign moves money.
	Signed bool
	// Settle names the answer's amount field ("" keeps the reservation).
	Settle string
}

func (a *Amount) Price(_ context.Context, c *keybrake.PriceCall) (*keybrake.Quote, error) {
	if c.Form == nil {
		return nil, unpriceable("%s is priced from a form-encoded (or JSON) body", c.Op.Name)
	}
	minor, err := FormAmount(c.Form, a.Field, a.Signed)
	if err != nil {
		return nil, err
	}
	cur, err := FormCurrency(c.Form, a.Currency)
	if err != nil {
		return nil, err
	}
	usd, err := a.USD(minor, cur)
	if err != nil {
		return nil, err
	}
	q := &keybrake.Quote{Amount: usd}
	if a.Settle != "" {
		q.Settle = a.SettleJSON(a.Settle, cur)
	}
	return q, nil
}

func (a *Amount) Describe() string {
	s := a.Field + " × FX of " + a.Currency
	if a.Signed {
		s = "|" + a.Field + "| × FX of " + a.Currency
	}
	return s
}

// Mul is price × n, saturating.
func Mul(price keybrake.Micros, n int64) keybrake.Micros {
	if n <= 0 || price <= 0 {
		return 0
	}
	if price > keybrake.Micros(1<<62)/keybrake.Micros(n) {
		return keybrake.Micros(1 << 62)
	}
	return price * keybrake.Micros(n)
}

// Minutes is the bounded-duration model: a call that runs at most a whole
// number of minutes, each costing PerMinute, plus Base once. With Fixed the
// duration is the request's own and the reservation exact; otherwise it is
// flexible, from one minute up to Max, as the key's budget allows, and the
// vendor is then told to stop after what was reserved (see Reserved).
type Minutes struct {
	Base, PerMinute keybrake.Micros
	Fixed           int // minutes the request itself sets; 0: flexible
	Max             int // the most minutes a flexible call may get
}

// Quote is the reservation of such a call.
func (m Minutes) Quote() *keybrake.Quote {
	if m.Fixed > 0 {
		return &keybrake.Quote{Amount: keybrake.AddCapped(m.Base, Mul(m.PerMinute, int64(m.Fixed)))}
	}
	n := max(m.Max, 1)
	q := &keybrake.Quote{Amount: keybrake.AddCapped(m.Base, Mul(m.PerMinute, int64(n)))}
	if m.PerMinute > 0 {
		q.Step, q.Floor = m.PerMinute, keybrake.AddCapped(m.Base, m.PerMinute)
	}
	return q
}

// Reserved is how many minutes a reservation pays for.
func (m Minutes) Reserved(reserved keybrake.Micros) int {
	if m.Fixed > 0 {
		return m.Fixed
	}
	if m.PerMinute <= 0 {
		return max(m.Max, 1)
	}
	n := int((reserved - m.Base) / m.PerMinute)
	return min(max(n, 0), max(m.Max, 1))
}
