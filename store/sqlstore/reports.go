package sqlstore

import (
	"context"
	"database/sql"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/keybrake/keybrake"
)

const callColumns = `id, at, key_id, agent_run_label, vendor, method, path, rule, outcome, code, status,
	estimated, actual, object_id, idempotency_key, item, vendor_request_id, latency_ms, retry_of, operation`

func scanCall(row rowScanner) (*keybrake.Call, error) {
	var (
		c                          keybrake.Call
		at, est, act               int64
		keyID, objectID, vendorReq sql.NullString
		latency, retryOf           sql.NullInt64
		outcome, code              string
	)
	if err := row.Scan(&c.ID, &at, &keyID, &c.AgentRunLabel, &c.Vendor, &c.Method, &c.Path, &c.Rule,
		&outcome, &code, &c.Status, &est, &act, &objectID, &c.IdempotencyKey, &c.Item, &vendorReq,
		&latency, &retryOf, &c.Operation); err != nil {
		return nil, err
	}
	c.Time = fromMicros(at)
	c.KeyID, c.ObjectID, c.VendorRequestID = keyID.String, objectID.String, vendorReq.String
	c.Outcome, c.Code = keybrake.Outcome(outcome), keybrake.Code(code)
	c.Estimated, c.Actual = keybrake.Micros(est), keybrake.Micros(act)
	c.Latency = time.Duration(latency.Int64) * time.Millisecond
	c.RetryOf = retryOf.Int64
	return &c, nil
}

// ListCalls returns audit rows newest first.
func (s *Store) ListCalls(ctx context.Context, f keybrake.CallFilter) ([]*keybrake.Call, string, error) {
	limit := pageSize(f.Limit)
	var where []string
	var args []any
	arg := func(v any) string { args = append(args, v); return "$" + strconv.Itoa(len(args)) }
	if f.KeyID != "" {
		where = append(where, "key_id = "+arg(f.KeyID))
	}
	if f.AgentRunLabel != "" {
		where = append(where, "agent_run_label = "+arg(f.AgentRunLabel))
	}
	if f.Outcome != "" {
		where = append(where, "outcome = "+arg(string(f.Outcome)))
	}
	where = append(where, timeBounds(f.Since, f.Until, arg)...)
	if f.Cursor != "" {
		id, err := decodeIDCursor(f.Cursor)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "id < "+arg(id))
	}
	query := `SELECT ` + callColumns + ` FROM calls`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY id DESC LIMIT " + arg(limit+1)
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, "", s.wrap("list calls", err)
	}
	defer rows.Close()
	var out []*keybrake.Call
	for rows.Next() {
		c, err := scanCall(rows)
		if err != nil {
			return nil, "", s.wrap("list calls", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, "", s.wrap("list calls", err)
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		next = encodeIDCursor(out[limit-1].ID)
	}
	return out, next, nil
}

// RunSummary reports one agent_run_label: its keys, its calls allowed and
// denied, its spend by vendor and endpoint, and its first and last call.
func (s *Store) RunSummary(ctx context.Context, label string) (*keybrake.RunSummary, error) {
	sum := &keybrake.RunSummary{AgentRunLabel: label, DeniedByCode: map[keybrake.Code]int64{}, Keys: []keybrake.RunKey{}, ByEndpoint: []keybrake.EndpointSpend{}}
	err := s.read(ctx, "run summary", func(q Querier, now time.Time) error {
		rows, err := q.QueryContext(ctx, `SELECT `+keyColumns+` FROM keys WHERE agent_run_label = $1 ORDER BY created_at, id`, label)
		if err != nil {
			return err
		}
		for rows.Next() {
			k, u, err := scanKey(rows)
			if err != nil {
				rows.Close()
				return err
			}
			sum.Keys = append(sum.Keys, keybrake.RunKey{ID: k.ID, Vendor: k.Vendor, Status: k.StatusAt(now), Spent: u.Spent})
			sum.Spent += u.Spent
			sum.Reserved += u.Reserved
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}

		rows, err = q.QueryContext(ctx, `SELECT outcome, code, vendor, rule, COUNT(*), CAST(COALESCE(SUM(actual), 0) AS BIGINT), MIN(at), MAX(at),
			CAST(COALESCE(SUM(estimated), 0) AS BIGINT)
			FROM calls WHERE agent_run_label = $1 GROUP BY outcome, code, vendor, rule`, label)
		if err != nil {
			return err
		}
		defer rows.Close()
		byEndpoint := map[[2]string]*keybrake.EndpointSpend{}
		var order [][2]string
		var first, last int64
		for rows.Next() {
			var outcome, code, vendor, rule string
			var n, spent, lo, hi, asked int64
			if err := rows.Scan(&outcome, &code, &vendor, &rule, &n, &spent, &lo, &hi, &asked); err != nil {
				return err
			}
			if first == 0 || lo < first {
				first = lo
			}
			if hi > last {
				last = hi
			}
			sum.Calls += n
			o := keybrake.Outcome(outcome)
			if o.IsDenied() {
				sum.Denied += n
				sum.DeniedByCode[keybrake.Code(code)] += n
				sum.DeniedUSD += keybrake.Micros(asked)
				continue
			}
			sum.Allowed += n
			if o == keybrake.OutcomeUnknown {
				sum.Unknown += n
			}
			ek := [2]string{vendor, rule}
			e := byEndpoint[ek]
			if e == nil {
				e = &keybrake.EndpointSpend{Vendor: vendor, Endpoint: rule}
				byEndpoint[ek] = e
				order = append(order, ek)
			}
			e.Calls += n
			e.Spent += keybrake.Micros(spent)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		sort.Slice(order, func(i, j int) bool {
			return order[i][0] < order[j][0] || order[i][0] == order[j][0] && order[i][1] < order[j][1]
		})
		for _, ek := range order {
			sum.ByEndpoint = append(sum.ByEndpoint, *byEndpoint[ek])
		}
		if first != 0 {
			f, l := fromMicros(first), fromMicros(last)
			sum.FirstCall, sum.LastCall = &f, &l
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(sum.Keys) == 0 && sum.Calls == 0 {
		return nil, keybrake.ErrNotFound
	}
	return sum, nil
}
