-- +goose Up
-- A key's scope (JSON: field → allowed values, e.g. {"stripe_customers":
-- ["cus_1"]}; '{}' restricts nothing), its optional rate limit, and the
-- idempotency scope its issuer may share between keys (see
-- keybrake.Key.IdempotencyNamespace).
ALTER TABLE keys ADD COLUMN scope TEXT NOT NULL DEFAULT '{}';
ALTER TABLE keys ADD COLUMN max_calls_per_minute BIGINT NOT NULL DEFAULT 0 CHECK (max_calls_per_minute >= 0);
ALTER TABLE keys ADD COLUMN idempotency_scope TEXT NOT NULL DEFAULT '';
-- What an issuer token may mint in total (the sum of its active keys' daily
-- caps; 0: no bound), and the scope ceiling of its keys.
ALTER TABLE issuer_tokens ADD COLUMN max_outstanding_cap BIGINT NOT NULL DEFAULT 0 CHECK (max_outstanding_cap >= 0);
ALTER TABLE issuer_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT '{}';
-- The rate limit counts a key's calls of the last minute, inside its
-- decision; audit retention reads rows by age.
CREATE INDEX calls_by_key_at ON calls (key_id, at);
-- The Idempotency-Key the first attempt sent the vendor (namespaced to the
-- vault key), so a retry after an unknown outcome re-sends exactly it; ''
-- for a record made before: the client's key went as it was.
ALTER TABLE idempotency ADD COLUMN vendor_key TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE idempotency DROP COLUMN vendor_key;
DROP INDEX calls_by_key_at;
ALTER TABLE issuer_tokens DROP COLUMN scope;
ALTER TABLE issuer_tokens DROP COLUMN max_outstanding_cap;
ALTER TABLE keys DROP COLUMN idempotency_scope;
ALTER TABLE keys DROP COLUMN max_calls_per_minute;
ALTER TABLE keys DROP COLUMN scope;
