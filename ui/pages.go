package ui

import (
	"cmp"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/admin"
)

// keyRow is one key as the dashboard shows it: the admin API's view of it
// (admin.API.View, the same JSON GET /vault/keys/{id} answers), plus its
// bar against the daily cap. Rules is the key's allow-list as stored;
// Operations, when the API's view names the catalogue operations each rule
// grants, lists them under it: row is the one place that fills them.
type keyRow struct {
	admin.KeyJSON
	Bar   bar
	Rules []ruleRow
}

type ruleRow struct {
	Rule       string
	Operations []string
}

func (u *UI) row(v *keybrake.KeyView) keyRow {
	j := u.cfg.Admin.View(v)
	r := keyRow{KeyJSON: j, Bar: capBar(microsPtr(j.SpentTodayUSD), v.Usage.ReservedToday, j.DailyUSDCap)}
	grants := map[string][]string{}
	for _, g := range j.AllowedOperations {
		for _, op := range g.Operations {
			grants[g.Rule] = append(grants[g.Rule], op.Operation+" ("+string(op.PriceModel)+")")
		}
	}
	for _, rule := range j.AllowedEndpoints {
		r.Rules = append(r.Rules, ruleRow{Rule: rule, Operations: grants[rule]})
	}
	return r
}

func dayStart(t time.Time) time.Time { return t.UTC().Truncate(24 * time.Hour) }

type card struct {
	Label, Value, Note, Class string
}

type overviewData struct {
	Cards    []card
	Daily    stackChart
	Spending []keyRow
	More     int
	Latest   []*keybrake.Call
}

// overview is the on-call page: the four cards, spend per day for 30 days,
// the keys spending today against their caps, and the latest calls.
func (u *UI) overview(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	now, err := u.cfg.Store.Now(ctx)
	if err != nil {
		u.storeFailed(w, r, s, "clock", err)
		return
	}
	today := dayStart(now)
	month, err := u.cfg.Store.ReportDaily(ctx, keybrake.DailyFilter{Window: keybrake.Window{Since: today.AddDate(0, 0, -29), Until: today.AddDate(0, 0, 1)}})
	if err != nil {
		u.storeFailed(w, r, s, "daily report", err)
		return
	}
	g, err := u.cfg.Store.Gauges(ctx)
	if err != nil {
		u.storeFailed(w, r, s, "active keys", err)
		return
	}
	var spent keybrake.Micros
	var calls, denied int64
	day := today.Format("2006-01-02")
	for _, row := range month.Rows {
		if row.Day == day {
			spent += row.Spent
			calls += row.Calls
			denied += row.DeniedCalls
		}
	}
	var reserved keybrake.Micros
	for _, m := range g.Reserved {
		reserved += m
	}
	d := overviewData{Daily: dailyChart(month.Rows, today.AddDate(0, 0, -29), today, 600)}
	d.Cards = []card{
		{Label: "Active keys", Value: strconv.FormatInt(g.ActiveKeys, 10), Note: "can spend now"},
		{Label: "Today's spend", Value: usd(spent), Note: usd(reserved) + " reserved in flight"},
		{Label: "Calls today", Value: strconv.FormatInt(calls, 10), Note: "since 00:00 UTC"},
		{Label: "Calls blocked today", Value: strconv.FormatInt(denied, 10), Note: "refused before the vendor", Class: blockedClass(denied)},
	}

	views, _, err := u.cfg.Store.ListKeys(ctx, keybrake.KeyFilter{SpendingToday: true, Limit: keybrake.MaxPageSize})
	if err != nil {
		u.storeFailed(w, r, s, "keys", err)
		return
	}
	for _, v := range views {
		d.Spending = append(d.Spending, u.row(v))
	}
	slices.SortStableFunc(d.Spending, func(a, b keyRow) int {
		return cmp.Compare(microsPtr(b.SpentTodayUSD), microsPtr(a.SpentTodayUSD))
	})
	if len(d.Spending) > 12 {
		d.More = len(d.Spending) - 12
		d.Spending = d.Spending[:12]
	}
	if d.Latest, _, err = u.cfg.Store.ListCalls(ctx, keybrake.CallFilter{Limit: 8}); err != nil {
		u.storeFailed(w, r, s, "calls", err)
		return
	}
	u.render(w, r, s, http.StatusOK, "overview", page{Title: "Overview", Nav: "overview", Now: now, Data: d})
}

