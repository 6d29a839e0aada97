package admin

// Idempotent issuance. POST /vault/keys and POST /vault/tokens honour
// Idempotency-Key: a retry with the same key and the same body, within the
// window (--idempotency-ttl, 24h), gets the same answer — the same key_id
// and the same secret — with Keybrake-Idempotent-Replayed: true, on any
// replica and after any restart, because the record is written in the
// store in the transaction that creates the key. The same key with another
// body is 409 idempotency_key_reused. Keys are scoped to the caller (the
// admin token, or each issuer token), so no issuer can replay another's
// answer, and nothing it sends can tell it whether another caller used the
// same key.
//
// The secret cannot be re-derived from its hash, so to replay it the
// record keeps it sealed for the window: AES-256-GCM under
// KEYBRAKE_SECRETS_KEY (the webhooks' Sealer), with the caller, the
// Idempotency-Key and the key id as associated data, so a sealed secret
// copied to another record does not open. It is never stored in
// plaintext; the sweep deletes records (and their sealed secrets) past the
// window.
//
// Why sealing and not deriving the secret, say as HMAC(server key, caller ‖
// Idempotency-Key): a derived secret is only as random as the server key,
// and its inputs are not secret (an Idempotency-Key built from
// $$.Execution.Id is in the execution history), so one leaked server key
// would yield every idempotently issued vault key, past and future,
// without touching the database. A sealed copy needs both the database and
// the key, lives only for the window, and the secret keeps its 256 random
// bits.
//
// Without KEYBRAKE_SECRETS_KEY, the claim is still recorded (without the
// secret): a retry never makes a second key, but it cannot be shown the
// first one's secret either, and is answered 409
// idempotency_replay_unavailable naming the key_id, so the caller can
// revoke it and issue again with a new Idempotency-Key. The same happens
// after the key is rotated, for records sealed under the old key: at most
// one window's worth.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/api"
)

// issueStore is what idempotent issuance needs of the store.
type issueStore interface {
	CreateKeyOnce(ctx context.Context, k *keybrake.Key, secretHash string, ttl time.Duration, c keybrake.IssueClaim) (*keybrake.Key, *keybrake.IssueRecord, error)
	CreateTokenOnce(ctx context.Context, t *keybrake.IssuerToken, secretHash string, c keybrake.IssueClaim) (*keybrake.IssuerToken, *keybrake.IssueRecord, error)
}

// replayedHeader marks an answer replayed for a retried Idempotency-Key,
// as on proxied calls.
const replayedHeader = api.ReplayedHeader

// issueClaim reads the request's Idempotency-Key into a claim for the
// resource about to be created with secret, or nil when there is none.
// route and req (the decoded body) fingerprint the request.
func (a *API) issueClaim(r *http.Request, route string, req any, resourceID, secret string) (*keybrake.IssueClaim, *keybrake.Error) {
	if _, sent := r.Header["Idempotency-Key"]; !sent {
		return nil, nil
	}
	key := r.Header.Get("Idempotency-Key")
	if e := keybrake.CheckIdempotencyKey(key); e != nil {
		return nil, e
	}
	// The decoded body, re-encoded: field order, spacing and map order do
	// not make two requests different; values do ("50" is not 50).
	body, err := json.Marshal(req)
	if err != nil {
		return nil, keybrake.Errorf(keybrake.CodeInternal, "request could not be fingerprinted")
	}
	sum := sha256.Sum256(append([]byte(route+"\n"), body...))
	c := &keybrake.IssueClaim{Caller: caller(r), Key: key, Fingerprint: hex.EncodeToString(sum[:]), TTL: a.cfg.IdempotencyTTL}
	if a.cfg.Sealer.Sealed() {
		if c.Secret, err = a.cfg.Sealer.Seal(sealedFor(c.Caller, key, resourceID), secret); err != nil {
			return nil, keybrake.Errorf(keybrake.CodeInternal, "the secret could not be sealed for replays")
		}
	}
	return c, nil
}

// caller scopes an Idempotency-Key: the admin token, or one issuer token.
func caller(r *http.Request) string {
	if issuer := who(r).issuer; issuer != nil {
		return issuer.ID
	}
	return "admin"
}

// sealedFor is the associated data a replayable secret is sealed with.
func sealedFor(caller, key, resourceID string) string {
	return "keybrake-issue\x00" + caller + "\x00" + key + "\x00" + resourceID
}

