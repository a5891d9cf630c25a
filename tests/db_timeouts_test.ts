/**
 * The bounds every pool connection carries (statement_timeout, lock_timeout,
 * idle_in_transaction_session_timeout): in force on each connection, and a statement past one fails with a
 * catchable error while the pool keeps working. The work that needs more (the relay's wait on Kafka, table
 * upkeep) gets it for its own transaction or statement only.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createSql, DEFAULT_DB_TIMEOUTS, pipelinedTransaction, type Sql } from "../src/db/client.ts";
import { claimUnsent, RELAY_TX_IDLE_LIMIT_MS } from "../src/db/outbox_repository.ts";
import { analyzeStaleTables, vacuumOutboxIfBloated } from "../src/db/table_upkeep.ts";
import { config } from "./support/harness.ts";

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The three settings as the connection reports them. */
async function bounds(sql: Sql) {
  const [row] = await sql<{ statement: string; lock: string; idle: string }[]>`
    SELECT current_setting('statement_timeout') AS statement, current_setting('lock_timeout') AS lock,
      current_setting('idle_in_transaction_session_timeout') AS idle`;
  return row;
}

function codeOf(error: unknown): string {
  return String((error as { code?: unknown }).code);
}

describe("connection bounds", () => {
  let other: Sql;
  before(async () => {
    other = createSql(config.DATABASE_URL, { max: 1 });
    await other`CREATE TABLE IF NOT EXISTS timeouts_probe (k int PRIMARY KEY)`;
    await other`INSERT INTO timeouts_probe VALUES (1) ON CONFLICT DO NOTHING`;
  });
  after(async () => {
    await other`DROP TABLE IF EXISTS timeouts_probe`;
    await other.end({ timeout: 5 });
  });

  it("are in force on every connection of a pool, with the defaults", async () => {
    assert.deepEqual(DEFAULT_DB_TIMEOUTS, { statementMs: 5000, lockMs: 2000, idleInTransactionMs: 10_000 });
    const sql = createSql(config.DATABASE_URL, { max: 3 });
    try {
      // Three connections at once: each one was opened with the bounds, not only the first.
      const reserved = await Promise.all([1, 2, 3].map(() => sql.reserve()));
      try {
        const seen = await Promise.all(reserved.map((r) => bounds(r as unknown as Sql)));
        assert.deepEqual(seen, [1, 2, 3].map(() => ({ statement: "5s", lock: "2s", idle: "10s" })));
      } finally {
        reserved.forEach((r) => r.release());
      }
    } finally {
      await sql.end({ timeout: 5 });
    }
  });

  it("take the configured values", async () => {
    const sql = createSql(config.DATABASE_URL, {
      max: 1,
      timeouts: { statementMs: 1500, lockMs: 700, idleInTransactionMs: 60_000 },
    });
    try {
      assert.deepEqual(await bounds(sql), { statement: "1500ms", lock: "700ms", idle: "1min" });
    } finally {
      await sql.end({ timeout: 5 });
    }
  });

  it("cancel a statement that runs too long, catchably, and the connection goes on", async () => {
    const sql = createSql(config.DATABASE_URL, {
      max: 1,
      timeouts: { ...DEFAULT_DB_TIMEOUTS, statementMs: 200 },
    });
    try {
      await assert.rejects(sql`SELECT pg_sleep(5)`, (error) => codeOf(error) === "57014");
      assert.deepEqual([...await sql`SELECT 1 AS one`], [{ one: 1 }]);
    } finally {
      await sql.end({ timeout: 5 });
    }
  });

  it("cancel a statement that waits too long for a row lock, catchably", async () => {
    const sql = createSql(config.DATABASE_URL, {
      max: 1,
      timeouts: { ...DEFAULT_DB_TIMEOUTS, lockMs: 200 },
    });
    const holder = await other.reserve();
    try {
      await holder`BEGIN`;
      await holder`SELECT k FROM timeouts_probe WHERE k = 1 FOR UPDATE`;
      await assert.rejects(
        sql`UPDATE timeouts_probe SET k = 1 WHERE k = 1`,
        (error) => codeOf(error) === "55P03",
      );
      assert.deepEqual([...await sql`SELECT 1 AS one`], [{ one: 1 }]);
    } finally {
      await holder`ROLLBACK`;
      holder.release();
      await sql.end({ timeout: 5 });
    }
  });

  it("end a session left idle in its transaction; its next statement rejects, the pool goes on", async () => {
    const sql = createSql(config.DATABASE_URL, {
      max: 1,
      timeouts: { ...DEFAULT_DB_TIMEOUTS, idleInTransactionMs: 200 },
    });
    try {
      await assert.rejects(
        sql.begin(async (tx) => {
          await tx`SELECT k FROM timeouts_probe WHERE k = 1 FOR UPDATE`;
          await pause(1000); // idle in the transaction, holding the row lock
          await tx`SELECT 1`;
        }),
        (error) => error instanceof Error,
      );
      // The lock went with the session: another one takes it at once (its own lock_timeout would say if not).
      await other.begin(async (tx) => {
        await tx`SELECT set_config('lock_timeout', '1000', true)`;
        await tx`SELECT k FROM timeouts_probe WHERE k = 1 FOR UPDATE`;
      });
      assert.deepEqual([...await sql`SELECT 1 AS one`], [{ one: 1 }]);
    } finally {
      await sql.end({ timeout: 5 });
    }
  });

  it("are raised for the relay's transaction only, for its wait on Kafka", async () => {
    const sql = createSql(config.DATABASE_URL, { max: 1 });
    try {
      const inside = await pipelinedTransaction(
        sql,
        (tx) => claimUnsent(tx, 1),
        async (_, tx) => ({
          result: (await tx`SELECT current_setting('idle_in_transaction_session_timeout') AS idle`)[0].idle,
          statements: [],
        }),
      );
      assert.equal(inside, `${RELAY_TX_IDLE_LIMIT_MS / 60_000}min`);
      assert.equal((await bounds(sql)).idle, "10s");
    } finally {
      await sql.end({ timeout: 5 });
    }
  });

  it("are back in force after table upkeep lifted the statement bound", async () => {
    const sql = createSql(config.DATABASE_URL, { max: 1 });
    try {
      assert.equal(await vacuumOutboxIfBloated(sql, 0), true);
      await analyzeStaleTables(sql, { minIntervalMs: 0 });
      assert.deepEqual(await bounds(sql), { statement: "5s", lock: "2s", idle: "10s" });
    } finally {
      await sql.end({ timeout: 5 });
    }
  });
});