func blockedClass(n int64) string {
	if n > 0 {
		return "bad"
	}
	return ""
}

type keysData struct {
	Status   string
	Query    string
	Label    string
	Keys     []keyRow
	Next     string
	Statuses []string
}

// keys is the keys table: status filter, label search (or an exact run
// label, from the runs page), newest first, a page at a time.
func (u *UI) keys(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	d := keysData{Status: q.Get("status"), Query: q.Get("q"), Label: q.Get("label"),
		Statuses: []string{"", string(keybrake.StatusActive), string(keybrake.StatusRevoked), string(keybrake.StatusExpired)}}
	if !slices.Contains(d.Statuses, d.Status) {
		u.fail(w, r, s, http.StatusBadRequest, "The status filter must be active, revoked or expired.")
		return
	}
	ctx := r.Context()
	now, err := u.cfg.Store.Now(ctx)
	if err != nil {
		u.storeFailed(w, r, s, "clock", err)
		return
	}
	views, next, err := u.cfg.Store.ListKeys(ctx, keybrake.KeyFilter{Status: keybrake.KeyStatus(d.Status), LabelContains: d.Query,
		AgentRunLabel: d.Label, Cursor: q.Get("cursor"), Limit: 50})
	if err != nil {
		u.storeFailed(w, r, s, "keys", err)
		return
	}
	for _, v := range views {
		d.Keys = append(d.Keys, u.row(v))
	}
	d.Next = next
	u.render(w, r, s, http.StatusOK, "keys", page{Title: "Keys", Nav: "keys", Now: now, Data: d})
}

type keyDetailData struct {
	Key      keyRow
	Calls    []*keybrake.Call
	Next     string
	Metadata [][2]string
}

// keyDetail is one key: its policy, its spend, and its calls.
func (u *UI) keyDetail(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	v, err := u.cfg.Store.GetKey(ctx, r.PathValue("key_id"))
	if err != nil {
		u.storeFailed(w, r, s, "key", err)
		return
	}
	now, err := u.cfg.Store.Now(ctx)
	if err != nil {
		u.storeFailed(w, r, s, "clock", err)
		return
	}
	d := keyDetailData{Key: u.row(v)}
	for k, val := range v.Metadata {
		d.Metadata = append(d.Metadata, [2]string{k, val})
	}
	slices.SortFunc(d.Metadata, func(a, b [2]string) int { return cmp.Compare(a[0], b[0]) })
	if d.Calls, d.Next, err = u.cfg.Store.ListCalls(ctx, keybrake.CallFilter{KeyID: v.ID, Limit: 100, Cursor: r.URL.Query().Get("cursor")}); err != nil {
		u.storeFailed(w, r, s, "calls", err)
		return
	}
	u.render(w, r, s, http.StatusOK, "key", page{Title: v.ID, Nav: "keys", Now: now, Data: d})
}

type confirmData struct {
	Key    keyRow
	Return string
}

// revoke revokes through admin.API.Revoke, the code DELETE
// /vault/keys/{key_id} runs. Without JavaScript the Revoke button arrives
// here unconfirmed, and gets a confirmation page first.
func (u *UI) revoke(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	id := r.PathValue("key_id")
	back := localPath(r.PostFormValue("return"))
	if back == "" {
		back = Prefix + "keys/" + id
	}
	if r.PostFormValue("confirm") != "yes" {
		v, err := u.cfg.Store.GetKey(ctx, id)
		if err != nil {
			u.storeFailed(w, r, s, "key", err)
			return
		}
		u.render(w, r, s, http.StatusOK, "confirm", page{Title: "Revoke " + id, Nav: "keys", Data: confirmData{Key: u.row(v), Return: back}})
		return
	}
	res, err := u.cfg.Admin.Revoke(ctx, id)
	if err != nil {
		u.storeFailed(w, r, s, "key", err)
		return
	}
	u.log.Info("vault key revoked from the dashboard", "key_id", res.ID)
	u.sessions.setFlash(s, "Revoked "+res.ID+" at "+stamp(res.RevokedAt)+". Its next call gets 401 key_revoked.")
	http.Redirect(w, r, back, http.StatusSeeOther)
}

