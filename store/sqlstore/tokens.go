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

const tokenColumns = `id, name, max_daily_cap, max_total_cap, vendors, endpoints, max_expires_in, created_at, revoked_at,
	max_outstanding_cap, scope`

func scanToken(row rowScanner) (*keybrake.IssuerToken, error) {
	var (
		t                    keybrake.IssuerToken
		daily, total, maxExp int64
		vendors, endpoints   string
		created              int64
		revoked              sql.NullInt64
		outstanding          int64
		scope                string
	)
	err := row.Scan(&t.ID, &t.Name, &daily, &total, &vendors, &endpoints, &maxExp, &created, &revoked, &outstanding, &scope)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, keybrake.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	t.MaxDailyCap, t.MaxTotalCap, t.MaxOutstanding = keybrake.Micros(daily), keybrake.Micros(total), keybrake.Micros(outstanding)
	if t.Scope, err = parseScope(scope); err != nil {
		return nil, fmt.Errorf("token %s: stored scope: %w", t.ID, err)
	}
	t.MaxExpiresIn = time.Duration(maxExp) * time.Second
	if err := json.Unmarshal([]byte(vendors), &t.Vendors); err != nil {
		return nil, fmt.Errorf("token %s: stored vendors: %w", t.ID, err)
	}
	var list []string
	if err := json.Unmarshal([]byte(endpoints), &list); err != nil {
		return nil, fmt.Errorf("token %s: stored endpoints: %w", t.ID, err)
	}
	if t.Endpoints, err = keybrake.ParseRules(list); err != nil {
		return nil, fmt.Errorf("token %s: stored endpoints: %w", t.ID, err)
	}
	t.CreatedAt = fromMicros(created)
	if revoked.Valid {
		r := fromMicros(revoked.Int64)
		t.RevokedAt = &r
	}
	return &t, nil
}

// CreateToken stores a new issuer token (its secret only as a hash).
func (s *Store) CreateToken(ctx context.Context, t *keybrake.IssuerToken, secretHash string) (*keybrake.IssuerToken, error) {
	created, _, err := s.createToken(ctx, t, secretHash, nil)
	return created, err
}

// createToken stores a new issuer token, unless claim names an
// Idempotency-Key an earlier issuance holds (issue.go).
func (s *Store) createToken(ctx context.Context, t *keybrake.IssuerToken, secretHash string, claim *keybrake.IssueClaim) (_ *keybrake.IssuerToken, prior *keybrake.IssueRecord, err error) {
	vendors, err := json.Marshal(t.Vendors)
	if err != nil {
		return nil, nil, err
	}
	endpoints, err := json.Marshal(t.Endpoints.Strings())
	if err != nil {
		return nil, nil, err
	}
	out := *t
	err = s.tx(ctx, "create token", func(tx *sql.Tx, now time.Time) error {
		if prior, err = claimIssue(ctx, tx, now, claim, out.ID); err != nil || prior != nil {
			return err
		}
		out.CreatedAt, out.RevokedAt = now.UTC().Truncate(time.Microsecond), nil
		_, err := tx.ExecContext(ctx, `INSERT INTO issuer_tokens (id, name, secret_hash, max_daily_cap, max_total_cap,
			vendors, endpoints, max_expires_in, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			out.ID, out.Name, secretHash, int64(out.MaxDailyCap), int64(out.MaxTotalCap), string(vendors),
			string(endpoints), int64(out.MaxExpiresIn/time.Second), micros(out.CreatedAt))
		if err != nil {
			return err
		}
		return s.tokenPolicy(ctx, tx, &out)
	})
	if err != nil || prior != nil {
		return nil, prior, err
	}
	return &out, nil, nil
}

// TokenByHash finds an issuer token by the hash of its secret; the admin API
// reads it on every request, so a revoked token stops at once.
func (s *Store) TokenByHash(ctx context.Context, secretHash string) (*keybrake.IssuerToken, error) {
	t, err := scanToken(s.r.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM issuer_tokens WHERE secret_hash = $1`, secretHash))
	return t, s.wrap("find token", err)
}

// ListTokens lists issuer tokens, newest first.
func (s *Store) ListTokens(ctx context.Context) ([]*keybrake.IssuerToken, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+tokenColumns+` FROM issuer_tokens ORDER BY created_at DESC, id DESC`)
	if err != nil {
		return nil, s.wrap("list tokens", err)
	}
	defer rows.Close()
	var out []*keybrake.IssuerToken
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, s.wrap("list tokens", err)
		}
		out = append(out, t)
	}
	return out, s.wrap("list tokens", rows.Err())
}

// RevokeToken revokes an issuer token; revoking again keeps the first time.
// Keys it issued stay valid until they expire or are revoked themselves.
func (s *Store) RevokeToken(ctx context.Context, id string) (*keybrake.IssuerToken, error) {
	var t *keybrake.IssuerToken
	err := s.tx(ctx, "revoke token", func(tx *sql.Tx, now time.Time) error {
		if _, err := tx.ExecContext(ctx, `UPDATE issuer_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL`, micros(now), id); err != nil {
			return err
		}
		var err error
		t, err = scanToken(tx.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM issuer_tokens WHERE id = $1`, id))
		return err
	})
	return t, err
}
