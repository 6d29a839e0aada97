package pricing

import (
	"fmt"
	"sort"
	"strings"

	"github.com/keybrake/keybrake"
)

// Table is the effective price table: the built-in defaults, overridden by
// a pricing file (--pricing) and then by --fx-rate flags. Every amount is an
// exact keybrake.Micros; the file is read from its literal decimal text.
type Table struct {
	FX     *FX
	Stripe StripePrices
	Twilio TwilioPrices
	Resend ResendPrices
	// Source names the pricing file the table was read from ("" for the
	// built-in defaults only).
	Source string
}

// StripePrices are Stripe's prices beyond the amounts in request bodies.
type StripePrices struct {
	Endpoints Endpoints
}

// TwilioPrices price Twilio's Programmable Messaging and Voice.
type TwilioPrices struct {
	// SMS is the price of one SMS segment by destination.
	SMS CountryPrices
	// MMS is the price of one MMS message by destination.
	MMS CountryPrices
	// CallMax is reserved for every call created (its cost depends on a
	// duration nobody knows in advance).
	CallMax keybrake.Micros
	// Endpoints add a fixed price to other calls.
	Endpoints Endpoints
}

// ResendPrices price Resend's email sending.
type ResendPrices struct {
	// PerEmail is charged per recipient (to + cc + bcc): Resend counts each
	// recipient as one email.
	PerEmail  keybrake.Micros
	Endpoints Endpoints
}

// CountryPrices maps a destination to a price. Keys are ISO 3166-1 alpha-2
// country codes ("US") or E.164 prefixes ("+1876"); a prefix key beats a
// country key, and a longer prefix beats a shorter one.
type CountryPrices struct {
	ByKey map[string]keybrake.Micros
	// Default prices destinations with no key; without one they are
	// refused.
	Default    keybrake.Micros
	HasDefault bool
}

// Lookup prices an E.164 number ("+15551234567"). It returns the key that
// priced it ("US", "+1876" or "default") and false when nothing does.
func (c CountryPrices) Lookup(number string) (keybrake.Micros, string, bool) {
	digits := strings.TrimPrefix(number, "+")
	for n := len(digits); n >= 1; n-- {
		if p, ok := c.ByKey["+"+digits[:n]]; ok {
			return p, "+" + digits[:n], true
		}
	}
	if cc, ok := CountryOf(number); ok {
		if p, ok := c.ByKey[cc]; ok {
			return p, cc, true
		}
	}
	if c.HasDefault {
		return c.Default, "default", true
	}
	return 0, "", false
}

// Keys lists the configured keys, sorted.
func (c CountryPrices) Keys() []string {
	out := make([]string, 0, len(c.ByKey))
	for k := range c.ByKey {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (c CountryPrices) clone() CountryPrices {
	out := c
	out.ByKey = make(map[string]keybrake.Micros, len(c.ByKey))
	for k, v := range c.ByKey {
		out.ByKey[k] = v
	}
	return out
}

// EndpointPrice is a fixed price per call of the endpoints a rule matches,
// added to whatever Keybrake prices from the body (an amount, segments,
// recipients).
type EndpointPrice struct {
	Rule  keybrake.Rule
	Price keybrake.Micros
	// Line is where the pricing file set it (0 for a built-in price).
	Line int
}

// Endpoints is an ordered list of endpoint prices: the most specific rule
// (fewest "*" segments) wins, and among equals the first written.
type Endpoints []EndpointPrice

// Lookup returns the fixed price of a call.
func (e Endpoints) Lookup(method, path string) (keybrake.Micros, bool) {
	for _, ep := range e {
		if ep.Rule.Match(method, path) {
			return ep.Price, true
		}
	}
	return 0, false
}

func wildcards(r keybrake.Rule) int {
	n := 0
	for _, s := range r.Segments {
		if s == "*" {
			n++
		}
	}
	return n
}

// set adds or replaces the price of a rule and keeps the list ordered.
func (e Endpoints) set(ep EndpointPrice) Endpoints {
	out := make(Endpoints, 0, len(e)+1)
	replaced := false
	for _, x := range e {
		if x.Rule.String() == ep.Rule.String() {
			out = append(out, ep)
			replaced = true
			continue
		}
		out = append(out, x)
	}
	if !replaced {
		out = append(out, ep)
	}
	sort.SliceStable(out, func(i, j int) bool { return wildcards(out[i].Rule) < wildcards(out[j].Rule) })
	return out
}

// Owned reports the first endpoint whose path owns rejects, for vendors to
// check that a pricing file only prices their own API.
func (e Endpoints) Owned(owns func(path string) bool) error {
	for _, ep := range e {
		if !owns("/" + strings.Join(ep.Rule.Segments, "/")) {
			where := ""
			if ep.Line > 0 {
				where = fmt.Sprintf("line %d: ", ep.Line)
			}
			return fmt.Errorf("%sendpoint price %q: not a path of this vendor's API", where, ep.Rule.String())
		}
	}
	return nil
}

// Built-in defaults. Vendor prices compiled into a binary go stale, so each
// one is rounded up to the dearest ordinary case: a reservation may
// over-count (and settles from the vendor's answer where it can), it must
// not under-count. The README's pricing section says where each comes from.
const (
	// US and Canada long-code SMS: Twilio's $0.0083 per segment plus the
	// highest US carrier pass-through fee ($0.0062), rounded up.
	defaultSMSNorthAmerica = "0.015"
	// US and Canada MMS: Twilio's $0.022 per message plus carrier fees,
	// rounded up.
	defaultMMSNorthAmerica = "0.04"
	// A created call reserves 240 minutes (Twilio's default 4-hour
	// TimeLimit) at $0.014 per minute (US outbound), rounded up.
	defaultCallMax = "3.50"
	// Resend: $0.90 per 1,000 emails beyond a plan's quota.
	defaultPerEmail = "0.0009"
)

func mustUSD(s string) keybrake.Micros {
	m, err := keybrake.ParseUSD(s)
	if err != nil {
		panic(err)
	}
	return m
}

// Default is the built-in table: USD only for Stripe, SMS and MMS to the US
// and Canada (other destinations are refused until priced), a $3.50 call
// maximum, and $0.0009 per Resend email.
func Default() *Table {
	return &Table{
		FX: DefaultFX(),
		Twilio: TwilioPrices{
			SMS:     CountryPrices{ByKey: map[string]keybrake.Micros{"US": mustUSD(defaultSMSNorthAmerica), "CA": mustUSD(defaultSMSNorthAmerica)}},
			MMS:     CountryPrices{ByKey: map[string]keybrake.Micros{"US": mustUSD(defaultMMSNorthAmerica), "CA": mustUSD(defaultMMSNorthAmerica)}},
			CallMax: mustUSD(defaultCallMax),
		},
		Resend: ResendPrices{PerEmail: mustUSD(defaultPerEmail)},
	}
}

// Clone returns a deep copy, so a caller may override prices without
// touching the original.
func (t *Table) Clone() *Table {
	out := *t
	out.FX = t.FX.Clone()
	out.Stripe.Endpoints = append(Endpoints(nil), t.Stripe.Endpoints...)
	out.Twilio.SMS = t.Twilio.SMS.clone()
	out.Twilio.MMS = t.Twilio.MMS.clone()
	out.Twilio.Endpoints = append(Endpoints(nil), t.Twilio.Endpoints...)
	out.Resend.Endpoints = append(Endpoints(nil), t.Resend.Endpoints...)
	return &out
}
