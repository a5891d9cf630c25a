/**
 * Writes decided on the state a process last committed (one round trip, compared-and-set on the version
 * under the row lock) against the real PostgreSQL: taken when the state is current, refused per wallet when
 * another process moved it, and never at the cost of money or of a reference id.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHarness, dbWallet, enabledWallet, type Harness } from "./support/harness.ts";
import { KnownWallets } from "../src/wallet/known_wallets.ts";
import { findWallet, writeWalletChangesIfCurrent } from "../src/db/wallet_repository.ts";
import { decideMoneyRequests, type Wallet } from "../src/wallet/wallet_rules.ts";

let one: Harness;
let two: Harness;
/** How long a wallet another process wrote stays on the locked path, in these services. */
const CONTENDED_MS = 300;
before(() => {
  one = createHarness({ poolSize: 4, contendedMs: CONTENDED_MS });
  two = createHarness({ poolSize: 4, contendedMs: CONTENDED_MS });
});
after(async () => {
  await one.close();
  await two.close();
});

/** balance == sum of the successful ledger rows, and the outbox holds versions 1..version without a gap. */
async function assertBooks(h: Harness, walletId: string, expectedBalance: bigint): Promise<void> {
  const wallet = (await dbWallet(h.sql, walletId))!;
  const [{ sum }] = await h.sql<{ sum: string }[]>`
    SELECT coalesce(sum(CASE type WHEN 'deposit' THEN amount ELSE -amount END), 0)::text AS sum
    FROM wallet_transactions WHERE wallet_id = ${walletId} AND status = 'success'`;
  assert.equal(wallet.balance, expectedBalance);
  assert.equal(BigInt(sum), expectedBalance);
  const versions = await h.sql<{ v: string }[]>`
    SELECT wallet_version::text AS v FROM outbox WHERE wallet_id = ${walletId} ORDER BY wallet_version`;
  assert.deepEqual(
    versions.map((r) => BigInt(r.v)),
    Array.from({ length: Number(wallet.version) }, (_, i) => BigInt(i + 1)),
  );
}

describe("writes on the known state", () => {
  it("a wallet this process wrote last is written again in one round trip, on its known state", async () => {
    const { walletId } = await enabledWallet(one.app); // enabled through `one`: its state is known there
    const before = one.wallets.writeStats();
    await one.wallets.deposit(walletId, 1000n, crypto.randomUUID());
    await one.wallets.withdraw(walletId, 300n, crypto.randomUUID());
    await one.wallets.withdraw(walletId, 5000n, crypto.randomUUID()).catch(() => {}); // recorded as failed
    const stats = one.wallets.writeStats();
    assert.equal(stats.onKnownState - before.onKnownState, 3);
    assert.equal(stats.onLockedState - before.onLockedState, 0);
    assert.equal(stats.versionMoved - before.versionMoved, 0);
    await assertBooks(one, walletId, 700n);
    assert.equal((await dbWallet(one.sql, walletId))!.version, 4n);
  });

  it("a version moved by another process is caught, and the request decided again on the locked row", async () => {
    const { walletId } = await enabledWallet(one.app);
    await one.wallets.deposit(walletId, 1000n, crypto.randomUUID()); // `one` knows version 2, balance 1000
    await two.wallets.deposit(walletId, 500n, crypto.randomUUID()); // version 3, behind `one`'s back
    const before = one.wallets.writeStats();
    const withdrawal = await one.wallets.withdraw(walletId, 1400n, crypto.randomUUID());
    // On the stale state (1000) it would have failed; on the row as it is (1500) it succeeds.
    assert.equal(withdrawal.status, "success");
    assert.equal(withdrawal.balanceAfter, 100n);
    const stats = one.wallets.writeStats();
    assert.equal(stats.versionMoved - before.versionMoved, 1);
    assert.equal(stats.onLockedState - before.onLockedState, 1);
    await assertBooks(one, walletId, 100n);
    // Contended: the next batch goes straight to the locked path...
    await one.wallets.deposit(walletId, 1n, crypto.randomUUID());
    const contended = one.wallets.writeStats();
    assert.equal(contended.onLockedState - stats.onLockedState, 1);
    assert.equal(contended.versionMoved, stats.versionMoved);
    // ...and once the contention is over, a locked write makes it known again and the short way is back.
    await new Promise((resolve) => setTimeout(resolve, CONTENDED_MS + 50));
    await one.wallets.deposit(walletId, 1n, crypto.randomUUID());
    await one.wallets.deposit(walletId, 1n, crypto.randomUUID());
    assert.equal(one.wallets.writeStats().onKnownState - contended.onKnownState, 1);
    await assertBooks(one, walletId, 103n);
  });

  it("a wallet two processes write in turn stops paying for a stale known state", async () => {
    const { walletId } = await enabledWallet(one.app);
    const moved = () => one.wallets.writeStats().versionMoved + two.wallets.writeStats().versionMoved;
    const before = moved();
    for (let i = 0; i < 20; i++) {
      await (i % 2 ? two : one).wallets.deposit(walletId, 10n, crypto.randomUUID());
    }
    // Each service misses once, then keeps the wallet on the locked path (without that: 18 misses).
    assert.ok(moved() - before <= 2, `${moved() - before} misses`);
    await assertBooks(one, walletId, 200n);
  });

  it("a used reference id is refused by the statement itself and replayed by the locked path", async () => {
    const { walletId } = await enabledWallet(one.app);
    const ref = crypto.randomUUID();
    const first = await one.wallets.deposit(walletId, 700n, ref);
    const before = one.wallets.writeStats();
    const retry = await one.wallets.deposit(walletId, 700n, ref);
    assert.equal(retry.id, first.id);
    const stats = one.wallets.writeStats();
    assert.equal(stats.versionMoved - before.versionMoved, 1, "refused by the reference check");
    assert.equal(stats.knownStateFailed - before.knownStateFailed, 0, "not by the unique constraint");
    await assertBooks(one, walletId, 700n);
  });

  it("a disabled wallet is never decided on its known state", async () => {
    const { walletId } = await enabledWallet(one.app);
    await one.wallets.deposit(walletId, 100n, crypto.randomUUID());
    await two.wallets.disable(walletId); // `one` still knows it enabled
    await assert.rejects(one.wallets.deposit(walletId, 100n, crypto.randomUUID()), {
      refusal: "wallet_disabled",
    });
    await assertBooks(one, walletId, 100n);
  });

  it("with knownWallets 0 every batch is decided on locked rows", async () => {
    const locking = createHarness({ poolSize: 2, knownWallets: 0 });
    try {
      const { walletId } = await enabledWallet(locking.app);
      for (let i = 0; i < 3; i++) await locking.wallets.deposit(walletId, 10n, crypto.randomUUID());
      assert.deepEqual(locking.wallets.writeStats(), {
        onKnownState: 0,
        versionMoved: 0,
        knownStateFailed: 0,
        onLockedState: 3,
        lockedElsewhere: 0,
        timedOut: 0,
        queueFull: 0,
        queued: 0,
        lockWaiting: 0,
      });
      await assertBooks(locking, walletId, 30n);
    } finally {
      await locking.close();
    }
  });
});

