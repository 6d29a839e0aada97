-- +goose Up
-- Replicas that route each key's ledger operations to one replica (the
-- key's owner, peer/): one row per running process with a peer listener,
-- rewritten every second with the database's clock. Replicas read the rows
-- seen in the last few seconds and agree on each key's owner by hashing
-- over them; a process that stops beating (killed, cut off from the
-- database) drops out of every replica's list within that window. A clean
-- shutdown deletes its own row; rows an hour old are swept.
CREATE TABLE peers (
    id      TEXT PRIMARY KEY,
    url     TEXT NOT NULL,
    seen_at INTEGER NOT NULL
);

-- +goose Down
DROP TABLE peers;
