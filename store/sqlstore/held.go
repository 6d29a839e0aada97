package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/keybrake/keybrake"
)

// held is what a batch knows about the key rows it holds locked: each
// key's state and usage as read once at the start of the batch, plus the
// moves its ops made since (summed deltas). The ops read their running
// totals from here, not from the rows, and the deltas are written once per
// key (and per key and day) at the end of the batch (flush), instead of an
// UPDATE per op. A batch that is run again (an op failed) starts from a
// fresh read.
type held struct {
	day  string // the batch's calendar day (Usage's *Today fields)
	keys map[string]*heldKey
	// calls, with Dialect.Arrays, are the rows of the calls the batch
	// settles, read locked with the keys; a settlement changes them here
	// and flushCalls writes them all in one statement. nil: each
	// settlement reads and writes its own row.
	calls map[int64]*heldCall
	// ids, with Dialect.Arrays, are audit row ids drawn for the batch's
	// decisions (each writes exactly one row); rows are the rows queued for
	// flushRows. direct: the op running now writes its row at once (it
	// reads calls rows). nil ids: each row is its own INSERT.
	ids    []int64
	rows   []queuedRow
	direct bool
}

// queuedRow is an audit row waiting for the batch's multi-row insert.
type queuedRow struct {
	id, at, status, estimated, actual, retryOf                            int64
	keyID, label, vendor, method, path, rule, outcome, code, day, idemKey string
	item, instance, objectID, operation                                   string
}

// heldCall is a settled call's row in a batch.
type heldCall struct {
	keyID, day, outcome, idemKey, objectID string
	estimated, actual                      int64

	dirty                            bool // settled in this batch, not written yet
	status                           int
	vendorRequestID, code, reconcile string
	latency, settledAt               int64
}

// heldKey is one key row of a batch.
type heldKey struct {
	k          keybrake.Key
	thresholds string // alert_thresholds, as stored
	agent      string
	u          keybrake.Usage // as read plus this batch's moves

	d    [4]int64 // pending deltas: spent, reserved, calls, denied_calls
	days map[string]*[2]int64
}

// add moves a key's counters (and, for money, its day's).
func (h *held) add(hk *heldKey, day string, spent, reserved keybrake.Micros, calls, denied int64) {
	hk.d[0] += int64(spent)
	hk.d[1] += int64(reserved)
	hk.d[2] += calls
	hk.d[3] += denied
	hk.u.Spent += spent
	hk.u.Reserved += reserved
	hk.u.Calls += calls
	hk.u.DeniedCalls += denied
	if spent == 0 && reserved == 0 {
		return
	}
	dm := hk.days[day]
	if dm == nil {
		dm = new([2]int64)
		hk.days[day] = dm
	}
	dm[0] += int64(spent)
	dm[1] += int64(reserved)
	if day == h.day {
		hk.u.SpentToday += spent
		hk.u.ReservedToday += reserved
	}
}

// heldColumns are keyStateColumns plus what the spend events need.
const heldColumns = keyStateColumns + `, alert_thresholds, agent_name`

// holdKeys reads (and on PostgreSQL locks, in id order) the key rows of
// every op in the batch, in one statement; holdCalls (SQLite) or
// callsClockAndDays (PostgreSQL) then reads the rows of the calls it settles.
// Two replicas' batches touching the same keys take them in the same
// order, so they wait for each other but never deadlock; the clock is read
// after, so a revoke that held a key first is seen.
func (s *Store) holdKeys(ctx context.Context, tx Querier, ops []*op) (*held, error) {
	h := &held{keys: map[string]*heldKey{}}
	var keys []string
	var calls []int64
	for _, o := range ops {
		switch {
		case o.attempt != nil && o.attempt.KeyID != "":
			if !slices.Contains(keys, o.attempt.KeyID) { // a hot key: one entry, not 64
				keys = append(keys, o.attempt.KeyID)
			}
		case o.settlement != nil:
			calls = append(calls, o.settlement.CallID)
		}
	}
	if len(keys) == 0 && len(calls) == 0 {
		return h, nil
	}
	var query string
	var args []any
	if s.dialect.Arrays {
		// One statement text whatever the batch holds, so the driver's
		// statement cache keeps it prepared.
		query = `SELECT ` + heldColumns + ` FROM keys WHERE id = ANY($1) OR id IN (SELECT key_id FROM calls WHERE id = ANY($2)) ORDER BY id` + s.dialect.LockKey
		args = []any{keys, calls}
	} else {
		// One statement text whatever the batch holds, so the statement
		// cache keeps it prepared: the lists go as JSON arrays.
		query = `SELECT ` + heldColumns + ` FROM keys WHERE id IN (SELECT value FROM json_each($1))
			OR id IN (SELECT key_id FROM calls WHERE id IN (SELECT value FROM json_each($2))) ORDER BY id`
		args = []any{jsonList(keys), jsonList(calls)}
	}
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		hk, err := scanHeld(rows)
		if err != nil {
			return nil, err
		}
		h.keys[hk.k.ID] = hk
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return h, nil
}

