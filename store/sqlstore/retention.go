package sqlstore

import (
	"context"
	"database/sql"
	"time"

	"github.com/keybrake/keybrake"
)

// PruneBatch is how many audit rows one prune transaction deletes at most:
// small enough that a prune never holds the single writer (or a table's
// locks) for long, between decisions.
const PruneBatch = 500

// PruneCalls deletes audit rows older than retention, in batches of
// PruneBatch, each its own short transaction, and returns how many went.
// It keeps every row the ledger still needs:
//
//   - pending rows (live reservations) and unknown ones (counted spend a
//     later settlement may correct), and rows still due for reconciling;
//   - rows of a key that can still make calls (neither revoked nor
//     expired, by the store's clock): a call on an existing PaymentIntent
//     reserves only what the key's earlier calls on it did not count, and
//     that sum is read from those rows;
//   - rows the idempotency table still answers for.
//
// A key's lifetime and daily counters live on keys and key_days, which
// are not touched: caps and key views are unchanged by a prune; the audit
// log and the reports built from it lose the pruned rows.
func (s *Store) PruneCalls(ctx context.Context, retention time.Duration) (int64, error) {
	var total int64
	for {
		var n int64
		err := s.tx(ctx, "prune calls", func(tx *sql.Tx, now time.Time) error {
			res, err := tx.ExecContext(ctx, `DELETE FROM calls WHERE id IN (
				SELECT c.id FROM calls c LEFT JOIN keys k ON k.id = c.key_id
				WHERE c.at < $1 AND c.outcome NOT IN ($2, $3) AND c.reconcile_state <> $4
				AND (c.key_id IS NULL OR k.id IS NULL OR k.revoked_at IS NOT NULL OR k.expires_at <= $5)
				AND NOT EXISTS (SELECT 1 FROM idempotency i WHERE i.key_id = c.key_id AND i.idem_key = c.idempotency_key)
				ORDER BY c.id LIMIT $6)`,
				micros(now.Add(-retention)), string(keybrake.OutcomePending), string(keybrake.OutcomeUnknown), reconcileDue,
				micros(now), PruneBatch)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		total += n
		if err != nil || n < PruneBatch {
			return total, err
		}
		select {
		case <-ctx.Done():
			return total, ctx.Err()
		case <-time.After(10 * time.Millisecond): // let decisions in between batches
		}
	}
}
