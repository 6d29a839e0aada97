package pricing

import (
	"sort"
	"strings"

	"github.com/keybrake/keybrake"
)

// Table is a parsed pricing file: exchange rates, and per-operation
// overrides that ApplyTo lays over the vendors' catalogues. The built-in
// prices live in the catalogues themselves (vendors/<name>/catalog.go); the
// table only changes them.
type Table struct {
	FX *FX
	// Source names the pricing file the table was read from ("" for the
	// built-in defaults only).
	Source string

	file *fileParser // nil without a file
	ops  []entry     // the operations section, applied by ApplyTo
}

// Default is the table without a pricing file: USD only, every operation at
// its catalogue's built-in price.
func Default() *Table {
	return &Table{FX: DefaultFX()}
}

// Clone returns a copy whose FX can be changed without touching t.
func (t *Table) Clone() *Table {
	out := *t
	out.FX = t.FX.Clone()
	out.ops = append([]entry(nil), t.ops...)
	return &out
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

// Countries builds a price list from "US", "0.015", "CA", "0.015", ….
func Countries(kv ...string) CountryPrices {
	c := CountryPrices{ByKey: map[string]keybrake.Micros{}}
	for i := 0; i+1 < len(kv); i += 2 {
		c.ByKey[kv[i]] = MustUSD(kv[i+1])
	}
	return c
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

// Max is the dearest price of the list (its default included).
func (c CountryPrices) Max() keybrake.Micros {
	m := c.Default
	for _, p := range c.ByKey {
		m = max(m, p)
	}
	return m
}

// String lists the prices compactly: "US 0.015, CA 0.015, others refused".
func (c CountryPrices) String() string {
	var parts []string
	for _, k := range c.Keys() {
		parts = append(parts, k+" "+c.ByKey[k].String())
	}
	if c.HasDefault {
		parts = append(parts, "others "+c.Default.String())
	} else {
		parts = append(parts, "others refused")
	}
	return strings.Join(parts, ", ")
}

// MustUSD parses a dollar amount written in code.
func MustUSD(s string) keybrake.Micros {
	m, err := keybrake.ParseUSD(s)
	if err != nil {
		panic(err)
	}
	return m
}