// holdCalls reads the rows of the calls a SQLite batch settles; on
// PostgreSQL callsClockAndDays reads them, locked after their keys (the
// lock order of every transaction: keys, then calls).
func (s *Store) holdCalls(ctx context.Context, tx Querier, h *held, ids []int64) error {
	h.calls = map[int64]*heldCall{}
	if len(ids) == 0 {
		return nil
	}
	const columns = `SELECT id, key_id, day, outcome, estimated, actual, idempotency_key, COALESCE(object_id, '') FROM calls`
	// SQLite's one writer holds every row already; one statement instead
	// of a read per settlement. (PostgreSQL locks them with its clock read:
	// callsClockAndDays.)
	rows, err := tx.QueryContext(ctx, columns+` WHERE id IN (SELECT value FROM json_each($1)) ORDER BY id`, jsonList(ids))
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		c := &heldCall{}
		if err := rows.Scan(&id, &c.keyID, &c.day, &c.outcome, &c.estimated, &c.actual, &c.idemKey, &c.objectID); err != nil {
			return err
		}
		h.calls[id] = c
	}
	return rows.Err()
}

// readDays fills in each held key's usage on the batch's day, once the
// clock is read.
func (s *Store) readDays(ctx context.Context, tx Querier, h *held) error {
	if len(h.keys) == 0 {
		return nil
	}
	var query string
	args := []any{h.day}
	if s.dialect.Arrays {
		ids := make([]string, 0, len(h.keys))
		for id := range h.keys {
			ids = append(ids, id)
		}
		query = `SELECT key_id, spent, reserved FROM key_days WHERE day = $1 AND key_id = ANY($2)`
		args = append(args, ids)
	} else {
		ids := make([]string, 0, len(h.keys))
		for id := range h.keys {
			ids = append(ids, id)
		}
		query = `SELECT key_id, spent, reserved FROM key_days WHERE day = $1 AND key_id IN (SELECT value FROM json_each($2))`
		args = append(args, jsonList(ids))
	}
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var spent, reserved int64
		if err := rows.Scan(&id, &spent, &reserved); err != nil {
			return err
		}
		if hk := h.keys[id]; hk != nil {
			hk.u.SpentToday, hk.u.ReservedToday = keybrake.Micros(spent), keybrake.Micros(reserved)
		}
	}
	return rows.Err()
}

func scanHeld(row rowScanner) (*heldKey, error) {
	var extra [2]string
	k, u, err := scanKeyState(extraScanner{row, extra[:]})
	if err != nil {
		return nil, err
	}
	return &heldKey{k: *k, u: u, thresholds: extra[0], agent: extra[1], days: map[string]*[2]int64{}}, nil
}

// extraScanner scans keyStateColumns and then the strings in extra.
type extraScanner struct {
	row   rowScanner
	extra []string
}

func (e extraScanner) Scan(dest ...any) error {
	for i := range e.extra {
		dest = append(dest, &e.extra[i])
	}
	return e.row.Scan(dest...)
}

// key is a held key, read (and locked) now if the batch did not know it: a
// call whose key id was not among the ops' (it cannot happen for a decision,
// whose key is always collected; it keeps a settlement correct regardless).
func (s *Store) key(ctx context.Context, tx Querier, h *held, id string) (*heldKey, error) {
	if hk := h.keys[id]; hk != nil {
		return hk, nil
	}
	hk, err := scanHeld(tx.QueryRowContext(ctx, `SELECT `+heldColumns+` FROM keys WHERE id = $1`+s.dialect.LockKey, id))
	if err != nil {
		return nil, err
	}
	if err := dayUsage(ctx, tx, id, h.day, &hk.u); err != nil {
		return nil, err
	}
	h.keys[id] = hk
	return hk, nil
}

