package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/keybrake/keybrake"
)

// Idempotency record states.
const (
	idemInFlight  = "in_flight" // the first attempt holds the reservation and is at the vendor
	idemCompleted = "completed" // a definite answer is stored for replay
	idemUnstored  = "unstored"  // a definite answer was too large to store
	idemUnknown   = "unknown"   // the outcome is unknown; the reservation stays counted
)

// callRow is the insert of one audit row.
type callRow struct {
	at                time.Time
	a                 *keybrake.Attempt
	label             string
	outcome           keybrake.Outcome
	code              keybrake.Code
	status            int
	estimated, actual keybrake.Micros
	day               string
	retryOf           int64
}

func insertCall(ctx context.Context, tx *sql.Tx, c callRow) (int64, error) {
	var keyID any
	if c.a.KeyID != "" {
		keyID = c.a.KeyID
	}
	var retryOf any
	if c.retryOf != 0 {
		retryOf = c.retryOf
	}
	var objectID any
	if c.a.ObjectID != "" {
		objectID = c.a.ObjectID
	}
	var id int64
	err := tx.QueryRowContext(ctx, `INSERT INTO calls (at, key_id, agent_run_label, vendor, method, path,
		rule, outcome, code, status, estimated, actual, day, idempotency_key, item, retry_of, instance,
		object_id, operation)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) RETURNING id`,
		micros(c.at), keyID, c.label, c.a.Vendor, c.a.Method, c.a.Path, c.a.Rule, string(c.outcome),
		string(c.code), c.status, int64(c.estimated), int64(c.actual), c.day, c.a.IdempotencyKey,
		c.a.Item, retryOf, c.a.Instance, objectID, c.a.Operation).Scan(&id)
	return id, err
}

// Decide is the one transaction behind every proxied request: re-read the
// key's status and expiry, honour an earlier denial, resolve the
// Idempotency-Key, check the per-call, daily and lifetime caps, reserve the
// estimate and write the audit row. Nothing is forwarded unless it commits.
func (s *Store) Decide(ctx context.Context, a keybrake.Attempt) (keybrake.Decision, error) {
	ctx, done, err := s.admit(ctx) // only while this replica holds its name
	if err != nil {
		return keybrake.Decision{}, err
	}
	var d keybrake.Decision
	err = s.tx(ctx, "decide", func(tx *sql.Tx, now time.Time) error {
		d = keybrake.Decision{}
		return s.decide(ctx, tx, now, &a, &d)
	})
	done(err)
	return d, err
}

