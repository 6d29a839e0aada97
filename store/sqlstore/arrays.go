package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/keybrake/keybrake"
)

// The batch's writes on an engine whose driver binds arrays (Dialect.Arrays:
// PostgreSQL). There every statement is a round trip, and every round trip
// after the first statement of a batch is made while the batch holds its
// keys' row locks: another replica's batch on the same key waits for all of
// them. So a batch draws its audit row ids from a pool filled ahead of
// time, outside the locks, and writes what it did (audit rows,
// settlements, key and day totals) in one statement.

// idBlock is how many audit row ids a refill of the pool draws: a
// sequence value drawn and never used is a gap in calls.id, nothing more.
const idBlock = 256

// idPool holds calls.id values drawn ahead of the batches that use them, in
// ascending order. Batches run one at a time, but with batching off each
// caller runs its own, hence the lock.
type idPool struct {
	mu  sync.Mutex
	ids []int64
}

// drawIDs hands the batch's n decisions their audit row ids, in arrival
// order, from the pool; a pool with fewer than n draws a block first, in
// one statement.
func (s *Store) drawIDs(ctx context.Context, tx Querier, n int) ([]int64, error) {
	p := &s.ids
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.ids) < n {
		rows, err := tx.QueryContext(ctx, `SELECT nextval(pg_get_serial_sequence('calls', 'id')) FROM generate_series(1, $1)`, max(n, idBlock))
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				return nil, err
			}
			p.ids = append(p.ids, id)
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
		slices.Sort(p.ids)
	}
	// Taken whether or not the batch commits: an id is never handed out
	// twice, even to a rerun of the same batch.
	ids := slices.Clone(p.ids[:n])
	p.ids = slices.Delete(p.ids, 0, n)
	return ids, nil
}

// flushRows writes the queued audit rows in one statement, with the ids
// drawn for them (an op that reads calls rows writes its own at once).
func (s *Store) flushRows(ctx context.Context, tx Querier, h *held) error {
	if len(h.rows) == 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO calls (id, at, key_id, agent_run_label, vendor, method, path,
		rule, outcome, code, status, estimated, actual, day, idempotency_key, item, retry_of, instance,
		object_id, operation) OVERRIDING SYSTEM VALUE `+auditSelect(1), rowArrays(h)...); err != nil {
		return fmt.Errorf("audit rows: %w", err)
	}
	h.rows = h.rows[:0]
	return nil
}

// auditSelect reads queued audit rows from the 20 arrays rowArrays binds,
// as parameters $first….
func auditSelect(first int) string {
	p := func(i int) string { return fmt.Sprintf("$%d", first+i) }
	return `SELECT v.id, v.at, NULLIF(v.key_id, ''), v.label, v.vendor, v.method, v.path, v.rule, v.outcome, v.code,
			v.status, v.estimated, v.actual, v.day, v.idem, v.item, NULLIF(v.retry_of, 0), v.instance,
			NULLIF(v.object_id, ''), v.operation
		FROM unnest(` + p(0) + `::bigint[], ` + p(1) + `::bigint[], ` + p(2) + `::text[], ` + p(3) + `::text[], ` +
		p(4) + `::text[], ` + p(5) + `::text[], ` + p(6) + `::text[], ` + p(7) + `::text[], ` + p(8) + `::text[], ` +
		p(9) + `::text[], ` + p(10) + `::bigint[], ` + p(11) + `::bigint[], ` + p(12) + `::bigint[], ` + p(13) + `::text[], ` +
		p(14) + `::text[], ` + p(15) + `::text[], ` + p(16) + `::bigint[], ` + p(17) + `::text[], ` + p(18) + `::text[], ` +
		p(19) + `::text[])
			AS v(id, at, key_id, label, vendor, method, path, rule, outcome, code, status, estimated, actual,
				day, idem, item, retry_of, instance, object_id, operation)`
}

// rowArrays is the queued audit rows, column by column.
func rowArrays(h *held) []any {
	n := len(h.rows)
	ints := func(f func(r *queuedRow) int64) []int64 {
		out := make([]int64, n)
		for i := range h.rows {
			out[i] = f(&h.rows[i])
		}
		return out
	}
	strs := func(f func(r *queuedRow) string) []string {
		out := make([]string, n)
		for i := range h.rows {
			out[i] = f(&h.rows[i])
		}
		return out
	}
	return []any{
		ints(func(r *queuedRow) int64 { return r.id }), ints(func(r *queuedRow) int64 { return r.at }),
		strs(func(r *queuedRow) string { return r.keyID }), strs(func(r *queuedRow) string { return r.label }),
		strs(func(r *queuedRow) string { return r.vendor }), strs(func(r *queuedRow) string { return r.method }),
		strs(func(r *queuedRow) string { return r.path }), strs(func(r *queuedRow) string { return r.rule }),
		strs(func(r *queuedRow) string { return r.outcome }), strs(func(r *queuedRow) string { return r.code }),
		ints(func(r *queuedRow) int64 { return r.status }), ints(func(r *queuedRow) int64 { return r.estimated }),
		ints(func(r *queuedRow) int64 { return r.actual }), strs(func(r *queuedRow) string { return r.day }),
		strs(func(r *queuedRow) string { return r.idemKey }), strs(func(r *queuedRow) string { return r.item }),
		ints(func(r *queuedRow) int64 { return r.retryOf }), strs(func(r *queuedRow) string { return r.instance }),
		strs(func(r *queuedRow) string { return r.objectID }), strs(func(r *queuedRow) string { return r.operation }),
	}
}

// flushCalls writes the settlements the batch holds, in one statement,
// before an op that reads calls rows a settlement may have changed (an
// exposure's count, an Idempotency-Key's earlier attempt). At the end of
// the batch flushArrays writes them with everything else.
func (s *Store) flushCalls(ctx context.Context, tx Querier, h *held) error {
	if !s.dialect.Arrays {
		return s.flushCallRows(ctx, tx, h)
	}
	args, n := callArrays(h)
	if n == 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE calls SET `+settledSet+` FROM `+settledFrom(1), args...); err != nil {
		return fmt.Errorf("settled calls: %w", err)
	}
	return nil
}

