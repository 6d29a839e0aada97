package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/keybrake/keybrake"
)

// Events are written to the outbox inside the transaction of the decision
// that caused them: a crash after the commit cannot lose one, and a rolled
// back decision leaves none. Only events some live webhook subscribes to are
// written; the once-a-day markers (key_alerts) are kept either way, so a
// webhook created later does not receive alerts that were already due.

// parseThresholds reads a key's stored alert thresholds.
func parseThresholds(s string) ([]int, error) {
	var list []int
	if err := json.Unmarshal([]byte(s), &list); err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return []int{}, nil
	}
	return list, nil
}

// formatThresholds validates and encodes a key's thresholds; nil stores
// none.
func formatThresholds(list []int) (string, error) {
	norm, err := keybrake.NormalizeThresholds(list)
	if err != nil {
		return "", keybrake.FieldError("alert_thresholds", "alert_thresholds: %v", err)
	}
	b, err := json.Marshal(norm)
	return string(b), err
}

// spendEvents fires key.spend_threshold for every threshold the day's
// settled plus reserved spend of a key reached with a move of delta (a new
// reservation, or a settlement above its estimate). The key's row is
// already locked by the caller.
func (s *Store) spendEvents(ctx context.Context, tx Querier, now time.Time, keyID, day string, delta keybrake.Micros) error {
	if delta <= 0 {
		return nil
	}
	var (
		capacity, used           int64
		thresholds, label, agent string
	)
	err := tx.QueryRowContext(ctx, `SELECT k.daily_cap, k.alert_thresholds, k.agent_run_label, k.agent_name,
		COALESCE(d.spent + d.reserved, 0) FROM keys k LEFT JOIN key_days d ON d.key_id = k.id AND d.day = $2
		WHERE k.id = $1`, keyID, day).Scan(&capacity, &thresholds, &label, &agent, &used)
	if err != nil || thresholds == "[]" {
		return err
	}
	return s.thresholdEvents(ctx, tx, now, keyID, day, delta, keybrake.Micros(capacity), thresholds, label, agent, keybrake.Micros(used))
}

// thresholdEvents fires the thresholds a move of delta crossed, the day's
// use being used after it.
func (s *Store) thresholdEvents(ctx context.Context, tx Querier, now time.Time, keyID, day string, delta, capacity keybrake.Micros,
	thresholds, label, agent string, used keybrake.Micros) error {
	list, err := parseThresholds(thresholds)
	if err != nil {
		return fmt.Errorf("key %s: stored alert thresholds: %w", keyID, err)
	}
	for _, p := range keybrake.ThresholdsCrossed(capacity, used-delta, used, list) {
		first, err := alertOnce(ctx, tx, keyID, day, "threshold:"+strconv.Itoa(p))
		if err != nil {
			return err
		}
		if !first {
			continue
		}
		if err := emit(ctx, tx, now, keybrake.EventSpendThreshold, keybrake.SpendThresholdData{
			KeyID: keyID, AgentRunLabel: label, AgentName: agent, ThresholdPercent: p,
			CapUSD: capacity, SpentUSD: used, Day: day,
		}); err != nil {
			return err
		}
	}
	return nil
}

// capExhaustedEvent fires key.cap_exhausted on a key's first cap_exhausted
// denial of the day. d carries the cap details and the usage before the
// refused call.
func (s *Store) capExhaustedEvent(ctx context.Context, tx Querier, now time.Time, day, agent string, d *keybrake.Decision) error {
	first, err := alertOnce(ctx, tx, d.Key.ID, day, "cap_exhausted")
	if err != nil || !first {
		return err
	}
	spent := d.Usage.SpentToday + d.Usage.ReservedToday
	if d.CapName == "total" {
		spent = d.Usage.Spent + d.Usage.Reserved
	}
	return emit(ctx, tx, now, keybrake.EventCapExhausted, keybrake.CapExhaustedData{
		KeyID: d.Key.ID, AgentRunLabel: d.Key.AgentRunLabel, AgentName: agent, Cap: d.CapName,
		CapUSD: d.Cap, SpentUSD: spent, RequestedUSD: d.Requested, Day: day,
	})
}

// revokedEvent fires key.revoked when res, the revoking UPDATE, changed the
// row: the first revocation, not a repeated one.
func (s *Store) revokedEvent(ctx context.Context, tx Querier, now time.Time, res sql.Result, k *keybrake.Key) error {
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return err
	}
	return emit(ctx, tx, now, keybrake.EventKeyRevoked, keybrake.KeyRevokedData{
		KeyID: k.ID, AgentRunLabel: k.AgentRunLabel, AgentName: k.AgentName, RevokedAt: *k.RevokedAt,
	})
}

