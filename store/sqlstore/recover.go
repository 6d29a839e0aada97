package sqlstore

import (
	"context"
	"database/sql"
	"time"

	"github.com/keybrake/keybrake"
)

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
