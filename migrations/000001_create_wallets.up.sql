-- Wallets and their ledger. Money is stored as bigint minor units (cents): exact, and cheap to compare.
CREATE TABLE wallets (
  id uuid PRIMARY KEY,
  customer_xid text NOT NULL UNIQUE CHECK (char_length(customer_xid) BETWEEN 1 AND 64),
  status text NOT NULL DEFAULT 'disabled' CHECK (status IN ('enabled', 'disabled')),
  -- The floor and ceiling are enforced by the database too, not only by the rules.
  balance bigint NOT NULL DEFAULT 0 CHECK (balance BETWEEN 0 AND 999999999999999),
  -- Grows by one with every change (deposit, withdrawal, enable, disable): the event version.
  version bigint NOT NULL DEFAULT 0 CHECK (version >= 0),
  enabled_at timestamptz,
  disabled_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE wallet_transactions (
  -- seq orders a wallet's history: rows of one wallet are inserted under its row lock, so seq order is
  -- commit order within a wallet.
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id uuid NOT NULL UNIQUE,
  wallet_id uuid NOT NULL REFERENCES wallets (id),
  type text NOT NULL CHECK (type IN ('deposit', 'withdrawal')),
  status text NOT NULL CHECK (status IN ('success', 'failed')),
  amount bigint NOT NULL CHECK (amount BETWEEN 1 AND 100000000000000),
  reference_id text NOT NULL CHECK (char_length(reference_id) BETWEEN 1 AND 64),
  balance_after bigint NOT NULL CHECK (balance_after BETWEEN 0 AND 999999999999999),
  created_at timestamptz NOT NULL DEFAULT now(),
  -- The client's idempotency key: one reference_id makes at most one transaction per wallet.
  CONSTRAINT wallet_transactions_reference_unique UNIQUE (wallet_id, reference_id)
);

CREATE INDEX wallet_transactions_history ON wallet_transactions (wallet_id, seq);
