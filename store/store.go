// Package store names the ledger contract that both engines fulfil and
// opens the one a database URL asks for: a file path for the embedded SQLite
// default, postgres://… for PostgreSQL shared by replicas.
package store

import (
	"context"
	"time"

	"github.com/keybrake/keybrake"
)

// Store is everything Keybrake keeps. Both engines implement it through
// store/sqlstore, and store/storetest holds the one conformance suite they
// must pass.
type Store interface {
	Ping(ctx context.Context) error
	ClaimInstance(ctx context.Context, instance string) (release func() error, err error)
	Now(ctx context.Context) (time.Time, error)

	CreateKey(ctx context.Context, k *keybrake.Key, secretHash string, ttl time.Duration) (*keybrake.Key, error)
	KeyByHash(ctx context.Context, secretHash string) (*keybrake.Key, error)
	GetKey(ctx context.Context, id string) (*keybrake.KeyView, error)
	ListKeys(ctx context.Context, f keybrake.KeyFilter) ([]*keybrake.KeyView, string, error)
	RevokeKey(ctx context.Context, id string) (*keybrake.Key, error)

	// CreateKeyOnce and CreateTokenOnce create under an Idempotency-Key,
	// in the transaction that creates: when the caller already used the key
	// within its window they create nothing and return the earlier record.
	CreateKeyOnce(ctx context.Context, k *keybrake.Key, secretHash string, ttl time.Duration, c keybrake.IssueClaim) (*keybrake.Key, *keybrake.IssueRecord, error)
	CreateTokenOnce(ctx context.Context, t *keybrake.IssuerToken, secretHash string, c keybrake.IssueClaim) (*keybrake.IssuerToken, *keybrake.IssueRecord, error)
	GetToken(ctx context.Context, id string) (*keybrake.IssuerToken, error)
	SweepIssueClaims(ctx context.Context) (int64, error)

	Decide(ctx context.Context, a keybrake.Attempt) (keybrake.Decision, error)
	Settle(ctx context.Context, st keybrake.Settlement) (keybrake.Usage, error)
	RecoverPending(ctx context.Context, instance string, olderThan time.Duration) (int, error)
	SweepIdempotency(ctx context.Context) (int64, error)
	// PruneCalls deletes settled audit rows older than retention that the
	// ledger no longer needs (see sqlstore.Store.PruneCalls).
	PruneCalls(ctx context.Context, retention time.Duration) (int64, error)
	DueForReconcile(ctx context.Context, vendor string, minAge time.Duration, limit int) ([]*keybrake.Call, error)
	Reconcile(ctx context.Context, callID int64, cost keybrake.Micros, final bool, maxAttempts int) error

	CreateToken(ctx context.Context, t *keybrake.IssuerToken, secretHash string) (*keybrake.IssuerToken, error)
	TokenByHash(ctx context.Context, secretHash string) (*keybrake.IssuerToken, error)
	ListTokens(ctx context.Context) ([]*keybrake.IssuerToken, error)
	RevokeToken(ctx context.Context, id string) (*keybrake.IssuerToken, error)

	ListCalls(ctx context.Context, f keybrake.CallFilter) ([]*keybrake.Call, string, error)
	RunSummary(ctx context.Context, label string) (*keybrake.RunSummary, error)

	Reports
	Outbox

	Close() error
}

// Reports are the spend reports, the audit export and the store-wide
// gauges /metrics reads at scrape time.
type Reports interface {
	ReportRuns(ctx context.Context, f keybrake.RunsFilter) ([]keybrake.RunRow, string, error)
	ReportAgents(ctx context.Context, f keybrake.AgentsFilter) ([]keybrake.AgentRow, error)
	ReportDaily(ctx context.Context, f keybrake.DailyFilter) (*keybrake.DailyReport, error)
	ReportAnomalies(ctx context.Context, f keybrake.AnomalyFilter) ([]keybrake.AnomalyRow, error)
	ExportCalls(ctx context.Context, f keybrake.CallFilter, each func(*keybrake.Call) error) error
	Gauges(ctx context.Context) (*keybrake.Gauges, error)
}

// Outbox is the webhooks, their subscriptions and the events waiting for
// delivery. Events themselves are written by the ledger's own transactions.
type Outbox interface {
	CreateWebhook(ctx context.Context, w *keybrake.Webhook, sealedSecret string) (*keybrake.Webhook, error)
	ListWebhooks(ctx context.Context) ([]*keybrake.Webhook, error)
	DeleteWebhook(ctx context.Context, id string) (*keybrake.Webhook, error)
	ListDeliveries(ctx context.Context, webhookID string, limit int, cursor string) ([]*keybrake.Delivery, string, error)
	ClaimDeliveries(ctx context.Context, owner string, lease time.Duration, limit int) ([]*keybrake.Outgoing, error)
	RecordAttempt(ctx context.Context, deliveryID int64, owner string, r keybrake.AttemptResult) error
	DetectAnomalies(ctx context.Context, f keybrake.AnomalyFilter) (int, error)
}
