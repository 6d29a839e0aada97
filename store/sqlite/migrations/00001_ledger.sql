-- +goose Up
-- Keys: policy fixed at issue, plus lifetime counters. Money is integer
-- micro-dollars; times are integer Unix microseconds (UTC).
CREATE TABLE keys (
    id              TEXT PRIMARY KEY,
    secret_hash     TEXT NOT NULL UNIQUE,
    vendor          TEXT NOT NULL,
    daily_cap       INTEGER NOT NULL CHECK (daily_cap > 0),
    total_cap       INTEGER NOT NULL DEFAULT 0 CHECK (total_cap >= 0),
    max_per_call    INTEGER NOT NULL DEFAULT 0 CHECK (max_per_call >= 0),
    rules           TEXT NOT NULL,
    agent_run_label TEXT NOT NULL DEFAULT '',
    agent_name      TEXT NOT NULL DEFAULT '',
    metadata        TEXT NOT NULL DEFAULT '{}',
    issuer_id       TEXT NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    revoked_at      INTEGER,
    spent           INTEGER NOT NULL DEFAULT 0,
    reserved        INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    calls           INTEGER NOT NULL DEFAULT 0,
    denied_calls    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX keys_by_label ON keys (agent_run_label, created_at);
CREATE INDEX keys_by_created ON keys (created_at, id);
CREATE INDEX keys_by_issuer ON keys (issuer_id, created_at);

-- Per-UTC-day counters for the daily cap. A reservation counts against the
-- day it was made, and its settlement adjusts that same day.
CREATE TABLE key_days (
    key_id   TEXT NOT NULL REFERENCES keys (id),
    day      TEXT NOT NULL,
    spent    INTEGER NOT NULL DEFAULT 0,
    reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    PRIMARY KEY (key_id, day)
);

-- The audit log, one row per proxied request. A pending row is a live
-- reservation of `estimated`; every other row counts `actual` as spend.
CREATE TABLE calls (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    at                INTEGER NOT NULL,
    key_id            TEXT,
    agent_run_label   TEXT NOT NULL DEFAULT '',
    vendor            TEXT NOT NULL DEFAULT '',
    method            TEXT NOT NULL DEFAULT '',
    path              TEXT NOT NULL DEFAULT '',
    rule              TEXT NOT NULL DEFAULT '',
    outcome           TEXT NOT NULL,
    code              TEXT NOT NULL DEFAULT '',
    status            INTEGER NOT NULL DEFAULT 0,
    estimated         INTEGER NOT NULL DEFAULT 0,
    actual            INTEGER NOT NULL DEFAULT 0,
    day               TEXT NOT NULL,
    object_id         TEXT,
    idempotency_key   TEXT NOT NULL DEFAULT '',
    item              TEXT NOT NULL DEFAULT '',
    vendor_request_id TEXT,
    latency_ms        INTEGER,
    retry_of          INTEGER,
    instance          TEXT NOT NULL DEFAULT '',
    settled_at        INTEGER
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
    call_id     INTEGER NOT NULL,
    state       TEXT NOT NULL,
    status      INTEGER,
    header      TEXT,
    body        BLOB,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (key_id, idem_key)
);
CREATE INDEX idempotency_by_expiry ON idempotency (expires_at);

-- +goose Down
DROP TABLE idempotency;
DROP TABLE calls;
DROP TABLE key_days;
DROP TABLE keys;
