package pricing

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"

	"github.com/keybrake/keybrake"
)

// The integer fast path gives exactly what the rational path gives, and
// declines (ok=false) whatever would not fit an int64.
func TestIntRateMicrosMatchesExactPath(t *testing.T) {
	rates := []*big.Rat{big.NewRat(1, 1), big.NewRat(3, 1), big.NewRat(1000, 1), big.NewRat(1, 2), big.NewRat(108, 100)}
	minors := []int64{0, 1, 99, 100, 12345, math.MaxInt64 / 1_000_000, math.MaxInt64/1_000_000 + 1, math.MaxInt64 / 10_000,
		math.MaxInt64/10_000 + 1, math.MaxInt64}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		minors = append(minors, r.Int64N(math.MaxInt64), r.Int64N(1<<40))
	}
	for _, rate := range rates {
		for exp := 0; exp <= 7; exp++ {
			for _, m := range minors {
				want, wantOK := ratMicros(m, exp, rate)
				got, ok := intRateMicros(m, exp, rate)
				if ok && (!wantOK || got != want) {
					t.Fatalf("minor %d exp %d rate %s: fast %d, exact %d (fits %v)", m, exp, rate, got, want, wantOK)
				}
				if !ok && rate.IsInt() && exp <= 6 && wantOK {
					t.Fatalf("minor %d exp %d rate %s: fast path declined a value that fits (%d)", m, exp, rate, want)
				}
			}
		}
	}
}

func TestToMicrosUSD(t *testing.T) {
	fx := DefaultFX()
	for _, c := range []struct {
		minor int64
		exp   int
		want  keybrake.Micros
	}{{1, 2, 10_000}, {150, 2, 1_500_000}, {1000, 0, 1_000_000_000}, {1, 3, 1000}} {
		got, err := fx.ToMicros(c.minor, c.exp, "usd")
		if err != nil || got != c.want {
			t.Errorf("ToMicros(%d, %d) = %d, %v; want %d", c.minor, c.exp, got, err, c.want)
		}
	}
	if _, err := fx.ToMicros(math.MaxInt64, 2, "usd"); err == nil {
		t.Error("an amount past int64 micros was priced")
	}
}
