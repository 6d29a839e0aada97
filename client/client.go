// Package client is the Go client of Keybrake's admin API: issue, inspect,
// list and revoke vault keys, read the audit log and per-run summaries.
// Failures are *Error values carrying the API's code, so callers can
// branch with errors.As.
//
// The answers are the wire types of package api, which the server encodes
// too; the contract is docs/openapi.yaml (GET /vault/openapi.json). The
// client is written by hand rather than generated from the spec: its
// parameters take dollars as strings and options such as IdempotencyKey,
// which a generator would not shape so, and the tests keep it honest — every
// call it makes in them is checked against the spec, and a test fails when
// the spec has an operation the client has no method for.
//
//	c := client.New("http://127.0.0.1:8080", os.Getenv("KEYBRAKE_ADMIN_TOKEN"))
//	key, err := c.IssueKey(ctx, client.IssueParams{
//		Vendor: "stripe", DailyUSDCap: "500", ExpiresIn: "2h",
//		AllowedEndpoints: []string{"POST /v1/payment_intents"},
//	})
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/api"
)

// Client talks to one Keybrake admin API.
type Client struct {
	base  string
	token string
	// HTTP is the client used for requests; replace it to tune timeouts.
	HTTP *http.Client
}

// New returns a client for the admin API at baseURL (scheme://host:port).
func New(baseURL, token string) *Client {
	return &Client{
		base:  strings.TrimRight(baseURL, "/"),
		token: token,
		HTTP:  &http.Client{Timeout: 30 * time.Second},
	}
}

// Error is a refusal from the API (or a failure to reach it, Status 0).
type Error struct {
	Status  int
	Code    keybrake.Code
	Message string
	Field   string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("keybrake: %s", e.Message)
	if e.Code != "" {
		s = fmt.Sprintf("keybrake: %s (%s", e.Message, e.Code)
		if e.Field != "" {
			s += ", field " + e.Field
		}
		s += ")"
	}
	return s
}

// Key is a vault key as the API shows it; VaultKey is set only when issued.
type Key = api.Key

// Call is one audit row.
type Call = api.Call

// RunSummary is the per-run spend report.
type RunSummary = keybrake.RunSummary

// Revocation is the answer to a revoke.
type Revocation = api.RevokeResponse

// Page is one page of a listing.
type Page[T any] = api.Page[T]

// KeyPolicy is a key's scope, rate limit and idempotency scope;
// ScopeFields its scope (also an issuer token's ceilings).
type (
	KeyPolicy   = api.KeyPolicy
	ScopeFields = api.ScopeFields
)

// IssueParams describes a key to issue. Dollar amounts are decimal strings
// ("500", "49.99"); ExpiresIn is a duration such as "30m" or "2h".
type IssueParams struct {
	Vendor           string            `json:"vendor"`
	DailyUSDCap      string            `json:"daily_usd_cap"`
	AllowedEndpoints []string          `json:"allowed_endpoints"`
	ExpiresIn        string            `json:"expires_in"`
	AgentRunLabel    string            `json:"agent_run_label,omitempty"`
	AgentName        string            `json:"agent_name,omitempty"`
	TotalUSDCap      string            `json:"total_usd_cap,omitempty"`
	MaxUSDPerCall    string            `json:"max_usd_per_call,omitempty"`
	Metadata         map[string]string `json:"metadata,omitempty"`

	// AlertThresholds: nil takes the server's default ([50, 80, 100]);
	// a pointer to an empty list turns the alerts off.
	AlertThresholds *[]int `json:"alert_thresholds,omitempty"`

	// Scope fields, max_calls_per_minute and idempotency_scope (see
	// api.KeyPolicy).
	api.KeyPolicy
}

// IssueKey creates a vault key. The secret is in the answer's VaultKey and
// is never shown again — except to a retry with the same IdempotencyKey
// option, which gets the same answer instead of a second key.
func (c *Client) IssueKey(ctx context.Context, p IssueParams, opts ...Option) (*Key, error) {
	var k Key
	return &k, c.do(ctx, http.MethodPost, "/vault/keys", nil, p, &k, opts...)
}

// GetKey returns a key's policy, status and usage.
func (c *Client) GetKey(ctx context.Context, keyID string) (*Key, error) {
	var k Key
	return &k, c.do(ctx, http.MethodGet, "/vault/keys/"+url.PathEscape(keyID), nil, nil, &k)
}

// ListKeysParams filters a key listing.
type ListKeysParams struct {
	AgentRunLabel string
	Status        string
	Limit         int
	Cursor        string
}

// ListKeys lists keys, newest first.
func (c *Client) ListKeys(ctx context.Context, p ListKeysParams) (*Page[Key], error) {
	q := url.Values{}
	set(q, "agent_run_label", p.AgentRunLabel)
	set(q, "status", p.Status)
	set(q, "cursor", p.Cursor)
	if p.Limit > 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	var page Page[Key]
	return &page, c.do(ctx, http.MethodGet, "/vault/keys", q, nil, &page)
}

// RevokeKey revokes a key; the very next proxied call with it is refused.
// Revoking a revoked key answers the same again.
func (c *Client) RevokeKey(ctx context.Context, keyID string) (*Revocation, error) {
	var r Revocation
	return &r, c.do(ctx, http.MethodDelete, "/vault/keys/"+url.PathEscape(keyID), nil, nil, &r)
}

// ListCallsParams filters the audit log.
type ListCallsParams struct {
	KeyID         string
	AgentRunLabel string
	Outcome       string
	Limit         int
	Cursor        string

	// Since and Until bound the audit time: RFC 3339 or YYYY-MM-DD.
	Since, Until string
}