// flushCallRows is flushCalls one row per statement, for an engine
// without array binding (SQLite, where a statement is no round trip).
func (s *Store) flushCallRows(ctx context.Context, tx Querier, h *held) error {
	for id, c := range h.calls {
		if !c.dirty {
			continue
		}
		c.dirty = false
		if _, err := tx.ExecContext(ctx, `UPDATE calls SET outcome = $1, status = $2, actual = $3, object_id = $4,
			vendor_request_id = $5, code = $6, latency_ms = $7, settled_at = $8, reconcile_state = $9 WHERE id = $10`,
			c.outcome, c.status, c.actual, c.objectID, c.vendorRequestID, c.code, c.latency, c.settledAt, c.reconcile, id); err != nil {
			return fmt.Errorf("settled call %d: %w", id, err)
		}
	}
	return nil
}

// settledSet and settledFrom update calls from the 10 arrays callArrays
// binds. calls.id = ANY(…) lets the planner reach the rows by primary key
// whatever it guesses of the unnest's size.
const settledSet = `outcome = v.outcome, status = v.status, actual = v.actual,
		object_id = v.object_id, vendor_request_id = v.vrid, code = v.code, latency_ms = v.lat, settled_at = v.at,
		reconcile_state = v.rs`

func settledFrom(first int) string {
	p := func(i int) string { return fmt.Sprintf("$%d", first+i) }
	return `unnest(` + p(0) + `::bigint[], ` + p(1) + `::text[], ` + p(2) + `::bigint[], ` + p(3) + `::bigint[], ` +
		p(4) + `::text[], ` + p(5) + `::text[], ` + p(6) + `::text[], ` + p(7) + `::bigint[], ` + p(8) + `::bigint[], ` +
		p(9) + `::text[]) AS v(id, outcome, status, actual, object_id, vrid, code, lat, at, rs)
		WHERE calls.id = ANY(` + p(0) + `) AND calls.id = v.id`
}

