/**
 * All wallet SQL in one place. Each function is one statement; transactions are opened by the wallet
 * service, which holds the wallet row lock for as few round trips as possible.
 */
import type { Sql, TransactionSql } from "./client.ts";
import type { OutboxEntry, Wallet, WalletTransaction } from "../wallet/wallet_rules.ts";

/** Number of outbox shards; relays lock shards, so this bounds how many relays can work side by side. */
export const OUTBOX_SHARDS = 16;

/** The outbox shard of a wallet: a stable hash of its id. */
export function outboxShard(walletId: string): number {
  return parseInt(walletId.slice(0, 4), 16) % OUTBOX_SHARDS;
}

type Queryable = Sql | TransactionSql;

interface WalletRow {
  id: string;
  customer_xid: string;
  status: "enabled" | "disabled";
  balance: string;
  version: string;
  enabled_at: Date | null;
  disabled_at: Date | null;
}

interface TransactionRow {
  seq: string;
  id: string;
  wallet_id: string;
  type: "deposit" | "withdrawal";
  status: "success" | "failed";
  amount: string;
  reference_id: string;
  balance_after: string;
  created_at: Date;
}

function toWallet(row: WalletRow): Wallet {
  return {
    id: row.id,
    customerXid: row.customer_xid,
    status: row.status,
    balance: BigInt(row.balance),
    version: BigInt(row.version),
    enabledAt: row.enabled_at,
    disabledAt: row.disabled_at,
  };
}

function toTransaction(row: TransactionRow): WalletTransaction {
  return {
    id: row.id,
    walletId: row.wallet_id,
    type: row.type,
    status: row.status,
    amount: BigInt(row.amount),
    referenceId: row.reference_id,
    balanceAfter: BigInt(row.balance_after),
    createdAt: row.created_at,
  };
}

/** Create the wallet of a customer, or return the existing one (one statement, race-free). */
export async function upsertWalletForCustomer(sql: Queryable, customerXid: string): Promise<Wallet> {
  const rows = await sql<WalletRow[]>`
    INSERT INTO wallets (id, customer_xid) VALUES (${crypto.randomUUID()}, ${customerXid})
    ON CONFLICT (customer_xid) DO UPDATE SET customer_xid = EXCLUDED.customer_xid
    RETURNING id, customer_xid, status, balance, version, enabled_at, disabled_at`;
  return toWallet(rows[0]);
}

/** Read a wallet without locking it. */
export async function findWallet(sql: Queryable, walletId: string): Promise<Wallet | null> {
  const rows = await sql<WalletRow[]>`
    SELECT id, customer_xid, status, balance, version, enabled_at, disabled_at FROM wallets WHERE id = ${walletId}`;
  return rows.length ? toWallet(rows[0]) : null;
}

/** Lock a wallet row for the rest of the transaction and read it. */
export async function lockWallet(tx: TransactionSql, walletId: string): Promise<Wallet | null> {
  const rows = await tx<WalletRow[]>`
    SELECT id, customer_xid, status, balance, version, enabled_at, disabled_at
    FROM wallets WHERE id = ${walletId} FOR UPDATE`;
  return rows.length ? toWallet(rows[0]) : null;
}

/** Transactions of a wallet already recorded under any of these reference ids. */
export async function findTransactionsByReference(
  sql: Queryable,
  walletId: string,
  referenceIds: string[],
): Promise<Map<string, WalletTransaction>> {
  const rows = await sql<TransactionRow[]>`
    SELECT seq, id, wallet_id, type, status, amount, reference_id, balance_after, created_at
    FROM wallet_transactions WHERE wallet_id = ${walletId} AND reference_id = ANY(${referenceIds}::text[])`;
  return new Map(rows.map((row) => [row.reference_id, toTransaction(row)]));
}

/**
 * Write a decided change in ONE statement: the wallet's new state, its new transactions and their outbox
 * rows. Called inside the transaction that holds the wallet lock, so it is one round trip under the lock.
 */
export async function writeWalletChange(
  tx: TransactionSql,
  change: { wallet: Wallet; transactions: WalletTransaction[]; outbox: OutboxEntry[] },
): Promise<void> {
  const { wallet, transactions: txs, outbox } = change;
  const shard = outboxShard(wallet.id);
  await tx`
    WITH updated AS (
      UPDATE wallets SET status = ${wallet.status}, balance = ${wallet.balance.toString()}::bigint,
        version = ${wallet.version.toString()}::bigint, enabled_at = ${wallet.enabledAt},
        disabled_at = ${wallet.disabledAt}, updated_at = now()
      WHERE id = ${wallet.id}
    ), recorded AS (
      INSERT INTO wallet_transactions (id, wallet_id, type, status, amount, reference_id, balance_after, created_at)
      SELECT t.id, ${wallet.id}, t.type, t.status, t.amount, t.reference_id, t.balance_after, t.created_at
      FROM unnest(
        ${txs.map((t) => t.id)}::uuid[], ${txs.map((t) => t.type)}::text[], ${
    txs.map((t) => t.status)
  }::text[],
        ${txs.map((t) => t.amount.toString())}::bigint[], ${txs.map((t) => t.referenceId)}::text[],
        ${txs.map((t) => t.balanceAfter.toString())}::bigint[], ${
    txs.map((t) => t.createdAt.toISOString())
  }::timestamptz[]
      ) AS t(id, type, status, amount, reference_id, balance_after, created_at)
    )
    INSERT INTO outbox (event_id, wallet_id, shard, wallet_version, event_type, payload)
    SELECT o.event_id, ${wallet.id}, ${shard}, o.wallet_version, o.event_type, o.payload::json
    FROM unnest(
      ${outbox.map((o) => o.eventId)}::uuid[], ${outbox.map((o) => o.version.toString())}::bigint[],
      ${outbox.map((o) => o.type)}::text[], ${outbox.map((o) => JSON.stringify(o.payload))}::text[]
    ) AS o(event_id, wallet_version, event_type, payload)`;
}

/** A page of a wallet's history, oldest first, after the given sequence number. */
export async function listTransactions(
  sql: Queryable,
  walletId: string,
  page: { afterSeq: bigint; limit: number | null },
): Promise<{ transactions: WalletTransaction[]; lastSeq: bigint | null; hasMore: boolean }> {
  const fetch = page.limit === null ? null : page.limit + 1; // one extra row tells whether a next page exists
  const rows = await sql<TransactionRow[]>`
    SELECT seq, id, wallet_id, type, status, amount, reference_id, balance_after, created_at
    FROM wallet_transactions WHERE wallet_id = ${walletId} AND seq > ${page.afterSeq.toString()}::bigint
    ORDER BY seq ${fetch === null ? sql`` : sql`LIMIT ${fetch}`}`;
  const hasMore = page.limit !== null && rows.length > page.limit;
  const pageRows = hasMore ? rows.slice(0, page.limit!) : rows;
  return {
    transactions: pageRows.map(toTransaction),
    lastSeq: pageRows.length ? BigInt(pageRows[pageRows.length - 1].seq) : null,
    hasMore,
  };
}
