// Package canon reads request bodies the way a vendor will, and writes back
// exactly what was read. Keybrake prices a call from its body, then forwards
// it: wherever the bytes forwarded could mean something other than what was
// priced (a form key another parser reads differently, a JSON key given
// twice), the cap is hollow. So a body is parsed under a strict grammar that
// refuses anything ambiguous, and the body forwarded is re-encoded from what
// was parsed, never the client's bytes.
//
// Parsing is bounded (Limits): nesting depth, number of parameters or JSON
// values, and size of the output. A hostile body fails fast, with memory
// proportional to the limits, not to what it expands to.
package canon

import (
	"github.com/keybrake/keybrake"
)

// Limits bound what reading one body may cost.
type Limits struct {
	// MaxDepth bounds nesting: brackets in a form key, objects and arrays
	// in JSON.
	MaxDepth int
	// MaxParams bounds form parameters, or JSON values (every scalar,
	// object and array counts one).
	MaxParams int
	// MaxOutput bounds the re-encoded body, in bytes.
	MaxOutput int
}

// DefaultLimits are far above any real vendor call (Stripe allows 50
// metadata keys; Resend 100 emails a batch) and far below what a 1 MiB
// hostile body could expand to.
var DefaultLimits = Limits{MaxDepth: 32, MaxParams: 10_000, MaxOutput: 1 << 20}

func (l Limits) orDefault() Limits {
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultLimits.MaxDepth
	}
	if l.MaxParams <= 0 {
		l.MaxParams = DefaultLimits.MaxParams
	}
	if l.MaxOutput <= 0 {
		l.MaxOutput = DefaultLimits.MaxOutput
	}
	return l
}

func unpriceable(format string, args ...any) *keybrake.Error {
	return keybrake.Errorf(keybrake.CodeUnpriceableRequest, format, args...)
}

func tooLarge(format string, args ...any) *keybrake.Error {
	return keybrake.Errorf(keybrake.CodeRequestTooLarge, format, args...)
}

// quote shortens a client-supplied string for an error message.
func quote(s string) string {
	if len(s) > 60 {
		s = s[:60] + "…"
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c == 0x7f {
			b[i] = '?'
		}
	}
	return `"` + string(b) + `"`
}