type runsData struct {
	Days  int
	Query string
	Runs  []runRow
	Next  string
}

type runRow struct {
	keybrake.RunRow
	Bar bar
}

// windowDays reads ?days= (7, 30 or 90; default 30).
func windowDays(r *http.Request) int {
	switch r.URL.Query().Get("days") {
	case "1":
		return 1
	case "7":
		return 7
	case "90":
		return 90
	default:
		return 30
	}
}

// runs is the runs report: one row per agent_run_label with calls in the
// window, newest first, linking to the run.
func (u *UI) runs(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	now, err := u.cfg.Store.Now(ctx)
	if err != nil {
		u.storeFailed(w, r, s, "clock", err)
		return
	}
	q := r.URL.Query()
	d := runsData{Days: windowDays(r), Query: q.Get("q")}
	rows, next, err := u.cfg.Store.ReportRuns(ctx, keybrake.RunsFilter{Window: keybrake.Window{Since: now.AddDate(0, 0, -d.Days), Until: now.Add(time.Second)},
		LabelPrefix: d.Query, Limit: 50, Cursor: q.Get("cursor")})
	if err != nil {
		u.storeFailed(w, r, s, "runs", err)
		return
	}
	for _, row := range rows {
		d.Runs = append(d.Runs, runRow{RunRow: row, Bar: capBar(row.Spent, 0, row.Cap)})
	}
	d.Next = next
	u.render(w, r, s, http.StatusOK, "runs", page{Title: "Runs", Nav: "runs", Now: now, Data: d})
}

type runDetailData struct {
	Summary *keybrake.RunSummary
	Calls   []*keybrake.Call
	Next    string
	Denied  []codeCount
}

type codeCount struct {
	Code  keybrake.Code
	Count int64
}

// runDetail is one run's summary (GET /vault/runs/{label}), its keys and
// its calls.
func (u *UI) runDetail(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	label := r.URL.Query().Get("label")
	sum, err := u.cfg.Store.RunSummary(ctx, label)
	if err != nil {
		u.storeFailed(w, r, s, "run", err)
		return
	}
	now, err := u.cfg.Store.Now(ctx)
	if err != nil {
		u.storeFailed(w, r, s, "clock", err)
		return
	}
	d := runDetailData{Summary: sum}
	for c, n := range sum.DeniedByCode {
		d.Denied = append(d.Denied, codeCount{c, n})
	}
	slices.SortFunc(d.Denied, func(a, b codeCount) int { return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Code, b.Code)) })
	if d.Calls, d.Next, err = u.cfg.Store.ListCalls(ctx, keybrake.CallFilter{AgentRunLabel: label, Limit: 100, Cursor: r.URL.Query().Get("cursor")}); err != nil {
		u.storeFailed(w, r, s, "calls", err)
		return
	}
	u.render(w, r, s, http.StatusOK, "run", page{Title: "Run " + label, Nav: "runs", Now: now, Data: d})
}

type auditData struct {
	Calls   []*keybrake.Call
	KeyID   string
	Outcome string
	Source  string // the fragment's address, with the same filters
}

func (u *UI) auditCalls(r *http.Request) (auditData, []*keybrake.Call, error) {
	q := r.URL.Query()
	d := auditData{KeyID: q.Get("key_id"), Outcome: q.Get("outcome")}
	calls, _, err := u.cfg.Store.ListCalls(r.Context(), keybrake.CallFilter{KeyID: d.KeyID, Outcome: keybrake.Outcome(d.Outcome), Limit: 50})
	return d, calls, err
}

