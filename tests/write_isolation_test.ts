/**
 * The write path under a wallet row held by another session, against the real PostgreSQL: other wallets'
 * writes keep flowing, a write that cannot be done by its deadline is answered 503 and never committed (a
 * retry with the same reference_id is then applied exactly once), and a full write queue answers 503 at once.
 * Every check is on order and counts, never on timings.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  call,
  config,
  countWrites,
  createHarness,
  dbWallet,
  enabledWallet,
  type Harness,
} from "./support/harness.ts";
import { createSql, type Sql } from "../src/db/client.ts";
import { WriteNotAppliedError } from "../src/wallet/wallet_errors.ts";

/** Another session: holds a wallet's row lock until `release()` (or `safetyMs`, so a broken build fails). */
async function holdRowLock(sql: Sql, walletId: string, safetyMs = 20_000) {
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  let locked!: () => void;
  const isLocked = new Promise<void>((resolve) => locked = resolve);
  const state = { held: true };
  const done = sql.begin(async (tx) => {
    await tx`SELECT id FROM wallets WHERE id = ${walletId} FOR UPDATE`;
    locked();
    const safety = setTimeout(release, safetyMs);
    await released;
    clearTimeout(safety);
    state.held = false; // set before COMMIT goes out: anything seen after this may have waited for the lock
  });
  await isLocked;
  return {
    state,
    async release() {
      release();
      await done;
    },
  };
}

/** balance == sum of the successful ledger rows, and one outbox row per committed change (versions 1..n). */
async function assertBooks(h: Harness, walletId: string, expectedBalance: bigint): Promise<void> {
  const wallet = (await dbWallet(h.sql, walletId))!;
  const [{ sum }] = await h.sql<{ sum: string }[]>`
    SELECT coalesce(sum(CASE type WHEN 'deposit' THEN amount ELSE -amount END), 0)::text AS sum
    FROM wallet_transactions WHERE wallet_id = ${walletId} AND status = 'success'`;
  assert.equal(wallet.balance, expectedBalance, "balance");
  assert.equal(BigInt(sum), expectedBalance, "ledger sum");
  const versions = await h.sql<{ v: string }[]>`
    SELECT wallet_version::text AS v FROM outbox WHERE wallet_id = ${walletId}
    UNION ALL SELECT wallet_version::text FROM outbox_sent WHERE wallet_id = ${walletId} ORDER BY 1`;
  assert.deepEqual(
    versions.map((r) => BigInt(r.v)).sort((a, b) => a < b ? -1 : a > b ? 1 : 0),
    Array.from({ length: Number(wallet.version) }, (_, i) => BigInt(i + 1)),
    "one outbox row per committed change",
  );
}

/** Resolves once the service has no money request queued or waiting for a row lock. */
async function writesSettled(h: Harness): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const stats = h.wallets.writeStats();
    if (stats.queued === 0 && stats.lockWaiting === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error("writes never settled");
}

let locker: Sql;
before(() => {
  // Another application's session: without the service's connection bounds, whose idle-in-transaction
  // timeout (10 s) would end it, and release the row, before a slow test is done with it.
  locker = createSql(config.DATABASE_URL, {
    max: 2,
    timeouts: { statementMs: 0, lockMs: 0, idleInTransactionMs: 0 },
  });
});
after(async () => {
  await locker.end({ timeout: 5 });
});

describe("a wallet held locked by another session", () => {
  let h: Harness;
  before(() => {
    h = createHarness({ poolSize: 8, requestTimeoutMs: 30_000 });
  });
  after(() => h.close());

  it("does not hold up deposits to other wallets; its own deposits complete, in order, after release", async () => {
    const x = await enabledWallet(h.app);
    const others = await Promise.all(Array.from({ length: 24 }, () => enabledWallet(h.app)));
    // Half of the others have a known state in this process (one-round-trip path), half do not.
    for (const other of others.slice(0, 12)) await h.wallets.deposit(other.walletId, 1n, crypto.randomUUID());
    await h.wallets.deposit(x.walletId, 1n, crypto.randomUUID());
    const before = h.wallets.writeStats();

    const lock = await holdRowLock(locker, x.walletId);
    const xRefs = [crypto.randomUUID(), crypto.randomUUID(), crypto.randomUUID()];
    const xDone: boolean[] = [];
    const xDeposits = xRefs.map((ref, i) =>
      h.wallets.deposit(x.walletId, BigInt(10 + i), ref).then((t) => {
        xDone.push(lock.state.held);
        return t;
      })
    );
    const heldAtAnswer = await Promise.all(others.map(async (other) => {
      const response = await call(h.app, "POST", "/api/v1/wallet/deposits", {
        token: other.token,
        body: { amount: 5, reference_id: crypto.randomUUID() },
      });
      assert.equal(response.status, 201, JSON.stringify(response.body));
      return lock.state.held;
    }));
    // Every other wallet's deposit was answered while X's row was still held.
    assert.deepEqual(heldAtAnswer, others.map(() => true));
    assert.equal(xDone.length, 0, "a deposit to X completed while its row was held");
    await lock.release();

    const written = await Promise.all(xDeposits);
    assert.deepEqual(xDone, [false, false, false]);
    // X's requests were written in the order they were made.
    const ledger = await h.sql<{ reference_id: string }[]>`
      SELECT reference_id FROM wallet_transactions WHERE wallet_id = ${x.walletId} ORDER BY seq`;
    assert.deepEqual(ledger.slice(-3).map((r) => r.reference_id), xRefs);
    assert.deepEqual(written.map((t) => t.referenceId), xRefs);
    assert.ok(h.wallets.writeStats().lockedElsewhere > before.lockedElsewhere);

    await assertBooks(h, x.walletId, 1n + 10n + 11n + 12n);
    for (const [i, other] of others.entries()) await assertBooks(h, other.walletId, i < 12 ? 501n : 500n);
  });

  it("init of its customer is answered while the row is held", async () => {
    const x = await enabledWallet(h.app);
    const lock = await holdRowLock(locker, x.walletId);
    try {
      const init = await call(h.app, "POST", "/api/v1/init", { body: { customer_xid: x.xid } });
      assert.equal(init.status, 201);
      assert.equal(lock.state.held, true);
    } finally {
      await lock.release();
    }
  });
});

