// Package pricing holds the prices Keybrake charges calls against: foreign
// exchange rates for vendor currencies and the conversion of a vendor's minor
// units into exact micro-dollars.
package pricing

import (
	"fmt"
	"math"
	"math/big"
	"math/bits"
	"sort"
	"strings"

	"github.com/keybrake/keybrake"
)

// FX maps a lower-case ISO 4217 currency code to the price of one major
// unit in US dollars, as an exact rational. A currency missing from the
// table is not priced: calls in it are refused, never forwarded unpriced.
type FX struct {
	rates map[string]*big.Rat
}

// DefaultFX prices USD only. Other currencies need a rate the operator
// chooses (a cap is only as honest as its exchange rate, and a stale rate
// compiled into the binary would be a silent lie).
func DefaultFX() *FX {
	fx := &FX{rates: map[string]*big.Rat{}}
	fx.rates["usd"] = big.NewRat(1, 1)
	return fx
}

// Set adds or replaces a rate given as a decimal string ("1.0842").
func (fx *FX) Set(currency, rate string) error {
	cur := strings.ToLower(strings.TrimSpace(currency))
	if len(cur) != 3 || strings.Trim(cur, "abcdefghijklmnopqrstuvwxyz") != "" {
		return fmt.Errorf("currency %q: want a three-letter ISO 4217 code", currency)
	}
	r, err := parseRate(rate)
	if err != nil {
		return fmt.Errorf("currency %s: %w", cur, err)
	}
	fx.rates[cur] = r
	return nil
}

// ParseFXList reads "EUR=1.08,GBP=1.27" (the KEYBRAKE_FX_RATES format) into
// the table.
func (fx *FX) ParseFXList(list string) error {
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		cur, rate, ok := strings.Cut(item, "=")
		if !ok {
			return fmt.Errorf("fx rate %q: want CUR=RATE, e.g. EUR=1.08", item)
		}
		if err := fx.Set(cur, rate); err != nil {
			return err
		}
	}
	return nil
}

// Rate returns the USD price of one major unit of currency.
func (fx *FX) Rate(currency string) (*big.Rat, bool) {
	r, ok := fx.rates[strings.ToLower(currency)]
	return r, ok
}

// Currencies lists the priced currencies, sorted.
func (fx *FX) Currencies() []string {
	out := make([]string, 0, len(fx.rates))
	for c := range fx.rates {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// RateString formats a rate exactly as a decimal.
func (fx *FX) RateString(currency string) string {
	r, ok := fx.Rate(currency)
	if !ok {
		return ""
	}
	return strings.TrimRight(strings.TrimRight(r.FloatString(12), "0"), ".")
}

// ToMicros converts an amount in a currency's minor units (cents, yen, fils)
// into micro-dollars, rounding up: a conversion may over-count by less than
// one micro-dollar, never under-count.
func (fx *FX) ToMicros(minor int64, exponent int, currency string) (keybrake.Micros, error) {
	rate, ok := fx.Rate(currency)
	if !ok {
		return 0, keybrake.Errorf(keybrake.CodeCurrencyNotPriced, "currency %q has no exchange rate configured; set one with --fx-rate %s=<USD per unit>", strings.ToLower(currency), strings.ToUpper(currency))
	}
	if minor < 0 {
		return 0, keybrake.Errorf(keybrake.CodeUnpriceableRequest, "amount must not be negative")
	}
	if m, ok := intRateMicros(minor, exponent, rate); ok {
		return m, nil
	}
	m, ok := ratMicros(minor, exponent, rate)
	if !ok {
		return 0, keybrake.Errorf(keybrake.CodeUnpriceableRequest, "amount is too large to price")
	}
	return m, nil
}

// ratMicros is the exact rational conversion, rounding up; ok=false when
// the result does not fit an int64.
func ratMicros(minor int64, exponent int, rate *big.Rat) (keybrake.Micros, bool) {
	v := new(big.Rat).SetInt64(minor)
	v.Mul(v, rate)
	v.Mul(v, new(big.Rat).SetInt64(int64(keybrake.MicrosPerUSD)))
	v.Quo(v, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(exponent)), nil)))
	q, r := new(big.Int).QuoRem(v.Num(), v.Denom(), new(big.Int))
	if r.Sign() > 0 {
		q.Add(q, big.NewInt(1))
	}
	return keybrake.Micros(q.Int64()), q.IsInt64()
}

// intRateMicros is ToMicros without big numbers for the common case, an
// integer rate (USD's 1) and an exponent of at most 6: minor × rate ×
// 10^(6−exponent) is then exact, with no rounding, and is computed only
// if it fits an int64. ok=false sends every other case to the exact
// rational path. Every call settles through here, and the big.Rat path
// allocated a dozen times per call.
func intRateMicros(minor int64, exponent int, rate *big.Rat) (keybrake.Micros, bool) {
	if exponent < 0 || exponent > 6 || !rate.IsInt() || !rate.Num().IsUint64() || keybrake.MicrosPerUSD != 1_000_000 {
		return 0, false
	}
	factor := rate.Num().Uint64()
	for range 6 - exponent {
		hi, lo := bits.Mul64(factor, 10)
		if hi != 0 {
			return 0, false
		}
		factor = lo
	}
	hi, lo := bits.Mul64(uint64(minor), factor)
	if hi != 0 || lo > math.MaxInt64 {
		return 0, false
	}
	return keybrake.Micros(lo), true
}

func parseRate(s string) (*big.Rat, error) {
	s = strings.TrimSpace(s)
	// Digits and at most one dot: big.Rat would also take fractions,
	// exponents and base prefixes, none of which belong in a rate.
	if s == "" || strings.Trim(s, "0123456789.") != "" || strings.Count(s, ".") > 1 || strings.Trim(s, ".") == "" {
		return nil, fmt.Errorf("rate %q: want a positive decimal such as 1.08", s)
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok || r.Sign() <= 0 {
		return nil, fmt.Errorf("rate %q: want a positive decimal such as 1.08", s)
	}
	return r, nil
}

// Clone returns an independent copy of the table.
func (fx *FX) Clone() *FX {
	out := &FX{rates: make(map[string]*big.Rat, len(fx.rates))}
	for c, r := range fx.rates {
		out.rates[c] = new(big.Rat).Set(r)
	}
	return out
}
