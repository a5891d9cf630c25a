ALTER TABLE outbox_dead_letter DROP COLUMN released_at;
DROP INDEX outbox_blocked;
ALTER TABLE outbox DROP COLUMN retry_at, DROP COLUMN set_aside_at;
