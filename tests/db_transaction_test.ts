/**
 * pipelinedTransaction on the real PostgreSQL: what it commits is kept, a failing statement (read or write)
 * keeps nothing and throws PostgreSQL's error, and the connection goes back to the pool usable.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createSql, pipelinedTransaction, type Sql } from "../src/db/client.ts";
import { config } from "./support/harness.ts";

// One connection: a transaction left open by a failure would show in the very next statement.
function withSql(body: (sql: Sql) => Promise<void>) {
  return async () => {
    const sql = createSql(config.DATABASE_URL, { max: 1 });
    try {
      await sql`CREATE TABLE IF NOT EXISTS pipelined_probe (k text PRIMARY KEY, v int NOT NULL CHECK (v >= 0))`;
      await body(sql);
    } finally {
      await sql`DROP TABLE IF EXISTS pipelined_probe`;
      await sql.end();
    }
  };
}

async function keys(sql: Sql): Promise<string[]> {
  return (await sql<{ k: string }[]>`SELECT k FROM pipelined_probe ORDER BY k`).map((r) => r.k);
}

/** The pool's connection is back in autocommit: what it writes next is at once visible to another one. */
async function assertNoOpenTransaction(sql: Sql) {
  await sql`INSERT INTO pipelined_probe VALUES ('next', 1)`;
  const other = createSql(config.DATABASE_URL, { max: 1 });
  try {
    assert.equal((await other`SELECT count(*)::int AS n FROM pipelined_probe WHERE k = 'next'`)[0].n, 1);
  } finally {
    await other.end();
  }
  await sql`DELETE FROM pipelined_probe WHERE k = 'next'`;
}

describe("pipelinedTransaction", () => {
  it(
    "commits the writes decided from the reads",
    withSql(async (sql) => {
      await sql`INSERT INTO pipelined_probe VALUES ('a', 1)`;
      const result = await pipelinedTransaction(
        sql,
        (tx) => Promise.all([tx`SELECT v FROM pipelined_probe WHERE k = 'a' FOR UPDATE`, tx`SELECT 41 AS n`]),
        ([[{ v }], [{ n }]], tx) => ({
          result: v + n,
          statements: [
            tx`UPDATE pipelined_probe SET v = ${v + n} WHERE k = 'a'`,
            tx`INSERT INTO pipelined_probe VALUES ('b', ${n})`,
          ],
        }),
      );
      assert.equal(result, 42);
      assert.deepEqual([...await sql`SELECT k, v FROM pipelined_probe ORDER BY k`], [
        { k: "a", v: 42 },
        { k: "b", v: 41 },
      ]);
    }),
  );

  it(
    "keeps nothing when a write fails, and throws that write's error",
    withSql(async (sql) => {
      await assert.rejects(
        pipelinedTransaction(
          sql,
          (tx) => tx`SELECT 1`,
          (_, tx) => ({
            result: null,
            statements: [
              tx`INSERT INTO pipelined_probe VALUES ('kept?', 1)`,
              tx`INSERT INTO pipelined_probe VALUES ('negative', -1)`, // violates the check
              tx`INSERT INTO pipelined_probe VALUES ('after', 1)`,
            ],
          }),
        ),
        (error: Error & { code?: string }) => error.code === "23514",
      );
      assert.deepEqual(await keys(sql), []);
      await assertNoOpenTransaction(sql);
    }),
  );

  it(
    "keeps nothing when a read fails, and never runs the write step",
    withSql(async (sql) => {
      let wrote = false;
      await assert.rejects(
        pipelinedTransaction(
          sql,
          (tx) => Promise.all([tx`INSERT INTO pipelined_probe VALUES ('early', 1)`, tx`SELECT 1 / 0`]),
          () => {
            wrote = true;
            return { result: null, statements: [] };
          },
        ),
        (error: Error & { code?: string }) => error.code === "22012",
      );
      assert.equal(wrote, false);
      assert.deepEqual(await keys(sql), []);
      await assertNoOpenTransaction(sql);
    }),
  );
});

describe("the pool's own socket factory (Nagle off)", () => {
  it("fails every query while PostgreSQL is unreachable, and never leaves a connection stuck", async () => {
    // Port 1 on the loopback: nothing listens, so connecting is refused at once.
    const sql = createSql("postgres://postgres@127.0.0.1:1/test", { max: 1 });
    // A liveness guard, not a timing check: a stuck connection would otherwise hang the suite.
    const settle = async (query: Promise<unknown>) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const stuck = new Promise((resolve) =>
        timer = setTimeout(() => resolve("still waiting after 20 s"), 20_000)
      );
      try {
        return await Promise.race([
          query.then(() => "answered", (error: { code?: string }) => error.code ?? "error"),
          stuck,
        ]);
      } finally {
        clearTimeout(timer);
      }
    };
    try {
      assert.equal(await settle(sql`SELECT 1`), "ECONNREFUSED");
      assert.equal(await settle(sql`SELECT 1`), "ECONNREFUSED", "the next query tries again");
    } finally {
      await sql.end({ timeout: 1 });
    }
  });

  it("connects to the real PostgreSQL", async () => {
    const sql = createSql(config.DATABASE_URL, { max: 2 });
    try {
      const [a, b] = await Promise.all([
        sql`SELECT pg_backend_pid() AS pid`,
        sql`SELECT pg_backend_pid() AS pid`,
      ]);
      assert.ok(a[0].pid > 0 && b[0].pid > 0);
    } finally {
      await sql.end();
    }
  });
});
