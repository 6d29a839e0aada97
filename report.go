package keybrake

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The four spend reports answer what a run cost, which agent costs most,
// the daily trend per vendor, and which runs spent anomalously. The store
// computes every figure in SQL; these are their filters and rows, shared by
// the admin API, the CLI and the dashboard.

// Window is a half-open interval of audit time: Since <= at < Until.
type Window struct {
	Since time.Time
	Until time.Time
}

// DefaultReportDays is the window of a report that names none: the last 30
// days.
const DefaultReportDays = 30

// ParseWindow reads since and until as RFC 3339 instants or YYYY-MM-DD
// days, defaulting to the 30 days before now. A day in until includes the
// whole day: since=2024-06-01&until=2024-06-30 is June.
func ParseWindow(since, until string, now time.Time) (Window, *Error) {
	w := Window{Until: now, Since: now.AddDate(0, 0, -DefaultReportDays)}
	if until != "" {
		t, day, err := parseInstant(until)
		if err != nil {
			return w, FieldError("until", "until %q: want RFC 3339 (2024-06-30T12:00:00Z) or a day (2024-06-30)", until)
		}
		if day {
			t = t.AddDate(0, 0, 1)
		}
		w.Until = t
		if since == "" {
			w.Since = t.AddDate(0, 0, -DefaultReportDays)
		}
	}
	if since != "" {
		t, _, err := parseInstant(since)
		if err != nil {
			return w, FieldError("since", "since %q: want RFC 3339 (2024-06-01T00:00:00Z) or a day (2024-06-01)", since)
		}
		w.Since = t
	}
	if !w.Since.Before(w.Until) {
		return w, FieldError("since", "since (%s) must be before until (%s)", w.Since.Format(time.RFC3339), w.Until.Format(time.RFC3339))
	}
	return w, nil
}

func parseInstant(s string) (time.Time, bool, error) {
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t.UTC(), true, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	return t.UTC(), false, err
}

// RunsFilter selects rows of the runs report, newest last call first.
type RunsFilter struct {
	Window
	LabelPrefix string
	AgentName   *string // nil: any; "" selects runs whose keys have no agent_name
	Limit       int     // 0: DefaultPageSize; negative: no limit (exports)
	Cursor      string
}

// RunRow is one agent_run_label: its keys, its calls in the window, and
// what they spent.
type RunRow struct {
	AgentRunLabel string    `json:"agent_run_label"`
	AgentName     string    `json:"agent_name"`
	Keys          int64     `json:"keys"`
	Calls         int64     `json:"calls"` // allowed + denied
	AllowedCalls  int64     `json:"allowed_calls"`
	DeniedCalls   int64     `json:"denied_calls"`
	UnknownCalls  int64     `json:"unknown_calls"` // allowed calls whose outcome is unknown
	Spent         Micros    `json:"spent_usd"`
	Cap           Micros    `json:"cap_usd"` // the sum of the run's keys' daily caps
	FirstCall     time.Time `json:"first_call_at"`
	LastCall      time.Time `json:"last_call_at"`
}

// Grouping of the agents report.
const (
	GroupByAgentName   = "agent_name"
	GroupByLabelPrefix = "label_prefix"
)

// AgentsFilter selects the agents report: runs grouped by agent_name, or by
// the first Depth parts of their label split on Sep.
type AgentsFilter struct {
	Window
	GroupBy string // GroupByAgentName (default) or GroupByLabelPrefix
	Depth   int    // parts of the label, 1 to 8
	Sep     string // 1 to 8 printable characters, default ":"
	Limit   int
}

// AgentRow is one agent (or label prefix), most expensive first.
type AgentRow struct {
	Group  string `json:"group"`
	Runs   int64  `json:"runs"`
	Calls  int64  `json:"calls"`
	Spent  Micros `json:"spent_usd"`
	AvgRun Micros `json:"avg_run_usd"` // rounded down to the micro-dollar
	MaxRun Micros `json:"max_run_usd"`
}

