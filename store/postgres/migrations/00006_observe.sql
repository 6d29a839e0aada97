-- +goose Up
-- Alert thresholds of a key: a JSON list of percents of its daily cap at
-- which key.spend_threshold fires. Keys issued before this default to the
-- API's default.
ALTER TABLE keys ADD COLUMN alert_thresholds TEXT NOT NULL DEFAULT '[50,80,100]';
-- /metrics counts active keys from here without scanning every key ever issued.
CREATE INDEX keys_by_expiry ON keys (expires_at);
-- The reports read a window of audit time (runs, agents, anomalies) or of
-- days (daily). The daily index covers every column its report reads, and
-- in the order it groups by, so that report never touches the table; a
-- covering index on at measured no faster (the cost is the GROUP BY), so it
-- stays narrow and cheap to write.
CREATE INDEX calls_by_at ON calls (at);
CREATE INDEX calls_by_day ON calls (day, vendor, outcome, actual);

-- Which once-a-day alerts a key has raised: 'threshold:<percent>' and
-- 'cap_exhausted'. The primary key makes "once per key, alert and day" hold
-- across replicas.
CREATE TABLE key_alerts (
    key_id TEXT NOT NULL,
    day    TEXT NOT NULL,
    alert  TEXT NOT NULL,
    PRIMARY KEY (key_id, day, alert)
);
-- Runs that fired run.spend_anomaly (once per run).
CREATE TABLE run_alerts (
    agent_run_label TEXT PRIMARY KEY,
    fired_at        BIGINT NOT NULL
);

-- Webhook receivers. secret is the signing secret, sealed with
-- KEYBRAKE_SECRETS_KEY when one is configured ('v1:…'), else 'plain:…'.
CREATE TABLE webhooks (
    id          TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    events      TEXT NOT NULL,
    secret      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE TABLE webhook_subscriptions (
    event_type TEXT NOT NULL,
    webhook_id TEXT NOT NULL REFERENCES webhooks (id),
    PRIMARY KEY (event_type, webhook_id)
);

-- The outbox. An event is written in the same transaction as the decision
-- that caused it, with one delivery per subscribed webhook; body is the
-- exact JSON sent on every attempt.
CREATE TABLE events (
    id         TEXT PRIMARY KEY,
    type       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    body       TEXT NOT NULL
);
CREATE TABLE deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        TEXT NOT NULL REFERENCES events (id),
    webhook_id      TEXT NOT NULL REFERENCES webhooks (id),
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    lease_until     BIGINT NOT NULL DEFAULT 0,
    lease_owner     TEXT NOT NULL DEFAULT '',
    delivered_at    BIGINT,
    last_status     BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
CREATE INDEX deliveries_by_webhook ON deliveries (webhook_id, id);
CREATE TABLE delivery_attempts (
    delivery_id BIGINT NOT NULL REFERENCES deliveries (id),
    attempt     BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    status      BIGINT NOT NULL DEFAULT 0,
    error       TEXT NOT NULL DEFAULT '',
    duration_ms BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (delivery_id, attempt)
);

-- +goose Down
DROP TABLE delivery_attempts;
DROP TABLE deliveries;
DROP TABLE events;
DROP TABLE webhook_subscriptions;
DROP TABLE webhooks;
DROP TABLE run_alerts;
DROP TABLE key_alerts;
DROP INDEX calls_by_day;
DROP INDEX calls_by_at;
DROP INDEX keys_by_expiry;
ALTER TABLE keys DROP COLUMN alert_thresholds;
