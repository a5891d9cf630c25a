-- Sent rows leave the outbox instead of being updated in place. An UPDATE of sent_at writes a new tuple and
-- an entry in every index of the outbox; a DELETE only marks the row, and the copy kept for the retention
-- goes to a table whose sole index is a BRIN on the send time. The outbox stays small: only unsent rows.
CREATE TABLE outbox_sent (
  id bigint NOT NULL,
  event_id uuid NOT NULL,
  wallet_id uuid NOT NULL,
  wallet_version bigint NOT NULL,
  event_type text NOT NULL,
  payload json NOT NULL,
  created_at timestamptz NOT NULL,
  sent_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX outbox_sent_time ON outbox_sent USING brin (sent_at);

-- A wallet row is rewritten by every change: leave room on its page so the update stays HOT (no index
-- writes), and vacuum this small, hot table early.
ALTER TABLE wallets SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);

-- Rows marked sent under the old scheme move over once.
INSERT INTO outbox_sent (id, event_id, wallet_id, wallet_version, event_type, payload, created_at, sent_at)
SELECT id, event_id, wallet_id, wallet_version, event_type, payload, created_at, sent_at
FROM outbox WHERE sent_at IS NOT NULL;
DELETE FROM outbox WHERE sent_at IS NOT NULL;
DROP INDEX outbox_sent_at;

-- event_id is a random UUID made once per change; (wallet_id, wallet_version) stays the enforced identity.
ALTER TABLE outbox DROP CONSTRAINT outbox_event_id_key;
