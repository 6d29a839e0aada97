package sqlstore

import (
	"context"
	"encoding/json"
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
// already locked the call's key row and read the call's row (holdKeys,
// then holdCalls, or on PostgreSQL callsClockAndDays, which locks it too): two settlements of one
// call, or a settlement racing a recovery sweep on another replica, must
// not both see it pending and both move the money. Every transaction locks
// a key before its calls (a batch, RecoverPending), so they cannot
// deadlock. The settled row is written with the batch's others
// (flushCalls).
func (s *Store) settle(ctx context.Context, tx Querier, now time.Time, h *held, st keybrake.Settlement, u *keybrake.Usage) error {
	hc := h.calls[st.CallID]
	if hc == nil { // the batch read every call it settles: there is no such call
		return fmt.Errorf("settle call %d: %w", st.CallID, keybrake.ErrNotFound)
	}
	hk, err := s.key(ctx, tx, h, hc.keyID)
	if err != nil {
		return err
	}
	if hc.outcome != string(keybrake.OutcomePending) && hc.outcome != string(keybrake.OutcomeUnknown) {
		*u = hk.u
		return nil
	}
	final := st.Charge(keybrake.Micros(hc.estimated))
	var dSpent, dReserved keybrake.Micros
	if hc.outcome == string(keybrake.OutcomePending) {
		dSpent, dReserved = final, -keybrake.Micros(hc.estimated)
	} else {
		dSpent = final - keybrake.Micros(hc.actual)
	}
	reconcile := ""
	if st.ReconcileDue && st.Outcome == keybrake.OutcomeForwarded && st.Status >= 200 && st.Status < 300 && st.ObjectID != "" {
		reconcile = reconcileDue
	}
	hc.outcome, hc.actual, hc.dirty = string(st.Outcome), int64(final), true
	// A call on an existing object keeps the object id it was decided
	// with: its exposure is counted against that object.
	if hc.objectID == "" {
		hc.objectID = st.ObjectID
	}
	hc.status, hc.vendorRequestID, hc.code = st.Status, st.VendorRequestID, string(st.Code)
	hc.latency, hc.settledAt, hc.reconcile = st.Latency.Milliseconds(), micros(now), reconcile
	h.add(hk, hc.day, dSpent, dReserved, 0, 0)
	if err := s.heldSpendEvents(ctx, tx, now, h, hk, hc.day, dSpent+dReserved); err != nil {
		return err
	}
	if hc.idemKey != "" {
		if err := s.settleIdempotency(ctx, tx, hc.keyID, hc.idemKey, st); err != nil {
			return err
		}
	}
	*u = hk.u
	return nil
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
