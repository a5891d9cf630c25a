/**
 * All wallet SQL in one place. Each function is one statement; transactions are opened by the wallet
 * service, which holds the wallet row lock for as few round trips as possible.
 */
import type postgres from "postgres";
import type { ReservedSql, Sql, TransactionSql, UnsentStatement } from "./client.ts";
import { type BatchReader, cursorBatches } from "./cursor_batches.ts";
import type { HistoryEntry, OutboxEntry, Wallet, WalletTransaction } from "../wallet/wallet_rules.ts";

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

/**
 * Create the wallet of a customer, or return the existing one. `ON CONFLICT DO NOTHING` neither locks nor
 * rewrites an existing row, so an init never waits for a wallet row another session holds locked (DO UPDATE
 * did, and wrote a new row version on every repeated init). The statement cannot see a row that another
 * init committed while it ran (its snapshot is older): then it runs once more.
 */
export async function upsertWalletForCustomer(sql: Queryable, customerXid: string): Promise<Wallet> {
  for (let attempt = 0;; attempt++) {
    const rows = await sql<WalletRow[]>`
      WITH created AS (
        INSERT INTO wallets (id, customer_xid) VALUES (${crypto.randomUUID()}, ${customerXid})
        ON CONFLICT (customer_xid) DO NOTHING
        RETURNING id, customer_xid, status, balance, version, enabled_at, disabled_at
      )
      SELECT * FROM created
      UNION ALL
      SELECT id, customer_xid, status, balance, version, enabled_at, disabled_at
      FROM wallets WHERE customer_xid = ${customerXid} AND NOT EXISTS (SELECT 1 FROM created)`;
    if (rows.length > 0) return toWallet(rows[0]);
    if (attempt > 0) throw new Error("wallet of customer neither created nor found");
  }
}

/**
 * Bound this transaction's lock waits (and its statements, no tighter than the connection's own
 * statement_timeout) by `ms`: `SET LOCAL`, so the connection's settings apply again after it ends.
 */
export function setLocalLockTimeout(tx: TransactionSql | ReservedSql, ms: number): Promise<unknown> {
  const wait = Math.max(1, Math.ceil(ms));
  return tx`
    SELECT set_config('lock_timeout', ${wait + "ms"}, true),
      set_config('statement_timeout',
        CASE WHEN s.setting::bigint = 0 THEN '0' ELSE greatest(s.setting::bigint, ${wait})::text END, true)
    FROM pg_settings s WHERE s.name = 'statement_timeout'`.execute();
}

/** Read a wallet without locking it. */
export async function findWallet(sql: Queryable, walletId: string): Promise<Wallet | null> {
  return (await findWallets(sql, [walletId]))[0] ?? null;
}

/** Read wallets without locking them; the ids that do not exist are left out. */
export async function findWallets(sql: Queryable, walletIds: string[]): Promise<Wallet[]> {
  const rows = await sql<WalletRow[]>`
    SELECT id, customer_xid, status, balance, version, enabled_at, disabled_at
    FROM wallets WHERE id = ANY(${walletIds}::uuid[])`;
  return rows.map(toWallet);
}

/** Lock a wallet row for the rest of the transaction and read it. */
export async function lockWallet(tx: TransactionSql, walletId: string): Promise<Wallet | null> {
  return (await lockWallets(tx, [walletId])).get(walletId) ?? null;
}

/**
 * Lock wallet rows for the rest of the transaction and read them. Rows are locked in id order, so batches
 * locking overlapping sets of wallets cannot deadlock. With `skipLocked`, rows another transaction holds are
 * left out instead of waited for (so are ids that do not exist): the caller tells them apart.
 */
