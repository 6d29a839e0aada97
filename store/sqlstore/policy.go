package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/keybrake/keybrake"
)

// keyPolicy writes what issue 12 added to a key (its scope, rate limit and
// idempotency scope), and holds its issuer token to max_outstanding_usd, in
// the transaction that inserts the key. The token's row is locked first
// (FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises
// writers), so two keys issued at once by one token are summed one after
// the other and cannot together overshoot.
func (s *Store) keyPolicy(ctx context.Context, tx *sql.Tx, now time.Time, k *keybrake.Key) error {
	scope, err := formatScope(k.Scope)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE keys SET scope = $1, max_calls_per_minute = $2, idempotency_scope = $3 WHERE id = $4`,
		scope, k.MaxCallsPerMinute, k.IdempotencyScope, k.ID); err != nil {
		return err
	}
	if k.IssuerID == "" {
		return nil
	}
	var (
		name           string
		maxOutstanding int64
		revoked        sql.NullInt64
	)
	err = tx.QueryRowContext(ctx, `SELECT name, max_outstanding_cap, revoked_at FROM issuer_tokens WHERE id = $1`+s.dialect.LockKey, k.IssuerID).
		Scan(&name, &maxOutstanding, &revoked)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil // not a token this store made (tests issue under made-up ids): no bound to hold
	case err != nil:
		return err
	case revoked.Valid:
		return keybrake.Errorf(keybrake.CodeUnauthorized, "issuer token %s was revoked", name)
	case maxOutstanding == 0:
		return nil
	}
	var outstanding int64
	if err := tx.QueryRowContext(ctx, `SELECT CAST(COALESCE(SUM(daily_cap), 0) AS BIGINT) FROM keys
		WHERE issuer_id = $1 AND revoked_at IS NULL AND expires_at > $2`, k.IssuerID, micros(now)).Scan(&outstanding); err != nil {
		return err
	}
	if outstanding > maxOutstanding { // this key's cap is in the sum
		e := keybrake.Errorf(keybrake.CodeIssuerLimitExceeded,
			"issuer token %s's active keys would hold $%s of daily caps with this one, above its max_outstanding_usd of $%s; revoke keys it no longer needs",
			name, keybrake.Micros(outstanding), keybrake.Micros(maxOutstanding))
		e.Field = "max_outstanding_usd"
		return e
	}
	return nil
}

// tokenPolicy writes what issue 12 added to an issuer token: its
// max_outstanding_usd and scope ceiling.
func (s *Store) tokenPolicy(ctx context.Context, tx *sql.Tx, t *keybrake.IssuerToken) error {
	scope, err := formatScope(t.Scope)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE issuer_tokens SET max_outstanding_cap = $1, scope = $2 WHERE id = $3`,
		int64(t.MaxOutstanding), scope, t.ID)
	return err
}

func formatScope(s keybrake.Scope) (string, error) {
	if len(s) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(s)
	return string(b), err
}

func parseScope(text string) (keybrake.Scope, error) {
	if text == "" || text == "{}" {
		return nil, nil
	}
	var s keybrake.Scope
	if err := json.Unmarshal([]byte(text), &s); err != nil {
		return nil, err
	}
	return s, nil
}
