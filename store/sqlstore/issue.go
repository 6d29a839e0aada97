package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/keybrake/keybrake"
)

// CreateKeyOnce stores a new key under an Idempotency-Key, in one
// transaction with the key. When the caller already used the key within
// its replay window, nothing is created and the earlier issuance's record
// is returned instead (the admin API replays it, or refuses a different
// request). Two identical requests at once create one key: the second
// claim waits for the first to commit (PostgreSQL: on the primary key;
// SQLite: the single writer) and then finds it.
func (s *Store) CreateKeyOnce(ctx context.Context, k *keybrake.Key, secretHash string, ttl time.Duration, c keybrake.IssueClaim) (*keybrake.Key, *keybrake.IssueRecord, error) {
	return s.createKey(ctx, k, secretHash, ttl, &c)
}

// CreateTokenOnce is CreateKeyOnce for issuer tokens.
func (s *Store) CreateTokenOnce(ctx context.Context, t *keybrake.IssuerToken, secretHash string, c keybrake.IssueClaim) (*keybrake.IssuerToken, *keybrake.IssueRecord, error) {
	return s.createToken(ctx, t, secretHash, &c)
}

// claimIssue records c for the resource about to be created, or returns
// the record an earlier issuance holds for the same caller and key. A nil
// claim claims nothing.
func claimIssue(ctx context.Context, tx *sql.Tx, now time.Time, c *keybrake.IssueClaim, resourceID string) (*keybrake.IssueRecord, error) {
	if c == nil {
		return nil, nil
	}
	// Past its window a key is free again.
	if _, err := tx.ExecContext(ctx, `DELETE FROM issue_idempotency WHERE caller = $1 AND idem_key = $2 AND expires_at <= $3`,
		c.Caller, c.Key, micros(now)); err != nil {
		return nil, err
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO issue_idempotency (caller, idem_key, fingerprint, resource_id, secret, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (caller, idem_key) DO NOTHING`,
		c.Caller, c.Key, c.Fingerprint, resourceID, c.Secret, micros(now), micros(now.Add(c.TTL)))
	if err != nil {
		return nil, err
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return nil, err
	}
	// Another issuance holds the key; the INSERT waited for it to commit,
	// so its row is visible to this statement.
	var rec keybrake.IssueRecord
	var created int64
	err = tx.QueryRowContext(ctx, `SELECT fingerprint, resource_id, secret, created_at FROM issue_idempotency
		WHERE caller = $1 AND idem_key = $2`, c.Caller, c.Key).Scan(&rec.Fingerprint, &rec.ResourceID, &rec.Secret, &created)
	if errors.Is(err, sql.ErrNoRows) {
		// Only a concurrent sweep could remove it between the two
		// statements, and it removes only expired rows: try again.
		return nil, keybrake.ErrStoreUnavailable
	}
	if err != nil {
		return nil, err
	}
	rec.CreatedAt = fromMicros(created)
	return &rec, nil
}

// GetToken reads an issuer token by id.
func (s *Store) GetToken(ctx context.Context, id string) (*keybrake.IssuerToken, error) {
	t, err := scanToken(s.r.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM issuer_tokens WHERE id = $1`, id))
	return t, s.wrap("get token", err)
}

// SweepIssueClaims deletes issuance idempotency records past their replay
// window, with the sealed secrets they hold, and returns how many went.
func (s *Store) SweepIssueClaims(ctx context.Context) (int64, error) {
	var n int64
	err := s.tx(ctx, "sweep issue idempotency", func(tx *sql.Tx, now time.Time) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM issue_idempotency WHERE expires_at <= $1`, micros(now))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}