export async function lockWallets(
  tx: TransactionSql | ReservedSql,
  walletIds: string[],
  options: { skipLocked?: boolean } = {},
): Promise<Map<string, Wallet>> {
  const rows = await tx<WalletRow[]>`
    SELECT id, customer_xid, status, balance, version, enabled_at, disabled_at
    FROM wallets WHERE id = ANY(${walletIds}::uuid[]) ORDER BY id
    FOR UPDATE ${options.skipLocked ? tx`SKIP LOCKED` : tx``}`;
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
 * so the caller can pipeline it with COMMIT. The rows travel as JSON documents (changesDocuments).
 */
export function writeWalletChanges(
  tx: TransactionSql | ReservedSql,
  changes: WalletChange[],
): UnsentStatement | null {
  if (changes.length === 0) return null;
  const doc = changesDocuments(changes);
  // tx.json: postgres.js stringifies it once; a string passed here would arrive as one JSON string scalar.
  return tx`
    WITH updated AS (
      UPDATE wallets SET status = w.status, balance = w.balance, version = w.version,
        enabled_at = w.enabled_at, disabled_at = w.disabled_at, updated_at = now()
      FROM json_to_recordset(${tx.json(doc.wallets)}::json)
        AS w(id uuid, status text, balance bigint, version bigint, enabled_at timestamptz, disabled_at timestamptz)
      WHERE wallets.id = w.id
    ), recorded AS (
      INSERT INTO wallet_transactions (id, wallet_id, type, status, amount, reference_id, balance_after, created_at)
      SELECT t.id, t.wallet_id, t.type, t.status, t.amount, t.reference_id, t.balance_after, t.created_at
      FROM json_to_recordset(${tx.json(doc.transactions)}::json)
        AS t(id uuid, wallet_id uuid, type text, status text, amount bigint, reference_id text,
          balance_after bigint, created_at timestamptz)
    )
    INSERT INTO outbox (event_id, wallet_id, shard, wallet_version, event_type, payload)
    SELECT o.event_id, o.wallet_id, o.shard, o.wallet_version, o.event_type, o.payload
    FROM json_to_recordset(${tx.json(doc.outbox)}::json)
      AS o(event_id uuid, wallet_id uuid, shard smallint, wallet_version bigint, event_type text, payload json)`;
}

/** A change decided on a wallet state this process expects to find: written only if the version is still it. */
export interface ExpectedWalletChange extends WalletChange {
  expectedVersion: bigint;
}

/**
 * Write changes decided WITHOUT a lock, each only if its wallet is still at the version it was decided on
 * and none of its reference ids is used yet: ONE statement, sent on its own, so it is its own transaction
 * and its COMMIT travels in the same round trip. No client round trip happens inside the row locks.
 *
 * - The wallet rows are locked `FOR UPDATE SKIP LOCKED` in id order first. A row another transaction holds
 *   is not waited for: that wallet is left out (written nothing) and reported as skipped, so one locked
 *   wallet never holds up the others; the caller waits for it apart.
 * - A wallet passes when its locked version is the expected one: every change of a wallet bumps its version,
 *   so an equal version means the state the rules decided on is the state in the table. Its reference ids
 *   must be unused too (a retry of an earlier request is answered by the locked path, which replays it).
 * - Wallets that pass get their new state, ledger rows and outbox rows; the others get nothing. Per wallet
 *   it is all or nothing. Returned: the wallets written, and the wallets skipped (locked elsewhere, or not
 *   there at all); the rest were locked but did not match.
 *
 * Measured on 16 deposits (EXPLAIN ANALYZE): one JSON document for all three parts was parsed once per part
 * (0.4 ms each), and a reference check per wallet over every transaction of the batch grew with its square
 * (1.2 ms); hence three documents, one pass over the references, and the ids as an array for the index.
 * The reference check is a LATERAL probe per reference, so it always walks the unique index: as a plain
 * join, a plan made while the ledger was small (a new deployment) hashed a sequential scan of the whole
 * ledger per batch (measured: 1,167 scans reading 9.7 M rows in a 14 s run) until the next ANALYZE.
 */
export async function writeWalletChangesIfCurrent(
  sql: Queryable,
  changes: ExpectedWalletChange[],
): Promise<{ written: Set<string>; skipped: Set<string> }> {
  if (changes.length === 0) return { written: new Set(), skipped: new Set() };
  const doc = changesDocuments(changes);
  const rows = await sql<{ id: string; written: boolean }[]>`
    WITH w AS (
      SELECT w.* FROM json_to_recordset(${sql.json(doc.wallets)}::json)
        AS w(id uuid, expected_version bigint, status text, balance bigint, version bigint,
          enabled_at timestamptz, disabled_at timestamptz)
    ), t AS (
      SELECT t.* FROM json_to_recordset(${sql.json(doc.transactions)}::json)
        AS t(id uuid, wallet_id uuid, type text, status text, amount bigint, reference_id text,
          balance_after bigint, created_at timestamptz)
    ), locked AS (
      SELECT id, version FROM wallets WHERE id = ANY(${changes.map((c) => c.wallet.id)}::uuid[])
      ORDER BY id FOR UPDATE SKIP LOCKED
    ), reused AS (
      SELECT DISTINCT t.wallet_id FROM t CROSS JOIN LATERAL (
        SELECT 1 FROM wallet_transactions used
        WHERE used.wallet_id = t.wallet_id AND used.reference_id = t.reference_id LIMIT 1
      ) hit
    ), current AS (
      SELECT w.* FROM w JOIN locked ON locked.id = w.id AND locked.version = w.expected_version
      WHERE w.id NOT IN (SELECT wallet_id FROM reused)
    ), updated AS (
      UPDATE wallets SET status = c.status, balance = c.balance, version = c.version,
        enabled_at = c.enabled_at, disabled_at = c.disabled_at, updated_at = now()
      FROM current c
      WHERE wallets.id = c.id
      RETURNING wallets.id
    ), recorded AS (
      INSERT INTO wallet_transactions (id, wallet_id, type, status, amount, reference_id, balance_after, created_at)
      SELECT t.id, t.wallet_id, t.type, t.status, t.amount, t.reference_id, t.balance_after, t.created_at
      FROM t WHERE t.wallet_id IN (SELECT id FROM current)
    ), queued AS (
      INSERT INTO outbox (event_id, wallet_id, shard, wallet_version, event_type, payload)
      SELECT o.event_id, o.wallet_id, o.shard, o.wallet_version, o.event_type, o.payload
      FROM json_to_recordset(${sql.json(doc.outbox)}::json)
        AS o(event_id uuid, wallet_id uuid, shard smallint, wallet_version bigint, event_type text, payload json)
      WHERE o.wallet_id IN (SELECT id FROM current)
    )
    SELECT id, true AS written FROM updated
    UNION ALL
    SELECT id, false FROM locked WHERE id NOT IN (SELECT id FROM updated)`;
  const written = new Set<string>();
  const seen = new Set<string>();
  for (const row of rows) {
    seen.add(row.id);
    if (row.written) written.add(row.id);
  }
  const skipped = new Set(changes.map((c) => c.wallet.id).filter((id) => !seen.has(id)));
  return { written, skipped };
}

/**
 * The rows of decided changes as JSON documents, one per table, each parsed once by PostgreSQL
 * (JSON.stringify is native, and the events go in as JSON, not as escaped text inside a text[] literal):
 * per-element array encoding was the client's largest cost here. Money and versions are decimal strings, so
 * no value passes through a JavaScript number.
 */
function changesDocuments(changes: Array<WalletChange & { expectedVersion?: bigint }>) {
  return {
    wallets: changes.map(({ wallet: w, expectedVersion }) => ({
      id: w.id,
      expected_version: expectedVersion?.toString() ?? null,
      status: w.status,
      balance: w.balance.toString(),
      version: w.version.toString(),
      enabled_at: w.enabledAt?.toISOString() ?? null,
      disabled_at: w.disabledAt?.toISOString() ?? null,
    })),
    transactions: changes.flatMap((c) =>
      c.transactions.map((t) => ({
        id: t.id,
        wallet_id: t.walletId,
        type: t.type,
        status: t.status,
        amount: t.amount.toString(),
        reference_id: t.referenceId,
        balance_after: t.balanceAfter.toString(),
        created_at: t.createdAt.toISOString(),
      }))
    ),
    outbox: changes.flatMap((c) =>
      c.outbox.map((o) => ({
        event_id: o.eventId,
        wallet_id: o.walletId,
        shard: outboxShard(o.walletId),
        wallet_version: o.version.toString(),
        event_type: o.type,
        payload: o.payload,
      }))
    ) as unknown as postgres.JSONValue,
  };
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

interface HistoryRow {
  id: string;
  type: "deposit" | "withdrawal";
  status: "success" | "failed";
  amount: string;
  reference_id: string;
  created_at: Date;
}

function toHistoryEntry(row: HistoryRow): HistoryEntry {
  return {
    id: row.id,
    type: row.type,
    status: row.status,
    amount: BigInt(row.amount),
    referenceId: row.reference_id,
    createdAt: row.created_at,
  };
}

/**
 * A wallet's whole history, oldest first, read through a cursor `batchRows` rows at a time, each batch fetched
 * only when the reader asks for it (cursor_batches.ts). One statement, so one snapshot: rows committed while
 * it is read are not in it. Only the columns the history shows are read (the driver parses every column).
 *
 * The cursor runs in a read-only transaction, whose SET LOCALs end with it:
 * - `statement_timeout` is the stream's bound: PostgreSQL counts it from a cursor's first batch to its last
 *   (measured on 15: a 1 s timeout ended a cursor read in 300 ms pauses after 4 batches), so the service's
 *   per-statement bound would cut long histories. `idle_in_transaction_session_timeout` does not apply while
 *   a cursor waits between batches (no ReadyForQuery is sent; a 2.5 s pause passed a 1 s timeout): the caller
 *   bounds that.
 * - `lock_timeout` is `lockTimeoutMs` (the rest of the request's deadline; absent: the pool's): a cursor blocked
 *   behind a lock on the ledger (DDL, VACUUM FULL) gives up with its request instead of holding a connection.
 * - The rows come from an index in `seq` order, never from a sort: a sort reads the whole history before the
 *   first row. `plan_cache_mode`: a generic plan of this prepared statement, made for an average wallet,
 *   was a bitmap scan and a sort of every row; `enable_sort` off: the plan is an index scan in order,
 *   `wallet_transactions_history` (wallet_id, seq) for a wallet that is a small part of the table, the primary
 *   key filtered by wallet for one that is most of it (docs/history_streaming.md).
 */
export function openHistory(
  sql: Sql,
  walletId: string,
  options: { batchRows: number; timeoutMs: number; lockTimeoutMs?: number },
): BatchReader<HistoryEntry> {
  // At least 1 ms (0 would mean no bound); none given: the connection's own lock_timeout stays.
  const lockTimeout = options.lockTimeoutMs === undefined
    ? null
    : String(Math.max(1, Math.ceil(options.lockTimeoutMs)));
  return cursorBatches<HistoryEntry>(
    (onBatch) =>
      sql.begin("read only", async (tx) => {
        await tx`
          SELECT set_config('statement_timeout', ${String(options.timeoutMs)}, true),
            set_config('lock_timeout', coalesce(${lockTimeout}::text, current_setting('lock_timeout')), true),
            set_config('plan_cache_mode', 'force_custom_plan', true), set_config('enable_sort', 'off', true)`;
        await tx<HistoryRow[]>`
          SELECT id, type, status, amount, reference_id, created_at
          FROM wallet_transactions WHERE wallet_id = ${walletId} ORDER BY seq`
          .cursor(options.batchRows, (rows) => onBatch(rows.map(toHistoryEntry)));
      }),
    sql.CLOSE,
  );
}
