package sqlstore

import (
	"context"

	"github.com/keybrake/keybrake"
)

// reserveAmount works out what an attempt reserves, inside its decision's
// transaction and under the key's lock, and checks it against the caps:
//
//   - an exposure (an operation that sets what an existing object can move)
//     reserves only what the key has not counted on that object yet;
//   - a flexible reservation (a bounded call) shrinks in whole steps to what
//     the caps leave, but not below its floor.
//
// It returns cap_exhausted (with d's cap fields set) when the amount does not
// fit.
func (s *Store) reserveAmount(ctx context.Context, tx Querier, a *keybrake.Attempt, k *keybrake.Key, u keybrake.Usage, d *keybrake.Decision) (keybrake.Micros, *keybrake.Error, error) {
	want := a.Estimate
	if a.Exposure && a.ObjectID != "" {
		counted, err := countedOn(ctx, tx, k.ID, a.ObjectID)
		if err != nil {
			return 0, nil, err
		}
		want = max(0, want-counted)
	}
	if want <= 0 {
		return 0, nil, nil
	}
	c := k.CheckCaps(u, want, a.Step, a.Floor)
	if !c.OK() {
		d.CapName, d.Cap, d.Requested = c.Cap, c.Limit, c.Amount
		return 0, c.Err(), nil
	}
	return c.Amount, nil, nil
}

// countedOn is what a key's calls on one vendor object count: each call that
// was not released, at its reservation while pending and at its settled
// amount after.
func countedOn(ctx context.Context, tx Querier, keyID, objectID string) (keybrake.Micros, error) {
	var n int64
	err := tx.QueryRowContext(ctx, `SELECT CAST(COALESCE(SUM(CASE WHEN outcome = $1 THEN estimated ELSE actual END), 0) AS BIGINT)
		FROM calls WHERE key_id = $2 AND object_id = $3`, string(keybrake.OutcomePending), keyID, objectID).Scan(&n)
	return keybrake.Micros(n), err
}
