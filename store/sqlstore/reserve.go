package sqlstore

import (
	"context"
	"database/sql"

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
func (s *Store) reserveAmount(ctx context.Context, tx *sql.Tx, a *keybrake.Attempt, k *keybrake.Key, u keybrake.Usage, d *keybrake.Decision) (keybrake.Micros, *keybrake.Error, error) {
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
	if a.Step > 0 {
		if head := headroom(k, u); want > head {
			steps := (want - head + a.Step - 1) / a.Step
			want = max(want-steps*a.Step, a.Floor)
		}
	}
	capName, capValue, used := "", keybrake.Micros(0), keybrake.Micros(0)
	switch {
	case k.MaxPerCall > 0 && want > k.MaxPerCall:
		capName, capValue = "per_call", k.MaxPerCall
	case keybrake.AddCapped(u.SpentToday+u.ReservedToday, want) > k.DailyCap:
		capName, capValue, used = "daily", k.DailyCap, u.SpentToday+u.ReservedToday
	case k.TotalCap > 0 && keybrake.AddCapped(u.Spent+u.Reserved, want) > k.TotalCap:
		capName, capValue, used = "total", k.TotalCap, u.Spent+u.Reserved
	}
	if capName != "" {
		d.CapName, d.Cap, d.Requested = capName, capValue, want
		return 0, keybrake.Errorf(keybrake.CodeCapExhausted,
			"%s cap of $%s would be exceeded: $%s already spent or reserved, this call needs $%s",
			capName, capValue, used, want), nil
	}
	return want, nil, nil
}

// headroom is the most the key may reserve for one call now.
func headroom(k *keybrake.Key, u keybrake.Usage) keybrake.Micros {
	h := k.Remaining(u)
	if k.MaxPerCall > 0 {
		h = min(h, k.MaxPerCall)
	}
	return h
}

// countedOn is what a key's calls on one vendor object count: each call that
// was not released, at its reservation while pending and at its settled
// amount after.
func countedOn(ctx context.Context, tx *sql.Tx, keyID, objectID string) (keybrake.Micros, error) {
	var n int64
	err := tx.QueryRowContext(ctx, `SELECT CAST(COALESCE(SUM(CASE WHEN outcome = $1 THEN estimated ELSE actual END), 0) AS BIGINT)
		FROM calls WHERE key_id = $2 AND object_id = $3`, string(keybrake.OutcomePending), keyID, objectID).Scan(&n)
	return keybrake.Micros(n), err
}
