package storetest

import (
	"database/sql"
	"slices"
	"testing"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/store"
)

// window is the hour around the store's clock: every call a test makes now.
func window(t *testing.T, s store.Store) keybrake.Window {
	t.Helper()
	now, err := s.Now(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	return keybrake.Window{Since: now.Add(-time.Hour), Until: now.Add(time.Hour)}
}

// spend makes n allowed calls on k, each settled at amount.
func spend(t *testing.T, s store.Store, k *keybrake.Key, n int, amount keybrake.Micros) {
	t.Helper()
	for i := 0; i < n; i++ {
		settle(t, s, ok2xx(mustAllow(t, s, charge(k, amount)).CallID, amount))
	}
}

func str(s string) *string { return &s }

func testReportRuns(t *testing.T, s store.Store) {
	a1, _ := newKey(t, s, label("t1:billing:charge:run-1"), agent("billing"), daily(10*usd))
	a2, _ := newKey(t, s, label("t1:billing:charge:run-1"), agent("billing"), daily(5*usd))
	b, _ := newKey(t, s, label("t1:billing:charge:run-2"), agent("billing"))
	m, _ := newKey(t, s, label("t2:mail:send:run-1"), agent("mailer"))
	anon, _ := newKey(t, s, label("anon-run"), agent(""))
	newKey(t, s, label("no-calls"))

	spend(t, s, a1, 2, 1_500_000)
	spend(t, s, a2, 1, 250_000)
	mustDeny(t, s, charge(a1, 11*usd), keybrake.CodeCapExhausted)
	settle(t, s, keybrake.Settlement{CallID: mustAllow(t, s, charge(a2, 1*usd)).CallID, Outcome: keybrake.OutcomeUnknown, Status: 502})
	mustAllow(t, s, charge(a1, 2*usd)) // pending: reserved, not spent
	spend(t, s, b, 1, 3*usd)
	spend(t, s, anon, 1, 1)
	spend(t, s, m, 3, 100_000)
	// A call with no valid key belongs to no run.
	mustDeny(t, s, keybrake.Attempt{Vendor: "stripe", Method: "POST", Path: pathPI}, keybrake.CodeInvalidVaultKey)

	w := window(t, s)
	rows, next, err := s.ReportRuns(ctx(t), keybrake.RunsFilter{Window: w})
	if err != nil || next != "" {
		t.Fatalf("ReportRuns: %v %q", err, next)
	}
	var labels []string
	for _, r := range rows {
		labels = append(labels, r.AgentRunLabel)
	}
	if want := []string{"t2:mail:send:run-1", "anon-run", "t1:billing:charge:run-2", "t1:billing:charge:run-1"}; !slices.Equal(labels, want) {
		t.Fatalf("runs newest first: %v, want %v", labels, want)
	}
	r := rows[3]
	if r.AgentName != "billing" || r.Keys != 2 || r.Calls != 6 || r.AllowedCalls != 5 || r.DeniedCalls != 1 || r.UnknownCalls != 1 ||
		r.Spent != 4_250_000 || r.Cap != 15*usd || r.FirstCall.IsZero() || r.LastCall.Before(r.FirstCall) {
		t.Fatalf("run-1 row: %+v", r)
	}
	if m := rows[0]; m.AgentName != "mailer" || m.Keys != 1 || m.Calls != 3 || m.Spent != 300_000 || m.Cap != 100*usd {
		t.Fatalf("mail row: %+v", m)
	}
	if a := rows[1]; a.AgentName != "" || a.Spent != 1 {
		t.Fatalf("anon row: %+v", a)
	}

	count := func(f keybrake.RunsFilter) []string {
		t.Helper()
		f.Window = w
		rows, _, err := s.ReportRuns(ctx(t), f)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rows {
			out = append(out, r.AgentRunLabel)
		}
		return out
	}
	if got := count(keybrake.RunsFilter{LabelPrefix: "t1:"}); !slices.Equal(got, []string{"t1:billing:charge:run-2", "t1:billing:charge:run-1"}) {
		t.Errorf("label_prefix t1: %v", got)
	}
	if got := count(keybrake.RunsFilter{AgentName: str("mailer")}); !slices.Equal(got, []string{"t2:mail:send:run-1"}) {
		t.Errorf("agent_name mailer: %v", got)
	}
	if got := count(keybrake.RunsFilter{AgentName: str("")}); !slices.Equal(got, []string{"anon-run"}) {
		t.Errorf("agent_name empty: %v", got)
	}
	if got := count(keybrake.RunsFilter{LabelPrefix: "t1:%"}); got != nil {
		t.Errorf("a prefix is literal, not a pattern: %v", got)
	}
	later := keybrake.Window{Since: w.Until, Until: w.Until.Add(time.Hour)}
	if rows, _, err := s.ReportRuns(ctx(t), keybrake.RunsFilter{Window: later}); err != nil || len(rows) != 0 {
		t.Errorf("empty window: %v %v", rows, err)
	}

	// Pages of one chain through every run once, in order.
	var paged []string
	f := keybrake.RunsFilter{Window: w, Limit: 1}
	for i := 0; ; i++ {
		if i > 10 {
			t.Fatal("pagination does not end")
		}
		page, next, err := s.ReportRuns(ctx(t), f)
		if err != nil || len(page) > 1 {
			t.Fatalf("page %d: %v %v", i, page, err)
		}
		for _, r := range page {
			paged = append(paged, r.AgentRunLabel)
		}
		if next == "" {
			break
		}
		f.Cursor = next
	}
	if !slices.Equal(paged, labels) {
		t.Errorf("paged %v, want %v", paged, labels)
	}
	if all, _, err := s.ReportRuns(ctx(t), keybrake.RunsFilter{Window: w, Limit: -1}); err != nil || len(all) != 4 {
		t.Errorf("unlimited: %d rows, %v", len(all), err)
	}
	if _, _, err := s.ReportRuns(ctx(t), keybrake.RunsFilter{Window: w, Cursor: "nope!"}); keybrake.ErrorCode(err) != keybrake.CodeInvalidRequest {
		t.Errorf("bad cursor: %v", err)
	}

	// The agents report groups the same runs.
	agents, err := s.ReportAgents(ctx(t), keybrake.AgentsFilter{Window: w})
	if err != nil {
		t.Fatal(err)
	}
	want := []keybrake.AgentRow{
		{Group: "billing", Runs: 2, Calls: 7, Spent: 7_250_000, AvgRun: 3_625_000, MaxRun: 4_250_000},
		{Group: "mailer", Runs: 1, Calls: 3, Spent: 300_000, AvgRun: 300_000, MaxRun: 300_000},
		{Group: "", Runs: 1, Calls: 1, Spent: 1, AvgRun: 1, MaxRun: 1},
	}
	if !slices.Equal(agents, want) {
		t.Fatalf("agents:\n got %+v\nwant %+v", agents, want)
	}
	byPrefix := func(depth int, sep string) []keybrake.AgentRow {
		t.Helper()
		rows, err := s.ReportAgents(ctx(t), keybrake.AgentsFilter{Window: w, GroupBy: keybrake.GroupByLabelPrefix, Depth: depth, Sep: sep})
		if err != nil {
			t.Fatal(err)
		}
		return rows
	}
	want = []keybrake.AgentRow{
		{Group: "t1", Runs: 2, Calls: 7, Spent: 7_250_000, AvgRun: 3_625_000, MaxRun: 4_250_000},
		{Group: "t2", Runs: 1, Calls: 3, Spent: 300_000, AvgRun: 300_000, MaxRun: 300_000},
		{Group: "anon-run", Runs: 1, Calls: 1, Spent: 1, AvgRun: 1, MaxRun: 1},
	}
	if got := byPrefix(1, ":"); !slices.Equal(got, want) {
		t.Fatalf("by prefix depth 1:\n got %+v\nwant %+v", got, want)
	}
	got := byPrefix(4, "")
	if len(got) != 4 || got[0].Group != "t1:billing:charge:run-1" || got[1].Group != "t1:billing:charge:run-2" {
		t.Fatalf("depth 4 is the whole label: %+v", got)
	}
	if got := byPrefix(3, ":"); len(got) != 3 || got[0].Group != "t1:billing:charge" || got[0].Runs != 2 {
		t.Fatalf("depth 3: %+v", got)
	}
	if got := byPrefix(8, ":"); len(got) != 4 {
		t.Fatalf("depth past the parts: %+v", got)
	}
	if got := byPrefix(1, "ing:"); got[0].Group != "t1:bill" || got[0].Runs != 2 {
		t.Fatalf("a multi-character separator: %+v", got)
	}
	for _, f := range []keybrake.AgentsFilter{{GroupBy: "tenant"}, {GroupBy: keybrake.GroupByLabelPrefix, Depth: 0}, {GroupBy: keybrake.GroupByLabelPrefix, Depth: 9}} {
		f.Window = w
		if _, err := s.ReportAgents(ctx(t), f); keybrake.ErrorCode(err) != keybrake.CodeInvalidRequest {
			t.Errorf("%+v: %v, want invalid_request", f, err)
		}
	}
}

func testReportAnomalies(t *testing.T, s store.Store) {
	runs := map[string]keybrake.Micros{}
	run := func(agentName, lbl string, amount keybrake.Micros) *keybrake.Key {
		k, _ := newKey(t, s, agent(agentName), label(lbl), daily(1000*usd))
		spend(t, s, k, 1, amount)
		runs[lbl] = amount
		return k
	}
	run("a", "a-1", 1*usd)
	run("a", "a-2", 1*usd)
	run("a", "a-3", 2*usd)
	a4 := run("a", "a-4", 10*usd)
	for i, v := range []keybrake.Micros{1, 2, 3, 4, 50} {
		run("b", "b-"+string(rune('1'+i)), v*usd)
	}
	solo := run("solo", "solo-1", 100*usd)
	// An agent whose other run spent nothing has a $0 median: no baseline,
	// so z-2 is not a factor anomaly (any spend over $0 would be).
	run("z", "z-1", 0)
	run("z", "z-2", 1*usd)
	w := window(t, s)

	labels := func(rows []keybrake.AnomalyRow) []string {
		var out []string
		for _, r := range rows {
			out = append(out, r.AgentRunLabel)
		}
		return out
	}
	rows, err := s.ReportAnomalies(ctx(t), keybrake.AnomalyFilter{Window: w})
	if err != nil {
		t.Fatal(err)
	}
	if got := labels(rows); !slices.Equal(got, []string{"b-5", "a-4"}) {
		t.Fatalf("anomalies at 3×: %v", got)
	}
	// b-5: the others are 1, 2, 3, 4: median 2.50, 50/2.5 = 20×.
	if r := rows[0]; r.Baseline == nil || *r.Baseline != 2_500_000 || r.Factor == nil || *r.Factor != 2000 || r.Spent != 50*usd || r.AgentName != "b" {
		t.Fatalf("b-5: %+v", r)
	}
	// a-4: the others are 1, 1, 2: median 1, 10×.
	if r := rows[1]; *r.Baseline != 1*usd || *r.Factor != 1000 || r.Calls != 1 || r.Keys != 1 {
		t.Fatalf("a-4: %+v", r)
	}
	get := func(f keybrake.AnomalyFilter) []string {
		t.Helper()
		f.Window = w
		rows, err := s.ReportAnomalies(ctx(t), f)
		if err != nil {
			t.Fatal(err)
		}
		return labels(rows)
	}
	if got := get(keybrake.AnomalyFilter{Factor: 1001}); !slices.Equal(got, []string{"b-5"}) {
		t.Errorf("factor 10.01: %v", got)
	}
	if got := get(keybrake.AnomalyFilter{Factor: 1000}); !slices.Equal(got, []string{"b-5"}) {
		t.Errorf("factor 10 (a-4 is exactly 10×, not over): %v", got)
	}
	if got := get(keybrake.AnomalyFilter{MinUSD: 3*usd + 1}); !slices.Equal(got, []string{"solo-1", "b-5", "a-4", "b-4"}) {
		t.Errorf("min_usd 3.000001: %v", got)
	}
	if got := get(keybrake.AnomalyFilter{AgentName: str("a")}); !slices.Equal(got, []string{"a-4"}) {
		t.Errorf("agent a: %v", got)
	}
	rows, _ = s.ReportAnomalies(ctx(t), keybrake.AnomalyFilter{Window: w, Factor: keybrake.MaxAnomalyFactor, MinUSD: 99 * usd})
	if len(rows) != 1 || rows[0].AgentRunLabel != "solo-1" || rows[0].Baseline != nil || rows[0].Factor != nil {
		t.Fatalf("a run with no other runs has no baseline: %+v", rows)
	}
	if _, err := s.ReportAnomalies(ctx(t), keybrake.AnomalyFilter{Window: w, Factor: 99}); keybrake.ErrorCode(err) != keybrake.CodeInvalidRequest {
		t.Errorf("factor below 1: %v", err)
	}

	// Detection fires once per run that can still spend, only with a
	// subscriber.
	if n, err := s.DetectAnomalies(ctx(t), keybrake.AnomalyFilter{Window: w}); err != nil || n != 0 {
		t.Fatalf("no subscriber: %d %v", n, err)
	}
	newWebhook(t, s, "run.spend_anomaly")
	if _, err := s.RevokeKey(ctx(t), a4.ID); err != nil { // a-4 can no longer spend
		t.Fatal(err)
	}
	n, err := s.DetectAnomalies(ctx(t), keybrake.AnomalyFilter{Window: w, MinUSD: 99 * usd})
	if err != nil || n != 2 {
		t.Fatalf("DetectAnomalies: %d %v, want 2 (b-5 and solo-1)", n, err)
	}
	evs := claimAll(t, s)
	wantEvents(t, "anomalies", evs, "run.spend_anomaly", "run.spend_anomaly")
	for _, e := range evs {
		d := e.Data
		switch d["agent_run_label"] {
		case "b-5":
			if d["baseline_usd"] != "2.50" || d["factor"] != "20.00" || d["spent_usd"] != "50.00" || d["threshold_factor"] != "3.00" || d["min_usd"] != "99.00" {
				t.Errorf("b-5 event: %v", d)
			}
		case "solo-1":
			if d["baseline_usd"] != nil || d["factor"] != nil {
				t.Errorf("solo-1 event: %v", d)
			}
		default:
			t.Errorf("unexpected anomaly event: %v", d)
		}
	}
	if n, err := s.DetectAnomalies(ctx(t), keybrake.AnomalyFilter{Window: w, MinUSD: 99 * usd}); err != nil || n != 0 {
		t.Fatalf("second detection: %d %v", n, err)
	}
	_ = solo
}

// seeder is what the daily test needs to write audit rows in the past: the
// SQL engines expose their pool.
type seeder interface{ DB() *sql.DB }

func testReportDaily(t *testing.T, s store.Store) {
	db, ok := s.(seeder)
	if !ok {
		t.Skip("the store does not expose its database to seed past days")
	}
	now, err := s.Now(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	k, _ := newKey(t, s, daily(1000*usd))
	type seed struct {
		daysAgo int
		vendor  string
		outcome keybrake.Outcome
		actual  keybrake.Micros
	}
	seeds := []seed{
		{1, "stripe", keybrake.OutcomeForwarded, 2 * usd},
		{1, "stripe", keybrake.DeniedOutcome(keybrake.CodeCapExhausted), 0},
		{1, "twilio", keybrake.OutcomeForwarded, 7_900},
		{3, "stripe", keybrake.OutcomeUnknown, 5 * usd},
		{7, "stripe", keybrake.OutcomeForwarded, 700_000},
		{8, "stripe", keybrake.OutcomeForwarded, 90 * usd}, // before the trailing week
		{40, "stripe", keybrake.OutcomeForwarded, 1 * usd},
	}
	for _, sd := range seeds {
		at := now.AddDate(0, 0, -sd.daysAgo)
		if _, err := db.DB().ExecContext(ctx(t), `INSERT INTO calls (at, key_id, agent_run_label, vendor, method, path, rule, outcome,
			status, estimated, actual, day) VALUES ($1, $2, 'run-default', $3, 'POST', '/v1/payment_intents', 'POST /v1/payment_intents', $4, 200, $5, $5, $6)`,
			at.UnixMicro(), k.ID, sd.vendor, string(sd.outcome), int64(sd.actual), day(at)); err != nil {
			t.Fatal(err)
		}
	}
	spend(t, s, k, 2, 1*usd) // today

	w := keybrake.Window{Since: now.AddDate(0, 0, -10), Until: now.Add(time.Hour)}
	rep, err := s.ReportDaily(ctx(t), keybrake.DailyFilter{Window: w})
	if err != nil {
		t.Fatal(err)
	}
	d := func(n int) string { return day(now.AddDate(0, 0, -n)) }
	want := []keybrake.DailyRow{
		{Day: d(8), Vendor: "stripe", Calls: 1, AllowedCalls: 1, Spent: 90 * usd},
		{Day: d(7), Vendor: "stripe", Calls: 1, AllowedCalls: 1, Spent: 700_000},
		{Day: d(3), Vendor: "stripe", Calls: 1, AllowedCalls: 1, Spent: 5 * usd},
		{Day: d(1), Vendor: "stripe", Calls: 2, AllowedCalls: 1, DeniedCalls: 1, Spent: 2 * usd},
		{Day: d(1), Vendor: "twilio", Calls: 1, AllowedCalls: 1, Spent: 7_900},
		{Day: d(0), Vendor: "stripe", Calls: 2, AllowedCalls: 2, Spent: 2 * usd},
	}
	if !slices.Equal(rep.Rows, want) {
		t.Fatalf("daily rows:\n got %+v\nwant %+v", rep.Rows, want)
	}
	// The projection, computed here from the same seeds.
	today := now.UTC()
	monthStart := time.Date(today.Year(), today.Month(), 1, 0, 0, 0, 0, time.UTC)
	daysLeft := keybrake.Micros(monthStart.AddDate(0, 1, -1).Day() - today.Day())
	mtd, week := map[string]keybrake.Micros{"stripe": 2 * usd}, map[string]keybrake.Micros{}
	for _, sd := range seeds {
		dd := d(sd.daysAgo)
		if dd >= day(monthStart) {
			mtd[sd.vendor] += sd.actual
		}
		if sd.daysAgo >= 1 && sd.daysAgo <= 7 {
			week[sd.vendor] += sd.actual
		}
	}
	for _, v := range []string{"stripe", "twilio"} {
		if _, touched := mtd[v]; !touched && week[v] == 0 {
			continue
		}
		if want := mtd[v] + week[v]*daysLeft/7; rep.ProjectedMonth[v] != want {
			t.Errorf("projected %s: $%s, want $%s (mtd $%s, week $%s, %d days left)", v, rep.ProjectedMonth[v], want, mtd[v], week[v], daysLeft)
		}
	}
	if rep.Month != monthStart.Format("2006-01") {
		t.Errorf("month %q", rep.Month)
	}
	only, err := s.ReportDaily(ctx(t), keybrake.DailyFilter{Window: w, Vendor: "twilio"})
	if err != nil || len(only.Rows) != 1 || only.Rows[0].Vendor != "twilio" || len(only.ProjectedMonth) > 1 {
		t.Fatalf("vendor filter: %+v %v", only, err)
	}
}

func testExportAndGauges(t *testing.T, s store.Store) {
	k, _ := newKey(t, s, label("run-export"))
	spend(t, s, k, 5, 1*usd)
	mustAllow(t, s, charge(k, 3*usd)) // pending
	tw, _ := newKey(t, s)
	a := charge(tw, 250_000)
	a.Vendor = "twilio"
	mustAllow(t, s, a)
	w := window(t, s)

	var ids []int64
	err := s.ExportCalls(ctx(t), keybrake.CallFilter{AgentRunLabel: "run-export", Limit: 2}, func(c *keybrake.Call) error {
		ids = append(ids, c.ID)
		return nil
	})
	if err != nil || len(ids) != 6 || !slices.IsSortedFunc(ids, func(a, b int64) int { return int(b - a) }) {
		t.Fatalf("export: %v %v", ids, err)
	}
	var none int
	s.ExportCalls(ctx(t), keybrake.CallFilter{Since: w.Until}, func(*keybrake.Call) error { none++; return nil }) //nolint:errcheck
	if none != 0 {
		t.Fatalf("since after every call: %d rows", none)
	}
	if got := allCalls(t, s, keybrake.CallFilter{Since: w.Since, Until: w.Until}); len(got) != 7 {
		t.Fatalf("ListCalls in the window: %d rows", len(got))
	}
	if got := allCalls(t, s, keybrake.CallFilter{Until: w.Since}); len(got) != 0 {
		t.Fatalf("ListCalls before the window: %d rows", len(got))
	}

	g, err := s.Gauges(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if g.ActiveKeys != 2 || g.Reserved["stripe"] != 3*usd || g.Reserved["twilio"] != 250_000 {
		t.Fatalf("gauges: %+v", g)
	}
	if _, err := s.RevokeKey(ctx(t), tw.ID); err != nil {
		t.Fatal(err)
	}
	short, _ := newKey(t, s, ttl(50*time.Millisecond))
	_ = short
	eventually(t, "the short key to expire", func() bool {
		g, err := s.Gauges(ctx(t))
		return err == nil && g.ActiveKeys == 1
	})
}
