package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/keybrake/keybrake"
)

// Reconcile states of a call.
const (
	reconcileDue    = "due"
	reconcileDone   = "done"
	reconcileGaveUp = "gave_up"
)

// DueForReconcile lists a vendor's calls settled at their estimate, waiting
// for the vendor's final cost, settled at least minAge ago; oldest first.
func (s *Store) DueForReconcile(ctx context.Context, vendor string, minAge time.Duration, limit int) ([]*keybrake.Call, error) {
	var out []*keybrake.Call
	err := s.read(ctx, "due for reconcile", func(q Querier, now time.Time) error {
		rows, err := q.QueryContext(ctx, `SELECT `+callColumns+` FROM calls WHERE reconcile_state = $1 AND vendor = $2
			AND settled_at <= $3 ORDER BY settled_at, id LIMIT $4`, reconcileDue, vendor, micros(now.Add(-minAge)), pageSize(limit))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			c, err := scanCall(rows)
			if err != nil {
				return err
			}
			out = append(out, c)
		}
		return rows.Err()
	})
	return out, err
}

// Reconcile records the outcome of asking the vendor for a call's final
// cost. final=true reprices the call to cost and moves the key's spend by
// the difference (up or down: the vendor's figure is the truth). final=false
// counts an attempt; after maxAttempts the estimate stands for good.
func (s *Store) Reconcile(ctx context.Context, callID int64, cost keybrake.Micros, final bool, maxAttempts int) error {
	return s.tx(ctx, "reconcile", func(tx *sql.Tx, now time.Time) error {
		var keyID string
		err := tx.QueryRowContext(ctx, `SELECT key_id FROM calls WHERE id = $1`, callID).Scan(&keyID)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("reconcile call %d: %w", callID, keybrake.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `SELECT id FROM keys WHERE id = $1`+s.dialect.LockKey, keyID); err != nil {
			return err
		}
		var state, day string
		var actual, attempts int64
		if err := tx.QueryRowContext(ctx, `SELECT reconcile_state, day, actual, reconcile_attempts FROM calls WHERE id = $1`+s.dialect.LockKey, callID).
			Scan(&state, &day, &actual, &attempts); err != nil {
			return err
		}
		if state != reconcileDue {
			return nil // already reconciled by another replica
		}
		if !final {
			next := reconcileDue
			if attempts+1 >= int64(maxAttempts) {
				next = reconcileGaveUp
			}
			_, err := tx.ExecContext(ctx, `UPDATE calls SET reconcile_attempts = reconcile_attempts + 1, reconcile_state = $1 WHERE id = $2`, next, callID)
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE calls SET actual = $1, reconcile_state = $2, reconcile_attempts = reconcile_attempts + 1 WHERE id = $3`,
			int64(cost), reconcileDone, callID); err != nil {
			return err
		}
		if err := s.adjust(ctx, tx, keyID, day, cost-keybrake.Micros(actual), 0, 0); err != nil {
			return err
		}
		return s.spendEvents(ctx, tx, now, keyID, day, cost-keybrake.Micros(actual))
	})
}
