// Package api holds the wire types of Keybrake's admin API (/vault/): the
// request bodies and answers exactly as they are encoded in JSON. The
// server (package admin), the Go client (package client) and the contract
// (docs/openapi.yaml) share them, so the client needs none of the server's
// code. A field added here without the spec fails the tests that make the
// call: internal/kbtest validates every admin request and response against
// the spec.
//
// Money is keybrake.Micros, encoded as a decimal string ("49.99"); request
// money fields are kept raw (json.RawMessage) so the server reads the
// literal text, never a float.
package api

import (
	"time"

	"github.com/keybrake/keybrake"
)

// Error is every refusal's body: a stable code to branch on, a message for
// people, and the request field at fault when there is one.
type Error struct {
	Code    keybrake.Code `json:"code"`
	Message string        `json:"message"`
	Field   string        `json:"field,omitempty"`
}

// Page is a list answer: data newest first, and a cursor while more remain.
type Page[T any] struct {
	Data       []T    `json:"data"`
	HasMore    bool   `json:"has_more"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// Headers of the admin API.
const (
	// IdempotencyKeyHeader makes POST /vault/keys and POST /vault/tokens
	// safe to retry.
	IdempotencyKeyHeader = "Idempotency-Key"
	// ReplayedHeader marks an answer replayed for a retried Idempotency-Key.
	ReplayedHeader = "Keybrake-Idempotent-Replayed"
)

// Call is an audit row as the API shows it (GET /vault/calls and the
// NDJSON export).
type Call struct {
	*keybrake.Call
	LatencyMS int64 `json:"latency_ms"`
}

// RunSummary is GET /vault/runs/{label}: everything about one run.
type RunSummary = keybrake.RunSummary

// Report is a report answer: the window it covers and its rows.
type Report[T any] struct {
	Since      time.Time `json:"since"`
	Until      time.Time `json:"until"`
	Data       []T       `json:"data"`
	HasMore    bool      `json:"has_more"`
	NextCursor string    `json:"next_cursor,omitempty"`
}

// RunsReport is GET /vault/reports/runs.
type RunsReport = Report[keybrake.RunRow]

// AgentsReport is the agents report: rows keyed by agent_name, or by
// label_prefix when grouped so (the row's first field is named after
// group_by, hence a map).
type AgentsReport struct {
	Since   time.Time        `json:"since"`
	Until   time.Time        `json:"until"`
	GroupBy string           `json:"group_by"`
	Data    []map[string]any `json:"data"`
}

// DailyReport is the daily report's answer.
type DailyReport struct {
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
	*keybrake.DailyReport
}

// AnomaliesReport is the anomalies report's answer, with the rule applied.
type AnomaliesReport struct {
	Since  time.Time             `json:"since"`
	Until  time.Time             `json:"until"`
	Factor keybrake.Factor       `json:"factor"`
	MinUSD *keybrake.Micros      `json:"min_usd,omitempty"`
	Data   []keybrake.AnomalyRow `json:"data"`
}

// WebhookRequest is the body of POST /vault/webhooks.
type WebhookRequest struct {
	URL         string   `json:"url"`
	Events      []string `json:"events"`
	Description string   `json:"description"`
}

// Webhook is a webhook as the API shows it; Secret (whsec_…) only in the
// answer to the POST that created it.
type Webhook struct {
	keybrake.Webhook
	Secret string `json:"secret,omitempty"`
}

// WebhookDeleted is the answer to DELETE /vault/webhooks/{webhook_id}.
type WebhookDeleted struct {
	ID      string `json:"webhook_id"`
	Deleted bool   `json:"deleted"`
}

// Delivery is one event on its way to one webhook, with its attempts.
type Delivery = keybrake.Delivery

// Health is GET /healthz (served beside the admin API, unauthenticated):
// status "ok", or "unavailable" with the code store_unavailable; Sandbox
// and SandboxVendors only in --sandbox mode.
type Health struct {
	Status         string        `json:"status"`
	Code           keybrake.Code `json:"code,omitempty"`
	Message        string        `json:"message,omitempty"`
	Sandbox        bool          `json:"sandbox,omitempty"`
	SandboxVendors []string      `json:"sandbox_vendors,omitempty"`
}
