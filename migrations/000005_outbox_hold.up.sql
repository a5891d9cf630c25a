-- The relay never skips a wallet's event. A row Kafka refuses is retried later (retry_at), and after
-- RELAY_MAX_ATTEMPTS refusals it is set aside (set_aside_at, retry_at = infinity) in the outbox itself: the
-- wallet's later rows stay behind it, unsent, until an operator retries or releases it (`deno task outbox`).
ALTER TABLE outbox ADD COLUMN retry_at timestamptz, ADD COLUMN set_aside_at timestamptz;

-- Rows that block their wallet: backing off or set aside. Usually empty, so the relay's "no blocked row
-- before this one" probe costs one lookup in an empty index.
CREATE INDEX outbox_blocked ON outbox (wallet_id, id) WHERE retry_at IS NOT NULL;

-- outbox_dead_letter now holds released rows: set aside, then given up by an operator (a gap accepted).
ALTER TABLE outbox_dead_letter ADD COLUMN released_at timestamptz;
