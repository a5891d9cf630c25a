/**
 * Table upkeep on the real PostgreSQL (autovacuum may be off, as it is on our CI machine): tables changed
 * enough since their last ANALYZE are analyzed, and the outbox, a queue, is vacuumed once enough deleted rows
 * have piled up.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createSql, type ReservedSql, type Sql } from "../src/db/client.ts";
import { analyzeStaleTables, summarizeSentIndex, vacuumOutboxIfBloated } from "../src/db/table_upkeep.ts";
import { claimUnsent, purgeSentBefore, RELAY_TX_IDLE_LIMIT_MS } from "../src/db/outbox_repository.ts";
import { pipelinedTransaction } from "../src/db/client.ts";
import { config } from "./support/harness.ts";

const DEAD_ROWS = 500;

/** Statistics of one table as PostgreSQL has them now. */
async function tableStats(sql: Sql, table: string) {
  const [row] = await sql<{ analyzes: number; modified: number; tuples: number }[]>`
    SELECT s.analyze_count::int AS analyzes, s.n_mod_since_analyze::int AS modified, c.reltuples::float8 AS tuples
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid WHERE s.relname = ${table}`;
  return row;
}

/** Run statements on one connection, then make that backend publish its statistics at once. */
async function withFlushedStats(sql: Sql, body: (connection: ReservedSql) => Promise<void>) {
  const connection = await sql.reserve();
  try {
    await body(connection);
    await connection`SELECT pg_stat_force_next_flush()`;
    await connection`SELECT 1`; // the flush happens at the end of this transaction
  } finally {
    connection.release();
  }
}

