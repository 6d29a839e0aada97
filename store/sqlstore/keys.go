package sqlstore

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/keybrake/keybrake"
)

const keyColumns = `id, vendor, daily_cap, total_cap, max_per_call, rules, agent_run_label,
	agent_name, metadata, issuer_id, created_at, expires_at, revoked_at,
	spent, reserved, calls, denied_calls, alert_thresholds, scope, max_calls_per_minute, idempotency_scope`

type rowScanner interface{ Scan(dest ...any) error }

// scanKey reads keyColumns into a key and its lifetime usage.
func scanKey(row rowScanner) (*keybrake.Key, keybrake.Usage, error) {
	var (
		k                 keybrake.Key
		u                 keybrake.Usage
		rules, meta       string
		created, expires  int64
		revoked           sql.NullInt64
		daily, total, per int64
		spent, reserved   int64
		thresholds, scope string
	)
	err := row.Scan(&k.ID, &k.Vendor, &daily, &total, &per, &rules, &k.AgentRunLabel,
		&k.AgentName, &meta, &k.IssuerID, &created, &expires, &revoked,
		&spent, &reserved, &u.Calls, &u.DeniedCalls, &thresholds, &scope, &k.MaxCallsPerMinute, &k.IdempotencyScope)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, u, keybrake.ErrNotFound
	}
	if err != nil {
		return nil, u, err
	}
	k.DailyCap, k.TotalCap, k.MaxPerCall = keybrake.Micros(daily), keybrake.Micros(total), keybrake.Micros(per)
	u.Spent, u.Reserved = keybrake.Micros(spent), keybrake.Micros(reserved)
	var list []string
	if err := json.Unmarshal([]byte(rules), &list); err != nil {
		return nil, u, fmt.Errorf("key %s: stored rules: %w", k.ID, err)
	}
	if k.Rules, err = keybrake.ParseRules(list); err != nil {
		return nil, u, fmt.Errorf("key %s: stored rules: %w", k.ID, err)
	}
	if meta != "" && meta != "{}" {
		if err := json.Unmarshal([]byte(meta), &k.Metadata); err != nil {
			return nil, u, fmt.Errorf("key %s: stored metadata: %w", k.ID, err)
		}
	}
	k.CreatedAt, k.ExpiresAt = fromMicros(created), fromMicros(expires)
	if revoked.Valid {
		t := fromMicros(revoked.Int64)
		k.RevokedAt = &t
	}
	if k.AlertThresholds, err = parseThresholds(thresholds); err != nil {
		return nil, u, fmt.Errorf("key %s: stored alert thresholds: %w", k.ID, err)
	}
	if k.Scope, err = parseScope(scope); err != nil {
		return nil, u, fmt.Errorf("key %s: stored scope: %w", k.ID, err)
	}
	return &k, u, nil
}

// keyStateColumns are what a decision needs of a key: its status, caps and
// counters. The policy (rules, metadata) is not re-read or re-parsed on the
// hot path: the proxy matched the rules already, and they never change.
const keyStateColumns = `id, vendor, daily_cap, total_cap, max_per_call, agent_run_label,
	created_at, expires_at, revoked_at, spent, reserved, calls, denied_calls, max_calls_per_minute`

// scanKeyState reads keyStateColumns: a key without its Rules and Metadata.
func scanKeyState(row rowScanner) (*keybrake.Key, keybrake.Usage, error) {
	var (
		k                 keybrake.Key
		u                 keybrake.Usage
		created, expires  int64
		revoked           sql.NullInt64
		daily, total, per int64
		spent, reserved   int64
	)
	err := row.Scan(&k.ID, &k.Vendor, &daily, &total, &per, &k.AgentRunLabel, &created, &expires, &revoked,
		&spent, &reserved, &u.Calls, &u.DeniedCalls, &k.MaxCallsPerMinute)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, u, keybrake.ErrNotFound
	}
	if err != nil {
		return nil, u, err
	}
	k.DailyCap, k.TotalCap, k.MaxPerCall = keybrake.Micros(daily), keybrake.Micros(total), keybrake.Micros(per)
	u.Spent, u.Reserved = keybrake.Micros(spent), keybrake.Micros(reserved)
	k.CreatedAt, k.ExpiresAt = fromMicros(created), fromMicros(expires)
	if revoked.Valid {
		t := fromMicros(revoked.Int64)
		k.RevokedAt = &t
	}
	return &k, u, nil
}

