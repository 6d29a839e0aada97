package sqlstore

import (
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keybrake/keybrake"
)

// The four spend reports, each one SQL statement that both engines run as
// written (Dialect.StrPos aside). Money is summed as integers and cast back
// to BIGINT (PostgreSQL sums BIGINT into NUMERIC); ratios are integer
// hundredths. A run is an agent_run_label; its calls are the audit rows of
// its keys in the window (rows of unknown keys belong to no run).

// runsCTE is the WITH clause that every run-based report starts from:
// runs(label, agent_name, keys, cap, calls, denied, unknown, spent,
// first_at, last_at), one row per label with calls in the window.
func runsCTE(w keybrake.Window, labelPrefix string, arg func(any) string) string {
	where := "key_id IS NOT NULL AND at >= " + arg(micros(w.Since)) + " AND at < " + arg(micros(w.Until))
	if labelPrefix != "" {
		where += " AND substr(agent_run_label, 1, " + strconv.Itoa(utf8.RuneCountInString(labelPrefix)) + ") = " + arg(labelPrefix)
	}
	return `WITH c AS (
		SELECT agent_run_label AS label, COUNT(*) AS calls,
			SUM(CASE WHEN substr(outcome, 1, 7) = 'denied_' THEN 1 ELSE 0 END) AS denied,
			SUM(CASE WHEN outcome = 'unknown' THEN 1 ELSE 0 END) AS unknown,
			SUM(actual) AS spent, MIN(at) AS first_at, MAX(at) AS last_at
		FROM calls WHERE ` + where + ` GROUP BY agent_run_label
	), k AS (
		SELECT agent_run_label AS label, COUNT(*) AS keys, SUM(daily_cap) AS cap, MAX(agent_name) AS agent_name
		FROM keys WHERE agent_run_label IN (SELECT label FROM c) GROUP BY agent_run_label
	), runs AS (
		SELECT c.label AS label, k.agent_name AS agent_name, k.keys AS keys, CAST(k.cap AS BIGINT) AS cap,
			c.calls AS calls, CAST(c.denied AS BIGINT) AS denied, CAST(c.unknown AS BIGINT) AS unknown,
			CAST(c.spent AS BIGINT) AS spent, c.first_at AS first_at, c.last_at AS last_at
		FROM c JOIN k ON k.label = c.label
	)`
}

const runColumns = `label, agent_name, keys, cap, calls, denied, unknown, spent, first_at, last_at`

func scanRun(row rowScanner, extra ...any) (keybrake.RunRow, error) {
	var r keybrake.RunRow
	var capacity, spent, first, last int64
	err := row.Scan(append([]any{&r.AgentRunLabel, &r.AgentName, &r.Keys, &capacity, &r.Calls, &r.DeniedCalls,
		&r.UnknownCalls, &spent, &first, &last}, extra...)...)
	r.Cap, r.Spent = keybrake.Micros(capacity), keybrake.Micros(spent)
	r.AllowedCalls = r.Calls - r.DeniedCalls
	r.FirstCall, r.LastCall = fromMicros(first), fromMicros(last)
	return r, err
}

// queryArgs numbers placeholders as they are added.
type queryArgs struct{ list []any }

func (q *queryArgs) arg(v any) string {
	q.list = append(q.list, v)
	return "$" + strconv.Itoa(len(q.list))
}

