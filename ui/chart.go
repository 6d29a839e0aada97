package ui

import (
	"fmt"
	"slices"
	"time"

	"github.com/keybrake/keybrake"
)

// Charts are SVG drawn on the server: geometry in whole pixels from exact
// money (scale), classes for colour (the stylesheet's), a <title> on every
// bar for the exact figure, and an aria-label summing the picture up for
// screen readers. No chart library and no script.

// bar is a horizontal bar of spend against a cap: spent, then what is
// reserved, on a track that is the cap.
type bar struct {
	W, Spent, Reserved int
	Over               bool
	Label              string
}

const capBarWidth = 100

func capBar(spent, reserved, cap keybrake.Micros) bar {
	b := bar{W: capBarWidth, Over: spent+reserved > cap}
	b.Spent = scale(spent, cap, b.W)
	b.Reserved = scale(spent+reserved, cap, b.W) - b.Spent
	b.Label = fmt.Sprintf("%s of %s daily cap (%d%%)", usd(spent), usd(cap), percent(spent, cap))
	if reserved > 0 {
		b.Label += fmt.Sprintf(", %s reserved", usd(reserved))
	}
	return b
}

// stackChart is spend per day, one bar a day, stacked by vendor.
type stackChart struct {
	W, H                       int
	PlotX, PlotY, PlotW, PlotH int
	GridX2, AxisX, LabelY      int
	Bars                       []stackBar
	Ticks                      []tick
	XLabels                    []xlabel
	Legend                     []legend
	Label                      string
	Empty                      bool
	Rows                       []dayTotal // the same figures as a table
}

type stackBar struct {
	X, W  int
	Segs  []stackSeg
	Title string
}

type stackSeg struct {
	Y, H  int
	Class string
}

type tick struct {
	Y     int
	Label string
}

type xlabel struct {
	X     int
	Label string
}

type legend struct {
	Vendor string
	Class  string
	Total  keybrake.Micros
}

type dayTotal struct {
	Day      string
	ByVendor []keybrake.Micros // in Legend order
	Total    keybrake.Micros
	Calls    int64
	Denied   int64
}

// dailyChart draws the daily report's rows over the days from first to
// last (UTC dates, inclusive): days without calls are empty bars, so the
// x axis is time, not just the days that had spend.
func dailyChart(rows []keybrake.DailyRow, first, last time.Time, width int) stackChart {
	c := stackChart{W: width, H: 260, PlotX: 56, PlotY: 12}
	c.PlotW, c.PlotH = c.W-c.PlotX-8, c.H-c.PlotY-28
	c.GridX2, c.AxisX, c.LabelY = c.PlotX+c.PlotW, c.PlotX-8, c.PlotY+c.PlotH+18

	var vendors []string
	for _, r := range rows {
		if !slices.Contains(vendors, r.Vendor) {
			vendors = append(vendors, r.Vendor)
		}
	}
	slices.Sort(vendors)
	var days []string
	for d := first.UTC().Truncate(24 * time.Hour); !d.After(last); d = d.AddDate(0, 0, 1) {
		days = append(days, d.Format("2006-01-02"))
	}
	byDay := map[string]*dayTotal{}
	for _, d := range days {
		byDay[d] = &dayTotal{Day: d, ByVendor: make([]keybrake.Micros, len(vendors))}
	}
	var grand keybrake.Micros
	for _, r := range rows {
		t, ok := byDay[r.Day]
		if !ok {
			continue
		}
		i := slices.Index(vendors, r.Vendor)
		t.ByVendor[i] += r.Spent
		t.Total += r.Spent
		t.Calls += r.Calls
		t.Denied += r.DeniedCalls
		grand += r.Spent
	}
	c.Legend = make([]legend, len(vendors))
	for i, v := range vendors {
		c.Legend[i] = legend{Vendor: v, Class: vendorClass(v)}
		for _, d := range days {
			c.Legend[i].Total += byDay[d].ByVendor[i]
		}
	}
	var peak keybrake.Micros
	for _, d := range days {
		peak = max(peak, byDay[d].Total)
	}
	top := niceCeil(peak)
	for i := 0; i <= 4; i++ {
		v := top / 4 * keybrake.Micros(i)
		c.Ticks = append(c.Ticks, tick{Y: c.PlotY + c.PlotH - scale(v, top, c.PlotH), Label: usdShort(v)})
	}
	n := max(len(days), 1)
	slot := c.PlotW / n
	gap := max(slot/5, 1)
	for i, d := range days {
		t := byDay[d]
		c.Rows = append(c.Rows, *t)
		b := stackBar{X: c.PlotX + i*slot + gap/2, W: max(slot-gap, 1), Title: d + ": " + usd(t.Total)}
		base := c.PlotY + c.PlotH
		var acc keybrake.Micros
		for vi, v := range vendors {
			if t.ByVendor[vi] == 0 {
				continue
			}
			y0 := scale(acc, top, c.PlotH)
			acc += t.ByVendor[vi]
			h := scale(acc, top, c.PlotH) - y0
			if h < 1 {
				h = 1 // a spend too small to draw still shows
			}
			b.Segs = append(b.Segs, stackSeg{Y: base - y0 - h, H: h, Class: vendorClass(v)})
			b.Title += fmt.Sprintf(", %s %s", v, usd(t.ByVendor[vi]))
		}
		c.Bars = append(c.Bars, b)
		if i%7 == 0 || i == len(days)-1 && i%7 > 3 {
			c.XLabels = append(c.XLabels, xlabel{X: b.X + b.W/2, Label: d[5:]})
		}
	}
	slices.Reverse(c.Rows) // the table reads newest first
	c.Empty = grand == 0
	c.Label = fmt.Sprintf("Spend per day from %s to %s: %s in all", days[0], days[len(days)-1], usd(grand))
	for _, l := range c.Legend {
		c.Label += fmt.Sprintf("; %s %s", l.Vendor, usd(l.Total))
	}
	return c
}

// niceCeil rounds an axis maximum up to a round number of dollars whose
// quarters are round too (1, 1.2, 1.6, 2, 2.4, 4, 5, 6 or 8 times a power
// of ten), at least $1.
func niceCeil(m keybrake.Micros) keybrake.Micros {
	step := keybrake.MicrosPerUSD
	for {
		for _, f := range []keybrake.Micros{10, 12, 16, 20, 24, 40, 50, 60, 80} {
			if v := step * f / 10; v >= m {
				return v
			}
		}
		if step > keybrake.Micros(1<<62)/100 {
			return m
		}
		step *= 10
	}
}
