package keybrake

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
)

func TestParseUSD(t *testing.T) {
	good := map[string]Micros{
		"0": 0, "1": 1_000_000, "500": 500_000_000, "0.1": 100_000, "49.99": 49_990_000,
		"0.000001": 1, "12.345678": 12_345_678, "9223372036854.775807": math.MaxInt64,
	}
	for s, want := range good {
		if got, err := ParseUSD(s); err != nil || got != want {
			t.Errorf("ParseUSD(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "-1", "+1", "1e3", "1.", ".5", "1.0000001", "abc", "1,5", " 1", "9223372036854.775808", "NaN", "Infinity"} {
		if got, err := ParseUSD(s); err == nil {
			t.Errorf("ParseUSD(%q) = %d, nil; want an error", s, got)
		}
	}
}

func TestParseUSDJSON(t *testing.T) {
	for raw, want := range map[string]Micros{`50`: 50_000_000, `"49.99"`: 49_990_000, `0.1`: 100_000, `" 2 "`: 2_000_000} {
		if got, err := ParseUSDJSON(json.RawMessage(raw)); err != nil || got != want {
			t.Errorf("ParseUSDJSON(%s) = %d, %v; want %d", raw, got, err, want)
		}
	}
	for _, raw := range []string{`1e2`, `-5`, `true`, `"x"`, `null`, `[1]`} {
		if _, err := ParseUSDJSON(json.RawMessage(raw)); err == nil {
			t.Errorf("ParseUSDJSON(%s) succeeded; want an error", raw)
		}
	}
}

func TestMicrosString(t *testing.T) {
	for m, want := range map[Micros]string{0: "0.00", 1: "0.000001", 500_000_000: "500.00", 900: "0.0009", 1_230_000: "1.23", -1_500_000: "-1.50", math.MinInt64: "-9223372036854.775808"} {
		if got := m.String(); got != want {
			t.Errorf("Micros(%d).String() = %q, want %q", int64(m), got, want)
		}
	}
	if AddCapped(math.MaxInt64-1, 5) != math.MaxInt64 {
		t.Error("AddCapped must saturate")
	}
}

func FuzzParseUSD(f *testing.F) {
	for _, s := range []string{"0", "1.5", "49.99", "0.000001", "1e3", "-1", "9223372036854.775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseUSD(s)
		if err != nil {
			return
		}
		if m < 0 {
			t.Fatalf("ParseUSD(%q) = %d: negative", s, m)
		}
		back, err := ParseUSD(m.String())
		if err != nil || back != m {
			t.Fatalf("round trip of %q: %q → %d, %v", s, m.String(), back, err)
		}
	})
}

// microsStringFmt is Micros.String as it was, through fmt: the reference
// the allocation-free version must agree with.
func microsStringFmt(m Micros) string {
	sign := ""
	u := uint64(m)
	if m < 0 {
		sign = "-"
		u = uint64(-(m + 1)) + 1
	}
	frac := fmt.Sprintf("%06d", u%uint64(MicrosPerUSD))
	frac = strings.TrimRight(frac, "0")
	for len(frac) < 2 {
		frac += "0"
	}
	return fmt.Sprintf("%s%d.%s", sign, u/uint64(MicrosPerUSD), frac)
}

func TestMicrosStringMatchesFmt(t *testing.T) {
	vals := []Micros{0, 1, 9, 10, 99, 100, 120, 10_000, 12_345, 500_000, 999_999, 1_000_000, 1_000_001, 1_500_000,
		123_456_789, math.MaxInt64, math.MinInt64, math.MinInt64 + 1}
	for i := Micros(1); i < 1_000_000_000_000; i = i*7 + 3 {
		vals = append(vals, i, -i, i*10, i*100)
	}
	for _, v := range vals {
		if got, want := v.String(), microsStringFmt(v); got != want {
			t.Fatalf("%d: %q, want %q", int64(v), got, want)
		}
	}
}
