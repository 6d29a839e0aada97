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

// insertCall writes an audit row, or, in a batch that hands out the rows'
// ids itself (held.ids, PostgreSQL), queues it for the batch's one
// multi-row insert (flushRows).
func (s *Store) insertCall(ctx context.Context, tx Querier, h *held, c callRow) (int64, error) {
	if h != nil && h.ids != nil {
		return s.queueRow(ctx, tx, h, c)
	}
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
	o := &op{ctx: ctx, attempt: &a}
	err = s.submit(o)
	done(err)
	return o.d, err
}

// decide applies one attempt inside a batch's transaction, after the batch
// locked its key rows and read the clock (so a decision and a revoke are
// stamped in the order they held the key, see RevokeKey). The usage it
// reads includes every earlier attempt of the same batch: they are applied
// in arrival order against running totals.
func (s *Store) decide(ctx context.Context, tx Querier, now time.Time, h *held, a *keybrake.Attempt, d *keybrake.Decision) error {
	day := h.day
	var hk *heldKey
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
		id, err := s.insertCall(ctx, tx, h, callRow{at: now, a: a, label: label, outcome: keybrake.DeniedOutcome(e.Code),
			code: e.Code, status: status, day: day, estimated: asked})
		if err != nil {
			return err
		}
		d.CallID = id
		if k == nil {
			return nil
		}
		h.add(hk, day, 0, 0, 0, 1)
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
	hk, err := s.key(ctx, tx, h, a.KeyID)
	if errors.Is(err, keybrake.ErrNotFound) {
		a.KeyID = ""
		return deny(nil, keybrake.Errorf(keybrake.CodeInvalidVaultKey, "vault key is not valid"), 0)
	}
	if err != nil {
		return err
	}
	kc := hk.k // the decision's own copy: the held key lives on in the batch
	k, u := &kc, hk.u
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
	// The rate limit's window, an Idempotency-Key's earlier attempt and an
	// object's exposure are read from calls rows: the batch's held audit
	// rows and settlements are written first, and this op writes its own at
	// once.
	if k.MaxCallsPerMinute > 0 || a.IdempotencyKey != "" || (a.Exposure && a.ObjectID != "") {
		if err := s.flushCalls(ctx, tx, h); err != nil {
			return err
		}
		if err := s.flushRows(ctx, tx, h); err != nil {
			return err
		}
		h.direct = true
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
		done, err := s.resolveIdempotency(ctx, tx, now, h, hk, a, k, d, deny)
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
		if err := s.capExhaustedEvent(ctx, tx, now, day, hk.agent, d); err != nil {
			return err
		}
		return deny(k, capErr, 0)
	}

	id, err := s.insertCall(ctx, tx, h, callRow{at: now, a: a, label: k.AgentRunLabel, outcome: keybrake.OutcomePending,
		estimated: amount, day: day})
	if err != nil {
		return err
	}
	h.add(hk, day, 0, amount, 1, 0)
	if err := s.heldSpendEvents(ctx, tx, now, h, hk, day, amount); err != nil {
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
func (s *Store) resolveIdempotency(ctx context.Context, tx Querier, now time.Time, h *held, hk *heldKey, a *keybrake.Attempt,
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
		id, err := s.insertCall(ctx, tx, h, callRow{at: now, a: a, label: k.AgentRunLabel, outcome: keybrake.OutcomeReplayed,
			status: resp.Status, day: Day(now), retryOf: callID})
		if err != nil {
			return false, err
		}
		h.add(hk, h.day, 0, 0, 1, 0)
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
		return true, s.takeOver(ctx, tx, now, h, hk, a, k, d, callID)
	default:
		return false, fmt.Errorf("idempotency record in unknown state %q", state)
	}
}

// takeOver forwards a retry of an attempt whose outcome is unknown, for a
// vendor that deduplicates on Idempotency-Key. The unknown attempt's counted
// amount becomes the retry's reservation in the same transaction, so the
// cap is never charged twice and never released early.
func (s *Store) takeOver(ctx context.Context, tx Querier, now time.Time, h *held, hk *heldKey, a *keybrake.Attempt, k *keybrake.Key, d *keybrake.Decision, oldID int64) error {
	var amount int64
	var day, outcome string
	if err := tx.QueryRowContext(ctx, `SELECT actual, day, outcome FROM calls WHERE id = $1`, oldID).Scan(&amount, &day, &outcome); err != nil {
		return err
	}
	if outcome != string(keybrake.OutcomeUnknown) {
		return fmt.Errorf("idempotency record points at call %d in outcome %s, want unknown", oldID, outcome)
	}
	id, err := s.insertCall(ctx, tx, h, callRow{at: now, a: a, label: k.AgentRunLabel, outcome: keybrake.OutcomePending,
		estimated: keybrake.Micros(amount), day: day, retryOf: oldID})
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE calls SET outcome = $1, actual = 0 WHERE id = $2`, string(keybrake.OutcomeUnknownRetried), oldID); err != nil {
		return err
	}
	if hc := h.calls[oldID]; hc != nil {
		// The batch also settles the unknown attempt, after this: it must
		// find it taken over, as its own read of the row would.
		hc.outcome, hc.actual = string(keybrake.OutcomeUnknownRetried), 0
	}
	h.add(hk, day, -keybrake.Micros(amount), keybrake.Micros(amount), 1, 0)
	if _, err := tx.ExecContext(ctx, `UPDATE idempotency SET state = $1, call_id = $2 WHERE key_id = $3 AND idem_key = $4`,
		idemInFlight, id, k.ID, a.IdempotencyKey); err != nil {
		return err
	}
	d.CallID, d.Allowed, d.RetryOf, d.Reserved = id, true, oldID, keybrake.Micros(amount)
	d.Usage.Calls++
	return nil
}

// adjust moves a key's lifetime and per-day counters.
func (s *Store) adjust(ctx context.Context, tx Querier, keyID, day string, spent, reserved keybrake.Micros, calls int64) error {
	if _, err := tx.ExecContext(ctx, `UPDATE keys SET spent = spent + $1, reserved = reserved + $2, calls = calls + $3 WHERE id = $4`,
		int64(spent), int64(reserved), calls, keyID); err != nil {
		return err
	}
	if spent == 0 && reserved == 0 {
		return nil
	}
	return s.adjustDay(ctx, tx, keyID, day, spent, reserved)
}
