-- The transactional outbox: one row per committed change, written in the same transaction as the change.
CREATE TABLE outbox (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  event_id uuid NOT NULL UNIQUE,
  wallet_id uuid NOT NULL REFERENCES wallets (id),
  -- Relays split the work by shard (a hash of the wallet id) and hold a lock per shard, so one wallet's
  -- events are only ever published by one relay at a time, in order.
  shard smallint NOT NULL CHECK (shard >= 0),
  wallet_version bigint NOT NULL,
  event_type text NOT NULL,
  payload json NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  attempts integer NOT NULL DEFAULT 0,
  last_error text,
  sent_at timestamptz,
  CONSTRAINT outbox_wallet_version_unique UNIQUE (wallet_id, wallet_version)
);

-- What the relay scans: unsent rows in id order. Stays small because sent rows leave it.
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
-- What the retention cleanup scans.
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Rows that kept failing to publish, set aside after a bounded number of attempts so they never block
-- other wallets. Kept for an operator to inspect and replay.
CREATE TABLE outbox_dead_letter (
  id bigint PRIMARY KEY,
  event_id uuid NOT NULL UNIQUE,
  wallet_id uuid NOT NULL REFERENCES wallets (id),
  wallet_version bigint NOT NULL,
  event_type text NOT NULL,
  payload json NOT NULL,
  created_at timestamptz NOT NULL,
  attempts integer NOT NULL,
  last_error text,
  dead_at timestamptz NOT NULL DEFAULT now()
);
