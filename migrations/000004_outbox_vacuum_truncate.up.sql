-- The outbox is a queue: it is often empty at its end, so every VACUUM (ours or autovacuum's) would try to
-- truncate it, which takes an ACCESS EXCLUSIVE lock on the table. Inserts of the write path and the relay's
-- reads queue behind that lock: measured as stalls of up to a second on the hot-wallet benchmark. The space
-- is reused anyway, so vacuum never truncates it.
ALTER TABLE outbox SET (vacuum_truncate = false);
