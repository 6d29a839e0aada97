package admin

import (
	"context"
	"encoding/csv"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/api"
)

// reportStore is what the reports and the audit export read.
type reportStore interface {
	Now(ctx context.Context) (time.Time, error)
	ReportRuns(ctx context.Context, f keybrake.RunsFilter) ([]keybrake.RunRow, string, error)
	ReportAgents(ctx context.Context, f keybrake.AgentsFilter) ([]keybrake.AgentRow, error)
	ReportDaily(ctx context.Context, f keybrake.DailyFilter) (*keybrake.DailyReport, error)
	ReportAnomalies(ctx context.Context, f keybrake.AnomalyFilter) ([]keybrake.AnomalyRow, error)
	ExportCalls(ctx context.Context, f keybrake.CallFilter, each func(*keybrake.Call) error) error
}

func (a *API) routeReports() {
	a.handle("GET /vault/reports/runs", adminOnly(a.reportRuns))
	a.handle("GET /vault/reports/agents", adminOnly(a.reportAgents))
	a.handle("GET /vault/reports/daily", adminOnly(a.reportDaily))
	a.handle("GET /vault/reports/anomalies", adminOnly(a.reportAnomalies))
}

// reportQuery is what every report reads from the query string.
type reportQuery struct {
	window keybrake.Window
	csv    bool
}

func (a *API) reportParams(w http.ResponseWriter, r *http.Request) (*reportQuery, bool) {
	q := r.URL.Query()
	now, err := a.cfg.Store.Now(r.Context())
	if err != nil {
		a.storeError(w, "clock", err)
		return nil, false
	}
	win, e := keybrake.ParseWindow(q.Get("since"), q.Get("until"), now)
	if e != nil {
		writeError(w, e)
		return nil, false
	}
	rq := &reportQuery{window: win}
	switch q.Get("format") {
	case "", "json":
	case "csv":
		rq.csv = true
	default:
		writeError(w, keybrake.FieldError("format", "format must be json or csv"))
		return nil, false
	}
	return rq, true
}

// agentNameParam reads agent_name= as a filter: absent is any agent,
// present and empty selects keys issued without one.
func agentNameParam(r *http.Request) *string {
	if q := r.URL.Query(); q.Has("agent_name") {
		v := q.Get("agent_name")
		return &v
	}
	return nil
}

func (a *API) reportRuns(w http.ResponseWriter, r *http.Request) {
	rq, ok := a.reportParams(w, r)
	if !ok {
		return
	}
	limit, e := limitParam(r)
	if e != nil {
		writeError(w, e)
		return
	}
	q := r.URL.Query()
	f := keybrake.RunsFilter{Window: rq.window, LabelPrefix: q.Get("label_prefix"), AgentName: agentNameParam(r), Limit: limit, Cursor: q.Get("cursor")}
	if rq.csv && q.Get("limit") == "" {
		f.Limit = -1 // an export: every run
	}
	rows, next, err := a.cfg.Store.ReportRuns(r.Context(), f)
	if err != nil {
		a.storeError(w, "runs report", err)
		return
	}
	if rq.csv {
		writeCSV(w, "runs", runHeader, len(rows), func(i int) []string { return runRecord(&rows[i]) })
		return
	}
	writeJSON(w, http.StatusOK, api.RunsReport{Since: rq.window.Since, Until: rq.window.Until,
		Data: nonNil(rows), HasMore: next != "", NextCursor: next})
}

var runHeader = []string{"agent_run_label", "agent_name", "keys", "calls", "allowed_calls", "denied_calls", "unknown_calls", "spent_usd", "cap_usd", "first_call_at", "last_call_at"}

func runRecord(r *keybrake.RunRow) []string {
	return []string{r.AgentRunLabel, r.AgentName, itoa(r.Keys), itoa(r.Calls), itoa(r.AllowedCalls), itoa(r.DeniedCalls), itoa(r.UnknownCalls),
		r.Spent.String(), r.Cap.String(), stamp(r.FirstCall), stamp(r.LastCall)}
}