// audit is the latest 50 audit rows; its script refreshes them from the
// fragment every few seconds, without reloading the page.
func (u *UI) audit(w http.ResponseWriter, r *http.Request, s *session) {
	d, calls, err := u.auditCalls(r)
	if err != nil {
		u.storeFailed(w, r, s, "calls", err)
		return
	}
	d.Calls = calls
	d.Source = Prefix + "fragments/audit"
	if r.URL.RawQuery != "" {
		d.Source += "?" + r.URL.RawQuery
	}
	u.render(w, r, s, http.StatusOK, "audit", page{Title: "Audit log", Nav: "audit", Data: d})
}

// auditFragment is the audit table's rows alone.
func (u *UI) auditFragment(w http.ResponseWriter, r *http.Request, s *session) {
	_, calls, err := u.auditCalls(r)
	if err != nil {
		u.log.Error("dashboard: audit fragment", "err", err.Error())
		http.Error(w, "the store is unavailable", http.StatusServiceUnavailable)
		return
	}
	u.write(w, http.StatusOK, "audit", "audit_rows", calls)
}

type reportsData struct {
	Days      int
	Agents    []agentRow
	Daily     stackChart
	Month     string
	Projected []legend
}

type agentRow struct {
	keybrake.AgentRow
	Share int // pixels of the widest bar
}

// reports shows the agents report and the daily trend with the month's
// projection.
func (u *UI) reports(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	now, err := u.cfg.Store.Now(ctx)
	if err != nil {
		u.storeFailed(w, r, s, "clock", err)
		return
	}
	d := reportsData{Days: windowDays(r)}
	today := dayStart(now)
	win := keybrake.Window{Since: today.AddDate(0, 0, 1-d.Days), Until: today.AddDate(0, 0, 1)}
	agents, err := u.cfg.Store.ReportAgents(ctx, keybrake.AgentsFilter{Window: win, GroupBy: keybrake.GroupByAgentName, Limit: 100})
	if err != nil {
		u.storeFailed(w, r, s, "agents report", err)
		return
	}
	var top keybrake.Micros
	for _, a := range agents {
		top = max(top, a.Spent)
	}
	for _, a := range agents {
		d.Agents = append(d.Agents, agentRow{AgentRow: a, Share: scale(a.Spent, top, 160)})
	}
	daily, err := u.cfg.Store.ReportDaily(ctx, keybrake.DailyFilter{Window: win})
	if err != nil {
		u.storeFailed(w, r, s, "daily report", err)
		return
	}
	d.Daily = dailyChart(daily.Rows, win.Since, today, 1000)
	d.Month = daily.Month
	for v, m := range daily.ProjectedMonth {
		d.Projected = append(d.Projected, legend{Vendor: v, Class: vendorClass(v), Total: m})
	}
	slices.SortFunc(d.Projected, func(a, b legend) int { return cmp.Compare(a.Vendor, b.Vendor) })
	u.render(w, r, s, http.StatusOK, "reports", page{Title: "Reports", Nav: "reports", Now: now, Data: d})
}

type webhookView struct {
	*keybrake.Webhook
	Deliveries []*keybrake.Delivery
	More       bool
}

// webhooks lists the webhooks and each one's latest deliveries.
func (u *UI) webhooks(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	hooks, err := u.cfg.Store.ListWebhooks(ctx)
	if err != nil {
		u.storeFailed(w, r, s, "webhooks", err)
		return
	}
	var views []webhookView
	for _, h := range hooks {
		list, next, err := u.cfg.Store.ListDeliveries(ctx, h.ID, 20, "")
		if err != nil {
			u.storeFailed(w, r, s, "webhook deliveries", err)
			return
		}
		views = append(views, webhookView{Webhook: h, Deliveries: list, More: next != ""})
	}
	u.render(w, r, s, http.StatusOK, "webhooks", page{Title: "Webhooks", Nav: "webhooks", Data: views})
}
