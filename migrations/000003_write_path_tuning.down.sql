ALTER TABLE wallets RESET (fillfactor, autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold);
ALTER TABLE outbox ADD CONSTRAINT outbox_event_id_key UNIQUE (event_id);
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;
INSERT INTO outbox (id, event_id, wallet_id, shard, wallet_version, event_type, payload, created_at, sent_at)
OVERRIDING SYSTEM VALUE
SELECT s.id, s.event_id, s.wallet_id, 0, s.wallet_version, s.event_type, s.payload, s.created_at, s.sent_at
FROM outbox_sent s;
DROP TABLE outbox_sent;
