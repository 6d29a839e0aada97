-- +goose Up
-- /healthz commits a write here, so a replica whose database still answers
-- reads but cannot commit reads as unhealthy instead of "ok". One row per
-- running replica (name: random per process); a clean shutdown deletes its
-- own, and a start clears rows a day old.
CREATE TABLE heartbeats (
    name TEXT PRIMARY KEY,
    at   BIGINT NOT NULL
);

-- +goose Down
DROP TABLE heartbeats;