// callArrays is the settlements the batch holds and has not written yet,
// column by column, and how many there are; they count as written from
// here on.
func callArrays(h *held) ([]any, int) {
	var (
		id, status, actual, latency, at        []int64
		outcome, object, vrid, code, reconcile []string
	)
	for cid, c := range h.calls {
		if !c.dirty {
			continue
		}
		c.dirty = false
		id, status, actual, latency, at = append(id, cid), append(status, int64(c.status)), append(actual, c.actual),
			append(latency, c.latency), append(at, c.settledAt)
		outcome, object, vrid, code, reconcile = append(outcome, c.outcome), append(object, c.objectID),
			append(vrid, c.vendorRequestID), append(code, c.code), append(reconcile, c.reconcile)
	}
	return []any{id, outcome, status, actual, object, vrid, code, latency, at, reconcile}, len(id)
}

// flushStatement is the whole of a batch's writes as one statement: the
// audit rows, the settlements, the keys' summed moves, and the moves of
// the keys' days that already have a row (it returns those; a day's first
// move is inserted after). Data-modifying WITH clauses all run, to
// completion, on one snapshot; they touch different rows (new calls,
// settled calls, keys, key days), so none sees or undoes another's.
var flushStatement = `WITH audit AS (
		INSERT INTO calls (id, at, key_id, agent_run_label, vendor, method, path,
			rule, outcome, code, status, estimated, actual, day, idempotency_key, item, retry_of, instance,
			object_id, operation) OVERRIDING SYSTEM VALUE ` + auditSelect(1) + `
	), settled AS (
		UPDATE calls SET ` + settledSet + ` FROM ` + settledFrom(21) + `
	), moved AS (
		UPDATE keys SET spent = keys.spent + v.s, reserved = keys.reserved + v.r,
			calls = keys.calls + v.c, denied_calls = keys.denied_calls + v.d
		FROM unnest($31::text[], $32::bigint[], $33::bigint[], $34::bigint[], $35::bigint[]) AS v(id, s, r, c, d)
		WHERE keys.id = v.id
	)
	UPDATE key_days SET spent = key_days.spent + v.s, reserved = key_days.reserved + v.r
		FROM unnest($36::text[], $37::text[], $38::bigint[], $39::bigint[]) AS v(key_id, day, s, r)
		WHERE key_days.key_id = v.key_id AND key_days.day = v.day RETURNING key_days.key_id, key_days.day`

