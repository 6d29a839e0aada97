package stripe

import "strings"

// Stripe amounts are integers in the currency's smallest unit. Most
// currencies have two decimals; these have none or three
// (https://docs.stripe.com/currencies#zero-decimal).
var (
	zeroDecimal  = setOf("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf")
	threeDecimal = setOf("bhd jod kwd omr tnd")
)

// Exponent is the number of decimals of a Stripe currency's minor unit.
func Exponent(currency string) int {
	c := strings.ToLower(currency)
	switch {
	case zeroDecimal[c]:
		return 0
	case threeDecimal[c]:
		return 3
	default:
		return 2
	}
}

func setOf(list string) map[string]bool {
	m := map[string]bool{}
	for _, c := range strings.Fields(list) {
		m[c] = true
	}
	return m
}
