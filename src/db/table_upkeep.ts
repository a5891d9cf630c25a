/**
 * Upkeep of the service's tables, for servers where autovacuum is off or slow to get there (it is off on our
 * CI machine). Without it three things go wrong, all measured:
 *
 * - No statistics: PostgreSQL plans the service's prepared statements against tables it believes empty and
 *   keeps those plans, so the reference-id lookup scanned the whole ledger on every write (deposits fell from
 *   3,100/s to 950/s within a minute). An ANALYZE makes it plan again with the real sizes.
 * - The outbox is a queue (every row inserted once, deleted once): unvacuumed, its table and indexes fill
 *   with dead rows that each read of the unsent rows steps over.
 * - The BRIN index of `outbox_sent` is summarized by autovacuum only: unsummarized, the retention cleanup
 *   reads the whole table (168 ms at 300,000 rows).
 *
 * The thresholds are autovacuum's defaults, so where autovacuum runs this rarely finds anything to do.
 * SKIP_LOCKED lets several processes run the upkeep at once without queueing behind each other.
 */
import type { Sql } from "./client.ts";

/** The tables the service writes. */
const TABLES = ["wallets", "wallet_transactions", "outbox", "outbox_sent", "outbox_dead_letter"];

/** autovacuum_analyze_threshold and autovacuum_analyze_scale_factor. */
const ANALYZE_THRESHOLD = 50;
const ANALYZE_SCALE_FACTOR = 0.1;
/**
 * Statistics target of our ANALYZE: 3,000 sampled rows instead of 30,000. Our queries are key lookups and
 * small ranges, so a coarse histogram plans them the same; at the default, ANALYZE of a 300,000-row ledger
 * took 550 ms of a 2-core machine's CPU in the middle of the benchmarks (90 ms at 10).
 */
const STATISTICS_TARGET = 10;

/**
 * How soon a table is analyzed again (autovacuum_naptime's default). Under 2,000 deposits/s every table passes
 * the threshold between two 5 s upkeep runs, and ANALYZE of the four busy tables took ~100 ms of PostgreSQL's
 * CPU in one burst: every 5 s, next to the writes. A table that changed by more than its own size (one growing
 * from empty, whose plans are the ones that go wrong) does not wait.
 */
const ANALYZE_INTERVAL_MS = 60_000;

/** ANALYZE each of the service's tables changed enough since its last analyze; returns the ones analyzed. */
export async function analyzeStaleTables(
  sql: Sql,
  options: { minIntervalMs?: number } = {},
): Promise<string[]> {
  const interval = `${options.minIntervalMs ?? ANALYZE_INTERVAL_MS} milliseconds`;
  const stale = await sql<{ name: string }[]>`
    SELECT s.relname AS name
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
    WHERE s.relname = ANY(${TABLES}::text[]) AND s.schemaname = current_schema()
      AND s.n_mod_since_analyze > ${ANALYZE_THRESHOLD} + ${ANALYZE_SCALE_FACTOR} * greatest(c.reltuples, 0)
      AND (s.n_mod_since_analyze > greatest(c.reltuples, 0)
        OR coalesce(greatest(s.last_analyze, s.last_autoanalyze), '-infinity') < now() - ${interval}::interval)`;
  const names = stale.map((row) => row.name);
  for (const name of names) {
    await sql.begin(async (tx) => {
      // No statement bound for this transaction: on a cold or busy server ANALYZE may take longer than the
      // connection's, and a cancelled ANALYZE is work thrown away (it skips locked tables, so it waits for none).
      await tx`SELECT set_config('default_statistics_target', ${String(STATISTICS_TARGET)}, true),
        set_config('statement_timeout', '0', true)`;
      await tx`ANALYZE (SKIP_LOCKED) ${tx(name)}`;
    });
  }
  return names;
}

/**
 * Summarize the page ranges of `outbox_sent` that its BRIN index has not covered yet (autovacuum would).
 * Unsummarized ranges match every query, so the retention cleanup would read the whole table.
 */
export async function summarizeSentIndex(sql: Sql): Promise<number> {
  const [row] = await sql<{ ranges: number }[]>`
    SELECT brin_summarize_new_values('outbox_sent_time'::regclass) AS ranges`;
  return row.ranges;
}

/** VACUUM the outbox once at least `minDeadRows` deleted rows wait in it; true when it ran. */
export async function vacuumOutboxIfBloated(sql: Sql, minDeadRows: number): Promise<boolean> {
  const [row] = await sql<{ dead: string | null }[]>`
    SELECT n_dead_tup AS dead FROM pg_stat_user_tables WHERE relid = 'outbox'::regclass`;
  if (Number(row?.dead ?? 0) < minDeadRows) return false;
  // VACUUM cannot run in a transaction, so no set_config(..., true): the bound is lifted for this one
  // statement on a reserved connection and put back (RESET returns to the connection's startup value). A
  // cancelled VACUUM is work thrown away, and it blocks no writer (it skips a locked table).
  const conn = await sql.reserve();
  try {
    await conn`SET statement_timeout = 0`;
    // TRUNCATE false: truncating the table's empty end would lock out every writer meanwhile (see migration 4).
    await conn`VACUUM (SKIP_LOCKED, TRUNCATE false) outbox`;
  } finally {
    await conn`RESET statement_timeout`.catch(() => {}); // a dead connection is replaced anyway
    conn.release();
  }
  return true;
}
