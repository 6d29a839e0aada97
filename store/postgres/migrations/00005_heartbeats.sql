-- +goose Up
-- /healthz commits a write here, so a replica whose database still answers
-- reads but cannot commit reads as unhealthy instead of "ok". One row per
-- running replica (name: random per process); a clean shutdown deletes its
-- own, and a start clears rows a day old.
CREATE TABLE heartbeats (
    name TEXT PRIMARY KEY,
    at   BIGINT NOT NULL
);

-- Replica names held with --instance-id (store/postgres/instance.go). The
-- session advisory lock says who holds a name right now; this row says
-- whether its last holder may still be alive: holder is that process's
-- random token ('' once it released the name at a clean shutdown), and
-- beat grows at each of its heartbeats, every second, even while it cannot
-- take the lock again. A new process takes over a name only after it has
-- watched beat stand still for the lease.
CREATE TABLE instances (
    name         TEXT PRIMARY KEY,
    holder       TEXT NOT NULL DEFAULT '',
    beat         BIGINT NOT NULL DEFAULT 0,
    heartbeat_at BIGINT NOT NULL DEFAULT 0
);

-- +goose Down
DROP TABLE instances;
DROP TABLE heartbeats;
