/**
 * The outbox SQL used by the relay and by `deno task outbox`: claim shards, read unsent rows, move sent ones
 * to `outbox_sent`, count refusals and set aside rows that keep failing (their wallet's later rows wait behind
 * them), retry or release set-aside rows, clean up after the retention, and measure the backlog.
 */
import type { ReservedSql, Sql, TransactionSql, UnsentStatement } from "./client.ts";
import { OUTBOX_SHARDS, outboxShard } from "./wallet_repository.ts";

type Queryable = TransactionSql | ReservedSql;

/** Advisory-lock namespace of the relay shard locks (any constant unique to this purpose). */
const RELAY_LOCK_NAMESPACE = 0x6d77; // "mw"

/**
 * How long the relay's transaction may sit idle while it waits for Kafka. It holds the shard locks across the
 * publish (see claimUnsent), and a publish that isolates refused rows sends several requests. Set per
 * transaction so a server-wide `idle_in_transaction_session_timeout` tuned for API transactions does not cut
 * the relay's connection mid-publish (the rows would go out again: harmless duplicates, but a wasted cycle).
 */
export const RELAY_TX_IDLE_LIMIT_MS = 120_000;

export interface OutboxRow {
  id: string;
  eventId: string;
  walletId: string;
  walletVersion: string;
  payload: string;
  attempts: number;
  createdAt: Date;
}

/**
 * Lock as many outbox shards as are free for the rest of this transaction, then read the oldest unsent rows
 * of those shards in id order (per wallet, id order is commit order). A shard is published by one relay at a
 * time, which keeps each wallet's events in order with any number of relays running.
 *
 * Two statements issued together, so they can leave with BEGIN in one round trip. They must stay two: the
 * read's snapshot has to be taken after the locks are held. In one statement the snapshot comes first, and a
 * relay that had just published and deleted a shard's rows could release the lock in between: its rows would
 * still look unsent here and go out again, after newer ones. The claimed shards travel from the first
 * statement to the second in a transaction-local setting.
 *
 * A wallet whose oldest unsent row is backing off or set aside (`retry_at` in the future) is skipped from
 * that row on: its later rows wait behind it, so a wallet's events are never published out of order. The
 * check reads `outbox_blocked`, an index that is empty unless Kafka refused rows: once per statement (an
 * InitPlan) to see whether any row blocks at all, and only then per row. `OFFSET 0` keeps the per-row check
 * an index probe: turned into an anti-join, it was planned as a nested loop over all blocked rows (measured:
 * 157 ms for 1,000 rows with 200 blocked, against 1.5 ms probed; with none blocked the probe is skipped).
 *
 * The read must walk the `outbox_unsent` index. The outbox is a queue: nearly empty, but its file keeps the
 * size of its largest backlog (vacuum does not truncate it, see migration 4) and its index holds dead entries
 * until vacuumed, so the planner's estimates favour a sequential scan: measured 17 ms per cycle over a 102 MB
 * empty file, against 0.7 ms through the index. Sequential scans are switched off for the relay's
 * transaction, which touches the outbox only by that index and by primary key. The same first statement
 * raises the transaction's idle bound to RELAY_TX_IDLE_LIMIT_MS for the wait on Kafka.
 */
export async function claimUnsent(tx: Queryable, limit: number): Promise<OutboxRow[]> {
  const [, rows] = await Promise.all([
    tx`
      SELECT set_config('mini_wallet.relay_shards', coalesce(string_agg(s::text, ','), ''), true),
        set_config('enable_seqscan', 'off', true),
        set_config('idle_in_transaction_session_timeout', ${String(RELAY_TX_IDLE_LIMIT_MS)}, true)
      FROM generate_series(0, ${OUTBOX_SHARDS - 1}::int) AS s
      WHERE pg_try_advisory_xact_lock(${RELAY_LOCK_NAMESPACE}::int, s)`,
    tx<OutboxRow[]>`
      SELECT id, event_id AS "eventId", wallet_id AS "walletId", wallet_version AS "walletVersion",
        payload::text AS payload, attempts, created_at AS "createdAt"
      FROM outbox o
      WHERE sent_at IS NULL
        AND shard = ANY(string_to_array(current_setting('mini_wallet.relay_shards'), ',')::int[])
        AND (NOT (SELECT EXISTS (SELECT 1 FROM outbox WHERE retry_at IS NOT NULL AND retry_at > now()))
          OR NOT EXISTS (
            SELECT 1 FROM outbox b
            WHERE b.wallet_id = o.wallet_id AND b.id <= o.id AND b.retry_at IS NOT NULL AND b.retry_at > now()
            OFFSET 0))
      ORDER BY id LIMIT ${limit}`,
  ]);
  return rows;
}