func (s *Store) decide(ctx context.Context, tx *sql.Tx, now time.Time, a *keybrake.Attempt, d *keybrake.Decision) error {
	day := Day(now)
	deny := func(k *keybrake.Key, e *keybrake.Error, status int) error {
		d.Allowed, d.Err = false, e
		label := ""
		if k != nil {
			label = k.AgentRunLabel
		}
		if status == 0 {
			status = e.Code.HTTPStatus()
		}
		// A denial row carries the price asked, so reports show what was
		// refused (for a cap, what the call would have reserved).
		asked := a.Estimate
		if e.Code == keybrake.CodeCapExhausted {
			asked = d.Requested
		}
		id, err := insertCall(ctx, tx, callRow{at: now, a: a, label: label, outcome: keybrake.DeniedOutcome(e.Code),
			code: e.Code, status: status, day: day, estimated: asked})
		if err != nil {
			return err
		}
		d.CallID = id
		if k == nil {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE keys SET denied_calls = denied_calls + 1 WHERE id = $1`, k.ID); err != nil {
			return err
		}
		d.Usage.DeniedCalls++
		return nil
	}

	if a.KeyID == "" {
		e := a.Denial
		if e == nil {
			e = keybrake.Errorf(keybrake.CodeInvalidVaultKey, "vault key is not valid")
		}
		return deny(nil, e, 0)
	}
	k, u, err := scanKeyState(tx.QueryRowContext(ctx, `SELECT `+keyStateColumns+` FROM keys WHERE id = $1`+s.dialect.LockKey, a.KeyID))
	if errors.Is(err, keybrake.ErrNotFound) {
		a.KeyID = ""
		return deny(nil, keybrake.Errorf(keybrake.CodeInvalidVaultKey, "vault key is not valid"), 0)
	}
	if err != nil {
		return err
	}
	// Time is read once the key's row is locked, so a decision and a
	// revoke are stamped in the order they held the key (see RevokeKey).
	if now, err = s.dialect.Now(ctx, tx); err != nil {
		return err
	}
	day = Day(now)
	if err := dayUsage(ctx, tx, k.ID, day, &u); err != nil {
		return err
	}
	d.Key, d.Usage = k, u
	d.Status = k.StatusAt(now)
	switch d.Status {
	case keybrake.StatusRevoked:
		return deny(k, keybrake.Errorf(keybrake.CodeKeyRevoked, "vault key %s was revoked at %s", k.ID, k.RevokedAt.Format(time.RFC3339)), 0)
	case keybrake.StatusExpired:
		return deny(k, keybrake.Errorf(keybrake.CodeKeyExpired, "vault key %s expired at %s", k.ID, k.ExpiresAt.Format(time.RFC3339)), 0)
	}
	if a.Denial != nil {
		return deny(k, a.Denial, 0)
	}
	if k.MaxCallsPerMinute > 0 {
		if e, err := s.rateLimit(ctx, tx, now, k, d); err != nil || e != nil {
			if err != nil {
				return err
			}
			return deny(k, e, 0)
		}
	}

	var claim bool // insert a new idempotency record after reserving
	if a.IdempotencyKey != "" {
		done, err := s.resolveIdempotency(ctx, tx, now, a, k, d, deny)
		if err != nil || done {
			return err
		}
		claim = true
	}

	amount, capErr, err := s.reserveAmount(ctx, tx, a, k, u, d)
	if err != nil {
		return err
	}
	if capErr != nil {
		if err := s.capExhaustedEvent(ctx, tx, now, day, d); err != nil {
			return err
		}
		return deny(k, capErr, 0)
	}

	id, err := insertCall(ctx, tx, callRow{at: now, a: a, label: k.AgentRunLabel, outcome: keybrake.OutcomePending,
		estimated: amount, day: day})
	if err != nil {
		return err
	}
	if err := s.adjust(ctx, tx, k.ID, day, 0, amount, 1); err != nil {
		return err
	}
	if err := s.spendEvents(ctx, tx, now, k.ID, day, amount); err != nil {
		return err
	}
	if claim {
		if _, err := tx.ExecContext(ctx, `INSERT INTO idempotency (key_id, idem_key, fingerprint, call_id, state, expires_at, vendor_key)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, k.ID, a.IdempotencyKey, a.Fingerprint, id, idemInFlight,
			micros(now.Add(a.IdempotencyTTL)), a.VendorIdempotencyKey); err != nil {
			return err
		}
	}
	d.CallID, d.Allowed, d.Reserved, d.VendorIdempotencyKey = id, true, amount, a.VendorIdempotencyKey
	d.Usage.Reserved += amount
	d.Usage.ReservedToday += amount
	d.Usage.Calls++
	return nil
}

