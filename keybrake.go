// Package keybrake holds Keybrake's domain: vault keys and their policies,
// exact money, the allow-list rules, the canonical-path check, audit rows
// and the contracts between the proxy, the vendors and the ledger. It does no
// I/O; the proxy, admin, store and vendors packages build on it.
package keybrake

import (
	"time"
)

// KeyStatus is the lifecycle state of a vault key, decided by the store's
// clock.
type KeyStatus string

const (
	StatusActive  KeyStatus = "active"
	StatusRevoked KeyStatus = "revoked"
	StatusExpired KeyStatus = "expired"
)

// Key is a vault key's policy. Everything but RevokedAt is fixed at issue,
// which is what lets the proxy cache a policy safely: status is re-read in
// the reservation transaction of every call.
type Key struct {
	ID            string            `json:"key_id"`
	Vendor        string            `json:"vendor"`
	DailyCap      Micros            `json:"daily_usd_cap"`
	TotalCap      Micros            `json:"total_usd_cap,omitempty"`    // 0: no lifetime cap
	MaxPerCall    Micros            `json:"max_usd_per_call,omitempty"` // 0: no per-call cap
	Rules         Rules             `json:"-"`
	AgentRunLabel string            `json:"agent_run_label"`
	AgentName     string            `json:"agent_name,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	IssuerID      string            `json:"issuer_id,omitempty"` // the issuer token that created it; empty for the admin token
	CreatedAt     time.Time         `json:"created_at"`
	ExpiresAt     time.Time         `json:"expires_at"`
	RevokedAt     *time.Time        `json:"revoked_at,omitempty"`

	// AlertThresholds are percents of the daily cap at which a
	// key.spend_threshold event fires (see NormalizeThresholds); none: off.
	AlertThresholds []int `json:"alert_thresholds"`

	// Scope confines the key to named accounts, customers, senders or
	// domains (see Scope); nil restricts nothing.
	Scope Scope `json:"-"`
	// MaxCallsPerMinute, when set, bounds the calls the key forwards in
	// any 60 seconds, decided in the decision's transaction (rate_limited).
	MaxCallsPerMinute int `json:"max_calls_per_minute,omitempty"`
	// IdempotencyScope, when set, makes the key share its vendor
	// Idempotency-Key namespace with the other keys its issuer gave the
	// same scope (see IdempotencyNamespace).
	IdempotencyScope string `json:"idempotency_scope,omitempty"`
}

// StatusAt is the key's status at the given instant.
func (k *Key) StatusAt(now time.Time) KeyStatus {
	switch {
	case k.RevokedAt != nil:
		return StatusRevoked
	case !now.Before(k.ExpiresAt):
		return StatusExpired
	default:
		return StatusActive
	}
}

// Usage is what a key has spent and holds reserved. Spent includes calls of
// unknown outcome, counted at their estimate: never under-count.
type Usage struct {
	Spent         Micros `json:"spent_usd"`
	SpentToday    Micros `json:"spent_today_usd"`
	Reserved      Micros `json:"reserved_usd"`
	ReservedToday Micros `json:"-"`
	// Calls counts the allowed calls (forwarded or replayed), DeniedCalls
	// the refused ones; the API shows their sum as calls and this as
	// allowed_calls.
	Calls       int64 `json:"allowed_calls"`
	DeniedCalls int64 `json:"denied_calls"`
}

// Remaining is how much more the key may reserve now: the tighter of the
// daily and lifetime headroom, never negative.
func (k *Key) Remaining(u Usage) Micros {
	rem := k.DailyCap - u.SpentToday - u.ReservedToday
	if k.TotalCap > 0 {
		if t := k.TotalCap - u.Spent - u.Reserved; t < rem {
			rem = t
		}
	}
	if rem < 0 {
		return 0
	}
	return rem
}

// KeyView is a key as the admin API shows it: policy, status and usage.
type KeyView struct {
	Key
	Status KeyStatus
	Usage  Usage
}

// Outcome is what happened to one proxied request.
type Outcome string

const (
	// OutcomePending: reserved and sent; the vendor has not answered yet.
	OutcomePending Outcome = "pending"
	// OutcomeForwarded: the vendor answered; 2xx settled at the actual
	// cost, any other definite answer released the reservation.
	OutcomeForwarded Outcome = "forwarded"
	// OutcomeUnknown: 5xx, timeout, broken connection or a crash; the
	// estimate stays counted as spend.
	OutcomeUnknown Outcome = "unknown"
	// OutcomeUnknownRetried: was unknown; a retry with the same
	// Idempotency-Key took over its reservation (see RetryOf on the retry).
	OutcomeUnknownRetried Outcome = "unknown_retried"
	// OutcomeReplayed: answered from the stored response of an earlier
	// call with the same Idempotency-Key; the vendor was not called.
	OutcomeReplayed Outcome = "replayed"
)

// DeniedOutcome is the outcome of a request refused with code.
func DeniedOutcome(code Code) Outcome { return Outcome("denied_" + string(code)) }

// IsDenied reports whether the outcome is a denial.
func (o Outcome) IsDenied() bool { return len(o) > 7 && o[:7] == "denied_" }

// Call is one audit row: one proxied request, allowed or denied. It holds
// no bodies and no secrets.
type Call struct {
	ID              int64         `json:"id"`
	Time            time.Time     `json:"time"`
	KeyID           string        `json:"key_id,omitempty"`
	AgentRunLabel   string        `json:"agent_run_label,omitempty"`
	Vendor          string        `json:"vendor,omitempty"`
	Method          string        `json:"method"`
	Path            string        `json:"path"`
	Rule            string        `json:"matched_rule,omitempty"`
	Operation       string        `json:"operation,omitempty"`
	Outcome         Outcome       `json:"outcome"`
	Code            Code          `json:"code,omitempty"`
	Status          int           `json:"http_status"`
	Estimated       Micros        `json:"estimated_usd"`
	Actual          Micros        `json:"actual_usd"`
	ObjectID        string        `json:"object_id,omitempty"`
	IdempotencyKey  string        `json:"idempotency_key,omitempty"`
	Item            string        `json:"item,omitempty"`
	VendorRequestID string        `json:"vendor_request_id,omitempty"`
	Latency         time.Duration `json:"-"`
	RetryOf         int64         `json:"retry_of,omitempty"`
}

// RunSummary is the per-run spend report: everything Keybrake knows about
// one agent_run_label (a Step Functions execution ARN, say).
type RunSummary struct {
	AgentRunLabel string          `json:"agent_run_label"`
	Keys          []RunKey        `json:"keys"`
	Calls         int64           `json:"calls"`
	Allowed       int64           `json:"allowed_calls"`
	Denied        int64           `json:"denied_calls"`
	Unknown       int64           `json:"unknown_calls"`
	Spent         Micros          `json:"spent_usd"`
	Reserved      Micros          `json:"reserved_usd"`
	ByEndpoint    []EndpointSpend `json:"by_endpoint"`
	DeniedByCode  map[Code]int64  `json:"denied_by_code"`
	FirstCall     *time.Time      `json:"first_call_at"`
	LastCall      *time.Time      `json:"last_call_at"`

	// DeniedUSD is what the refused calls asked for (their estimates).
	DeniedUSD Micros `json:"denied_usd"`
}

// RunKey is one key of a run summary.
type RunKey struct {
	ID     string    `json:"key_id"`
	Vendor string    `json:"vendor"`
	Status KeyStatus `json:"status"`
	Spent  Micros    `json:"spent_usd"`
}

// EndpointSpend is spend grouped by vendor and matched rule.
type EndpointSpend struct {
	Vendor   string `json:"vendor"`
	Endpoint string `json:"endpoint"`
	Calls    int64  `json:"calls"`
	Spent    Micros `json:"spent_usd"`
}
