-- +goose Up
-- The same ledger as store/sqlite/migrations/00001_ledger.sql, in
-- PostgreSQL types. Money is BIGINT micro-dollars; times are BIGINT Unix
-- microseconds (UTC), taken from the database's clock, so every replica
-- agrees on expiry and on the calendar day.
CREATE TABLE keys (
    id              TEXT PRIMARY KEY,
    secret_hash     TEXT NOT NULL UNIQUE,
    vendor          TEXT NOT NULL,
    daily_cap       BIGINT NOT NULL CHECK (daily_cap > 0),
    total_cap       BIGINT NOT NULL DEFAULT 0 CHECK (total_cap >= 0),
    max_per_call    BIGINT NOT NULL DEFAULT 0 CHECK (max_per_call >= 0),
    rules           TEXT NOT NULL,
    agent_run_label TEXT NOT NULL DEFAULT '',
    agent_name      TEXT NOT NULL DEFAULT '',
    metadata        TEXT NOT NULL DEFAULT '{}',
    issuer_id       TEXT NOT NULL DEFAULT '',
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    revoked_at      BIGINT,
    spent           BIGINT NOT NULL DEFAULT 0,
    reserved        BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    calls           BIGINT NOT NULL DEFAULT 0,
    denied_calls    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX keys_by_label ON keys (agent_run_label, created_at);
CREATE INDEX keys_by_created ON keys (created_at, id);
CREATE INDEX keys_by_issuer ON keys (issuer_id, created_at);

-- Per-UTC-day counters for the daily cap. A reservation counts against the
-- day it was made, and its settlement adjusts that same day.
CREATE TABLE key_days (
    key_id   TEXT NOT NULL REFERENCES keys (id),
    day      TEXT NOT NULL,
    spent    BIGINT NOT NULL DEFAULT 0,
    reserved BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    PRIMARY KEY (key_id, day)
);

-- The audit log, one row per proxied request. A pending row is a live
-- reservation of `estimated`; every other row counts `actual` as spend.
CREATE TABLE calls (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at                BIGINT NOT NULL,
    key_id            TEXT,
    agent_run_label   TEXT NOT NULL DEFAULT '',
    vendor            TEXT NOT NULL DEFAULT '',
    method            TEXT NOT NULL DEFAULT '',
    path              TEXT NOT NULL DEFAULT '',
    rule              TEXT NOT NULL DEFAULT '',
    outcome           TEXT NOT NULL,
    code              TEXT NOT NULL DEFAULT '',
    status            INTEGER NOT NULL DEFAULT 0,
    estimated         BIGINT NOT NULL DEFAULT 0,
    actual            BIGINT NOT NULL DEFAULT 0,
    day               TEXT NOT NULL,
    object_id         TEXT,
    idempotency_key   TEXT NOT NULL DEFAULT '',
    item              TEXT NOT NULL DEFAULT '',
    vendor_request_id TEXT,
    latency_ms        BIGINT,
    retry_of          BIGINT,
    instance          TEXT NOT NULL DEFAULT '',
    settled_at        BIGINT
);
CREATE INDEX calls_by_key ON calls (key_id, id);
CREATE INDEX calls_by_label ON calls (agent_run_label, id);
CREATE INDEX calls_by_outcome ON calls (outcome, id);

-- Idempotency records: (key, Idempotency-Key) → the call holding the
-- reservation and, once answered, the stored response for replays.
CREATE TABLE idempotency (
    key_id      TEXT NOT NULL REFERENCES keys (id),
    idem_key    TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    call_id     BIGINT NOT NULL,
    state       TEXT NOT NULL,
    status      INTEGER,
    header      TEXT,
    body        BYTEA,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (key_id, idem_key)
);
CREATE INDEX idempotency_by_expiry ON idempotency (expires_at);

-- +goose Down
DROP TABLE idempotency;
DROP TABLE calls;
DROP TABLE key_days;
DROP TABLE keys;