/**
 * Move rows out of the outbox once the broker acknowledged them; a copy is kept for the retention. Returned
 * unsent (null when there is nothing to move), so it can leave with COMMIT.
 */
export function markSent(tx: Queryable, ids: string[]): UnsentStatement | null {
  if (ids.length === 0) return null;
  return tx`
    WITH sent AS (DELETE FROM outbox WHERE id = ANY(${ids}::bigint[])
      RETURNING id, event_id, wallet_id, wallet_version, event_type, payload, created_at)
    INSERT INTO outbox_sent (id, event_id, wallet_id, wallet_version, event_type, payload, created_at)
    SELECT id, event_id, wallet_id, wallet_version, event_type, payload, created_at FROM sent`;
}

/** One row Kafka refused while it accepted others: its error and how long it waits before the next try. */
export interface Refusal {
  row: OutboxRow;
  error: string;
  retryInMs: number;
}

/** Whether this refusal sets the row aside: it is the row's `maxAttempts`-th counted refusal. */
export function setsAside(refusal: Refusal, maxAttempts: number): boolean {
  return refusal.row.attempts + 1 >= maxAttempts;
}

/**
 * Count one refusal per row: a row backs off until `retry_at`, or, at `maxAttempts`, is set aside
 * (`retry_at` = infinity) until an operator retries or releases it. Either way the wallet's later rows wait.
 * Returned unsent, to leave with COMMIT. The rows' attempts were read under the shard locks, so the set-aside
 * decision made from them holds.
 */
export function recordRefusals(
  tx: Queryable,
  refusals: Refusal[],
  maxAttempts: number,
): UnsentStatement | null {
  if (refusals.length === 0) return null;
  const ids = refusals.map((r) => r.row.id);
  const errors = refusals.map((r) => r.error.slice(0, 2000));
  const waits = refusals.map((r) => (setsAside(r, maxAttempts) ? -1 : Math.max(0, Math.round(r.retryInMs))));
  return tx`
    UPDATE outbox o SET attempts = o.attempts + 1, last_error = r.error,
      retry_at = CASE WHEN r.wait_ms < 0 THEN 'infinity'::timestamptz
                      ELSE clock_timestamp() + r.wait_ms * interval '1 millisecond' END,
      set_aside_at = CASE WHEN r.wait_ms < 0 THEN now() END
    FROM unnest(${ids}::bigint[], ${errors}::text[], ${waits}::int[]) AS r(id, error, wait_ms)
    WHERE o.id = r.id`;
}

/** What one retention run did: rows deleted, DELETE statements, and whether it caught up (no expired rows left). */
export interface PurgeResult {
  deleted: number;
  batches: number;
  caughtUp: boolean;
}

/**
 * Delete sent rows older than `cutoff` in batches of `batchSize` until none is left or `budgetMs` is spent.
 * Batches keep each statement short (locks and WAL bounded); looping makes retention keep up with any rate the
 * relay can publish at (one batch a minute capped it at 10,000 rows a minute, about 167 events/s).
 */
export async function purgeSentBefore(
  sql: Sql,
  cutoff: Date,
  { batchSize = 10_000, budgetMs = 20_000 }: { batchSize?: number; budgetMs?: number } = {},
): Promise<PurgeResult> {
  const deadline = Date.now() + budgetMs;
  let deleted = 0;
  let batches = 0;
  while (true) {
    const count = await deleteSentBefore(sql, cutoff, batchSize);
    deleted += count;
    batches++;
    if (count < batchSize) return { deleted, batches, caughtUp: true };
    if (Date.now() >= deadline) return { deleted, batches, caughtUp: false };
  }
}

/** Delete sent rows older than the retention, a bounded number at a time. Returns how many were deleted. */
export async function deleteSentBefore(sql: Sql, cutoff: Date, limit = 10_000): Promise<number> {
  const result = await sql`
    DELETE FROM outbox_sent WHERE ctid = ANY(ARRAY(
      SELECT ctid FROM outbox_sent WHERE sent_at < ${cutoff} LIMIT ${limit}))`;
  return result.count;
}

