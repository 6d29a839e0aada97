package ui

import (
	"fmt"
	"html/template"
	"math/big"
	"strings"
	"time"

	"github.com/keybrake/keybrake"
)

// usd formats exact money for people: "$1,234.50". Sub-cent amounts keep
// their digits ("$0.0009"): the ledger's figure is shown, never rounded.
func usd(m keybrake.Micros) string {
	s := m.String()
	sign := ""
	if strings.HasPrefix(s, "-") {
		sign, s = "-", s[1:]
	}
	whole, frac, _ := strings.Cut(s, ".")
	var b strings.Builder
	for i, c := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return sign + "$" + b.String() + "." + frac
}

// usdShort is an axis label: "$50", "$2.50".
func usdShort(m keybrake.Micros) string { return strings.TrimSuffix(usd(m), ".00") }

// usdCents rounds to the nearest cent, for estimates such as a month's
// projection, where micro-dollars would claim a precision they lack.
func usdCents(m keybrake.Micros) string { return usd((m + 5_000) / 10_000 * 10_000) }

func usdPtr(m *keybrake.Micros) string {
	if m == nil {
		return "—"
	}
	return usd(*m)
}

func int64Ptr(n *int64) int64 {
	if n == nil {
		return 0
	}
	return *n
}

func microsPtr(m *keybrake.Micros) keybrake.Micros {
	if m == nil {
		return 0
	}
	return *m
}

const stampLayout = "2006-01-02 15:04:05 UTC"

func stamp(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format(stampLayout)
}

func stampPtr(t *time.Time) string {
	if t == nil {
		return "—"
	}
	return stamp(*t)
}

func isoTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// span says how far t is from now in words: "in 1h 59m", "3m ago".
func span(now, t time.Time) string {
	d := t.Sub(now)
	suffix, prefix := "", "in "
	if d < 0 {
		d, suffix, prefix = -d, " ago", ""
	}
	var s string
	switch {
	case d < time.Minute:
		s = fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		s = fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		s = fmt.Sprintf("%dh %dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	default:
		s = fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	}
	return prefix + s + suffix
}

// scale maps v in [0, max] onto [0, px] exactly, with integers only
// (money never passes through a float), rounding to the nearest pixel and
// clamping to the range.
func scale(v, max keybrake.Micros, px int) int {
	if max <= 0 || v <= 0 || px <= 0 {
		return 0
	}
	if v >= max {
		return px
	}
	n := new(big.Int).Mul(big.NewInt(int64(v)), big.NewInt(int64(px)))
	n.Add(n, big.NewInt(int64(max)/2))
	n.Quo(n, big.NewInt(int64(max)))
	return int(n.Int64())
}

// percent is v as a whole percent of max, rounded down; over 100 when v
// exceeds max (a key over its cap by an unknown outcome shows so).
func percent(v, max keybrake.Micros) int64 {
	if max <= 0 || v <= 0 {
		return 0
	}
	n := new(big.Int).Mul(big.NewInt(int64(v)), big.NewInt(100))
	n.Quo(n, big.NewInt(int64(max)))
	if !n.IsInt64() {
		return 0
	}
	return n.Int64()
}

// outcomeClass groups outcomes for colour: allowed, denied, unknown.
func outcomeClass(o keybrake.Outcome) string {
	switch {
	case o.IsDenied():
		return "bad"
	case o == keybrake.OutcomeUnknown || o == keybrake.OutcomePending:
		return "warn"
	case o == keybrake.OutcomeReplayed || o == keybrake.OutcomeUnknownRetried:
		return "info"
	default:
		return "ok"
	}
}

func statusClass(s keybrake.KeyStatus) string {
	switch s {
	case keybrake.StatusActive:
		return "ok"
	case keybrake.StatusRevoked:
		return "bad"
	default:
		return "muted"
	}
}

func deliveryClass(state string) string {
	switch state {
	case keybrake.DeliveryDelivered:
		return "ok"
	case keybrake.DeliveryFailed:
		return "bad"
	case keybrake.DeliveryPending:
		return "warn"
	default:
		return "muted"
	}
}

// vendorClass is a CSS class for a vendor's colour; vendors without one
// share a neutral colour.
func vendorClass(v string) string {
	switch v {
	case "stripe", "twilio", "resend":
		return "v-" + v
	default:
		return "v-other"
	}
}

func (u *UI) funcs() template.FuncMap {
	return template.FuncMap{
		"usd": usd, "usdCents": usdCents, "usdPtr": usdPtr, "int64Ptr": int64Ptr, "microsPtr": microsPtr,
		"stamp": stamp, "clock": func(t time.Time) string { return t.UTC().Format("15:04:05") },
		"day": func(t time.Time) string { return t.UTC().Format("2006-01-02") }, "stampPtr": stampPtr, "iso": isoTime, "span": span,
		"outcomeClass": outcomeClass, "statusClass": statusClass, "deliveryClass": deliveryClass, "vendorClass": vendorClass,
		"asset":   u.asset,
		"capBar":  capBar,
		"percent": percent,
		"ms":      func(d time.Duration) int64 { return d.Milliseconds() },
		"dash":    func(s string) string { return orDash(s) },
		"add":     func(a, b int) int { return a + b },
		"deref": func(t *time.Time) time.Time {
			if t == nil {
				return time.Time{}
			}
			return *t
		},
		"revokeArgs": func(k keyRow, csrf, ret string) revokeArgs {
			return revokeArgs{Key: k, CSRF: csrf, Return: ret}
		},
	}
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// revokeArgs are what the Revoke button's form needs.
type revokeArgs struct {
	Key    keyRow
	CSRF   string
	Return string
}