func (a *API) reportAgents(w http.ResponseWriter, r *http.Request) {
	rq, ok := a.reportParams(w, r)
	if !ok {
		return
	}
	limit, e := limitParam(r)
	if e != nil {
		writeError(w, e)
		return
	}
	q := r.URL.Query()
	f := keybrake.AgentsFilter{Window: rq.window, GroupBy: q.Get("group_by"), Sep: q.Get("sep"), Limit: limit}
	if f.GroupBy == "" {
		f.GroupBy = keybrake.GroupByAgentName
	}
	if f.GroupBy == keybrake.GroupByLabelPrefix {
		d, err := strconv.Atoi(q.Get("depth"))
		if err != nil {
			writeError(w, keybrake.FieldError("depth", "depth is required with group_by=label_prefix: the number of label parts, 1 to 8"))
			return
		}
		f.Depth = d
	}
	rows, err := a.cfg.Store.ReportAgents(r.Context(), f)
	if err != nil {
		a.storeError(w, "agents report", err)
		return
	}
	if rq.csv {
		writeCSV(w, "agents", []string{f.GroupBy, "runs", "calls", "spent_usd", "avg_run_usd", "max_run_usd"}, len(rows), func(i int) []string {
			x := rows[i]
			return []string{x.Group, itoa(x.Runs), itoa(x.Calls), x.Spent.String(), x.AvgRun.String(), x.MaxRun.String()}
		})
		return
	}
	out := api.AgentsReport{Since: rq.window.Since, Until: rq.window.Until, GroupBy: f.GroupBy, Data: make([]map[string]any, 0, len(rows))}
	for _, x := range rows {
		out.Data = append(out.Data, map[string]any{f.GroupBy: x.Group, "runs": x.Runs, "calls": x.Calls,
			"spent_usd": x.Spent, "avg_run_usd": x.AvgRun, "max_run_usd": x.MaxRun})
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) reportDaily(w http.ResponseWriter, r *http.Request) {
	rq, ok := a.reportParams(w, r)
	if !ok {
		return
	}
	vendor := r.URL.Query().Get("vendor")
	if _, ok := a.vendors[vendor]; vendor != "" && !ok {
		writeError(w, keybrake.FieldError("vendor", "unknown vendor %q; this Keybrake serves %s", vendor, a.vendorList()))
		return
	}
	rep, err := a.cfg.Store.ReportDaily(r.Context(), keybrake.DailyFilter{Window: rq.window, Vendor: vendor})
	if err != nil {
		a.storeError(w, "daily report", err)
		return
	}
	if rq.csv {
		writeCSV(w, "daily", []string{"day", "vendor", "calls", "allowed_calls", "denied_calls", "spent_usd"}, len(rep.Rows), func(i int) []string {
			x := rep.Rows[i]
			return []string{x.Day, x.Vendor, itoa(x.Calls), itoa(x.AllowedCalls), itoa(x.DeniedCalls), x.Spent.String()}
		})
		return
	}
	writeJSON(w, http.StatusOK, api.DailyReport{Since: rq.window.Since, Until: rq.window.Until, DailyReport: rep})
}

func (a *API) reportAnomalies(w http.ResponseWriter, r *http.Request) {
	rq, ok := a.reportParams(w, r)
	if !ok {
		return
	}
	limit, e := limitParam(r)
	if e != nil {
		writeError(w, e)
		return
	}
	q := r.URL.Query()
	f := keybrake.AnomalyFilter{Window: rq.window, Factor: keybrake.DefaultAnomalyFactor, AgentName: agentNameParam(r), Limit: limit}
	if s := q.Get("factor"); s != "" {
		v, err := keybrake.ParseFactor(s)
		if err != nil {
			writeError(w, keybrake.FieldError("factor", "%v", err))
			return
		}
		f.Factor = v
	}
	if s := q.Get("min_usd"); s != "" {
		m, err := keybrake.ParseUSD(s)
		if err != nil || m <= 0 {
			writeError(w, keybrake.FieldError("min_usd", "min_usd %q: want dollars greater than 0, e.g. 25 or 2.50", s))
			return
		}
		f.MinUSD = m
	}
	rows, err := a.cfg.Store.ReportAnomalies(r.Context(), f)
	if err != nil {
		a.storeError(w, "anomalies report", err)
		return
	}
	if rq.csv {
		writeCSV(w, "anomalies", append(append([]string{}, runHeader...), "baseline_usd", "factor"), len(rows), func(i int) []string {
			x := rows[i]
			base, factor := "", ""
			if x.Baseline != nil {
				base = x.Baseline.String()
			}
			if x.Factor != nil {
				factor = x.Factor.String()
			}
			return append(runRecord(&x.RunRow), base, factor)
		})
		return
	}
	out := api.AnomaliesReport{Since: rq.window.Since, Until: rq.window.Until, Factor: f.Factor, Data: nonNil(rows)}
	if f.MinUSD > 0 {
		out.MinUSD = &f.MinUSD
	}
	writeJSON(w, http.StatusOK, out)
}

// writeCSV answers a CSV attachment: a header, then the records.
func writeCSV(w http.ResponseWriter, name string, header []string, n int, record func(i int) []string) {
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8")
	h.Set("Content-Disposition", `attachment; filename="keybrake-`+name+`.csv"`)
	cw := csv.NewWriter(w)
	cw.Write(header) //nolint:errcheck // checked at Flush
	for i := 0; i < n; i++ {
		cw.Write(cells(record(i))) //nolint:errcheck // checked at Flush
	}
	cw.Flush()
}

// cells defuses spreadsheet formulas: labels, paths and items are written
// by agents, and a cell starting with = + - @ (or a tab or carriage return)
// runs as a formula when the export is opened in a spreadsheet. Such cells
// get a leading apostrophe (OWASP's advice); money and times never start so.
func cells(rec []string) []string {
	for i, v := range rec {
		if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
			rec[i] = "'" + v
		}
	}
	return rec
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
