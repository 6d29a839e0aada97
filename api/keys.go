package api

import (
	"encoding/json"
	"time"

	"github.com/keybrake/keybrake"
)

// IssueRequest is the body of POST /vault/keys. Money fields and expires_in
// are kept raw: money is read from its literal text (never through a
// float), and expires_in may be "30m" or a number of seconds.
type IssueRequest struct {
	Vendor           string            `json:"vendor"`
	DailyUSDCap      json.RawMessage   `json:"daily_usd_cap"`
	AllowedEndpoints []string          `json:"allowed_endpoints"`
	ExpiresIn        json.RawMessage   `json:"expires_in"`
	AgentRunLabel    string            `json:"agent_run_label"`
	AgentName        string            `json:"agent_name"`
	TotalUSDCap      json.RawMessage   `json:"total_usd_cap"`
	MaxUSDPerCall    json.RawMessage   `json:"max_usd_per_call"`
	Metadata         map[string]string `json:"metadata"`

	AlertThresholds *[]int `json:"alert_thresholds"` // absent: the default; []: none

	KeyPolicy // scope, max_calls_per_minute, idempotency_scope
}

// Key is a key as the API shows it. VaultKey is set only in the answer to
// the POST that created it (and to its idempotent replays).
type Key struct {
	ID               string             `json:"key_id"`
	VaultKey         string             `json:"vault_key,omitempty"`
	Vendor           string             `json:"vendor"`
	Status           keybrake.KeyStatus `json:"status"`
	DailyUSDCap      keybrake.Micros    `json:"daily_usd_cap"`
	TotalUSDCap      *keybrake.Micros   `json:"total_usd_cap,omitempty"`
	MaxUSDPerCall    *keybrake.Micros   `json:"max_usd_per_call,omitempty"`
	AllowedEndpoints []string           `json:"allowed_endpoints"`
	AgentRunLabel    string             `json:"agent_run_label"`
	AgentName        string             `json:"agent_name,omitempty"`
	Metadata         map[string]string  `json:"metadata,omitempty"`
	IssuerID         string             `json:"issuer_id,omitempty"`
	CreatedAt        time.Time          `json:"created_at"`
	ExpiresAt        time.Time          `json:"expires_at"`
	RevokedAt        *time.Time         `json:"revoked_at,omitempty"`
	SpentUSD         *keybrake.Micros   `json:"spent_usd,omitempty"`
	SpentTodayUSD    *keybrake.Micros   `json:"spent_today_usd,omitempty"`
	ReservedUSD      *keybrake.Micros   `json:"reserved_usd,omitempty"`
	RemainingUSD     *keybrake.Micros   `json:"remaining_usd,omitempty"`
	// Calls counts every proxied request made with the key, allowed
	// (forwarded or replayed) and denied alike, as the reports do.
	Calls        *int64 `json:"calls,omitempty"`
	AllowedCalls *int64 `json:"allowed_calls,omitempty"`
	DeniedCalls  *int64 `json:"denied_calls,omitempty"`

	AlertThresholds []int `json:"alert_thresholds"`
	// AllowedOperations lists, for each allowed endpoint, the catalogue
	// operations it grants.
	AllowedOperations []RuleGrant `json:"allowed_operations,omitempty"`

	KeyPolicy // scope, max_calls_per_minute, idempotency_scope
}

// RevokeResponse is the answer to DELETE /vault/keys/{key_id}.
type RevokeResponse struct {
	ID        string             `json:"key_id"`
	Status    keybrake.KeyStatus `json:"status"`
	RevokedAt time.Time          `json:"revoked_at"`
}

// RuleGrant is what one allow-list rule grants: the catalogue operations it
// covers, each with its method, path and price model, so an orchestrator
// sees what it handed the agent.
type RuleGrant struct {
	Rule       string      `json:"rule"`
	Operations []Operation `json:"operations"`
}

// Operation is one catalogue operation as the admin API shows it.
type Operation struct {
	Operation  string              `json:"operation"`
	Method     string              `json:"method"`
	Path       string              `json:"path"`
	PriceModel keybrake.PriceModel `json:"price_model"`
}

// ScopeFields are the optional scope fields of a key, and the ceilings of
// an issuer token's keys (keybrake.Scope): absent restricts nothing (but
// see stripe_accounts), a list allows exactly those values. Each belongs to
// one vendor, which validates and enforces it.
type ScopeFields struct {
	StripeAccounts    []string `json:"stripe_accounts,omitempty"`
	StripeCustomers   []string `json:"stripe_customers,omitempty"`
	TwilioFrom        []string `json:"twilio_from,omitempty"`
	ResendFromDomains []string `json:"resend_from_domains,omitempty"`
}

// Fields names each scope field with its values (nil when absent).
func (f *ScopeFields) Fields() map[string][]string {
	return map[string][]string{
		"stripe_accounts": f.StripeAccounts, "stripe_customers": f.StripeCustomers,
		"twilio_from": f.TwilioFrom, "resend_from_domains": f.ResendFromDomains,
	}
}

// ScopeFieldsOf shows a scope in the API's shape.
func ScopeFieldsOf(s keybrake.Scope) ScopeFields {
	return ScopeFields{StripeAccounts: s["stripe_accounts"], StripeCustomers: s["stripe_customers"],
		TwilioFrom: s["twilio_from"], ResendFromDomains: s["resend_from_domains"]}
}

// KeyPolicy is a key's scope, a rate limit, and an idempotency scope
// shared with the issuer's other keys.
type KeyPolicy struct {
	ScopeFields
	// MaxCallsPerMinute bounds the calls the key forwards in any 60
	// seconds (429 rate_limited past it); absent or 0: no limit.
	MaxCallsPerMinute int `json:"max_calls_per_minute,omitempty"`
	// IdempotencyScope makes the keys one issuer gives the same scope share
	// their Idempotency-Keys at the vendor (an SQS message's redeliveries,
	// each with its own key); absent: every key its own.
	IdempotencyScope string `json:"idempotency_scope,omitempty"`
}

// TokenRequest is the body of POST /vault/tokens.
type TokenRequest struct {
	Name         string          `json:"name"`
	MaxDailyUSD  json.RawMessage `json:"max_daily_usd_cap"`
	MaxTotalUSD  json.RawMessage `json:"max_total_usd_cap"`
	Vendors      []string        `json:"vendors"`
	Endpoints    []string        `json:"endpoints"`
	MaxExpiresIn json.RawMessage `json:"max_expires_in"`
	// MaxOutstandingUSD bounds the sum of the daily caps of the token's
	// active keys; ScopeFields are ceilings on its keys' scope.
	MaxOutstandingUSD json.RawMessage `json:"max_outstanding_usd"`
	ScopeFields
}

// Token is an issuer token as the API shows it; Token (the secret) only in
// the answer to the POST that created it.
type Token struct {
	ID           string           `json:"token_id"`
	Token        string           `json:"token,omitempty"`
	Name         string           `json:"name"`
	Status       string           `json:"status"`
	MaxDailyUSD  keybrake.Micros  `json:"max_daily_usd_cap"`
	MaxTotalUSD  *keybrake.Micros `json:"max_total_usd_cap,omitempty"`
	Vendors      []string         `json:"vendors"`
	Endpoints    []string         `json:"endpoints"`
	MaxExpiresIn string           `json:"max_expires_in"`
	CreatedAt    time.Time        `json:"created_at"`
	RevokedAt    *time.Time       `json:"revoked_at,omitempty"`

	MaxOutstandingUSD *keybrake.Micros `json:"max_outstanding_usd,omitempty"`
	ScopeFields
}
