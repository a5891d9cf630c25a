-- pgbench baseline: the plain SQL of a deposit, one statement each (lock, update balance, insert
-- transaction, insert outbox row), on a random wallet of 1..:wallets (ids are md5('bench-' || n)::uuid).
-- Run: pgbench -n -M prepared -D wallets=1000 -f pgbench_plain.sql -c 32 -j 2 -T 20 <db>
\set n random(1, :wallets)
\set r random(1, 9000000000000000)
BEGIN;
SELECT balance + 100 AS bal, version + 1 AS ver FROM wallets WHERE id = md5('bench-' || :n::text)::uuid FOR UPDATE \gset
UPDATE wallets SET balance = :bal, version = :ver, updated_at = now() WHERE id = md5('bench-' || :n::text)::uuid;
INSERT INTO wallet_transactions (id, wallet_id, type, status, amount, reference_id, balance_after) VALUES (gen_random_uuid(), md5('bench-' || :n::text)::uuid, 'deposit', 'success', 100, 'pgb-' || :r::text, :bal);
INSERT INTO outbox (event_id, wallet_id, shard, wallet_version, event_type, payload) VALUES (gen_random_uuid(), md5('bench-' || :n::text)::uuid, :n::int % 16, :ver, 'deposit.succeeded', '{"schema_version": 1,"event_id": "6f1c2d3e-4b5a-4c6d-8e7f-901234567890","type": "deposit.succeeded","wallet_id": "0b6f7c1e-2d3a-4b5c-9d8e-7f6a5b4c3d2e","customer_xid": "bench-1","version": 2,"wallet_status": "enabled","enabled_at": "2026-01-01T00:00:00.000Z","disabled_at": null,"balance": "101","transaction": {"id": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d","type": "deposit","status": "success","amount": "1","reference_id": "bench-run-deposit-t0-1","transacted_at": "2026-01-01T00:00:00.000Z"},"occurred_at": "2026-01-01T00:00:00.000Z"}');
COMMIT;
