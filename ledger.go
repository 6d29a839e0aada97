package keybrake

import (
	"net/http"
	"time"
)

// Attempt is everything the ledger needs to decide one proxied request in a
// single transaction: re-check the key's status and expiry, check the caps,
// reserve the estimate, claim the Idempotency-Key, and write the audit row.
type Attempt struct {
	KeyID  string // empty when the presented key was unknown or malformed
	Vendor string
	Method string
	Path   string
	Rule   string // matched rule, if any
	// Operation is the catalogue operation the call resolved to
	// ("payment_intents.confirm"), if any.
	Operation string
	Item      string // the client's Keybrake-Item header

	// Denial, when set, records a refusal decided before the ledger (bad
	// path, endpoint not allowed, unpriceable body). The key's own status
	// still takes precedence: a revoked key is reported as revoked.
	Denial *Error

	Estimate Micros
	// Step, when set, lets the ledger reserve less than Estimate to fit the
	// caps: Estimate − k·Step for the smallest k ≥ 0, but never below Floor
	// (a bounded call; Decision.Reserved says what was reserved).
	Step  Micros
	Floor Micros
	// ObjectID is the existing vendor object the call acts on, recorded on
	// its audit row from the decision on. With Exposure, Estimate is the
	// most that object can move after the call and the reservation is only
	// what the key has not counted on it yet: max(0, Estimate − counted),
	// counted being the sum of the key's calls on the object that were not
	// released, computed under the key's lock.
	ObjectID string
	Exposure bool

	// IdempotencyKey scopes a retry; Fingerprint is a hash of method, path
	// and body: the same key with another fingerprint is refused.
	IdempotencyKey string
	Fingerprint    string
	// VendorIdempotencyKey is what the vendor receives as Idempotency-Key
	// (see VendorIdempotencyKey); the claim stores it, so that a retry
	// after an unknown outcome re-sends exactly what the first attempt sent.
	VendorIdempotencyKey string
	// VendorDedupes: the vendor itself deduplicates on Idempotency-Key
	// (Stripe, Resend), so a retry after an unknown outcome may be
	// forwarded again. When false (Twilio) such a retry is refused with
	// outcome_unknown: forwarding it blindly is how a duplicate SMS happens.
	VendorDedupes bool
	// IdempotencyTTL is how long a claimed key and its stored response live.
	IdempotencyTTL time.Duration

	Instance string // the replica that will settle the call
}

// Decision is the ledger's answer to an Attempt.
type Decision struct {
	CallID  int64
	Allowed bool
	Err     *Error // the denial, when not Allowed and not a replay

	// Cap details, for cap_exhausted.
	CapName   string // "daily", "total" or "per_call"
	Cap       Micros
	Requested Micros

	// Reserved is what the call reserved (after exposure and flexible
	// reservation); the call is forwarded for exactly that.
	Reserved Micros

	Replay *StoredResponse // set when the answer is a stored response
	// RetryOf is set when this call took over the reservation of an earlier
	// attempt with the same Idempotency-Key whose outcome was unknown.
	RetryOf int64
	// VendorIdempotencyKey is the Idempotency-Key to send the vendor: the
	// attempt's own, or, for a retry that took over an unknown attempt, the
	// one that attempt sent.
	VendorIdempotencyKey string

	// RetryAfter, for rate_limited, is when the key may forward again.
	RetryAfter time.Duration

	Key    *Key // nil for an unknown key; its state and caps only (no Rules or Metadata)
	Status KeyStatus
	Usage  Usage // after this decision
}

// Settlement closes a pending call after the vendor answered (or did not).
type Settlement struct {
	CallID int64
	// KeyID is the call's key as its caller knows it. It is a hint, never
	// trusted: it lets a settlement join a batch that already holds that
	// key's row lock (store/sqlstore/join.go); the store reads the call's
	// real key and leaves the settlement for the next batch when they
	// differ. Empty: no hint.
	KeyID   string
	Outcome Outcome // OutcomeForwarded or OutcomeUnknown
	Status  int
	// Actual is the cost read from a 2xx response. It is ignored for other
	// statuses: a definite non-2xx releases the reservation, an unknown
	// outcome keeps the estimate as spend.
	Actual          Micros
	ObjectID        string
	VendorRequestID string
	Code            Code
	Latency         time.Duration
	// Response, when set, is stored for idempotent replays. Nil with an
	// Idempotency-Key means "too large to store": retries get
	// idempotency_replay_unavailable.
	Response *StoredResponse
	// ReleaseIdempotency: the vendor refused without acting (409, 429), so
	// the Idempotency-Key is freed for a fresh attempt.
	ReleaseIdempotency bool
	// ReconcileDue: a 2xx settled at the estimate because the answer did
	// not state the cost yet; the vendor's Reconciler may reprice it later.
	ReconcileDue bool
}

// StoredResponse is a vendor answer kept for idempotent replays: status,
// the vendor's content headers and the body, byte for byte.
type StoredResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// ReplayHeaders are the response headers kept for a replay. Hop-by-hop and
// per-connection headers are not replayed; Keybrake's own are recomputed.
var ReplayHeaders = []string{
	"Content-Type", "Content-Language", "Request-Id", "Idempotency-Key",
	"Stripe-Version", "Stripe-Account", "Twilio-Request-Id", "X-Request-Id",
	"Original-Request", "Stripe-Should-Retry",
}

// KeyFilter selects keys for a listing, newest first.
type KeyFilter struct {
	AgentRunLabel string
	Status        KeyStatus // empty: any
	IssuerID      string    // non-empty: only keys this issuer token created
	Limit         int
	Cursor        string

	// LabelContains keeps keys whose agent_run_label contains it, ignoring
	// case (the dashboard's label search).
	LabelContains string
	// SpendingToday keeps keys with spend or a reservation on the store's
	// current UTC day, whatever their status now.
	SpendingToday bool
}

// CallFilter selects audit rows, newest first.
type CallFilter struct {
	KeyID         string
	AgentRunLabel string
	Outcome       Outcome // empty: any
	Limit         int
	Cursor        string

	// Since and Until bound the audit time (Since <= at < Until); zero
	// values leave that side open.
	Since, Until time.Time
}

// Page bounds for listings.
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
)