describe("table upkeep", () => {
  it("analyzes a table that changed by more than its own size at once, and only then", async () => {
    const sql = createSql(config.DATABASE_URL, { max: 2 });
    try {
      const before = await tableStats(sql, "wallets");
      // Past autovacuum's rule (50 + 10 % of the rows the statistics know of) and past the table's own size.
      const inserts = 60 + Math.ceil(Math.max(0, before.tuples));
      await withFlushedStats(sql, async (connection) => {
        await connection`
          INSERT INTO wallets (id, customer_xid)
          SELECT gen_random_uuid(), 'upkeep-' || gen_random_uuid() FROM generate_series(1, ${inserts}::int)`;
      });
      assert.ok(await analyzeStaleTables(sql).then((t) => t.includes("wallets")), "wallets analyzed");
      const after = await tableStats(sql, "wallets");
      assert.equal(after.analyzes, before.analyzes + 1);
      assert.equal(after.modified, 0);
      assert.ok(after.tuples >= inserts, "the statistics now count the rows");
      assert.equal(await analyzeStaleTables(sql).then((t) => t.includes("wallets")), false, "fresh now");
      assert.equal((await tableStats(sql, "wallets")).analyzes, before.analyzes + 1);
    } finally {
      await sql.end();
    }
  });

  it("analyzes a table changed past the threshold but by less than its size at most once a minute", async () => {
    const sql = createSql(config.DATABASE_URL, { max: 2 });
    const insertWallets = (count: number) =>
      withFlushedStats(sql, async (connection) => {
        await connection`
          INSERT INTO wallets (id, customer_xid)
          SELECT gen_random_uuid(), 'upkeep-' || gen_random_uuid() FROM generate_series(1, ${count}::int)`;
      });
    try {
      // Statistics that know of at least 1,000 rows, taken just now.
      await insertWallets(1000 + Math.ceil(Math.max(0, (await tableStats(sql, "wallets")).tuples)));
      assert.ok((await analyzeStaleTables(sql)).includes("wallets"));
      const known = await tableStats(sql, "wallets");
      // Past 50 + 10 %, short of the table's size.
      await insertWallets(60 + Math.ceil(0.1 * known.tuples));
      assert.equal(
        (await analyzeStaleTables(sql)).includes("wallets"),
        false,
        "analyzed less than a minute ago",
      );
      assert.equal((await tableStats(sql, "wallets")).analyzes, known.analyzes);
      assert.ok(
        (await analyzeStaleTables(sql, { minIntervalMs: 0 })).includes("wallets"),
        "once the time is up",
      );
      assert.equal((await tableStats(sql, "wallets")).analyzes, known.analyzes + 1);
    } finally {
      await sql.end();
    }
  });

  it("vacuums the outbox only once enough deleted rows wait in it", async () => {
    const sql = createSql(config.DATABASE_URL, { max: 2 });
    try {
      const deadRows = async () =>
        Number(
          (await sql`SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'outbox'::regclass`)[0]
            .n_dead_tup,
        );
      const vacuums = async () =>
        Number(
          (await sql`SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'outbox'::regclass`)[0]
            .vacuum_count,
        );
      // Rows inserted and deleted as the relay does once they are sent.
      await withFlushedStats(sql, async (writer) => {
        const walletId = crypto.randomUUID();
        await writer`INSERT INTO wallets (id, customer_xid) VALUES (${walletId}, ${"vacuum-" + walletId})`;
        await writer`
          INSERT INTO outbox (event_id, wallet_id, shard, wallet_version, event_type, payload)
          SELECT gen_random_uuid(), ${walletId}, 0, v, 'deposit.succeeded', '{}'
          FROM generate_series(1, ${DEAD_ROWS}::int) v`;
        await writer`DELETE FROM outbox WHERE wallet_id = ${walletId}`;
      });
      const dead = await deadRows();
      assert.ok(dead >= DEAD_ROWS, `at least ${DEAD_ROWS} dead rows counted, got ${dead}`);

      const before = await vacuums();
      assert.equal(await vacuumOutboxIfBloated(sql, dead + 1), false, "fewer dead rows than the threshold");
      assert.equal(await vacuums(), before);

      assert.equal(await vacuumOutboxIfBloated(sql, DEAD_ROWS), true);
      assert.equal(await vacuums(), before + 1);
      assert.ok(await deadRows() < DEAD_ROWS, "the vacuum removed the dead rows");
    } finally {
      await sql.end();
    }
  });

  it("summarizes the new page ranges of the sent-rows BRIN index, so the retention cleanup skips them", async () => {
    const sql = createSql(config.DATABASE_URL, { max: 2 });
    try {
      // About 3 MB of sent rows: more than two of the index's 1 MB page ranges.
      await sql`
        INSERT INTO outbox_sent (id, event_id, wallet_id, wallet_version, event_type, payload, created_at)
        SELECT -v, gen_random_uuid(), gen_random_uuid(), v, 'deposit.succeeded',
          json_build_object('padding', repeat('x', 1000)), now()
        FROM generate_series(1, 3000) v`;
      // Heap pages the cleanup's lookup reads for a cutoff before every row (the index forced, as on a big
      // table): unsummarized ranges match any condition, so all of them are read.
      const pagesRead = () =>
        sql.begin(async (tx) => {
          await tx`SET LOCAL enable_seqscan = off`;
          const [row] = await tx.unsafe(
            `EXPLAIN (ANALYZE, FORMAT JSON) SELECT ctid FROM outbox_sent WHERE sent_at < now() - interval '1 day'`,
          );
          const plan = JSON.stringify(row["QUERY PLAN"]);
          const blocks = (kind: string) =>
            Number(new RegExp(`"${kind} Heap Blocks":(\\d+)`).exec(plan)?.[1] ?? 0);
          return blocks("Lossy") + blocks("Exact");
        });
      assert.ok(await pagesRead() > 100, "before: the new rows' pages are read");
      assert.ok(await summarizeSentIndex(sql) >= 2, "the new ranges were summarized");
      assert.equal(await summarizeSentIndex(sql), 0, "nothing new the second time");
      assert.equal(await pagesRead(), 0, "after: no page is read");
    } finally {
      await sql`DELETE FROM outbox_sent WHERE id < 0`;
      await sql.end();
    }
  });

  it("reads the outbox with sequential scans switched off, for its transaction only", async () => {
    // The planner's estimates for a large, empty outbox file favour a sequential scan (17 ms per relay cycle
    // measured over 102 MB, against 0.7 ms through the index); the relay's read switches it off.
    const sql = createSql(config.DATABASE_URL, { max: 1 });
    try {
      const inside = await pipelinedTransaction(sql, (tx) => claimUnsent(tx, 10), async (_, tx) => ({
        result: (await tx`SHOW enable_seqscan`)[0].enable_seqscan as string,
        statements: [],
      }));
      assert.equal(inside, "off");
      // The relay waits for Kafka inside this transaction: its idle limit is its own, whatever the server's.
      const idle = await pipelinedTransaction(sql, (tx) => claimUnsent(tx, 10), async (_, tx) => ({
        result: (await tx`SELECT current_setting('idle_in_transaction_session_timeout') AS v`)[0].v as string,
        statements: [],
      }));
      assert.equal(idle, `${RELAY_TX_IDLE_LIMIT_MS / 60_000}min`);
      assert.equal((await sql`SHOW enable_seqscan`)[0].enable_seqscan, "on", "the same connection, after");
    } finally {
      await sql.end();
    }
  });

  it("deletes every sent row past the retention in one run, batch after batch, and keeps the newer ones", async () => {
    const sql = createSql(config.DATABASE_URL, { max: 2 });
    const wallet = crypto.randomUUID(); // marks this test's rows
    try {
      const expired = 25_000;
      await sql`
        INSERT INTO outbox_sent (id, event_id, wallet_id, wallet_version, event_type, payload, created_at, sent_at)
        SELECT -1000000 - v, gen_random_uuid(), ${wallet}, v, 'deposit.succeeded', '{}',
          now() - interval '3 days', now() - interval '2 days' - v * interval '1 ms'
        FROM generate_series(1, ${expired}::int) v`;
      await sql`
        INSERT INTO outbox_sent (id, event_id, wallet_id, wallet_version, event_type, payload, created_at)
        SELECT -2000000 - v, gen_random_uuid(), ${wallet}, 100000 + v, 'deposit.succeeded', '{}', now()
        FROM generate_series(1, 100) v`;
      const cutoff = new Date(Date.now() - 24 * 3600_000);
      // A spent budget stops after one batch and says it is not done.
      const cut = await purgeSentBefore(sql, cutoff, { batchSize: 10_000, budgetMs: 0 });
      assert.deepEqual(cut, { deleted: 10_000, batches: 1, caughtUp: false });
      const started = performance.now();
      const run = await purgeSentBefore(sql, cutoff, { batchSize: 10_000 });
      const seconds = (performance.now() - started) / 1000;
      assert.deepEqual(run, { deleted: expired - 10_000, batches: 2, caughtUp: true });
      const [left] = await sql<{ old: number; recent: number }[]>`
        SELECT count(*) FILTER (WHERE sent_at < ${cutoff})::int AS old,
               count(*) FILTER (WHERE sent_at >= ${cutoff})::int AS recent
        FROM outbox_sent WHERE wallet_id = ${wallet}`;
      assert.deepEqual({ ...left }, { old: 0, recent: 100 });
      console.log(
        `retention: ${run.deleted} rows in ${run.batches} batches, ${
          (run.deleted / seconds).toFixed(0)
        } rows/s`,
      );
    } finally {
      await sql`DELETE FROM outbox_sent WHERE wallet_id = ${wallet}`;
      await sql.end();
    }
  });
});
