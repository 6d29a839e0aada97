-- +goose Up
-- /healthz commits a write here, so a store that still answers reads but
-- cannot commit (a full disk, a read-only file) reads as unhealthy instead
-- of "ok". One row per running store (name: random per process); a clean
-- shutdown deletes its own, and a start clears rows a day old.
CREATE TABLE heartbeats (
    name TEXT PRIMARY KEY,
    at   INTEGER NOT NULL
);

-- +goose Down
DROP TABLE heartbeats;