// flush writes the batch's summed moves: one UPDATE per key that moved,
// and one per key and day whose money moved (an INSERT when the day has no
// row yet). The sums keep every CHECK: each is the net of moves that were
// valid one after another.
func (s *Store) flush(ctx context.Context, tx Querier, h *held) error {
	ids := make([]string, 0, len(h.keys))
	for id := range h.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if s.dialect.Arrays {
		return s.flushArrays(ctx, tx, h, ids)
	}
	// One row per statement: SQLite queues no audit rows (each decision
	// wrote its own); its statements cost no round trip.
	if err := s.flushCalls(ctx, tx, h); err != nil {
		return err
	}
	for _, id := range ids {
		hk := h.keys[id]
		if hk.d != [4]int64{} {
			if _, err := tx.ExecContext(ctx, `UPDATE keys SET spent = spent + $1, reserved = reserved + $2,
				calls = calls + $3, denied_calls = denied_calls + $4 WHERE id = $5`,
				hk.d[0], hk.d[1], hk.d[2], hk.d[3], id); err != nil {
				return fmt.Errorf("key %s: %w", id, err)
			}
		}
		for day, dm := range hk.days {
			if *dm == [2]int64{} {
				continue
			}
			if err := s.adjustDay(ctx, tx, id, day, keybrake.Micros(dm[0]), keybrake.Micros(dm[1])); err != nil {
				return fmt.Errorf("key %s day %s: %w", id, day, err)
			}
		}
	}
	return nil
}

// adjustDay moves a key's per-day counters. Update first, insert when the
// day has no row yet: an upsert would check the CHECK constraints against
// the insert candidate, which for a settlement (negative reserved delta)
// is not a row that will exist.
func (s *Store) adjustDay(ctx context.Context, tx Querier, keyID, day string, spent, reserved keybrake.Micros) error {
	res, err := tx.ExecContext(ctx, `UPDATE key_days SET spent = spent + $1, reserved = reserved + $2 WHERE key_id = $3 AND day = $4`,
		int64(spent), int64(reserved), keyID, day)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n > 0 {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO key_days (key_id, day, spent, reserved) VALUES ($1, $2, $3, $4)`,
		keyID, day, int64(spent), int64(reserved))
	return err
}

// heldSpendEvents is spendEvents for a held key: the day's use comes from
// the batch's running totals, and a key with no thresholds costs nothing.
func (s *Store) heldSpendEvents(ctx context.Context, tx Querier, now time.Time, h *held, hk *heldKey, day string, delta keybrake.Micros) error {
	if delta <= 0 || hk.thresholds == "[]" {
		return nil
	}
	used := hk.u.SpentToday + hk.u.ReservedToday
	if day != h.day {
		var u keybrake.Usage
		if err := dayUsage(ctx, tx, hk.k.ID, day, &u); err != nil {
			return err
		}
		used = u.SpentToday + u.ReservedToday
		if dm := hk.days[day]; dm != nil {
			used += keybrake.Micros(dm[0] + dm[1])
		}
	}
	return s.thresholdEvents(ctx, tx, now, hk.k.ID, day, delta, hk.k.DailyCap, hk.thresholds, hk.k.AgentRunLabel, hk.agent, used)
}

func (s *Store) queueRow(ctx context.Context, tx Querier, h *held, c callRow) (int64, error) {
	if len(h.ids) == 0 {
		return 0, fmt.Errorf("batch: no audit row id left for a decision")
	}
	id := h.ids[0]
	h.ids = h.ids[1:]
	h.rows = append(h.rows, queuedRow{id: id, at: micros(c.at), status: int64(c.status), estimated: int64(c.estimated),
		actual: int64(c.actual), retryOf: c.retryOf, keyID: c.a.KeyID, label: c.label, vendor: c.a.Vendor,
		method: c.a.Method, path: c.a.Path, rule: c.a.Rule, outcome: string(c.outcome), code: string(c.code),
		day: c.day, idemKey: c.a.IdempotencyKey, item: c.a.Item, instance: c.a.Instance, objectID: c.a.ObjectID,
		operation: c.a.Operation})
	if h.direct {
		return id, s.flushRows(ctx, tx, h)
	}
	return id, nil
}

// jsonList encodes ids as the JSON array SQLite's json_each reads: a list
// of any length in one bound parameter.
func jsonList[T string | int64](ids []T) string {
	if len(ids) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(ids) // strings and integers always encode
	return string(b)
}
