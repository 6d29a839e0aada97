package metrics

import (
	"context"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/store"
)

// InstrumentStore times the store's operations into
// keybrake_store_duration_seconds{op}. It wraps the store.Store interface,
// so the engines need not know about metrics; a method added to the
// interface later passes through untimed until it is listed here.
func InstrumentStore(s store.Store, m *Metrics) store.Store {
	return &timedStore{Store: s, m: m}
}

type timedStore struct {
	store.Store
	m *Metrics
}

func (t *timedStore) time(op string, start time.Time) {
	t.m.storeOps.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (t *timedStore) KeyByHash(ctx context.Context, h string) (*keybrake.Key, error) {
	defer t.time("key_by_hash", time.Now())
	return t.Store.KeyByHash(ctx, h)
}

func (t *timedStore) Decide(ctx context.Context, a keybrake.Attempt) (keybrake.Decision, error) {
	defer t.time("decide", time.Now())
	return t.Store.Decide(ctx, a)
}

func (t *timedStore) Settle(ctx context.Context, st keybrake.Settlement) (keybrake.Usage, error) {
	defer t.time("settle", time.Now())
	return t.Store.Settle(ctx, st)
}

func (t *timedStore) CreateKey(ctx context.Context, k *keybrake.Key, h string, ttl time.Duration) (*keybrake.Key, error) {
	defer t.time("create_key", time.Now())
	return t.Store.CreateKey(ctx, k, h, ttl)
}

func (t *timedStore) CreateKeyOnce(ctx context.Context, k *keybrake.Key, h string, ttl time.Duration, c keybrake.IssueClaim) (*keybrake.Key, *keybrake.IssueRecord, error) {
	defer t.time("create_key", time.Now())
	return t.Store.CreateKeyOnce(ctx, k, h, ttl, c)
}

func (t *timedStore) GetKey(ctx context.Context, id string) (*keybrake.KeyView, error) {
	defer t.time("get_key", time.Now())
	return t.Store.GetKey(ctx, id)
}

func (t *timedStore) ListKeys(ctx context.Context, f keybrake.KeyFilter) ([]*keybrake.KeyView, string, error) {
	defer t.time("list_keys", time.Now())
	return t.Store.ListKeys(ctx, f)
}

func (t *timedStore) RevokeKey(ctx context.Context, id string) (*keybrake.Key, error) {
	defer t.time("revoke_key", time.Now())
	return t.Store.RevokeKey(ctx, id)
}

func (t *timedStore) RecoverPending(ctx context.Context, instance string, olderThan time.Duration) (int, error) {
	defer t.time("recover_pending", time.Now())
	return t.Store.RecoverPending(ctx, instance, olderThan)
}

func (t *timedStore) SweepIdempotency(ctx context.Context) (int64, error) {
	defer t.time("sweep_idempotency", time.Now())
	return t.Store.SweepIdempotency(ctx)
}

func (t *timedStore) DueForReconcile(ctx context.Context, vendor string, minAge time.Duration, limit int) ([]*keybrake.Call, error) {
	defer t.time("due_for_reconcile", time.Now())
	return t.Store.DueForReconcile(ctx, vendor, minAge, limit)
}

func (t *timedStore) Reconcile(ctx context.Context, callID int64, cost keybrake.Micros, final bool, maxAttempts int) error {
	defer t.time("reconcile", time.Now())
	return t.Store.Reconcile(ctx, callID, cost, final, maxAttempts)
}

func (t *timedStore) TokenByHash(ctx context.Context, h string) (*keybrake.IssuerToken, error) {
	defer t.time("token_by_hash", time.Now())
	return t.Store.TokenByHash(ctx, h)
}

func (t *timedStore) ListCalls(ctx context.Context, f keybrake.CallFilter) ([]*keybrake.Call, string, error) {
	defer t.time("list_calls", time.Now())
	return t.Store.ListCalls(ctx, f)
}

func (t *timedStore) RunSummary(ctx context.Context, label string) (*keybrake.RunSummary, error) {
	defer t.time("run_summary", time.Now())
	return t.Store.RunSummary(ctx, label)
}

func (t *timedStore) ReportRuns(ctx context.Context, f keybrake.RunsFilter) ([]keybrake.RunRow, string, error) {
	defer t.time("report_runs", time.Now())
	return t.Store.ReportRuns(ctx, f)
}

func (t *timedStore) ReportAgents(ctx context.Context, f keybrake.AgentsFilter) ([]keybrake.AgentRow, error) {
	defer t.time("report_agents", time.Now())
	return t.Store.ReportAgents(ctx, f)
}

func (t *timedStore) ReportDaily(ctx context.Context, f keybrake.DailyFilter) (*keybrake.DailyReport, error) {
	defer t.time("report_daily", time.Now())
	return t.Store.ReportDaily(ctx, f)
}

func (t *timedStore) ReportAnomalies(ctx context.Context, f keybrake.AnomalyFilter) ([]keybrake.AnomalyRow, error) {
	defer t.time("report_anomalies", time.Now())
	return t.Store.ReportAnomalies(ctx, f)
}

func (t *timedStore) ClaimDeliveries(ctx context.Context, owner string, lease time.Duration, limit int) ([]*keybrake.Outgoing, error) {
	defer t.time("claim_deliveries", time.Now())
	return t.Store.ClaimDeliveries(ctx, owner, lease, limit)
}

func (t *timedStore) RecordAttempt(ctx context.Context, id int64, owner string, r keybrake.AttemptResult) error {
	defer t.time("record_attempt", time.Now())
	return t.Store.RecordAttempt(ctx, id, owner, r)
}

func (t *timedStore) DetectAnomalies(ctx context.Context, f keybrake.AnomalyFilter) (int, error) {
	defer t.time("detect_anomalies", time.Now())
	return t.Store.DetectAnomalies(ctx, f)
}