// ListCalls reads audit rows, newest first.
func (c *Client) ListCalls(ctx context.Context, p ListCallsParams) (*Page[Call], error) {
	q := url.Values{}
	set(q, "key_id", p.KeyID)
	set(q, "agent_run_label", p.AgentRunLabel)
	set(q, "outcome", p.Outcome)
	set(q, "cursor", p.Cursor)
	set(q, "since", p.Since)
	set(q, "until", p.Until)
	if p.Limit > 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	var page Page[Call]
	return &page, c.do(ctx, http.MethodGet, "/vault/calls", q, nil, &page)
}

// RunSummary reports one agent_run_label (a Step Functions execution ARN).
func (c *Client) RunSummary(ctx context.Context, label string) (*RunSummary, error) {
	var s RunSummary
	return &s, c.do(ctx, http.MethodGet, "/vault/runs/"+url.PathEscape(label), nil, nil, &s)
}

func set(q url.Values, k, v string) {
	if v != "" {
		q.Set(k, v)
	}
}

func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any, opts ...Option) error {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return &Error{Message: fmt.Sprintf("bad request URL %q: %v", u, err)}
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if o.idempotencyKey != "" {
		req.Header.Set("Idempotency-Key", o.idempotencyKey)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return &Error{Message: fmt.Sprintf("cannot reach Keybrake at %s: %v", c.base, err)}
	}
	defer resp.Body.Close()
	if o.replayed != nil {
		*o.replayed = resp.Header.Get(api.ReplayedHeader) == "true"
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return &Error{Status: resp.StatusCode, Message: fmt.Sprintf("reading the answer: %v", err)}
	}
	if resp.StatusCode >= 300 {
		return errorFrom(resp.StatusCode, data)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return &Error{Status: resp.StatusCode, Message: fmt.Sprintf("decoding the answer: %v", err)}
	}
	return nil
}

// errorFrom reads an API refusal.
func errorFrom(status int, data []byte) *Error {
	e := &Error{Status: status}
	var eb struct {
		Code    keybrake.Code `json:"code"`
		Message string        `json:"message"`
		Field   string        `json:"field"`
	}
	if json.Unmarshal(data, &eb) == nil && eb.Code != "" {
		e.Code, e.Message, e.Field = eb.Code, eb.Message, eb.Field
	} else {
		e.Message = fmt.Sprintf("HTTP %d: %s", status, strings.TrimSpace(string(data)))
	}
	return e
}

// Token is an issuer token as the API shows it; Token (the secret) is set
// only when created.
type Token = api.Token

// TokenParams describes a scoped issuer token: the ceilings of every key it
// may issue. Dollar amounts are decimal strings; MaxExpiresIn a duration.
type TokenParams struct {
	Name         string   `json:"name"`
	MaxDailyUSD  string   `json:"max_daily_usd_cap"`
	MaxTotalUSD  string   `json:"max_total_usd_cap,omitempty"`
	Vendors      []string `json:"vendors"`
	Endpoints    []string `json:"endpoints"`
	MaxExpiresIn string   `json:"max_expires_in"`
	// MaxOutstandingUSD bounds the sum of the daily caps of the token's
	// active keys.
	MaxOutstandingUSD string `json:"max_outstanding_usd,omitempty"`
	// Ceilings on the scope of the keys it issues.
	api.ScopeFields
}

// CreateToken creates an issuer token (admin token only). The secret is in
// the answer's Token and is never shown again.
func (c *Client) CreateToken(ctx context.Context, p TokenParams, opts ...Option) (*Token, error) {
	var t Token
	return &t, c.do(ctx, http.MethodPost, "/vault/tokens", nil, p, &t, opts...)
}

// ListTokens lists issuer tokens (admin token only).
func (c *Client) ListTokens(ctx context.Context) (*Page[Token], error) {
	var page Page[Token]
	return &page, c.do(ctx, http.MethodGet, "/vault/tokens", nil, nil, &page)
}

// RevokeToken revokes an issuer token; its next request is refused. Keys it
// issued keep working until they expire or are revoked.
func (c *Client) RevokeToken(ctx context.Context, tokenID string) (*Token, error) {
	var t Token
	return &t, c.do(ctx, http.MethodDelete, "/vault/tokens/"+url.PathEscape(tokenID), nil, nil, &t)
}

// Option adjusts one request: IdempotencyKey, Replayed.
type Option func(*options)

type options struct {
	idempotencyKey string
	replayed       *bool
}

// IdempotencyKey sends key as the request's Idempotency-Key (IssueKey,
// CreateToken). A retry with the same key and the same parameters, within
// 24 hours, gets the first answer back — the same key_id and secret —
// instead of creating a second key; the same key with other parameters is
// refused (idempotency_key_reused). Derive it from what identifies the
// step: a Step Functions execution and state, an SQS message id, a
// Temporal workflow and activity.
func IdempotencyKey(key string) Option {
	return func(o *options) { o.idempotencyKey = key }
}

// Replayed reports in *b whether the answer was replayed for a retried
// Idempotency-Key rather than made now.
func Replayed(b *bool) Option {
	return func(o *options) { o.replayed = b }
}

// OpenAPI returns the admin API's contract (OpenAPI 3.1, JSON), as the
// server was built with it: what code generators and validators read.
func (c *Client) OpenAPI(ctx context.Context) (json.RawMessage, error) {
	var doc json.RawMessage
	err := c.do(ctx, http.MethodGet, "/vault/openapi.json", nil, nil, &doc)
	return doc, err
}

// Health is GET /healthz; a store that does not answer is an *Error with
// Status 503 and Code store_unavailable.
func (c *Client) Health(ctx context.Context) (*api.Health, error) {
	var h api.Health
	return &h, c.do(ctx, http.MethodGet, "/healthz", nil, nil, &h)
}
