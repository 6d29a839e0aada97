package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/keybrake/keybrake"
)

// Webhooks and the outbox their deliveries wait in. A delivery is claimed
// with a lease: the claiming worker owns it until the lease ends, so a
// replica that dies mid-delivery only delays it, and another replica
// retries it after the lease. Delivery is at least once; receivers
// deduplicate on the event id.

// CreateWebhook stores a webhook with its signing secret, sealed by the
// caller, and its subscriptions.
func (s *Store) CreateWebhook(ctx context.Context, w *keybrake.Webhook, sealedSecret string) (*keybrake.Webhook, error) {
	events, err := json.Marshal(w.Events)
	if err != nil {
		return nil, err
	}
	out := *w
	err = s.tx(ctx, "create webhook", func(tx *sql.Tx, now time.Time) error {
		out.CreatedAt = now.UTC().Truncate(time.Microsecond)
		if _, err := tx.ExecContext(ctx, `INSERT INTO webhooks (id, url, description, events, secret, created_at)
			VALUES ($1, $2, $3, $4, $5, $6)`, out.ID, out.URL, out.Description, string(events), sealedSecret, micros(out.CreatedAt)); err != nil {
			return err
		}
		for _, e := range out.Events {
			if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_subscriptions (event_type, webhook_id) VALUES ($1, $2)`, e, out.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

const webhookColumns = `id, url, description, events, created_at`

func scanWebhook(row rowScanner) (*keybrake.Webhook, error) {
	var w keybrake.Webhook
	var events string
	var created int64
	err := row.Scan(&w.ID, &w.URL, &w.Description, &events, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, keybrake.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(events), &w.Events); err != nil {
		return nil, fmt.Errorf("webhook %s: stored events: %w", w.ID, err)
	}
	w.CreatedAt = fromMicros(created)
	return &w, nil
}

// ListWebhooks lists live webhooks, newest first.
func (s *Store) ListWebhooks(ctx context.Context) ([]*keybrake.Webhook, error) {
	var out []*keybrake.Webhook
	err := s.readRows(ctx, "list webhooks", `SELECT `+webhookColumns+` FROM webhooks WHERE deleted_at IS NULL
		ORDER BY created_at DESC, id DESC`, nil, func(rows *sql.Rows) error {
		w, err := scanWebhook(rows)
		if err == nil {
			out = append(out, w)
		}
		return err
	})
	return out, err
}

// DeleteWebhook removes a webhook: it receives nothing more, and its
// undelivered events are canceled. Its delivery history is kept.
func (s *Store) DeleteWebhook(ctx context.Context, id string) (*keybrake.Webhook, error) {
	var w *keybrake.Webhook
	err := s.tx(ctx, "delete webhook", func(tx *sql.Tx, now time.Time) error {
		var err error
		if w, err = scanWebhook(tx.QueryRowContext(ctx, `SELECT `+webhookColumns+` FROM webhooks WHERE id = $1 AND deleted_at IS NULL`, id)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE webhooks SET deleted_at = $1 WHERE id = $2`, micros(now), id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE deliveries SET state = $1 WHERE webhook_id = $2 AND state = $3`,
			keybrake.DeliveryCanceled, id, keybrake.DeliveryPending)
		return err
	})
	return w, err
}

// ListDeliveries lists a live webhook's deliveries newest first, each with
// its attempts.
func (s *Store) ListDeliveries(ctx context.Context, webhookID string, limit int, cursor string) ([]*keybrake.Delivery, string, error) {
	limit = pageSize(limit)
	var q queryArgs
	where := "d.webhook_id = " + q.arg(webhookID)
	if cursor != "" {
		id, err := decodeIDCursor(cursor)
		if err != nil {
			return nil, "", err
		}
		where += " AND d.id < " + q.arg(id)
	}
	var out []*keybrake.Delivery
	more := false
	err := s.read(ctx, "list deliveries", func(qr Querier, now time.Time) error {
		var one int
		if err := qr.QueryRowContext(ctx, `SELECT 1 FROM webhooks WHERE id = $1 AND deleted_at IS NULL`, webhookID).Scan(&one); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return keybrake.ErrNotFound
			}
			return err
		}
		rows, err := qr.QueryContext(ctx, `SELECT d.id, d.event_id, e.type, d.webhook_id, d.state, d.attempts, d.created_at,
			d.next_attempt_at, d.delivered_at, d.last_status, d.last_error
			FROM deliveries d JOIN events e ON e.id = d.event_id WHERE `+where+` ORDER BY d.id DESC LIMIT `+q.arg(limit+1), q.list...)
		if err != nil {
			return err
		}
		defer rows.Close()
		byID := map[int64]*keybrake.Delivery{}
		for rows.Next() {
			var d keybrake.Delivery
			var typ string
			var created, next int64
			var delivered sql.NullInt64
			if err := rows.Scan(&d.ID, &d.EventID, &typ, &d.WebhookID, &d.State, &d.Attempts, &created, &next,
				&delivered, &d.LastStatus, &d.LastError); err != nil {
				return err
			}
			d.EventType, d.CreatedAt, d.Log = keybrake.EventType(typ), fromMicros(created), []keybrake.DeliveryAttempt{}
			if d.State == keybrake.DeliveryPending {
				t := fromMicros(next)
				d.NextAttemptAt = &t
			}
			if delivered.Valid {
				t := fromMicros(delivered.Int64)
				d.DeliveredAt = &t
			}
			out = append(out, &d)
			byID[d.ID] = &d
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows.Close()
		if more = len(out) > limit; more {
			out = out[:limit]
		}
		if len(out) == 0 {
			return nil
		}
		var aq queryArgs
		ids := make([]string, len(out))
		for i, d := range out {
			ids[i] = aq.arg(d.ID)
		}
		arows, err := qr.QueryContext(ctx, `SELECT delivery_id, attempt, at, status, error, duration_ms FROM delivery_attempts
			WHERE delivery_id IN (`+strings.Join(ids, ", ")+`) ORDER BY delivery_id, attempt`, aq.list...)
		if err != nil {
			return err
		}
		defer arows.Close()
		for arows.Next() {
			var id, at int64
			var a keybrake.DeliveryAttempt
			if err := arows.Scan(&id, &a.N, &at, &a.Status, &a.Error, &a.DurationMS); err != nil {
				return err
			}
			a.At = fromMicros(at)
			if d := byID[id]; d != nil {
				d.Log = append(d.Log, a)
			}
		}
		return arows.Err()
	})
	if err != nil {
		return nil, "", err
	}
	next := ""
	if more {
		next = encodeIDCursor(out[limit-1].ID)
	}
	return out, next, nil
}

// ClaimDeliveries leases up to limit due deliveries to owner for lease and
// returns what is needed to send them. Rows another replica is claiming at
// the same moment are skipped, not waited for (PostgreSQL: SKIP LOCKED).
func (s *Store) ClaimDeliveries(ctx context.Context, owner string, lease time.Duration, limit int) ([]*keybrake.Outgoing, error) {
	var out []*keybrake.Outgoing
	err := s.tx(ctx, "claim deliveries", func(tx *sql.Tx, now time.Time) error {
		out = nil
		rows, err := tx.QueryContext(ctx, `SELECT id FROM deliveries WHERE state = $1 AND next_attempt_at <= $2 AND lease_until <= $2
			ORDER BY next_attempt_at, id LIMIT $3`+s.dialect.SkipLocked, keybrake.DeliveryPending, micros(now), limit)
		if err != nil {
			return err
		}
		var ids []int64
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, `UPDATE deliveries SET lease_until = $1, lease_owner = $2 WHERE id = $3`,
				micros(now.Add(lease)), owner, id); err != nil {
				return err
			}
			var o keybrake.Outgoing
			var body string
			var created int64
			if err := tx.QueryRowContext(ctx, `SELECT d.id, d.event_id, d.webhook_id, w.url, w.secret, e.body, d.attempts, d.created_at
				FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id JOIN events e ON e.id = d.event_id WHERE d.id = $1`, id).
				Scan(&o.DeliveryID, &o.EventID, &o.WebhookID, &o.URL, &o.Secret, &body, &o.Attempts, &created); err != nil {
				return err
			}
			o.Body, o.CreatedAt = []byte(body), fromMicros(created)
			out = append(out, &o)
		}
		return nil
	})
	return out, err
}

// RecordAttempt records one attempt to send a claimed delivery and moves
// it on: delivered, failed for good, or due again after r.RetryIn. An
// attempt that ends after its lease passed to another worker is still
// recorded (delivery is at least once); a delivery already delivered stays
// delivered.
func (s *Store) RecordAttempt(ctx context.Context, deliveryID int64, owner string, r keybrake.AttemptResult) error {
	if len(r.Error) > 500 {
		r.Error = r.Error[:500]
	}
	return s.tx(ctx, "record delivery attempt", func(tx *sql.Tx, now time.Time) error {
		var attempts int
		var state string
		err := tx.QueryRowContext(ctx, `SELECT attempts, state FROM deliveries WHERE id = $1`+s.dialect.LockKey, deliveryID).Scan(&attempts, &state)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("delivery %d: %w", deliveryID, keybrake.ErrNotFound)
		}
		if err != nil {
			return err
		}
		n := attempts + 1
		if _, err := tx.ExecContext(ctx, `INSERT INTO delivery_attempts (delivery_id, attempt, at, status, error, duration_ms)
			VALUES ($1, $2, $3, $4, $5, $6)`, deliveryID, n, micros(now), r.Status, r.Error, r.Duration.Milliseconds()); err != nil {
			return err
		}
		next, delivered := state, any(nil)
		nextAt := micros(now)
		switch {
		case state != keybrake.DeliveryPending:
		case r.Delivered:
			next, delivered = keybrake.DeliveryDelivered, micros(now)
		case r.GiveUp:
			next = keybrake.DeliveryFailed
		default:
			nextAt = micros(now.Add(r.RetryIn))
		}
		_, err = tx.ExecContext(ctx, `UPDATE deliveries SET attempts = $1, state = $2, next_attempt_at = $3,
			delivered_at = COALESCE(delivered_at, $4), last_status = $5, last_error = $6,
			lease_until = CASE WHEN lease_owner = $7 THEN 0 ELSE lease_until END WHERE id = $8`,
			n, next, nextAt, delivered, r.Status, r.Error, owner, deliveryID)
		return err
	})
}