// CreateKey stores a new key. The store's clock sets CreatedAt and
// ExpiresAt = CreatedAt + ttl, so replicas agree on expiry.
func (s *Store) CreateKey(ctx context.Context, k *keybrake.Key, secretHash string, ttl time.Duration) (*keybrake.Key, error) {
	created, _, err := s.createKey(ctx, k, secretHash, ttl, nil)
	return created, err
}

// createKey stores a new key, unless claim names an Idempotency-Key an
// earlier issuance holds: then it creates nothing and returns that record
// (issue.go).
func (s *Store) createKey(ctx context.Context, k *keybrake.Key, secretHash string, ttl time.Duration, claim *keybrake.IssueClaim) (_ *keybrake.Key, prior *keybrake.IssueRecord, err error) {
	rules, err := json.Marshal(k.Rules.Strings())
	if err != nil {
		return nil, nil, err
	}
	meta := []byte("{}")
	if len(k.Metadata) > 0 {
		if meta, err = json.Marshal(k.Metadata); err != nil {
			return nil, nil, err
		}
	}
	out := *k
	thresholds, err := formatThresholds(k.AlertThresholds)
	if err != nil {
		return nil, nil, err
	}
	err = s.tx(ctx, "create key", func(tx *sql.Tx, now time.Time) error {
		if prior, err = claimIssue(ctx, tx, now, claim, out.ID); err != nil || prior != nil {
			return err
		}
		out.CreatedAt = now.UTC().Truncate(time.Microsecond)
		out.ExpiresAt = out.CreatedAt.Add(ttl)
		out.RevokedAt = nil
		_, err := tx.ExecContext(ctx, `INSERT INTO keys (id, secret_hash, vendor, daily_cap, total_cap,
			max_per_call, rules, agent_run_label, agent_name, metadata, issuer_id, created_at, expires_at, alert_thresholds)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
			out.ID, secretHash, out.Vendor, int64(out.DailyCap), int64(out.TotalCap), int64(out.MaxPerCall),
			string(rules), out.AgentRunLabel, out.AgentName, string(meta), out.IssuerID,
			micros(out.CreatedAt), micros(out.ExpiresAt), thresholds)
		if err != nil {
			return err
		}
		return s.keyPolicy(ctx, tx, now, &out)
	})
	if err != nil || prior != nil {
		return nil, prior, err
	}
	return &out, nil, nil
}

// KeyByHash finds a key by the hash of its secret. The proxy calls it for a
// key it has not seen; the policy it returns never changes, and status is
// re-read inside every decision.
func (s *Store) KeyByHash(ctx context.Context, secretHash string) (*keybrake.Key, error) {
	k, _, err := scanKey(s.r.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM keys WHERE secret_hash = $1`, secretHash))
	if err != nil {
		return nil, s.wrap("find key", err)
	}
	return k, nil
}

// GetKey returns a key with its status and usage.
func (s *Store) GetKey(ctx context.Context, id string) (*keybrake.KeyView, error) {
	var view *keybrake.KeyView
	err := s.read(ctx, "get key", func(q Querier, now time.Time) error {
		var err error
		view, err = s.keyView(ctx, q, now, q.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM keys WHERE id = $1`, id))
		return err
	})
	return view, err
}

// read runs f against the reader pool with the store's clock.
func (s *Store) read(ctx context.Context, op string, f func(q Querier, now time.Time) error) error {
	now, err := s.dialect.Now(ctx, s.r)
	if err != nil {
		return s.wrap(op, err)
	}
	return s.wrap(op, f(s.r, now))
}

func (s *Store) keyView(ctx context.Context, q Querier, now time.Time, row rowScanner) (*keybrake.KeyView, error) {
	k, u, err := scanKey(row)
	if err != nil {
		return nil, err
	}
	if err := dayUsage(ctx, q, k.ID, Day(now), &u); err != nil {
		return nil, err
	}
	return &keybrake.KeyView{Key: *k, Status: k.StatusAt(now), Usage: u}, nil
}

// dayUsage fills today's spent and reserved amounts.
func dayUsage(ctx context.Context, q Querier, keyID, day string, u *keybrake.Usage) error {
	var spent, reserved int64
	err := q.QueryRowContext(ctx, `SELECT spent, reserved FROM key_days WHERE key_id = $1 AND day = $2`, keyID, day).Scan(&spent, &reserved)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	u.SpentToday, u.ReservedToday = keybrake.Micros(spent), keybrake.Micros(reserved)
	return nil
}

// ListKeys lists keys newest first. The cursor is opaque to clients.
func (s *Store) ListKeys(ctx context.Context, f keybrake.KeyFilter) ([]*keybrake.KeyView, string, error) {
	limit := pageSize(f.Limit)
	var out []*keybrake.KeyView
	next := ""
	err := s.read(ctx, "list keys", func(q Querier, now time.Time) error {
		var where []string
		var args []any
		arg := func(v any) string { args = append(args, v); return "$" + strconv.Itoa(len(args)) }
		if f.AgentRunLabel != "" {
			where = append(where, "agent_run_label = "+arg(f.AgentRunLabel))
		}
		if f.IssuerID != "" {
			where = append(where, "issuer_id = "+arg(f.IssuerID))
		}
		where = append(where, keySearch(f, Day(now), s.dialect.StrPos, arg)...)
		switch f.Status {
		case "":
		case keybrake.StatusActive:
			where = append(where, "revoked_at IS NULL AND expires_at > "+arg(micros(now)))
		case keybrake.StatusRevoked:
			where = append(where, "revoked_at IS NOT NULL")
		case keybrake.StatusExpired:
			where = append(where, "revoked_at IS NULL AND expires_at <= "+arg(micros(now)))
		default:
			return keybrake.FieldError("status", "status must be active, revoked or expired")
		}
		if f.Cursor != "" {
			at, id, err := decodeKeyCursor(f.Cursor)
			if err != nil {
				return err
			}
			a, b := arg(at), arg(id)
			where = append(where, "(created_at < "+a+" OR (created_at = "+a+" AND id < "+b+"))")
		}
		query := `SELECT ` + keyColumns + ` FROM keys`
		if len(where) > 0 {
			query += " WHERE " + strings.Join(where, " AND ")
		}
		query += " ORDER BY created_at DESC, id DESC LIMIT " + arg(limit+1)
		rows, err := q.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		var keys []*keybrake.Key
		var usages []keybrake.Usage
		for rows.Next() {
			k, u, err := scanKey(rows)
			if err != nil {
				return err
			}
			keys, usages = append(keys, k), append(usages, u)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows.Close()
		if len(keys) > limit {
			keys, usages = keys[:limit], usages[:limit]
			last := keys[limit-1]
			next = encodeKeyCursor(micros(last.CreatedAt), last.ID)
		}
		for i, k := range keys {
			u := usages[i]
			if err := dayUsage(ctx, q, k.ID, Day(now), &u); err != nil {
				return err
			}
			out = append(out, &keybrake.KeyView{Key: *k, Status: k.StatusAt(now), Usage: u})
		}
		return nil
	})
	return out, next, err
}

// RevokeKey marks a key revoked. Revoking again returns the first
// revocation's time: the answer is the same however often it is asked.
//
// revoked_at is read after the key's row is locked (PostgreSQL waits here
// for the decisions queued on the key; SQLite's BEGIN IMMEDIATE already
// holds the lock), as each decision reads its time: so every call allowed
// before the revoke is stamped earlier than revoked_at, and every call
// refused as revoked, later.
func (s *Store) RevokeKey(ctx context.Context, id string) (*keybrake.Key, error) {
	var k *keybrake.Key
	err := s.tx(ctx, "revoke key", func(tx *sql.Tx, _ time.Time) error { // the time is read after the lock, below
		if _, err := tx.ExecContext(ctx, `SELECT id FROM keys WHERE id = $1`+s.dialect.LockKey, id); err != nil {
			return err
		}
		now, err := s.dialect.Now(ctx, tx)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL`, micros(now), id)
		if err != nil {
			return err
		}
		if k, _, err = scanKey(tx.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM keys WHERE id = $1`, id)); err != nil {
			return err
		}
		return s.revokedEvent(ctx, tx, now, res, k)
	})
	return k, err
}

func pageSize(n int) int {
	switch {
	case n <= 0:
		return keybrake.DefaultPageSize
	case n > keybrake.MaxPageSize:
		return keybrake.MaxPageSize
	default:
		return n
	}
}

func encodeKeyCursor(at int64, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at, 10) + ":" + id))
}

func decodeKeyCursor(c string) (int64, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		at, id, ok := strings.Cut(string(b), ":")
		if n, perr := strconv.ParseInt(at, 10, 64); ok && perr == nil {
			return n, id, nil
		}
	}
	return 0, "", keybrake.FieldError("cursor", "cursor is not one this server issued")
}

func encodeIDCursor(id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(id, 10)))
}

func decodeIDCursor(c string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		if n, perr := strconv.ParseInt(string(b), 10, 64); perr == nil && n > 0 {
			return n, nil
		}
	}
	return 0, keybrake.FieldError("cursor", "cursor is not one this server issued")
}
