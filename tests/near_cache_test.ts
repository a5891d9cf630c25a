/**
 * The near cache on the real Redis: a second read of a wallet is served from memory, a change made by
 * another client (as the consumer in another process makes it) reaches it through Redis's invalidation, this
 * process's own writes show at once (kept as Redis stored them, without a read back), and when the
 * invalidation connection is killed nothing stale is served.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { BalanceCache, type CachedWallet, createRedis } from "../src/cache/balance_cache.ts";
import { NearCache } from "../src/cache/near_cache.ts";
import { cachedWalletEntry, config } from "./support/harness.ts";
import { waitUntil } from "./support/topic.ts";

/** A BalanceCache with a near cache, and a plain one standing for another process (e.g. the consumer). */
async function setUp(freshnessMs = 60_000) {
  const data = createRedis(config.REDIS_URL, { name: "near-cache-test" });
  const invalidations = createRedis(config.REDIS_URL, { name: "near-cache-test-inv", subscriber: true });
  const other = createRedis(config.REDIS_URL, { name: "near-cache-test-other" });
  for (const r of [data, invalidations, other]) r.on("error", () => {});
  // A long lease: these tests count hits, and a lease lapsing on a loaded machine would turn one into a miss
  // (the lease has its own test in redis_faults_test.ts).
  const near = new NearCache<CachedWallet>(data, invalidations, { maxEntries: 1000, leaseMs: 1000 });
  const cache = new BalanceCache(data, { freshnessMs, near });
  const elsewhere = new BalanceCache(other, { freshnessMs });
  await waitUntil(() => near.stats().active, { message: "near cache active" });
  return {
    near,
    cache,
    elsewhere,
    other,
    close() {
      for (const r of [data, invalidations, other]) r.disconnect();
    },
  };
}

/** Run a test body against a fresh setUp, closing its connections afterwards. */
function withCache(body: (t: Awaited<ReturnType<typeof setUp>>) => Promise<void>, freshnessMs?: number) {
  return async () => {
    const t = await setUp(freshnessMs);
    try {
      await body(t);
    } finally {
      t.close();
    }
  };
}

