-- +goose Up
-- Scoped issuer tokens: admin-API credentials that can only issue (and
-- revoke, and read) keys within their ceilings. Stored hashed.
CREATE TABLE issuer_tokens (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    secret_hash    TEXT NOT NULL UNIQUE,
    max_daily_cap  INTEGER NOT NULL CHECK (max_daily_cap > 0),
    max_total_cap  INTEGER NOT NULL DEFAULT 0 CHECK (max_total_cap >= 0),
    vendors        TEXT NOT NULL,
    endpoints      TEXT NOT NULL,
    max_expires_in INTEGER NOT NULL CHECK (max_expires_in > 0),
    created_at     INTEGER NOT NULL,
    revoked_at     INTEGER
);

-- +goose Down
DROP TABLE issuer_tokens;
