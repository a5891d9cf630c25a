/**
 * PostgreSQL unreachable or its connection ended under a request: a transient fault, answered 503 JSend error
 * with Retry-After (never 500, never internals), and a retry with the same reference_id is safe. The pool
 * reconnects within a short, capped pause once PostgreSQL is back. Runs on a PRIVATE PostgreSQL this test
 * crashes and restarts.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createSql, RECONNECT_BACKOFF_MAX_S, reconnectBackoff } from "../src/db/client.ts";
import { migrateUp } from "../src/db/migrate.ts";
import { isTransientDbError } from "../src/db/transient_errors.ts";
import { NOT_APPLIED_MESSAGE, UNAVAILABLE_MESSAGE } from "../src/http/errors.ts";
import { type PrivatePostgres, startPrivatePostgres } from "./support/private_servers.ts";
import {
  call,
  countWrites,
  createHarness,
  enabledWallet,
  type Harness,
  newCustomerXid,
} from "./support/harness.ts";

/** The error a statement rejects with (null when it succeeds). */
async function failure(work: Promise<unknown>): Promise<unknown> {
  try {
    await work;
    return null;
  } catch (error) {
    return error;
  }
}

function assertUnavailable(answer: { status: number; body: unknown; headers: Headers }, what: string) {
  assert.equal(answer.status, 503, `${what}: ${JSON.stringify(answer.body)}`);
  assert.equal(answer.headers.get("retry-after"), "1", what);
  const body = answer.body as { status: string; message: string };
  assert.equal(body.status, "error", what);
  assert.ok([NOT_APPLIED_MESSAGE, UNAVAILABLE_MESSAGE].includes(body.message), `${what}: ${body.message}`);
}

describe("PostgreSQL faults under requests", () => {
  let pg: PrivatePostgres;
  let harness: Harness;

  before(async () => {
    pg = await startPrivatePostgres();
    await migrateUp(pg.url("postgres"), { log: () => {} });
    harness = createHarness({ databaseUrl: pg.url("postgres"), poolSize: 4 });
  });

  after(async () => {
    await harness?.close();
    await pg?.dispose();
  });

  it("classifies real connection ends and timeouts as transient, and a bad statement as not", async () => {
    const sql = createSql(pg.url("postgres"), { max: 1 });
    try {
      const terminated = await failure(sql`SELECT pg_terminate_backend(pg_backend_pid())`);
      // PostgreSQL's FATAL, or the close that postgres.js saw first.
      assert.ok(["57P01", "CONNECTION_CLOSED"].includes(String((terminated as { code?: string }).code)));
      const timedOut = await failure(
        sql.begin((tx) => [tx`SET LOCAL statement_timeout = 10`, tx`SELECT pg_sleep(1)`]),
      );
      assert.equal((timedOut as { code?: string }).code, "57014");
      const bug = await failure(sql`SELECT * FROM no_such_table`);
      assert.equal((bug as { code?: string }).code, "42P01");

      assert.equal(isTransientDbError(terminated), true);
      assert.equal(isTransientDbError(timedOut), true);
      assert.equal(isTransientDbError(bug), false);
      assert.equal(isTransientDbError(new TypeError("x is undefined")), false);
      assert.equal(isTransientDbError(Object.assign(new Error("refused"), { code: "ECONNREFUSED" })), true);
      assert.equal(isTransientDbError(Object.assign(new Error("broken"), { code: "08006" })), true);
    } finally {
      await sql.end({ timeout: 5 });
    }
  });

  it("pools reconnect after a capped pause, however many connections failed in a row", () => {
    for (let retries = 0; retries <= 60; retries++) {
      assert.ok(reconnectBackoff(retries) <= RECONNECT_BACKOFF_MAX_S, `retries ${retries}`);
    }
    const sql = createSql(pg.url("postgres"));
    // postgres.js's own default reaches 20 s: the pool must use ours.
    assert.equal((sql as unknown as { options: { backoff: unknown } }).options.backoff, reconnectBackoff);
    void sql.end();
  });

  it("answers 503 with Retry-After while PostgreSQL is down, and a retry with the same reference_id is safe", async () => {
    const { token, walletId } = await enabledWallet(harness.app);
    await harness.cache.evict(walletId); // the GET below must need PostgreSQL
    const deposit = { amount: "12.34", reference_id: crypto.randomUUID() };

    await pg.stop({ kill: true });
    try {
      assertUnavailable(await call(harness.app, "GET", "/api/v1/wallet", { token }), "GET while down");
      assertUnavailable(
        await call(harness.app, "POST", "/api/v1/wallet/deposits", { token, body: deposit }),
        "deposit while down",
      );
      assertUnavailable(
        await call(harness.app, "PATCH", "/api/v1/wallet", { token, body: { is_disabled: "true" } }),
        "disable while down",
      );
      assertUnavailable(
        await call(harness.app, "POST", "/api/v1/init", { body: { customer_xid: newCustomerXid() } }),
        "init while down",
      );
    } finally {
      await pg.start();
    }

    const retried = await call(harness.app, "POST", "/api/v1/wallet/deposits", { token, body: deposit });
    assert.equal(retried.status, 201, JSON.stringify(retried.body));
    const again = await call(harness.app, "POST", "/api/v1/wallet/deposits", { token, body: deposit });
    assert.equal(again.status, 201, JSON.stringify(again.body));
    assert.equal(again.body.data.deposit.id, retried.body.data.deposit.id);
    assert.equal((await countWrites(harness.sql, walletId)).transactions, 1);
  });
});