describe("the request deadline", () => {
  let h: Harness;
  before(() => {
    h = createHarness({ poolSize: 8, requestTimeoutMs: 1_000 });
  });
  after(() => h.close());

  it("a deposit whose wallet stays locked past the deadline gets 503, commits nothing, and its retry applies once", async () => {
    const x = await enabledWallet(h.app);
    await h.wallets.deposit(x.walletId, 100n, crypto.randomUUID());
    const booksBefore = await countWrites(h.sql, x.walletId);
    const reference = crypto.randomUUID(); // amounts in the API are whole units; the service takes cents
    const lock = await holdRowLock(locker, x.walletId);
    let timedOut;
    try {
      timedOut = await call(h.app, "POST", "/api/v1/wallet/deposits", {
        token: x.token,
        body: { amount: 7, reference_id: reference },
      });
      assert.equal(lock.state.held, true, "the 503 must come while the row is still held");
    } finally {
      // Released right after the answer: a write that still went ahead now would commit.
      await lock.release();
    }
    assert.equal(timedOut.status, 503);
    assert.equal(timedOut.headers.get("retry-after"), "1");
    assert.equal(timedOut.body.status, "error");
    assert.equal(typeof timedOut.body.message, "string");
    await writesSettled(h);
    assert.deepEqual(await countWrites(h.sql, x.walletId), booksBefore);
    await assertBooks(h, x.walletId, 100n);

    const retried = await call(h.app, "POST", "/api/v1/wallet/deposits", {
      token: x.token,
      body: { amount: 7, reference_id: reference },
    });
    assert.equal(retried.status, 201);
    const again = await call(h.app, "POST", "/api/v1/wallet/deposits", {
      token: x.token,
      body: { amount: 7, reference_id: reference },
    });
    assert.equal(again.status, 201);
    assert.equal(again.body.data.deposit.id, retried.body.data.deposit.id);
    const booksAfter = await countWrites(h.sql, x.walletId);
    assert.deepEqual(booksAfter, {
      transactions: booksBefore.transactions + 1,
      outbox: booksBefore.outbox + 1,
    });
    await assertBooks(h, x.walletId, 800n); // 100 cents, then 7.00
  });

  it("a disable whose wallet stays locked past the deadline gets 503 and the wallet stays enabled", async () => {
    const x = await enabledWallet(h.app);
    const booksBefore = await countWrites(h.sql, x.walletId);
    const lock = await holdRowLock(locker, x.walletId);
    let response;
    try {
      response = await call(h.app, "PATCH", "/api/v1/wallet", {
        token: x.token,
        body: { is_disabled: true },
      });
      assert.equal(lock.state.held, true);
    } finally {
      await lock.release();
    }
    assert.equal(response.status, 503, JSON.stringify(response.body));
    assert.equal(response.headers.get("retry-after"), "1");
    await writesSettled(h);
    assert.equal((await dbWallet(h.sql, x.walletId))!.status, "enabled");
    assert.deepEqual(await countWrites(h.sql, x.walletId), booksBefore);
    const retried = await call(h.app, "PATCH", "/api/v1/wallet", {
      token: x.token,
      body: { is_disabled: true },
    });
    assert.equal(retried.status, 200);
  });
});

describe("the write queue", () => {
  let h: Harness;
  before(() => {
    h = createHarness({ poolSize: 8, requestTimeoutMs: 30_000, maxQueued: 2 });
  });
  after(() => h.close());

  it("answers 503 at once when full, and writes nothing of the refused requests", async () => {
    const x = await enabledWallet(h.app);
    const y = await enabledWallet(h.app);
    const yBefore = await countWrites(h.sql, y.walletId);
    const lock = await holdRowLock(locker, x.walletId);
    let accepted;
    try {
      // The first is in flight (then waiting for X's row); the next two wait behind it, filling the queue.
      accepted = [1n, 2n, 3n].map((n) => h.wallets.deposit(x.walletId, n, crypto.randomUUID()));
      await assert.rejects(
        h.wallets.deposit(x.walletId, 4n, crypto.randomUUID()),
        (e) => e instanceof WriteNotAppliedError && e.reason === "queue_full",
      );
      const refused = await call(h.app, "POST", "/api/v1/wallet/deposits", {
        token: y.token,
        body: { amount: 5, reference_id: crypto.randomUUID() },
      });
      assert.equal(refused.status, 503);
      assert.equal(refused.headers.get("retry-after"), "1");
      assert.equal(refused.body.status, "error");
      assert.equal(lock.state.held, true, "the 503 must come at once, not after the row was released");
      assert.ok(h.wallets.writeStats().queueFull >= 2);
    } finally {
      await lock.release();
    }
    await Promise.all(accepted);
    await writesSettled(h);
    assert.deepEqual(await countWrites(h.sql, y.walletId), yBefore);
    await assertBooks(h, x.walletId, 6n);
    await assertBooks(h, y.walletId, 0n);
  });
});