// flushArrays is flush in one statement whatever the batch holds (a second,
// rarely, for a key's first move of a day).
func (s *Store) flushArrays(ctx context.Context, tx Querier, h *held, ids []string) error {
	var kid []string
	var ks, kr, kc, kd []int64
	var did, dday []string
	var ds, dr []int64
	for _, id := range ids {
		hk := h.keys[id]
		if hk.d != [4]int64{} {
			kid = append(kid, id)
			ks, kr, kc, kd = append(ks, hk.d[0]), append(kr, hk.d[1]), append(kc, hk.d[2]), append(kd, hk.d[3])
		}
		for day, dm := range hk.days {
			if *dm != [2]int64{} {
				did, dday = append(did, id), append(dday, day)
				ds, dr = append(ds, dm[0]), append(dr, dm[1])
			}
		}
	}
	calls, _ := callArrays(h)
	args := append(rowArrays(h), calls...)
	args = append(args, kid, ks, kr, kc, kd, did, dday, ds, dr)
	rows, err := tx.QueryContext(ctx, flushStatement, args...)
	if err != nil {
		return fmt.Errorf("batch writes: %w", err)
	}
	updated := map[[2]string]bool{}
	for rows.Next() {
		var k [2]string
		if err := rows.Scan(&k[0], &k[1]); err != nil {
			rows.Close()
			return err
		}
		updated[k] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("batch writes: %w", err)
	}
	h.rows = h.rows[:0]
	for i := range did {
		if updated[[2]string{did[i], dday[i]}] {
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO key_days (key_id, day, spent, reserved) VALUES ($1, $2, $3, $4)`,
			did[i], dday[i], ds[i], dr[i]); err != nil {
			return fmt.Errorf("key %s day %s: %w", did[i], dday[i], err)
		}
	}
	return nil
}

// callsClockAndDays reads, in one statement once the keys are locked, the
// rows of the calls the batch settles (locking them), the database's clock
// and the held keys' usage on the UTC day it names: what holdCalls,
// Dialect.Now and readDays do, in one round trip while the keys are held.
// Its snapshot is taken after every lock it depends on was granted: the
// calls' locks never wait (every transaction locks a call's key first, and
// this batch holds it), and a revoke that held a key first is seen. The
// reads cannot be folded into the statement that locks the keys: under
// READ COMMITTED its snapshot predates the lock it waited for.
func (s *Store) callsClockAndDays(ctx context.Context, tx Querier, h *held, calls []int64) (time.Time, error) {
	h.calls = map[int64]*heldCall{}
	keys := make([]string, 0, len(h.keys))
	for id := range h.keys {
		keys = append(keys, id)
	}
	rows, err := tx.QueryContext(ctx, `WITH n AS (SELECT clock_timestamp() AS t),
		c AS (SELECT id, key_id, day, outcome, estimated, actual, idempotency_key, COALESCE(object_id, '') AS object_id
			FROM calls WHERE id = ANY($2) ORDER BY id`+s.dialect.LockKey+`)
		SELECT 0, n.t, to_char(n.t AT TIME ZONE 'UTC', 'YYYY-MM-DD'), d.key_id, d.spent, d.reserved,
			NULL::bigint, NULL::text, NULL::text, NULL::bigint, NULL::bigint, NULL::text, NULL::text
		FROM n LEFT JOIN key_days d ON d.key_id = ANY($1) AND d.day = to_char(n.t AT TIME ZONE 'UTC', 'YYYY-MM-DD')
		UNION ALL
		SELECT 1, NULL, NULL, c.key_id, NULL, NULL, c.id, c.day, c.outcome, c.estimated, c.actual, c.idempotency_key, c.object_id FROM c`,
		keys, calls)
	if err != nil {
		return time.Time{}, err
	}
	defer rows.Close()
	var (
		now    time.Time
		sqlDay string
		read   bool
	)
	for rows.Next() {
		var (
			kind                             int
			t                                sql.NullTime
			day, keyID                       sql.NullString
			spent, reserved                  sql.NullInt64
			id, estimated, actual            sql.NullInt64
			cday, outcome, idemKey, objectID sql.NullString
		)
		if err := rows.Scan(&kind, &t, &day, &keyID, &spent, &reserved, &id, &cday, &outcome, &estimated, &actual, &idemKey, &objectID); err != nil {
			return time.Time{}, err
		}
		if kind == 1 {
			h.calls[id.Int64] = &heldCall{keyID: keyID.String, day: cday.String, outcome: outcome.String,
				estimated: estimated.Int64, actual: actual.Int64, idemKey: idemKey.String, objectID: objectID.String}
			continue
		}
		now, sqlDay, read = t.Time.UTC(), day.String, true
		if hk := h.keys[keyID.String]; keyID.Valid && hk != nil {
			hk.u.SpentToday, hk.u.ReservedToday = keybrake.Micros(spent.Int64), keybrake.Micros(reserved.Int64)
		}
	}
	if err := rows.Err(); err != nil {
		return time.Time{}, err
	}
	if !read {
		return time.Time{}, fmt.Errorf("read clock: no row")
	}
	rows.Close()
	h.day = Day(now)
	if h.day != sqlDay {
		// Both are the UTC date of one instant; should they ever disagree,
		// the day is Go's (as everywhere else), read again.
		for _, hk := range h.keys {
			hk.u.SpentToday, hk.u.ReservedToday = 0, 0
		}
		if err := s.readDays(ctx, tx, h); err != nil {
			return time.Time{}, err
		}
	}
	return now, nil
}
