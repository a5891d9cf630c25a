ALTER TABLE outbox RESET (vacuum_truncate);