/** Unsent rows and the age of the oldest, for lag metrics. */
export async function backlog(sql: Sql): Promise<{ unsent: number; oldestAgeMs: number }> {
  const [row] = await sql<{ unsent: string; oldest_age_ms: number | null }[]>`
    SELECT count(*) AS unsent, extract(epoch FROM now() - min(created_at)) * 1000 AS oldest_age_ms
    FROM outbox WHERE sent_at IS NULL`;
  return { unsent: Number(row.unsent), oldestAgeMs: Number(row.oldest_age_ms ?? 0) };
}

/** Rows that block their wallet: set aside, held behind a set-aside row, or backing off after a refusal. */
export async function blockedCounts(
  sql: Sql,
): Promise<{ setAside: number; held: number; backingOff: number }> {
  const [row] = await sql<{ set_aside: number; held: number; backing_off: number }[]>`
    SELECT
      (SELECT count(*)::int FROM outbox WHERE retry_at IS NOT NULL AND set_aside_at IS NOT NULL) AS set_aside,
      (SELECT count(DISTINCT o.id)::int FROM outbox b JOIN outbox o ON o.wallet_id = b.wallet_id AND o.id > b.id
        WHERE b.retry_at IS NOT NULL AND b.set_aside_at IS NOT NULL) AS held,
      (SELECT count(*)::int FROM outbox
        WHERE retry_at IS NOT NULL AND set_aside_at IS NULL AND retry_at > now()) AS backing_off`;
  return { setAside: row.set_aside, held: row.held, backingOff: row.backing_off };
}

/** A row that blocks its wallet, as `deno task outbox list` shows it. */
export interface BlockedRow {
  id: string;
  walletId: string;
  walletVersion: string;
  eventType: string;
  attempts: number;
  lastError: string | null;
  createdAt: Date;
  /** When it was set aside; null while it is only backing off. */
  setAsideAt: Date | null;
  /** When the relay tries it again; null when set aside (only an operator moves it). */
  retryAt: Date | null;
  /** The wallet's later unsent rows, waiting behind this one. */
  held: number;
  payloadBytes: number;
}

/** Set-aside and backing-off rows, oldest first, with the number of rows held behind each. */
export async function listBlocked(sql: Sql, limit = 1000): Promise<BlockedRow[]> {
  return await sql<BlockedRow[]>`
    SELECT b.id, b.wallet_id AS "walletId", b.wallet_version AS "walletVersion", b.event_type AS "eventType",
      b.attempts, b.last_error AS "lastError", b.created_at AS "createdAt", b.set_aside_at AS "setAsideAt",
      CASE WHEN b.retry_at = 'infinity' THEN NULL ELSE b.retry_at END AS "retryAt",
      (SELECT count(*)::int FROM outbox o WHERE o.wallet_id = b.wallet_id AND o.id > b.id) AS held,
      octet_length(b.payload::text)::int AS "payloadBytes"
    FROM outbox b
    WHERE b.retry_at IS NOT NULL AND (b.set_aside_at IS NOT NULL OR b.retry_at > now())
    ORDER BY b.id LIMIT ${limit}`;
}

/** A released row (given up by an operator) or a row dead-lettered before holding existed. */
export interface ReleasedRow {
  id: string;
  walletId: string;
  walletVersion: string;
  eventType: string;
  attempts: number;
  lastError: string | null;
  deadAt: Date;
  /** Null for rows the relay dead-lettered on its own before set-aside rows held their wallet. */
  releasedAt: Date | null;
}

/** Rows in `outbox_dead_letter`, newest first. */
export async function listReleased(sql: Sql, limit = 1000): Promise<ReleasedRow[]> {
  return await sql<ReleasedRow[]>`
    SELECT id, wallet_id AS "walletId", wallet_version AS "walletVersion", event_type AS "eventType", attempts,
      last_error AS "lastError", dead_at AS "deadAt", released_at AS "releasedAt"
    FROM outbox_dead_letter ORDER BY dead_at DESC, id DESC LIMIT ${limit}`;
}

/** Which set-aside rows an operator command acts on. */
export type RowSelection = { ids: string[] } | { walletId: string } | { all: true };

/**
 * Take the relay locks of the shards the selected set-aside rows live in, so no relay is in the middle of a
 * cycle on them (and a cycle that starts later sees the change). Shards in order, as relays never wait on them.
 */
async function lockShardsOf(tx: TransactionSql, selection: RowSelection): Promise<void> {
  await tx`
    SELECT pg_advisory_xact_lock(${RELAY_LOCK_NAMESPACE}::int, s.shard)
    FROM (SELECT DISTINCT shard FROM outbox WHERE set_aside_at IS NOT NULL AND ${
    selectionFilter(tx, selection)
  }
          ORDER BY shard) AS s`;
}

