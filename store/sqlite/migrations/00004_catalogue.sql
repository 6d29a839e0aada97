-- +goose Up
-- The operation catalogue: each audit row names the operation a call
-- resolved to, and a call on an existing vendor object (a PaymentIntent it
-- updates, confirms or captures) carries that object's id from the decision
-- on. What a key has counted on one object is summed from its calls there,
-- inside the decision: hence the index.
ALTER TABLE calls ADD COLUMN operation TEXT NOT NULL DEFAULT '';
CREATE INDEX calls_by_object ON calls (key_id, object_id);

-- +goose Down
DROP INDEX calls_by_object;
ALTER TABLE calls DROP COLUMN operation;