describe("writeWalletChangesIfCurrent", () => {
  async function decidedDeposit(walletId: string, amount: bigint, expected?: bigint) {
    const wallet = (await findWallet(one.sql, walletId))!;
    const decision = decideMoneyRequests(
      wallet,
      [
        { type: "deposit", amount, referenceId: crypto.randomUUID() },
      ],
      new Map(),
      new Date(),
    );
    return {
      wallet: decision.wallet,
      transactions: decision.newTransactions,
      outbox: decision.outbox,
      expectedVersion: expected ?? wallet.version,
    };
  }

  it("writes the wallets still at their expected version, and nothing at all of the others", async () => {
    const current = (await enabledWallet(one.app)).walletId;
    const moved = (await enabledWallet(one.app)).walletId;
    const changes = [await decidedDeposit(current, 100n), await decidedDeposit(moved, 200n, 0n)];
    const { written, skipped } = await writeWalletChangesIfCurrent(one.sql, changes);
    assert.deepEqual([...written], [current]);
    assert.deepEqual([...skipped], []);
    await assertBooks(one, current, 100n);
    await assertBooks(one, moved, 0n);
    assert.equal((await dbWallet(one.sql, moved))!.version, 1n);
    const [{ n }] = await one.sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM wallet_transactions WHERE wallet_id = ${moved}`;
    assert.equal(n, 0);
  });

  it("skips a wallet whose row another session holds: writes nothing of it and reports it skipped", async () => {
    const { walletId } = await enabledWallet(one.app);
    const other = (await enabledWallet(one.app)).walletId;
    const stale = await decidedDeposit(walletId, 100n); // decided on version 1
    const fine = await decidedDeposit(other, 7n);
    let outcome: { written: Set<string>; skipped: Set<string> } | undefined;
    await two.sql.begin(async (tx) => {
      await tx`SELECT id FROM wallets WHERE id = ${walletId} FOR UPDATE`;
      // Returns while the lock is still held here: the locked wallet is not waited for.
      outcome = await writeWalletChangesIfCurrent(one.sql, [stale, fine]);
    });
    assert.deepEqual([...outcome!.written], [other]);
    assert.deepEqual([...outcome!.skipped], [walletId]);
    await assertBooks(one, walletId, 0n);
    await assertBooks(one, other, 7n);
  });
});

describe("KnownWallets", () => {
  const wallet = (id: string, version: bigint): Wallet => ({
    id,
    customerXid: id,
    status: "enabled",
    balance: version * 10n,
    version,
    enabledAt: null,
    disabledAt: null,
  });

  it("keeps the newest version, forgets on demand, and drops the least recently written past its size", () => {
    const known = new KnownWallets({ maxEntries: 2 });
    known.remember(wallet("a", 3n));
    known.remember(wallet("a", 2n)); // an older report arriving late
    assert.equal(known.get("a")!.version, 3n);
    known.remember(wallet("b", 1n));
    known.remember(wallet("a", 4n)); // a is now the most recent
    known.remember(wallet("c", 1n)); // b goes
    assert.equal(known.get("b"), undefined);
    assert.equal(known.get("a")!.version, 4n);
    assert.equal(known.size, 2);
    known.forget("a");
    assert.equal(known.get("a"), undefined);
  });

  it("does not keep a contended wallet until its time is over", () => {
    let now = 1_000;
    const known = new KnownWallets({ maxEntries: 10, contendedMs: 100, now: () => now });
    known.remember(wallet("a", 1n));
    known.contended("a");
    assert.equal(known.get("a"), undefined);
    known.remember(wallet("a", 2n));
    assert.equal(known.get("a"), undefined, "kept out while contended");
    now += 100;
    known.remember(wallet("a", 3n));
    assert.equal(known.get("a")!.version, 3n);
  });

  it("keeps nothing with a size of 0", () => {
    const known = new KnownWallets({ maxEntries: 0 });
    known.remember(wallet("a", 1n));
    assert.equal(known.size, 0);
  });
});