function selectionFilter(tx: TransactionSql, selection: RowSelection) {
  if ("ids" in selection) return tx`id = ANY(${selection.ids}::bigint[])`;
  if ("walletId" in selection) return tx`wallet_id = ${selection.walletId}::uuid`;
  return tx`true`;
}

/**
 * Re-queue set-aside rows: attempts back to 0, due now. The relay sends each again, then the rows held behind
 * it, in order; refused again, it backs off and is set aside again after RELAY_MAX_ATTEMPTS. Returns the ids.
 */
export async function retrySetAside(
  sql: Sql,
  selection: RowSelection,
  notifyChannel: string,
): Promise<string[]> {
  return await sql.begin(async (tx) => {
    await lockShardsOf(tx, selection);
    const rows = await tx<{ id: string }[]>`
      UPDATE outbox SET attempts = 0, retry_at = NULL, set_aside_at = NULL
      WHERE set_aside_at IS NOT NULL AND ${selectionFilter(tx, selection)}
      RETURNING id`;
    if (rows.length > 0) await tx`SELECT pg_notify(${notifyChannel}, '')`;
    return rows.map((r) => r.id).sort((a, b) => Number(BigInt(a) - BigInt(b)));
  });
}

/**
 * Release set-aside rows: each is given up (moved to `outbox_dead_letter` with `released_at`, never
 * published) and its wallet's held rows go on. Consumers then see that wallet's versions jump over it: a gap
 * the operator accepts. Returns the ids released.
 */
export async function releaseSetAside(
  sql: Sql,
  selection: RowSelection,
  notifyChannel: string,
): Promise<string[]> {
  return await sql.begin(async (tx) => {
    await lockShardsOf(tx, selection);
    const rows = await tx<{ id: string }[]>`
      WITH released AS (
        DELETE FROM outbox WHERE set_aside_at IS NOT NULL AND ${selectionFilter(tx, selection)}
        RETURNING id, event_id, wallet_id, wallet_version, event_type, payload, created_at, attempts, last_error
      )
      INSERT INTO outbox_dead_letter (id, event_id, wallet_id, wallet_version, event_type, payload, created_at,
        attempts, last_error, released_at)
      SELECT id, event_id, wallet_id, wallet_version, event_type, payload, created_at, attempts, last_error, now()
      FROM released
      RETURNING id`;
    if (rows.length > 0) await tx`SELECT pg_notify(${notifyChannel}, '')`;
    return rows.map((r) => r.id).sort((a, b) => Number(BigInt(a) - BigInt(b)));
  });
}

/**
 * Put released (or formerly dead-lettered) rows back into the outbox, under their old ids, due at once. Their
 * wallet's later events were published long ago, so each goes out late, after them: consumers that compare
 * versions (the balance cache) ignore it, consumers that keep every transaction get the one they missed.
 * Returns the ids put back.
 */
export async function republishReleased(sql: Sql, ids: string[], notifyChannel: string): Promise<string[]> {
  return await sql.begin(async (tx) => {
    const rows = await tx<{ id: string; wallet_id: string }[]>`
      SELECT id, wallet_id FROM outbox_dead_letter WHERE id = ANY(${ids}::bigint[]) ORDER BY id FOR UPDATE`;
    if (rows.length === 0) return [];
    const shards = [...new Set(rows.map((r) => outboxShard(r.wallet_id)))].sort((a, b) => a - b);
    await tx`
      SELECT pg_advisory_xact_lock(${RELAY_LOCK_NAMESPACE}::int, s) FROM unnest(${shards}::int[]) AS s ORDER BY s`;
    await tx`
      WITH back AS (
        DELETE FROM outbox_dead_letter WHERE id = ANY(${rows.map((r) => r.id)}::bigint[])
        RETURNING id, event_id, wallet_id, wallet_version, event_type, payload, created_at
      )
      INSERT INTO outbox (id, event_id, wallet_id, shard, wallet_version, event_type, payload, created_at)
      OVERRIDING SYSTEM VALUE
      SELECT b.id, b.event_id, b.wallet_id, m.shard, b.wallet_version, b.event_type, b.payload, b.created_at
      FROM back b JOIN unnest(${rows.map((r) => r.id)}::bigint[], ${
      rows.map((r) => outboxShard(r.wallet_id))
    }::int[]) AS m(id, shard) ON m.id = b.id`;
    await tx`SELECT pg_notify(${notifyChannel}, '')`;
    return rows.map((r) => r.id);
  });
}