// alertOnce records that a key raised alert on day and reports whether this
// was the first time. The primary key holds across replicas.
func alertOnce(ctx context.Context, tx Querier, keyID, day, alert string) (bool, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO key_alerts (key_id, day, alert) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, keyID, day, alert)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// emit writes an event and one pending delivery per live webhook that
// subscribes to its type; with no subscriber it writes nothing.
func emit(ctx context.Context, tx Querier, now time.Time, typ keybrake.EventType, data any) error {
	rows, err := tx.QueryContext(ctx, `SELECT DISTINCT s.webhook_id FROM webhook_subscriptions s JOIN webhooks w ON w.id = s.webhook_id
		WHERE w.deleted_at IS NULL AND s.event_type IN ($1, '*') ORDER BY s.webhook_id`, string(typ))
	if err != nil {
		return err
	}
	var hooks []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		hooks = append(hooks, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(hooks) == 0 {
		return err
	}
	created := now.UTC().Truncate(time.Microsecond)
	ev := keybrake.Event{ID: keybrake.NewID("evt_"), Type: typ, CreatedAt: created, Data: data}
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO events (id, type, created_at, body) VALUES ($1, $2, $3, $4)`,
		ev.ID, string(typ), micros(created), string(body)); err != nil {
		return err
	}
	for _, h := range hooks {
		if _, err := tx.ExecContext(ctx, `INSERT INTO deliveries (event_id, webhook_id, state, created_at, next_attempt_at)
			VALUES ($1, $2, $3, $4, $4)`, ev.ID, h, keybrake.DeliveryPending, micros(created)); err != nil {
			return err
		}
	}
	return nil
}

// maxAnomalyCandidates bounds one detection round's IN list; more runs
// wait for the next round.
const maxAnomalyCandidates = 500

// DetectAnomalies fires run.spend_anomaly for each run that can still spend
// (it has an active key), has not fired before, and is in the anomalies
// report for f (f.Labels is ignored). It returns how many fired. The report
// is read outside any write transaction, so a slow report never holds the
// ledger's write lock; the marker and the event are then written together,
// once per run however many replicas detect it.
func (s *Store) DetectAnomalies(ctx context.Context, f keybrake.AnomalyFilter) (int, error) {
	if f.Factor == 0 {
		f.Factor = keybrake.DefaultAnomalyFactor
	}
	var subscribed bool
	err := s.r.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM webhook_subscriptions s JOIN webhooks w ON w.id = s.webhook_id
		WHERE w.deleted_at IS NULL AND s.event_type IN ($1, '*'))`, string(keybrake.EventRunSpendAnomaly)).Scan(&subscribed)
	if err != nil || !subscribed {
		return 0, s.wrap("detect anomalies", err)
	}
	now, err := s.Now(ctx)
	if err != nil {
		return 0, err
	}
	rows, err := s.r.QueryContext(ctx, `SELECT DISTINCT agent_run_label FROM keys WHERE expires_at > $1 AND revoked_at IS NULL
		AND agent_run_label <> '' AND agent_run_label NOT IN (SELECT agent_run_label FROM run_alerts)
		ORDER BY agent_run_label LIMIT `+strconv.Itoa(maxAnomalyCandidates), micros(now))
	if err != nil {
		return 0, s.wrap("detect anomalies", err)
	}
	f.Labels = nil
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			rows.Close()
			return 0, s.wrap("detect anomalies", err)
		}
		f.Labels = append(f.Labels, l)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(f.Labels) == 0 {
		return 0, s.wrap("detect anomalies", err)
	}
	f.Limit = maxAnomalyCandidates
	found, err := s.ReportAnomalies(ctx, f)
	if err != nil || len(found) == 0 {
		return 0, err
	}
	fired := 0
	err = s.tx(ctx, "detect anomalies", func(tx *sql.Tx, now time.Time) error {
		fired = 0
		for _, r := range found {
			res, err := tx.ExecContext(ctx, `INSERT INTO run_alerts (agent_run_label, fired_at) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
				r.AgentRunLabel, micros(now))
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				if err != nil {
					return err
				}
				continue
			}
			data := keybrake.RunSpendAnomalyData{AnomalyRow: r, ThresholdFactor: f.Factor}
			if f.MinUSD > 0 {
				data.MinUSD = &f.MinUSD
			}
			if err := emit(ctx, tx, now, keybrake.EventRunSpendAnomaly, data); err != nil {
				return err
			}
			fired++
		}
		return nil
	})
	return fired, err
}

// inList appends one placeholder per value and returns "($3, $4, …)".
func inList(arg func(any) string, values []string) string {
	ph := make([]string, len(values))
	for i, v := range values {
		ph[i] = arg(v)
	}
	return "(" + strings.Join(ph, ", ") + ")"
}
