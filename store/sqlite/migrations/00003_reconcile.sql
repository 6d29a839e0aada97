-- +goose Up
-- Calls whose vendor states the final cost only later (a Twilio message's
-- price): settled at the estimate with reconcile_state 'due', then repriced
-- by the optional reconciler ('done'), or left at the estimate ('gave_up').
ALTER TABLE calls ADD COLUMN reconcile_state TEXT NOT NULL DEFAULT '';
ALTER TABLE calls ADD COLUMN reconcile_attempts INTEGER NOT NULL DEFAULT 0;
CREATE INDEX calls_by_reconcile ON calls (reconcile_state, settled_at);

-- +goose Down
DROP INDEX calls_by_reconcile;
ALTER TABLE calls DROP COLUMN reconcile_attempts;
ALTER TABLE calls DROP COLUMN reconcile_state;
