package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/keybrake/keybrake"
)

// rateLimit holds a key to its max_calls_per_minute: the calls it sent to
// its vendor (pending, answered or of unknown outcome; not replays, not
// denials) in the 60 seconds before now. It runs inside the decision,
// under the key's lock, so the limit is exact across replicas: the
// max_calls_per_minute-th latest such call is either older than a minute
// (the call may go) or says when it will be (Retry-After). It is checked
// before the Idempotency-Key is resolved, so a key at its limit waits for a
// replay too: strict, and never more calls than the limit.
func (s *Store) rateLimit(ctx context.Context, tx Querier, now time.Time, k *keybrake.Key, d *keybrake.Decision) (*keybrake.Error, error) {
	var at int64
	err := tx.QueryRowContext(ctx, `SELECT at FROM calls WHERE key_id = $1 AND at > $2 AND outcome IN ($3, $4, $5, $6)
		ORDER BY at DESC LIMIT 1 OFFSET $7`, k.ID, micros(now.Add(-time.Minute)),
		string(keybrake.OutcomePending), string(keybrake.OutcomeForwarded), string(keybrake.OutcomeUnknown),
		string(keybrake.OutcomeUnknownRetried), k.MaxCallsPerMinute-1).Scan(&at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	d.RetryAfter = max(fromMicros(at).Add(time.Minute).Sub(now), time.Millisecond)
	return keybrake.Errorf(keybrake.CodeRateLimited,
		"vault key %s may send %d calls a minute and has; retry in %s (this is not the cap: nothing is spent)",
		k.ID, k.MaxCallsPerMinute, d.RetryAfter.Round(time.Second).String()), nil
}
