package keybrake

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// Micros is an exact amount of US dollars in millionths (micro-dollars).
// Every amount the ledger stores or compares is a Micros: floats never touch
// money. One dollar is 1_000_000; the int64 range holds about $9.2 trillion.
type Micros int64

// MicrosPerUSD is the number of Micros in one US dollar.
const MicrosPerUSD Micros = 1_000_000

// ErrBadAmount is returned for an amount that is not an exact, non-negative
// decimal number of dollars with at most six decimal places.
var ErrBadAmount = errors.New("not a valid dollar amount")

// ParseUSD reads a decimal dollar string ("12", "12.5", "0.000001") into
// Micros exactly. It rejects signs, exponents, more than six decimals and
// anything that would overflow: a cap is never silently rounded.
func ParseUSD(s string) (Micros, error) {
	if s == "" {
		return 0, fmt.Errorf("%w: empty", ErrBadAmount)
	}
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" || (hasDot && frac == "") {
		return 0, fmt.Errorf("%w: %q", ErrBadAmount, s)
	}
	if len(frac) > 6 {
		return 0, fmt.Errorf("%w: %q has more than 6 decimal places", ErrBadAmount, s)
	}
	for _, part := range []string{whole, frac} {
		for i := 0; i < len(part); i++ {
			if part[i] < '0' || part[i] > '9' {
				return 0, fmt.Errorf("%w: %q", ErrBadAmount, s)
			}
		}
	}
	frac += strings.Repeat("0", 6-len(frac))
	n, ok := new(big.Int).SetString(whole+frac, 10)
	if !ok || !n.IsInt64() {
		return 0, fmt.Errorf("%w: %q is too large", ErrBadAmount, s)
	}
	return Micros(n.Int64()), nil
}

// ParseUSDJSON accepts a dollar amount written as a JSON number (12.5) or a
// JSON string ("12.50"). The number is read from its literal text, never via
// float64, so 0.1 is exactly 100000 micros.
func ParseUSDJSON(raw json.RawMessage) (Micros, error) {
	s := strings.TrimSpace(string(raw))
	if strings.HasPrefix(s, `"`) {
		var str string
		if err := json.Unmarshal(raw, &str); err != nil {
			return 0, fmt.Errorf("%w: %s", ErrBadAmount, s)
		}
		s = strings.TrimSpace(str)
	}
	return ParseUSD(s)
}

// String formats m as dollars with at least two decimals and no trailing
// zeros beyond them: 500 → "500.00", 0.0009 → "0.0009".
func (m Micros) String() string {
	sign := ""
	u := uint64(m)
	if m < 0 {
		sign = "-"
		u = uint64(-(m + 1)) + 1 // safe for math.MinInt64
	}
	// Built in one stack buffer: every proxied call formats a few amounts
	// (headers, log line), and fmt allocated several times for each.
	var buf [32]byte
	b := append(buf[:0], sign...)
	b = strconv.AppendUint(b, u/uint64(MicrosPerUSD), 10)
	b = append(b, '.')
	frac := u % uint64(MicrosPerUSD)
	digits := 6
	for digits > 2 && frac%10 == 0 {
		frac /= 10
		digits--
	}
	start := len(b)
	b = strconv.AppendUint(b, frac, 10)
	for len(b)-start < digits { // left-pad with zeros: 5 → "05", 50 → "000050"
		b = append(b[:start+1], b[start:]...)
		b[start] = '0'
	}
	return string(b)
}

// MarshalJSON writes the amount as a decimal string, exact in every client.
func (m Micros) MarshalJSON() ([]byte, error) {
	return json.Marshal(m.String())
}

// UnmarshalJSON accepts a decimal string or a JSON number.
func (m *Micros) UnmarshalJSON(b []byte) error {
	v, err := ParseUSDJSON(b)
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// AddCapped adds b to a, saturating at math.MaxInt64 instead of wrapping, so
// a cap comparison can never be defeated by overflow.
func AddCapped(a, b Micros) Micros {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
