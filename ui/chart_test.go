package ui

import (
	"testing"
	"time"

	"github.com/keybrake/keybrake"
)

func TestUSD(t *testing.T) {
	for m, want := range map[keybrake.Micros]string{
		0: "$0.00", 4_500_000: "$4.50", 900: "$0.0009", 1_234_567_890_000: "$1,234,567.89", 1_000_000_000: "$1,000.00",
		-2_500_000: "-$2.50", 100_000_000_000_000_001: "$100,000,000,000.000001",
	} {
		if got := usd(m); got != want {
			t.Errorf("usd(%d) = %q, want %q", m, got, want)
		}
	}
	if got := usdCents(11_004_714_285); got != "$11,004.71" {
		t.Errorf("usdCents = %q", got)
	}
	if got := usdCents(5_000); got != "$0.01" {
		t.Errorf("usdCents(half a cent) = %q, want $0.01", got)
	}
}

func TestScale(t *testing.T) {
	const max = keybrake.Micros(1<<63 - 1) // no overflow even at the int64 edge
	for _, tc := range []struct {
		v, max keybrake.Micros
		px     int
		want   int
	}{
		{0, 100, 100, 0}, {50, 100, 100, 50}, {100, 100, 100, 100}, {150, 100, 100, 100}, {1, 3, 100, 33}, {2, 3, 100, 67},
		{max / 2, max, 1000, 500}, {max - 1, max, 1000, 1000}, {5, 0, 100, 0}, {-5, 100, 100, 0},
	} {
		if got := scale(tc.v, tc.max, tc.px); got != tc.want {
			t.Errorf("scale(%d, %d, %d) = %d, want %d", tc.v, tc.max, tc.px, got, tc.want)
		}
	}
	if got := percent(249_999_999, 250_000_000); got != 99 {
		t.Errorf("percent just under the cap = %d, want 99 (rounded down)", got)
	}
	if got := percent(300, 200); got != 150 {
		t.Errorf("percent over the cap = %d, want 150", got)
	}
}

func TestNiceCeil(t *testing.T) {
	usd := keybrake.MicrosPerUSD
	for in, want := range map[keybrake.Micros]keybrake.Micros{
		0: usd, 1: usd, usd: usd, usd + 1: 12 * usd / 10, 1006 * usd: 1200 * usd, 1500 * usd: 1600 * usd, 2100 * usd: 2400 * usd, 7 * usd: 8 * usd,
	} {
		if got := niceCeil(in); got != want {
			t.Errorf("niceCeil(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestDailyChart(t *testing.T) {
	first := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	rows := []keybrake.DailyRow{
		{Day: "2025-06-01", Vendor: "stripe", Calls: 3, Spent: 30 * keybrake.MicrosPerUSD},
		{Day: "2025-06-03", Vendor: "stripe", Calls: 1, Spent: 10 * keybrake.MicrosPerUSD},
		{Day: "2025-06-03", Vendor: "twilio", Calls: 2, DeniedCalls: 1, Spent: 900}, // tiny, still drawn
		{Day: "2025-05-31", Vendor: "stripe", Spent: keybrake.MicrosPerUSD},         // outside: ignored
	}
	c := dailyChart(rows, first, first.AddDate(0, 0, 2), 600)
	if len(c.Bars) != 3 || len(c.Rows) != 3 || c.Rows[0].Day != "2025-06-03" {
		t.Fatalf("3 days → %d bars, rows %+v", len(c.Bars), c.Rows)
	}
	if len(c.Legend) != 2 || c.Legend[0].Vendor != "stripe" || c.Legend[0].Total != 40*keybrake.MicrosPerUSD || c.Legend[1].Total != 900 {
		t.Fatalf("legend %+v", c.Legend)
	}
	base := c.PlotY + c.PlotH
	if len(c.Bars[1].Segs) != 0 {
		t.Errorf("a day without spend has segments: %+v", c.Bars[1].Segs)
	}
	// The top of the axis is $40: the $30 day is three quarters high.
	if c.Ticks[4].Label != "$40" {
		t.Errorf("top tick %q, want $40", c.Ticks[4].Label)
	}
	if s := c.Bars[0].Segs[0]; s.Y+s.H != base || s.H != scale(30*keybrake.MicrosPerUSD, 40*keybrake.MicrosPerUSD, c.PlotH) {
		t.Errorf("the $30 bar: %+v (base %d, plot %d)", s, base, c.PlotH)
	}
	if segs := c.Bars[2].Segs; len(segs) != 2 || segs[1].H < 1 || segs[1].Y+segs[1].H != segs[0].Y {
		t.Errorf("the stacked day: %+v", segs)
	}
	if c.Rows[0].Calls != 3 || c.Rows[0].Denied != 1 || c.Rows[0].Total != 10*keybrake.MicrosPerUSD+900 {
		t.Errorf("the table's row: %+v", c.Rows[0])
	}
}