// ReportRuns lists runs with calls in the window, newest last call first.
// A negative Limit returns every row (exports).
func (s *Store) ReportRuns(ctx context.Context, f keybrake.RunsFilter) ([]keybrake.RunRow, string, error) {
	var q queryArgs
	query := runsCTE(f.Window, f.LabelPrefix, q.arg) + ` SELECT ` + runColumns + ` FROM runs`
	var where []string
	if f.AgentName != nil {
		where = append(where, "agent_name = "+q.arg(*f.AgentName))
	}
	if f.Cursor != "" {
		at, label, err := decodeRunCursor(f.Cursor)
		if err != nil {
			return nil, "", err
		}
		a, b := q.arg(at), q.arg(label)
		where = append(where, "(last_at < "+a+" OR (last_at = "+a+" AND label < "+b+"))")
	}
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY last_at DESC, label DESC"
	limit := f.Limit
	if limit >= 0 {
		limit = pageSize(limit)
		query += " LIMIT " + q.arg(limit+1)
	}
	var out []keybrake.RunRow
	err := s.readRows(ctx, "runs report", query, q.list, func(rows *sql.Rows) error {
		r, err := scanRun(rows)
		out = append(out, r)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	next := ""
	if limit >= 0 && len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		next = encodeRunCursor(micros(last.LastCall), last.AgentRunLabel)
	}
	return out, next, nil
}

// ReportAgents groups the window's runs by agent_name (keys with none form
// the group "") or by a label prefix, most expensive first.
func (s *Store) ReportAgents(ctx context.Context, f keybrake.AgentsFilter) ([]keybrake.AgentRow, error) {
	var q queryArgs
	query := runsCTE(f.Window, "", q.arg)
	switch f.GroupBy {
	case "", keybrake.GroupByAgentName:
		query += `, grouped AS (SELECT agent_name AS grp, calls, spent FROM runs)`
	case keybrake.GroupByLabelPrefix:
		if f.Depth < 1 || f.Depth > 8 {
			return nil, keybrake.FieldError("depth", "depth must be from 1 to 8")
		}
		if f.Sep == "" {
			f.Sep = ":"
		}
		if len(f.Sep) > 8 || !printableASCII(f.Sep) {
			return nil, keybrake.FieldError("sep", "sep must be 1 to 8 printable ASCII characters")
		}
		// pos is the end of the Depth-th separator, found one level per CTE.
		// Padding the label with Depth separators makes every level find
		// one, and a label with fewer parts is kept whole.
		sep, pad, l := q.arg(f.Sep), q.arg(strings.Repeat(f.Sep, f.Depth)), strconv.Itoa(len(f.Sep))
		query += `, p0 AS (SELECT label, calls, spent, label || ` + pad + ` AS s, 0 AS pos FROM runs)`
		for i := 1; i <= f.Depth; i++ {
			query += fmt.Sprintf(`, p%d AS (SELECT label, calls, spent, s, pos + %s(substr(s, pos + 1), %s) + %s - 1 AS pos FROM p%d)`,
				i, s.dialect.StrPos, sep, l, i-1)
		}
		query += fmt.Sprintf(`, grouped AS (SELECT substr(label, 1, pos - %s) AS grp, calls, spent FROM p%d)`, l, f.Depth)
	default:
		return nil, keybrake.FieldError("group_by", "group_by must be agent_name or label_prefix")
	}
	query += ` SELECT grp, COUNT(*), CAST(SUM(calls) AS BIGINT), CAST(SUM(spent) AS BIGINT),
		CAST(SUM(spent) AS BIGINT) / COUNT(*), MAX(spent) FROM grouped
		GROUP BY grp ORDER BY 4 DESC, 1 LIMIT ` + q.arg(pageSize(f.Limit))
	return s.agentRows(ctx, query, q.list)
}

func (s *Store) agentRows(ctx context.Context, query string, args []any) ([]keybrake.AgentRow, error) {
	var out []keybrake.AgentRow
	err := s.readRows(ctx, "agents report", query, args, func(rows *sql.Rows) error {
		var r keybrake.AgentRow
		var spent, avg, maxRun int64
		err := rows.Scan(&r.Group, &r.Runs, &r.Calls, &spent, &avg, &maxRun)
		r.Spent, r.AvgRun, r.MaxRun = keybrake.Micros(spent), keybrake.Micros(avg), keybrake.Micros(maxRun)
		out = append(out, r)
		return err
	})
	return out, err
}

// ReportDaily sums the window's calls per UTC day (the day a call counts
// against its key's daily cap) and vendor, and projects the store clock's
// current month per vendor.
func (s *Store) ReportDaily(ctx context.Context, f keybrake.DailyFilter) (*keybrake.DailyReport, error) {
	now, err := s.Now(ctx)
	if err != nil {
		return nil, err
	}
	rep := &keybrake.DailyReport{Rows: []keybrake.DailyRow{}, ProjectedMonth: map[string]keybrake.Micros{}}
	var q queryArgs
	query := `SELECT day, vendor, COUNT(*), CAST(SUM(CASE WHEN substr(outcome, 1, 7) = 'denied_' THEN 1 ELSE 0 END) AS BIGINT),
		CAST(COALESCE(SUM(actual), 0) AS BIGINT) FROM calls WHERE day >= ` + q.arg(Day(f.Since)) +
		` AND day <= ` + q.arg(Day(f.Until.Add(-time.Microsecond)))
	if f.Vendor != "" {
		query += ` AND vendor = ` + q.arg(f.Vendor)
	}
	err = s.readRows(ctx, "daily report", query+` GROUP BY day, vendor ORDER BY day, vendor`, q.list, func(rows *sql.Rows) error {
		var r keybrake.DailyRow
		var spent int64
		err := rows.Scan(&r.Day, &r.Vendor, &r.Calls, &r.DeniedCalls, &spent)
		r.Spent, r.AllowedCalls = keybrake.Micros(spent), r.Calls-r.DeniedCalls
		rep.Rows = append(rep.Rows, r)
		return err
	})
	if err != nil {
		return nil, err
	}

	// The projection: month so far, plus the average of the 7 whole days
	// before today times the days left after today.
	today := now.UTC()
	monthStart := time.Date(today.Year(), today.Month(), 1, 0, 0, 0, 0, time.UTC)
	daysLeft := monthStart.AddDate(0, 1, -1).Day() - today.Day()
	weekStart := Day(today.AddDate(0, 0, -7))
	from := min(Day(monthStart), weekStart)
	rep.Month = monthStart.Format("2006-01")
	q = queryArgs{}
	ms, ws, td := q.arg(Day(monthStart)), q.arg(weekStart), q.arg(Day(today))
	query = `SELECT vendor, mtd + week * ` + strconv.Itoa(daysLeft) + ` / 7 FROM (
		SELECT vendor, CAST(COALESCE(SUM(CASE WHEN day >= ` + ms + ` THEN actual ELSE 0 END), 0) AS BIGINT) AS mtd,
			CAST(COALESCE(SUM(CASE WHEN day >= ` + ws + ` AND day < ` + td + ` THEN actual ELSE 0 END), 0) AS BIGINT) AS week
		FROM calls WHERE day >= ` + q.arg(from) + ` AND day <= ` + td
	if f.Vendor != "" {
		query += ` AND vendor = ` + q.arg(f.Vendor)
	}
	query += ` GROUP BY vendor) AS m ORDER BY vendor`
	err = s.readRows(ctx, "daily report", query, q.list, func(rows *sql.Rows) error {
		var vendor string
		var proj int64
		err := rows.Scan(&vendor, &proj)
		rep.ProjectedMonth[vendor] = keybrake.Micros(proj)
		return err
	})
	if err != nil {
		return nil, err
	}
	return rep, nil
}

// ReportAnomalies lists the window's runs whose spend is over f.Factor ×
// the median spend of the same agent's other runs in the window (the median
// of an even count is the mean of the middle two), or over f.MinUSD when it
// is set; most expensive first. A median of $0 is no baseline: only
// min_usd can flag a run then.
//
// The median of the others is read from one ranking of the agent's runs:
// removing run r (rank p of n) leaves n-1 runs whose middle ranks are n/2
// and (n+1)/2, shifted up by one at or past p. The comparison is exact in
// integers: 200 × spent > factor(hundredths) × (sum of the two middle runs),
// which holds for runs up to about $46 billion and medians up to $460
// million before BIGINT overflows.
func (s *Store) ReportAnomalies(ctx context.Context, f keybrake.AnomalyFilter) ([]keybrake.AnomalyRow, error) {
	if f.Factor == 0 {
		f.Factor = keybrake.DefaultAnomalyFactor
	}
	if f.Factor < 100 || f.Factor > keybrake.MaxAnomalyFactor {
		return nil, keybrake.FieldError("factor", "factor must be from 1 to %d", keybrake.MaxAnomalyFactor/100)
	}
	var q queryArgs
	query := runsCTE(f.Window, "", q.arg) + `, ranked AS (
		SELECT ` + runColumns + `, ROW_NUMBER() OVER (PARTITION BY agent_name ORDER BY spent, label) AS rn,
			COUNT(*) OVER (PARTITION BY agent_name) AS n FROM runs
	), based AS (
		SELECT r.label AS label, r.agent_name AS agent_name, r.keys AS keys, r.cap AS cap, r.calls AS calls,
			r.denied AS denied, r.unknown AS unknown, r.spent AS spent, r.first_at AS first_at, r.last_at AS last_at,
			lo.spent + hi.spent AS twice
		FROM ranked r
		LEFT JOIN ranked lo ON lo.agent_name = r.agent_name AND lo.rn = CASE WHEN r.n / 2 < r.rn THEN r.n / 2 ELSE r.n / 2 + 1 END
		LEFT JOIN ranked hi ON hi.agent_name = r.agent_name AND hi.rn = CASE WHEN (r.n + 1) / 2 < r.rn THEN (r.n + 1) / 2 ELSE (r.n + 1) / 2 + 1 END
	) SELECT ` + runColumns + `, twice / 2, CASE WHEN twice > 0 THEN spent * 200 / twice END FROM based`
	// A zero baseline (the agent's other runs spent nothing yet, e.g. keys
	// issued but not used) is no baseline: any spend would be "infinitely"
	// anomalous. Such runs are anomalies only by min_usd.
	cond := "(twice IS NOT NULL AND twice > 0 AND spent * 200 > " + strconv.FormatInt(int64(f.Factor), 10) + " * twice)"
	if f.MinUSD > 0 {
		cond = "(" + cond + " OR spent > " + q.arg(int64(f.MinUSD)) + ")"
	}
	where := []string{cond}
	if f.AgentName != nil {
		where = append(where, "agent_name = "+q.arg(*f.AgentName))
	}
	if len(f.Labels) > 0 {
		where = append(where, "label IN "+inList(q.arg, f.Labels))
	}
	query += " WHERE " + strings.Join(where, " AND ") + " ORDER BY spent DESC, label LIMIT " + q.arg(pageSize(f.Limit))
	var out []keybrake.AnomalyRow
	err := s.readRows(ctx, "anomalies report", query, q.list, func(rows *sql.Rows) error {
		var base, ratio sql.NullInt64
		r, err := scanRun(rows, &base, &ratio)
		a := keybrake.AnomalyRow{RunRow: r}
		if base.Valid {
			b := keybrake.Micros(base.Int64)
			a.Baseline = &b
		}
		if ratio.Valid {
			fr := keybrake.Factor(ratio.Int64)
			a.Factor = &fr
		}
		out = append(out, a)
		return err
	})
	return out, err
}

// readRows runs a report query on the reader pool and hands each row to f.
func (s *Store) readRows(ctx context.Context, op, query string, args []any, f func(*sql.Rows) error) error {
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return s.wrap(op, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := f(rows); err != nil {
			return s.wrap(op, err)
		}
	}
	return s.wrap(op, rows.Err())
}

func encodeRunCursor(at int64, label string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at, 10) + ":" + label))
}

func decodeRunCursor(c string) (int64, string, error) {
	return decodeKeyCursor(c) // same shape: time, then a string
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
