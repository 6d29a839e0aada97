package keybrake

import "time"

// IssueClaim is the Idempotency-Key of one issuance (POST /vault/keys or
// POST /vault/tokens). The store writes it in the transaction that creates
// the key or token, so a retry of the same request — on any replica, after
// any restart — finds the resource it created instead of creating a second
// one.
type IssueClaim struct {
	// Caller scopes the key: "admin" for the admin token, else the issuer
	// token's id, so one issuer can never replay another's answer.
	Caller string
	// Key is the Idempotency-Key, as sent.
	Key string
	// Fingerprint identifies the request (route and canonical body): the
	// same key with another fingerprint is idempotency_key_reused.
	Fingerprint string
	// Secret is the issued secret sealed for the replay window (see
	// admin/idempotency.go), or "" when it cannot be kept: a replay is then
	// refused as idempotency_replay_unavailable, never answered with a
	// second key. Never the secret in plaintext.
	Secret string
	// TTL is how long a retry replays; past it the key is free again.
	TTL time.Duration
}

// IssueRecord is what an earlier issuance with the same caller and
// Idempotency-Key left: the request it answered and the resource it made.
type IssueRecord struct {
	Fingerprint string
	ResourceID  string // the key_id or token_id
	Secret      string // as IssueClaim.Secret
	CreatedAt   time.Time
}

// CheckIdempotencyKey refuses an Idempotency-Key the proxy and the admin
// API would not accept: empty, longer than 255, or not printable ASCII.
func CheckIdempotencyKey(k string) *Error {
	if k == "" || len(k) > 255 {
		return Errorf(CodeInvalidIdempotencyKey, "Idempotency-Key must be 1 to 255 printable ASCII characters")
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return Errorf(CodeInvalidIdempotencyKey, "Idempotency-Key must be 1 to 255 printable ASCII characters")
		}
	}
	return nil
}