describe("near cache (Redis CLIENT TRACKING)", () => {
  it(
    "serves a second read from memory and drops it when another client changes the entry",
    withCache(async (t) => {
      const wallet = cachedWalletEntry();
      assert.equal(await t.elsewhere.put(wallet), true);
      assert.equal((await t.cache.get(wallet.id))?.balance, "10");
      const before = t.near.stats();
      assert.equal((await t.cache.get(wallet.id))?.balance, "10");
      assert.equal(t.near.stats().hits, before.hits + 1, "the second read came from memory");

      assert.equal(await t.elsewhere.put({ ...wallet, version: 3, balance: "25" }), true);
      await waitUntil(async () => (await t.cache.get(wallet.id))?.balance === "25", {
        message: "the other client's change reaches this reader",
      });
      assert.ok(t.near.stats().invalidations >= 1, "Redis sent an invalidation");
    }),
  );

  it(
    "shows this process's own writes and evictions at once",
    withCache(async (t) => {
      const wallet = cachedWalletEntry();
      await t.cache.put(wallet);
      assert.equal((await t.cache.get(wallet.id))?.status, "enabled");
      assert.equal((await t.cache.get(wallet.id))?.status, "enabled"); // now kept in memory
      await t.cache.put({ ...wallet, version: 3, status: "disabled" });
      assert.equal((await t.cache.get(wallet.id))?.status, "disabled");
      await t.cache.evict(wallet.id);
      assert.equal(await t.cache.get(wallet.id), null);
    }),
  );

  it(
    "keeps this process's own write without reading it back, and still hears of another client's change after it",
    withCache(async (t) => {
      const wallet = cachedWalletEntry();
      assert.equal(await t.cache.put(wallet), true);
      const before = t.near.stats();
      assert.equal((await t.cache.get(wallet.id))?.balance, "10");
      assert.equal(t.near.stats().hits, before.hits + 1, "served from memory: the write was kept");
      assert.equal(t.near.stats().misses, before.misses);
      // Redis does not report this connection's own writes (NOLOOP), and a write ends a key's tracking: the
      // script reads the key again, so another client's change must still arrive.
      assert.equal(await t.elsewhere.put({ ...wallet, version: 3, balance: "25" }), true);
      await waitUntil(() => t.near.stats().invalidations > before.invalidations, {
        message: "Redis reported another client's change after this process's own write",
      });
      assert.equal((await t.cache.get(wallet.id))?.balance, "25");
    }),
  );

  it(
    "does not keep a write's answer when another client's change arrived while the write was in flight",
    withCache(async (t) => {
      const wallet = cachedWalletEntry();
      await t.elsewhere.put(wallet);
      await t.cache.get(wallet.id); // read: tracked and kept
      const key = `wallet:${wallet.id}`; // the balance cache's key (its default prefix)
      const ticket = t.near.writing(key);
      const before = t.near.stats().invalidations;
      assert.equal(await t.elsewhere.put({ ...wallet, version: 4, balance: "40" }), true);
      await waitUntil(() => t.near.stats().invalidations > before, { message: "the change was reported" });
      // The answer to this process's write comes after the invalidation (as it can, on the other connection).
      t.near.wrote(key, ticket, { ...wallet, version: 3, balance: "30" }, Date.now() + 60_000);
      assert.equal((await t.cache.get(wallet.id))?.balance, "40", "the overtaken answer was not kept");
    }),
  );

  it(
    "does not keep a write Redis refused as older than what it holds",
    withCache(async (t) => {
      const wallet = cachedWalletEntry();
      assert.equal(await t.elsewhere.put({ ...wallet, version: 5, balance: "50" }), true);
      assert.equal(await t.cache.put({ ...wallet, version: 3, balance: "30" }), false);
      assert.equal((await t.cache.get(wallet.id))?.balance, "50");
      assert.equal((await t.cache.get(wallet.id))?.balance, "50", "and again, from memory");
    }),
  );

  it(
    "never serves an entry past its freshness",
    withCache(async (t) => {
      const wallet = cachedWalletEntry();
      await t.cache.put(wallet);
      assert.equal((await t.cache.get(wallet.id))?.balance, "10");
      await new Promise((resolve) => setTimeout(resolve, 400));
      assert.equal(await t.cache.get(wallet.id), null);
    }, 300),
  );

  it(
    "serves nothing kept while its invalidation connection is down, and comes back after",
    withCache(async (t) => {
      const wallet = cachedWalletEntry();
      await t.elsewhere.put(wallet);
      await t.cache.get(wallet.id);
      assert.equal(t.near.stats().size, 1);
      const clients = String(await t.other.client("LIST"));
      const subscriberId = /id=(\d+) .*name=near-cache-test-inv /.exec(clients)?.[1];
      assert.ok(subscriberId, "the invalidation connection is listed");
      assert.equal(await t.other.client("KILL", "ID", subscriberId), 1);
      // Changed while nobody receives its invalidation: the kept entry must not survive the reconnect.
      await t.elsewhere.put({ ...wallet, version: 3, balance: "99" });
      await waitUntil(async () => (await t.cache.get(wallet.id))?.balance === "99", {
        message: "the change made while the invalidation connection was down is seen",
      });
      await waitUntil(() => t.near.stats().active, { message: "near cache active again" });
      await t.cache.get(wallet.id);
      const hits = t.near.stats().hits;
      assert.equal((await t.cache.get(wallet.id))?.balance, "99");
      assert.equal(t.near.stats().hits, hits + 1, "kept in memory again");
    }),
  );

  it(
    "forgets everything on FLUSHDB",
    withCache(async (t) => {
      const wallet = cachedWalletEntry();
      await t.elsewhere.put(wallet);
      await t.cache.get(wallet.id);
      assert.equal(t.near.stats().size, 1);
      await t.other.flushdb();
      await waitUntil(async () => (await t.cache.get(wallet.id)) === null, { message: "flushed entry gone" });
    }),
  );
});
