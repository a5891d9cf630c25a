/**
 * All wallet SQL in one place. Each function is one statement; transactions are opened by the wallet
 * service, which holds the wallet row lock for as few round trips as possible.
 */
import type { ReservedSql, Sql, TransactionSql, UnsentStatement } from "./client.ts";
import type { OutboxEntry, Wallet, WalletTransaction } from "../wallet/wallet_rules.ts";

/** Number of outbox shards; relays lock shards, so this bounds how many relays can work side by side. */
export const OUTBOX_SHARDS = 16;

/** The outbox shard of a wallet: a stable hash of its id. */
export function outboxShard(walletId: string): number {
  return parseInt(walletId.slice(0, 4), 16) % OUTBOX_SHARDS;
}

type Queryable = Sql | TransactionSql | ReservedSql;

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
  return (await lockWallets(tx, [walletId])).get(walletId) ?? null;
}

/**
 * Lock wallet rows for the rest of the transaction and read them. Rows are locked in id order, so batches
 * locking overlapping sets of wallets cannot deadlock.
 */
export async function lockWallets(
  tx: TransactionSql | ReservedSql,
  walletIds: string[],
): Promise<Map<string, Wallet>> {
  const rows = await tx<WalletRow[]>`
    SELECT id, customer_xid, status, balance, version, enabled_at, disabled_at
    FROM wallets WHERE id = ANY(${walletIds}::uuid[]) ORDER BY id FOR UPDATE`;
  return new Map(rows.map((row) => [row.id, toWallet(row)]));
}

/** Transactions already recorded under these (wallet, reference id) pairs: wallet id -> reference id -> row. */
export async function findTransactionsByReference(
  sql: Queryable,
  keys: Array<{ walletId: string; referenceId: string }>,
): Promise<Map<string, Map<string, WalletTransaction>>> {
  const found = new Map<string, Map<string, WalletTransaction>>();
  if (keys.length === 0) return found;
  const rows = await sql<TransactionRow[]>`
    SELECT t.seq, t.id, t.wallet_id, t.type, t.status, t.amount, t.reference_id, t.balance_after, t.created_at
    FROM unnest(${keys.map((k) => k.walletId)}::uuid[], ${keys.map((k) => k.referenceId)}::text[])
      AS k(wallet_id, reference_id)
    JOIN wallet_transactions t ON t.wallet_id = k.wallet_id AND t.reference_id = k.reference_id`;
  for (const row of rows) {
    let byReference = found.get(row.wallet_id);
    if (!byReference) found.set(row.wallet_id, byReference = new Map());
    byReference.set(row.reference_id, toTransaction(row));
  }
  return found;
}

/** A decided change of one wallet: its new state, its new transactions and their outbox rows. */
export interface WalletChange {
  wallet: Wallet;
  transactions: WalletTransaction[];
  outbox: OutboxEntry[];
}

/** Write one wallet's decided change (see writeWalletChanges). */
export async function writeWalletChange(tx: TransactionSql, change: WalletChange): Promise<void> {
  await writeWalletChanges(tx, [change])?.execute();
}

/**
 * Write decided changes of any number of wallets in ONE statement: the wallets' new state, their new
 * transactions and their outbox rows. Called inside the transaction that holds the wallet locks, so it is one
 * round trip under the locks whatever the batch size. Returned unsent (null when there is nothing to write),
 * so the caller can pipeline it with COMMIT.
 */
export function writeWalletChanges(
  tx: TransactionSql | ReservedSql,
  changes: WalletChange[],
): UnsentStatement | null {
  if (changes.length === 0) return null;
  const wallets = changes.map((c) => c.wallet);
  const txs = changes.flatMap((c) => c.transactions);
  const outbox = changes.flatMap((c) => c.outbox);
  return tx`
    WITH updated AS (
      UPDATE wallets SET status = w.status, balance = w.balance, version = w.version,
        enabled_at = w.enabled_at, disabled_at = w.disabled_at, updated_at = now()
      FROM unnest(
        ${wallets.map((w) => w.id)}::uuid[], ${wallets.map((w) => w.status)}::text[],
        ${wallets.map((w) => w.balance.toString())}::bigint[], ${
    wallets.map((w) => w.version.toString())
  }::bigint[],
        ${wallets.map((w) => w.enabledAt?.toISOString() ?? null)}::timestamptz[],
        ${wallets.map((w) => w.disabledAt?.toISOString() ?? null)}::timestamptz[]
      ) AS w(id, status, balance, version, enabled_at, disabled_at)
      WHERE wallets.id = w.id
    ), recorded AS (
      INSERT INTO wallet_transactions (id, wallet_id, type, status, amount, reference_id, balance_after, created_at)
      SELECT * FROM unnest(
        ${txs.map((t) => t.id)}::uuid[], ${txs.map((t) => t.walletId)}::uuid[], ${
    txs.map((t) => t.type)
  }::text[],
        ${txs.map((t) => t.status)}::text[], ${txs.map((t) => t.amount.toString())}::bigint[],
        ${txs.map((t) => t.referenceId)}::text[], ${txs.map((t) => t.balanceAfter.toString())}::bigint[],
        ${txs.map((t) => t.createdAt.toISOString())}::timestamptz[]
      )
    )
    INSERT INTO outbox (event_id, wallet_id, shard, wallet_version, event_type, payload)
    SELECT o.event_id, o.wallet_id, o.shard, o.wallet_version, o.event_type, o.payload::json
    FROM unnest(
      ${outbox.map((o) => o.eventId)}::uuid[], ${outbox.map((o) => o.walletId)}::uuid[],
      ${outbox.map((o) => outboxShard(o.walletId))}::smallint[], ${
    outbox.map((o) => o.version.toString())
  }::bigint[],
      ${outbox.map((o) => o.type)}::text[], ${outbox.map((o) => JSON.stringify(o.payload))}::text[]
    ) AS o(event_id, wallet_id, shard, wallet_version, event_type, payload)`;
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
