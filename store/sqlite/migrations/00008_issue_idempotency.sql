-- +goose Up
-- The Idempotency-Key of an issuance (POST /vault/keys, POST /vault/tokens),
-- written in the transaction that creates the key or token, so a retried
-- IssueVaultKey gets the key it already made, on any replica and after a
-- restart. caller is 'admin' or the issuer token's id: one issuer cannot
-- replay another's answer. fingerprint identifies the request (a different
-- one with the same key is idempotency_key_reused). secret is the issued
-- secret sealed with KEYBRAKE_SECRETS_KEY (AES-256-GCM, 'v1:…'), or '' when
-- no key is configured (a replay is then refused); never the secret in
-- plaintext. Rows past expires_at are swept.
CREATE TABLE issue_idempotency (
    caller      TEXT NOT NULL,
    idem_key    TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    secret      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (caller, idem_key)
);
CREATE INDEX issue_idempotency_by_expiry ON issue_idempotency (expires_at);

-- +goose Down
DROP TABLE issue_idempotency;
