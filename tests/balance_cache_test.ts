/**
 * The Redis balance cache's compare-and-set and its refresh-ahead, on the real Redis and PostgreSQL: an entry
 * only ever moves to a newer version or to a later confirmation of the same one, and a wallet that is read
 * steadily is confirmed again from PostgreSQL before its entry expires, without a reader waiting for it.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { BalanceCache } from "../src/cache/balance_cache.ts";
import { createLogger } from "../src/log.ts";
import { WalletService } from "../src/wallet/wallet_service.ts";
import { cachedWalletEntry, config, createHarness, newCustomerXid } from "./support/harness.ts";
import { waitUntil } from "./support/topic.ts";

const FRESHNESS_MS = 60_000;
const h = createHarness();
const cache = new BalanceCache(h.redis, { freshnessMs: FRESHNESS_MS });
before(() => waitUntil(() => h.redis.status === "ready", { message: "Redis connected" }));
after(() => h.close());

/** The Redis hash of a wallet's entry, and the milliseconds it has left. */
async function cachedEntry(walletId: string): Promise<{ hash: Record<string, string>; ttlMs: number }> {
  const key = `wallet:${walletId}`;
  return { hash: await h.redis.hgetall(key), ttlMs: await h.redis.pttl(key) };
}

describe("balance cache compare-and-set", () => {
  it("takes a newer version or a later confirmation of the same one, and nothing else", async () => {
    const first = cachedWalletEntry({ confirmedAt: Date.now() - 10_000 });
    assert.equal(await cache.put(first), true);

    assert.equal(await cache.put({ ...first, version: 1, balance: "5", confirmedAt: Date.now() }), false);
    assert.equal(await cache.put(first), false, "the same confirmation again changes nothing");
    assert.equal(await cache.put({ ...first, confirmedAt: first.confirmedAt - 1 }), false);
    assert.equal((await cachedEntry(first.id)).hash.confirmed_at, String(first.confirmedAt));

    const confirmedAgain = Date.now();
    assert.equal(await cache.put({ ...first, confirmedAt: confirmedAgain }), true);
    const after = await cachedEntry(first.id);
    assert.equal(after.hash.confirmed_at, String(confirmedAgain));
    assert.equal(after.hash.balance, "10");
    assert.ok(after.ttlMs > FRESHNESS_MS - 5_000, `expiry moved with the confirmation (pttl ${after.ttlMs})`);

    assert.equal(
      await cache.put({ ...first, version: 3, balance: "30", confirmedAt: confirmedAgain - 5 }),
      true,
    );
    assert.equal(
      (await cachedEntry(first.id)).hash.balance,
      "30",
      "a newer version wins even if confirmed earlier",
    );
  });
});

describe("balance cache compare-and-set of many entries at once", () => {
  it("compares each entry on its own, in order, across more entries than one script call takes", async () => {
    const cached = cachedWalletEntry({ version: 5, balance: "50" });
    const expiring = cachedWalletEntry({ version: 5, balance: "50" });
    assert.deepEqual(await cache.putMany([cached, expiring]), [true, true]);

    const twice = cachedWalletEntry({ version: 1, balance: "1" });
    const fresh = Array.from({ length: 450 }, (_, i) => cachedWalletEntry({ balance: String(i) }));
    const now = Date.now();
    const batch = [
      { ...cached, version: 4, balance: "40" }, // older than the cached version: refused
      twice,
      ...fresh,
      { ...twice, version: 2, balance: "2" }, // the same wallet again, newer: taken after the first
      { ...twice, version: 2, balance: "2" }, // ...and the same confirmation again: refused
      { ...expiring, version: 6, confirmedAt: now - FRESHNESS_MS - 1 }, // newer but already expired
    ];
    const stored = await cache.putMany(batch);
    assert.equal(stored.length, batch.length);
    assert.deepEqual(
      [stored[0], stored[1], stored.at(-3), stored.at(-2), stored.at(-1)],
      [false, true, true, false, false],
    );
    assert.ok(stored.slice(2, -3).every((s) => s), "every new wallet stored");

    assert.equal((await cachedEntry(cached.id)).hash.balance, "50", "the older version did not overwrite");
    assert.equal((await cachedEntry(twice.id)).hash.version, "2");
    assert.equal((await cachedEntry(fresh[449].id)).hash.balance, "449", "the last chunk was applied");
    assert.deepEqual(
      (await cachedEntry(expiring.id)).hash,
      {},
      "an expired newer entry removes the older cached version",
    );
  });
});

describe("balance cache refresh-ahead", () => {
  it("confirms a steadily read wallet from PostgreSQL before its entry expires", async () => {
    const wallets = new WalletService({ sql: h.sql, log: createLogger(config.LOG_LEVEL), cache });
    const wallet = await wallets.initAccount(newCustomerXid());
    const enabled = await wallets.enable(wallet.id);
    // An entry whose freshness is nearly used up: due for a refresh whatever its wallet's share.
    const aging = Date.now() - Math.round(FRESHNESS_MS * 0.95);
    await h.redis.del(`wallet:${wallet.id}`);
    assert.equal(
      await cache.put({
        id: enabled.id,
        customerXid: enabled.customerXid,
        status: "enabled",
        enabledAt: enabled.enabledAt!.toISOString(),
        disabledAt: null,
        balance: "0",
        version: Number(enabled.version),
        confirmedAt: aging,
      }),
      true,
    );
    assert.ok(
      !cache.dueForRefresh({ ...cachedWalletEntry(), confirmedAt: Date.now() }),
      "a fresh entry is not due",
    );

    const read = await wallets.view(wallet.id);
    assert.equal(read.balance, "0", "the reader is answered from the aging entry");
    await waitUntil(async () => Number((await cachedEntry(wallet.id)).hash.confirmed_at) > aging, {
      message: "the entry was confirmed again from PostgreSQL",
    });
    const refreshed = await cachedEntry(wallet.id);
    assert.equal(refreshed.hash.version, String(enabled.version));
    assert.ok(refreshed.ttlMs > FRESHNESS_MS - 10_000, `the entry lives on (pttl ${refreshed.ttlMs})`);
  });
});