// DailyFilter selects the daily report.
type DailyFilter struct {
	Window
	Vendor string
}

// DailyRow is one UTC day and vendor.
type DailyRow struct {
	Day          string `json:"day"`
	Vendor       string `json:"vendor"`
	Calls        int64  `json:"calls"` // allowed + denied
	AllowedCalls int64  `json:"allowed_calls"`
	DeniedCalls  int64  `json:"denied_calls"`
	Spent        Micros `json:"spent_usd"`
}

// DailyReport is the daily rows plus, per vendor, the current month's
// projection: the month so far plus the trailing-7-day daily average times
// the days left after today.
type DailyReport struct {
	Rows           []DailyRow        `json:"data"`
	Month          string            `json:"month"`
	ProjectedMonth map[string]Micros `json:"projected_month_usd"`
}

// AnomalyFilter selects the anomalies report: runs whose spend is over
// Factor × the median spend of the same agent's other runs in the window,
// or over MinUSD when it is set.
type AnomalyFilter struct {
	Window
	Factor    Factor // default 3
	MinUSD    Micros // 0: no minimum rule
	AgentName *string
	Limit     int
	// Labels, when set, restricts the answer to these runs (the baseline is
	// still every run of their agents in the window).
	Labels []string
}

// AnomalyRow is a run of the anomalies report: its run row, the median of
// its agent's other runs (absent when it has none), and how many times that
// median it spent (absent when the median is zero or absent).
type AnomalyRow struct {
	RunRow
	Baseline *Micros `json:"baseline_usd"`
	Factor   *Factor `json:"factor"`
}

// Factor is a ratio in hundredths (300 is 3×), exact like Micros.
type Factor int64

// DefaultAnomalyFactor is 3×.
const DefaultAnomalyFactor Factor = 300

// MaxAnomalyFactor bounds the factor a report may ask for: 100×.
const MaxAnomalyFactor Factor = 10000

// ParseFactor reads "3", "2.5" or "1.25": a ratio of at least 1 with at most
// two decimals.
func ParseFactor(s string) (Factor, error) {
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" || (hasDot && (frac == "" || len(frac) > 2)) {
		return 0, fmt.Errorf("factor %q: want a number such as 3 or 2.5 (at most two decimals)", s)
	}
	frac += strings.Repeat("0", 2-len(frac))
	n, err := strconv.ParseInt(whole+frac, 10, 64)
	if err != nil || strings.ContainsAny(whole+frac, "+-") {
		return 0, fmt.Errorf("factor %q: want a number such as 3 or 2.5 (at most two decimals)", s)
	}
	f := Factor(n)
	if f < 100 || f > MaxAnomalyFactor {
		return 0, fmt.Errorf("factor %q: want a value from 1 to %d", s, MaxAnomalyFactor/100)
	}
	return f, nil
}

// String formats the factor with two decimals: "3.00".
func (f Factor) String() string { return fmt.Sprintf("%d.%02d", f/100, f%100) }

// MarshalJSON writes the factor as a decimal string, like money.
func (f Factor) MarshalJSON() ([]byte, error) { return []byte(`"` + f.String() + `"`), nil }

// UnmarshalJSON reads a decimal string.
func (f *Factor) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	whole, frac, _ := strings.Cut(s, ".")
	frac += strings.Repeat("0", max(0, 2-len(frac)))
	n, err := strconv.ParseInt(whole+frac[:2], 10, 64)
	if err != nil {
		return fmt.Errorf("factor %s: %w", b, err)
	}
	*f = Factor(n)
	return nil
}

// Gauges are the figures /metrics reads from the shared store at scrape
// time, so every replica reports the same: money reserved by calls in
// flight, per vendor, and keys that can still spend.
type Gauges struct {
	Reserved   map[string]Micros
	ActiveKeys int64
}