// replaySecret checks that prior answered the same request as c and opens
// the secret it kept; a refusal says why the first answer cannot be given.
func (a *API) replaySecret(c *keybrake.IssueClaim, prior *keybrake.IssueRecord, what string) (string, *keybrake.Error) {
	at := prior.CreatedAt.Format(time.RFC3339)
	if prior.Fingerprint != c.Fingerprint {
		return "", keybrake.Errorf(keybrake.CodeIdempotencyKeyReused,
			"Idempotency-Key %q was used at %s for a different request (it made %s); send a new Idempotency-Key for a new request",
			c.Key, at, prior.ResourceID)
	}
	if prior.Secret == "" {
		return "", keybrake.Errorf(keybrake.CodeReplayUnavailable,
			"Idempotency-Key %q already issued %s %s at %s, but its secret cannot be shown again: this Keybrake has no KEYBRAKE_SECRETS_KEY to keep it for replays. Revoke %s and issue again with a new Idempotency-Key",
			c.Key, what, prior.ResourceID, at, prior.ResourceID)
	}
	secret, err := a.cfg.Sealer.Open(sealedFor(c.Caller, c.Key, prior.ResourceID), prior.Secret)
	if err != nil {
		a.log.Warn("idempotent issuance: the kept secret does not open", "resource_id", prior.ResourceID, "err", err.Error())
		return "", keybrake.Errorf(keybrake.CodeReplayUnavailable,
			"Idempotency-Key %q already issued %s %s at %s, but its secret cannot be shown again: it was sealed under another KEYBRAKE_SECRETS_KEY. Revoke %s and issue again with a new Idempotency-Key",
			c.Key, what, prior.ResourceID, at, prior.ResourceID)
	}
	return secret, nil
}

// replayKey answers a retried POST /vault/keys with the first answer: the
// key as it was issued (status active), its secret, 201.
func (a *API) replayKey(w http.ResponseWriter, r *http.Request, c *keybrake.IssueClaim, prior *keybrake.IssueRecord) {
	secret, e := a.replaySecret(c, prior, "key")
	if e != nil {
		writeError(w, e)
		return
	}
	v, err := a.cfg.Store.GetKey(r.Context(), prior.ResourceID)
	if err != nil {
		a.storeError(w, "key "+prior.ResourceID, err)
		return
	}
	k := v.Key
	k.RevokedAt = nil // the answer it was
	out := keyJSON(&k, keybrake.StatusActive)
	out.AllowedOperations = a.grants(k.Vendor, k.Rules)
	out.VaultKey = secret
	a.log.Info("vault key issuance replayed", "key_id", k.ID, "caller", c.Caller)
	w.Header().Set(replayedHeader, "true")
	writeJSON(w, http.StatusCreated, out)
}

// replayToken answers a retried POST /vault/tokens with the first answer.
func (a *API) replayToken(w http.ResponseWriter, r *http.Request, c *keybrake.IssueClaim, prior *keybrake.IssueRecord) {
	secret, e := a.replaySecret(c, prior, "token")
	if e != nil {
		writeError(w, e)
		return
	}
	t, err := a.cfg.Store.GetToken(r.Context(), prior.ResourceID)
	if err != nil {
		a.storeError(w, "token "+prior.ResourceID, err)
		return
	}
	t.RevokedAt = nil
	out := tokenJSON(t)
	out.Token = secret
	a.log.Info("issuer token creation replayed", "token_id", t.ID)
	w.Header().Set(replayedHeader, "true")
	writeJSON(w, http.StatusCreated, out)
}

// storeKey stores a new key, under the request's Idempotency-Key when it
// has one. It answers the request itself — a replay, a refusal — when it
// returns false.
func (a *API) storeKey(w http.ResponseWriter, r *http.Request, req *IssueRequest, k *keybrake.Key, secret string, ttl time.Duration) (*keybrake.Key, bool) {
	claim, e := a.issueClaim(r, "POST /vault/keys", req, k.ID, secret)
	if e != nil {
		writeError(w, e)
		return nil, false
	}
	var created *keybrake.Key
	var prior *keybrake.IssueRecord
	var err error
	if claim == nil {
		created, err = a.cfg.Store.CreateKey(r.Context(), k, keybrake.HashSecret(secret), ttl)
	} else {
		created, prior, err = a.cfg.Store.CreateKeyOnce(r.Context(), k, keybrake.HashSecret(secret), ttl, *claim)
	}
	switch {
	case err != nil:
		a.storeError(w, "key", err)
		return nil, false
	case prior != nil:
		a.replayKey(w, r, claim, prior)
		return nil, false
	}
	return created, true
}

// storeToken is storeKey for issuer tokens.
func (a *API) storeToken(w http.ResponseWriter, r *http.Request, req *api.TokenRequest, t *keybrake.IssuerToken, secret string) (*keybrake.IssuerToken, bool) {
	claim, e := a.issueClaim(r, "POST /vault/tokens", req, t.ID, secret)
	if e != nil {
		writeError(w, e)
		return nil, false
	}
	var created *keybrake.IssuerToken
	var prior *keybrake.IssueRecord
	var err error
	if claim == nil {
		created, err = a.cfg.Store.CreateToken(r.Context(), t, keybrake.HashSecret(secret))
	} else {
		created, prior, err = a.cfg.Store.CreateTokenOnce(r.Context(), t, keybrake.HashSecret(secret), *claim)
	}
	switch {
	case err != nil:
		a.storeError(w, "token", err)
		return nil, false
	case prior != nil:
		a.replayToken(w, r, claim, prior)
		return nil, false
	}
	return created, true
}
