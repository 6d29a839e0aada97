package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/keybrake/keybrake"
)

// Settle closes a call: a 2xx replaces the reservation with the actual cost,
// another definite answer releases it, an unknown outcome keeps the estimate
// as spend. Settling a call that a recovery sweep already marked unknown
// corrects the spend to the now-known answer. Settling twice is a no-op.
func (s *Store) Settle(ctx context.Context, st keybrake.Settlement) (keybrake.Usage, error) {
	o := &op{ctx: ctx, settlement: &st}
	err := s.submit(o)
	return o.u, err
}

// settle applies one settlement inside a batch's transaction. The batch has
// already locked the call's key row (lockKeys), so one read of the call
// row, locked too (LockKey), is all it needs: two settlements of one call,
// or a settlement racing a recovery sweep on another replica, must not
// both see it pending and both move the money. Every transaction locks a
// key before its calls (a batch, RecoverPending), so they cannot deadlock.
func (s *Store) settle(ctx context.Context, tx Querier, now time.Time, h *held, st keybrake.Settlement, u *keybrake.Usage) error {
	{
		var (
			keyID, day, outcome, idemKey string
			estimated, actual            int64
		)
		hc := h.calls[st.CallID]
		switch {
		case hc != nil:
			keyID, day, outcome, idemKey, estimated, actual = hc.keyID, hc.day, hc.outcome, hc.idemKey, hc.estimated, hc.actual
		case h.calls != nil: // the batch read every call it settles: there is no such call
			return fmt.Errorf("settle call %d: %w", st.CallID, keybrake.ErrNotFound)
		default:
			err := tx.QueryRowContext(ctx, `SELECT key_id, day, outcome, estimated, actual, idempotency_key FROM calls WHERE id = $1`+s.dialect.LockKey, st.CallID).
				Scan(&keyID, &day, &outcome, &estimated, &actual, &idemKey)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("settle call %d: %w", st.CallID, keybrake.ErrNotFound)
			}
			if err != nil {
				return err
			}
		}
		hk, err := s.key(ctx, tx, h, keyID)
		if err != nil {
			return err
		}
		if outcome != string(keybrake.OutcomePending) && outcome != string(keybrake.OutcomeUnknown) {
			*u = hk.u
			return nil
		}
		final := st.Charge(keybrake.Micros(estimated))
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
		if hc != nil {
			// Written with the batch's other settlements (flushCalls).
			hc.outcome, hc.actual, hc.dirty = string(st.Outcome), int64(final), true
			if hc.objectID == "" {
				hc.objectID = st.ObjectID
			}
			hc.status, hc.vendorRequestID, hc.code = st.Status, st.VendorRequestID, string(st.Code)
			hc.latency, hc.settledAt, hc.reconcile = st.Latency.Milliseconds(), micros(now), reconcile
		} else if _, err := tx.ExecContext(ctx, `UPDATE calls SET outcome = $1, status = $2, actual = $3,
			object_id = CASE WHEN object_id IS NULL OR object_id = '' THEN $4 ELSE object_id END,
			vendor_request_id = $5, code = $6, latency_ms = $7, settled_at = $8, reconcile_state = $9 WHERE id = $10`,
			string(st.Outcome), st.Status, int64(final), st.ObjectID, st.VendorRequestID, string(st.Code),
			st.Latency.Milliseconds(), micros(now), reconcile, st.CallID); err != nil {
			return err
		}
		h.add(hk, day, dSpent, dReserved, 0, 0)
		if err := s.heldSpendEvents(ctx, tx, now, h, hk, day, dSpent+dReserved); err != nil {
			return err
		}
		if idemKey != "" {
			if err := s.settleIdempotency(ctx, tx, keyID, idemKey, st); err != nil {
				return err
			}
		}
		*u = hk.u
		return nil
	}
}

func (s *Store) settleIdempotency(ctx context.Context, tx Querier, keyID, idemKey string, st keybrake.Settlement) error {
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