// resolveIdempotency handles a request that carries an Idempotency-Key. It
// returns done=true when the decision is made (a replay, a refusal, or a
// retry that took over an unknown attempt's reservation); done=false means
// the key is new and the caller reserves and claims it.
func (s *Store) resolveIdempotency(ctx context.Context, tx *sql.Tx, now time.Time, a *keybrake.Attempt,
	k *keybrake.Key, d *keybrake.Decision, deny func(*keybrake.Key, *keybrake.Error, int) error) (bool, error) {
	var (
		fp, state string
		callID    int64
		status    sql.NullInt64
		header    sql.NullString
		body      []byte
		expires   int64
	)
	var vendorKey string
	err := tx.QueryRowContext(ctx, `SELECT fingerprint, call_id, state, status, header, body, expires_at, vendor_key
		FROM idempotency WHERE key_id = $1 AND idem_key = $2`, k.ID, a.IdempotencyKey).
		Scan(&fp, &callID, &state, &status, &header, &body, &expires, &vendorKey)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if expires <= micros(now) && state != idemInFlight {
		if _, err := tx.ExecContext(ctx, `DELETE FROM idempotency WHERE key_id = $1 AND idem_key = $2`, k.ID, a.IdempotencyKey); err != nil {
			return false, err
		}
		return false, nil
	}
	if fp != a.Fingerprint {
		return true, deny(k, keybrake.Errorf(keybrake.CodeIdempotencyKeyReused,
			"Idempotency-Key %q was first used for a different request (method, path or body differ); use a new key for a new request", a.IdempotencyKey), 0)
	}
	switch state {
	case idemInFlight:
		return true, deny(k, keybrake.Errorf(keybrake.CodeIdempotencyInProgress,
			"a request with Idempotency-Key %q is still in flight (call %d); retry after it completes", a.IdempotencyKey, callID), 0)
	case idemUnstored:
		return true, deny(k, keybrake.Errorf(keybrake.CodeReplayUnavailable,
			"the request with Idempotency-Key %q already completed (call %d) but its response was too large to keep for replay; read the result from the vendor", a.IdempotencyKey, callID), 0)
	case idemCompleted:
		resp := &keybrake.StoredResponse{Status: int(status.Int64), Body: body, Header: http.Header{}}
		if header.Valid && header.String != "" {
			if err := json.Unmarshal([]byte(header.String), &resp.Header); err != nil {
				return false, fmt.Errorf("stored idempotent headers: %w", err)
			}
		}
		id, err := insertCall(ctx, tx, callRow{at: now, a: a, label: k.AgentRunLabel, outcome: keybrake.OutcomeReplayed,
			status: resp.Status, day: Day(now), retryOf: callID})
		if err != nil {
			return false, err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE keys SET calls = calls + 1 WHERE id = $1`, k.ID); err != nil {
			return false, err
		}
		d.CallID, d.Allowed, d.Replay = id, true, resp
		d.Usage.Calls++
		return true, nil
	case idemUnknown:
		if !a.VendorDedupes {
			return true, deny(k, keybrake.Errorf(keybrake.CodeOutcomeUnknown,
				"an earlier attempt with Idempotency-Key %q (call %d) has an unknown outcome and %s does not deduplicate retries; it was not sent again, check the vendor before retrying with a new key", a.IdempotencyKey, callID, a.Vendor), 0)
		}
		// The retry goes out with the key the unknown attempt sent, so the
		// vendor deduplicates it ('' for a record older than namespacing:
		// that attempt sent the client's key as it was).
		d.VendorIdempotencyKey = vendorKey
		if vendorKey == "" {
			d.VendorIdempotencyKey = a.IdempotencyKey
		}
		return true, s.takeOver(ctx, tx, now, a, k, d, callID)
	default:
		return false, fmt.Errorf("idempotency record in unknown state %q", state)
	}
}

// takeOver forwards a retry of an attempt whose outcome is unknown, for a
// vendor that deduplicates on Idempotency-Key. The unknown attempt's counted
// amount becomes the retry's reservation in the same transaction, so the
// cap is never charged twice and never released early.
func (s *Store) takeOver(ctx context.Context, tx *sql.Tx, now time.Time, a *keybrake.Attempt, k *keybrake.Key, d *keybrake.Decision, oldID int64) error {
	var amount int64
	var day, outcome string
	if err := tx.QueryRowContext(ctx, `SELECT actual, day, outcome FROM calls WHERE id = $1`, oldID).Scan(&amount, &day, &outcome); err != nil {
		return err
	}
	if outcome != string(keybrake.OutcomeUnknown) {
		return fmt.Errorf("idempotency record points at call %d in outcome %s, want unknown", oldID, outcome)
	}
	id, err := insertCall(ctx, tx, callRow{at: now, a: a, label: k.AgentRunLabel, outcome: keybrake.OutcomePending,
		estimated: keybrake.Micros(amount), day: day, retryOf: oldID})
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE calls SET outcome = $1, actual = 0 WHERE id = $2`, string(keybrake.OutcomeUnknownRetried), oldID); err != nil {
		return err
	}
	if err := s.adjust(ctx, tx, k.ID, day, -keybrake.Micros(amount), keybrake.Micros(amount), 1); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE idempotency SET state = $1, call_id = $2 WHERE key_id = $3 AND idem_key = $4`,
		idemInFlight, id, k.ID, a.IdempotencyKey); err != nil {
		return err
	}
	d.CallID, d.Allowed, d.RetryOf, d.Reserved = id, true, oldID, keybrake.Micros(amount)
	d.Usage.Calls++
	return nil
}

// adjust moves a key's lifetime and per-day counters.
func (s *Store) adjust(ctx context.Context, tx *sql.Tx, keyID, day string, spent, reserved keybrake.Micros, calls int64) error {
	if _, err := tx.ExecContext(ctx, `UPDATE keys SET spent = spent + $1, reserved = reserved + $2, calls = calls + $3 WHERE id = $4`,
		int64(spent), int64(reserved), calls, keyID); err != nil {
		return err
	}
	if spent == 0 && reserved == 0 {
		return nil
	}
	// Update first, insert when the day has no row yet: an upsert would
	// check the CHECK constraints against the insert candidate, which for a
	// settlement (negative reserved delta) is not a row that will exist.
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

// Settle closes a call: a 2xx replaces the reservation with the actual cost,
// another definite answer releases it, an unknown outcome keeps the estimate
// as spend. Settling a call that a recovery sweep already marked unknown
// corrects the spend to the now-known answer. Settling twice is a no-op.
func (s *Store) Settle(ctx context.Context, st keybrake.Settlement) (keybrake.Usage, error) {
	var u keybrake.Usage
	err := s.tx(ctx, "settle", func(tx *sql.Tx, now time.Time) error {
		var (
			keyID, day, outcome, idemKey string
			estimated, actual            int64
		)
		// Lock the key row, then the call row (LockKey): two settlements of
		// one call, or a settlement racing a recovery sweep on another
		// replica, must not both see it pending and both move the money.
		// Every transaction locks a key before its calls (Decide, its
		// retry take-over, RecoverPending), so they cannot deadlock.
		err := tx.QueryRowContext(ctx, `SELECT key_id FROM calls WHERE id = $1`, st.CallID).Scan(&keyID)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("settle call %d: %w", st.CallID, keybrake.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `SELECT id FROM keys WHERE id = $1`+s.dialect.LockKey, keyID); err != nil {
			return err
		}
		err = tx.QueryRowContext(ctx, `SELECT key_id, day, outcome, estimated, actual, idempotency_key FROM calls WHERE id = $1`+s.dialect.LockKey, st.CallID).
			Scan(&keyID, &day, &outcome, &estimated, &actual, &idemKey)
		if err != nil {
			return err
		}
		if outcome != string(keybrake.OutcomePending) && outcome != string(keybrake.OutcomeUnknown) {
			return s.usage(ctx, tx, keyID, Day(now), &u)
		}
		var final keybrake.Micros
		switch {
		case st.Outcome == keybrake.OutcomeUnknown:
			final = keybrake.Micros(estimated)
		case st.Status >= 200 && st.Status < 300:
			final = st.Actual
		default:
			final = 0
		}
		var dSpent, dReserved keybrake.Micros
		if outcome == string(keybrake.OutcomePending) {
			dSpent, dReserved = final, -keybrake.Micros(estimated)
		} else {
			dSpent = final - keybrake.Micros(actual)
		}
		reconcile := ""
		if st.ReconcileDue && st.Outcome == keybrake.OutcomeForwarded && st.Status >= 200 && st.Status < 300 && st.ObjectID != "" {
			reconcile = reconcileDue
		}
		// A call on an existing object keeps the object id it was decided
		// with: its exposure is counted against that object.
		if _, err := tx.ExecContext(ctx, `UPDATE calls SET outcome = $1, status = $2, actual = $3,
			object_id = CASE WHEN object_id IS NULL OR object_id = '' THEN $4 ELSE object_id END,
			vendor_request_id = $5, code = $6, latency_ms = $7, settled_at = $8, reconcile_state = $9 WHERE id = $10`,
			string(st.Outcome), st.Status, int64(final), st.ObjectID, st.VendorRequestID, string(st.Code),
			st.Latency.Milliseconds(), micros(now), reconcile, st.CallID); err != nil {
			return err
		}
		if err := s.adjust(ctx, tx, keyID, day, dSpent, dReserved, 0); err != nil {
			return err
		}
		if err := s.spendEvents(ctx, tx, now, keyID, day, dSpent+dReserved); err != nil {
			return err
		}
		if idemKey != "" {
			if err := s.settleIdempotency(ctx, tx, keyID, idemKey, st); err != nil {
				return err
			}
		}
		return s.usage(ctx, tx, keyID, Day(now), &u)
	})
	return u, err
}

func (s *Store) settleIdempotency(ctx context.Context, tx *sql.Tx, keyID, idemKey string, st keybrake.Settlement) error {
	var err error
	switch {
	case st.ReleaseIdempotency:
		_, err = tx.ExecContext(ctx, `DELETE FROM idempotency WHERE key_id = $1 AND idem_key = $2 AND call_id = $3`, keyID, idemKey, st.CallID)
	case st.Outcome == keybrake.OutcomeUnknown:
		_, err = tx.ExecContext(ctx, `UPDATE idempotency SET state = $1 WHERE key_id = $2 AND idem_key = $3 AND call_id = $4`,
			idemUnknown, keyID, idemKey, st.CallID)
	case st.Response == nil:
		_, err = tx.ExecContext(ctx, `UPDATE idempotency SET state = $1, status = $2 WHERE key_id = $3 AND idem_key = $4 AND call_id = $5`,
			idemUnstored, st.Status, keyID, idemKey, st.CallID)
	default:
		h, merr := json.Marshal(st.Response.Header)
		if merr != nil {
			return merr
		}
		body := st.Response.Body
		if body == nil {
			body = []byte{}
		}
		_, err = tx.ExecContext(ctx, `UPDATE idempotency SET state = $1, status = $2, header = $3, body = $4
			WHERE key_id = $5 AND idem_key = $6 AND call_id = $7`,
			idemCompleted, st.Response.Status, string(h), body, keyID, idemKey, st.CallID)
	}
	return err
}

// usage reads a key's counters inside a transaction.
func (s *Store) usage(ctx context.Context, q Querier, keyID, day string, u *keybrake.Usage) error {
	var spent, reserved int64
	if err := q.QueryRowContext(ctx, `SELECT spent, reserved, calls, denied_calls FROM keys WHERE id = $1`, keyID).
		Scan(&spent, &reserved, &u.Calls, &u.DeniedCalls); err != nil {
		return err
	}
	u.Spent, u.Reserved = keybrake.Micros(spent), keybrake.Micros(reserved)
	return dayUsage(ctx, q, keyID, day, u)
}

// RecoverPending marks calls still pending as unknown: their reservations
// become counted spend. instance limits the sweep to one replica's calls
// ("" for all); only calls older than olderThan are touched. It is how a
// restart after kill -9 accounts for requests that were at the vendor.
func (s *Store) RecoverPending(ctx context.Context, instance string, olderThan time.Duration) (int, error) {
	n := 0
	err := s.tx(ctx, "recover pending", func(tx *sql.Tx, now time.Time) error {
		n = 0
		filter := ` FROM calls WHERE outcome = $1 AND at <= $2`
		args := []any{string(keybrake.OutcomePending), micros(now.Add(-olderThan))}
		if instance != "" {
			filter += ` AND instance = $3`
			args = append(args, instance)
		}
		// Lock order is keys, then calls, as in Decide and Settle: first the
		// keys of the stale calls (sorted, so two replicas' sweeps cannot
		// deadlock), then the calls themselves. A concurrent Settle waits,
		// then finds the call no longer pending and corrects the spend.
		keyRows, err := tx.QueryContext(ctx, `SELECT DISTINCT key_id`+filter+` ORDER BY key_id`, args...)
		if err != nil {
			return err
		}
		var keyIDs []string
		for keyRows.Next() {
			var id string
			if err := keyRows.Scan(&id); err != nil {
				keyRows.Close()
				return err
			}
			keyIDs = append(keyIDs, id)
		}
		keyRows.Close()
		if err := keyRows.Err(); err != nil {
			return err
		}
		if len(keyIDs) == 0 {
			return nil
		}
		for _, id := range keyIDs {
			if _, err := tx.ExecContext(ctx, `SELECT id FROM keys WHERE id = $1`+s.dialect.LockKey, id); err != nil {
				return err
			}
		}
		rows, err := tx.QueryContext(ctx, `SELECT id, key_id, day, estimated, idempotency_key`+filter+` ORDER BY id`+s.dialect.LockKey, args...)
		if err != nil {
			return err
		}
		type pending struct {
			id            int64
			key, day, idk string
			est           int64
		}
		var list []pending
		for rows.Next() {
			var p pending
			if err := rows.Scan(&p.id, &p.key, &p.day, &p.est, &p.idk); err != nil {
				rows.Close()
				return err
			}
			list = append(list, p)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, p := range list {
			if _, err := tx.ExecContext(ctx, `UPDATE calls SET outcome = $1, actual = estimated, code = $2, settled_at = $3 WHERE id = $4`,
				string(keybrake.OutcomeUnknown), string(keybrake.CodeOutcomeUnknown), micros(now), p.id); err != nil {
				return err
			}
			if err := s.adjust(ctx, tx, p.key, p.day, keybrake.Micros(p.est), -keybrake.Micros(p.est), 0); err != nil {
				return err
			}
			if p.idk != "" {
				if _, err := tx.ExecContext(ctx, `UPDATE idempotency SET state = $1 WHERE key_id = $2 AND idem_key = $3 AND call_id = $4`,
					idemUnknown, p.key, p.idk, p.id); err != nil {
					return err
				}
			}
		}
		n = len(list)
		return nil
	})
	return n, err
}

// SweepIdempotency deletes expired idempotency records (not in-flight ones)
// and returns how many went.
func (s *Store) SweepIdempotency(ctx context.Context) (int64, error) {
	var n int64
	err := s.tx(ctx, "sweep idempotency", func(tx *sql.Tx, now time.Time) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM idempotency WHERE expires_at <= $1 AND state <> $2`, micros(now), idemInFlight)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}
