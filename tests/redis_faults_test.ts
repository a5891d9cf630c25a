/**
 * Redis faults, on PRIVATE redis-servers this file starts and signals by pid (never the machine's Redis):
 * - hung (SIGSTOP): GET answers from PostgreSQL, the breaker opens and later GETs do not touch Redis; once
 *   Redis answers again the breaker closes and the cache serves again;
 * - stopped and started again: every connection heals (cache, near-cache tracking, the consumer's writes);
 * - refusing writes (CLIENT PAUSE WRITE): a disable or an enable that answered 200 is never hidden from a GET
 *   on another service instance by a cache entry with the old status.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Redis } from "ioredis";
import { call, createHarness, enabledWallet, type Harness } from "./support/harness.ts";
import { startPrivateRedis } from "./support/private_servers.ts";
import { createPipeline } from "./support/pipeline.ts";
import { createTestTopic, waitUntil } from "./support/topic.ts";
import { config } from "./support/harness.ts";
import { hideKafkajsTimeoutWarning } from "../outbox/kafka.ts";

hideKafkajsTimeoutWarning();

/** The service's Redis command timeout (REDIS_COMMAND_TIMEOUT_MS), not the test harness's longer one. */
const commandTimeoutMs = config.REDIS_COMMAND_TIMEOUT_MS;

async function deposit(h: Harness, token: string, amount: number) {
  const response = await call(h.app, "POST", "/api/v1/wallet/deposits", {
    token,
    body: { amount, reference_id: crypto.randomUUID() },
  });
  assert.equal(response.status, 201, JSON.stringify(response.body));
}

async function balanceOf(h: Harness, token: string): Promise<number> {
  const response = await call(h.app, "GET", "/api/v1/wallet", { token });
  assert.equal(response.status, 200, JSON.stringify(response.body));
  return response.body.data.wallet.balance;
}

describe("a hung Redis (SIGSTOP)", () => {
  it("costs GET one command timeout until the breaker opens, then nothing; the cache serves again once it answers", async () => {
    const redis = await startPrivateRedis();
    const h = createHarness({ redisUrl: redis.url, nearMaxEntries: 1000, commandTimeoutMs });
    const other = createHarness({ redisUrl: redis.url });
    try {
      await waitUntil(() => h.near!.stats().active, { message: "near cache active" });
      // Wallets made on another instance: h has no near-cache entry of them, its GETs must ask Redis.
      const wallets = await Promise.all([1, 2, 3, 4, 5, 6].map(async (n) => {
        const wallet = await enabledWallet(other.app);
        await deposit(other, wallet.token, n * 10);
        return { ...wallet, balance: n * 10 };
      }));
      assert.equal(h.cache.stats().breaker?.opened, 0);

      redis.freeze();
      const timings: number[] = [];
      // One GET after another until the breaker opens; each answers the balance PostgreSQL has (the cached
      // entries, written by the enables, still say 0).
      let asked = 0;
      while (h.cache.stats().breaker?.state !== "open") {
        assert.ok(asked < wallets.length, "the breaker opened after a few failed commands");
        const wallet = wallets[asked++];
        const started = performance.now();
        assert.equal(await balanceOf(h, wallet.token), wallet.balance);
        timings.push(performance.now() - started);
      }
      const whenOpened = h.cache.stats().breaker!;
      assert.equal(whenOpened.opened, 1);

      // Open: GETs go to PostgreSQL without touching Redis (no command fails, each is skipped).
      const openTimings: number[] = [];
      for (const wallet of wallets.slice(0, 5)) {
        const started = performance.now();
        assert.equal(await balanceOf(h, wallet.token), wallet.balance);
        openTimings.push(performance.now() - started);
      }
      const whileOpen = h.cache.stats().breaker!;
      assert.equal(whileOpen.failures, whenOpened.failures, "no command was sent to the hung Redis");
      assert.ok(whileOpen.skipped >= whenOpened.skipped + 5, "each GET skipped Redis");
      assert.equal(h.near!.stats().active, false, "the near cache serves nothing while Redis is unhealthy");
      console.log(
        `hung Redis: GET ms before the breaker opened ${timings.map((t) => t.toFixed(1)).join(", ")}; ` +
          `after ${openTimings.map((t) => t.toFixed(1)).join(", ")}`,
      );

      redis.thaw();
      await waitUntil(() => h.cache.stats().breaker!.state === "closed", { message: "the breaker closed" });
      assert.equal(h.cache.stats().breaker!.closed, 1);
      await waitUntil(() => h.near!.stats().active, { message: "near-cache tracking re-established" });
      // The cache serves again: the enable writes the entry through, GETs are hits.
      const fresh = await enabledWallet(h.app);
      const hits = h.cache.stats().hits;
      assert.equal(await balanceOf(h, fresh.token), 0);
      assert.equal(await balanceOf(h, fresh.token), 0);
      assert.equal(h.cache.stats().hits, hits + 2, "both GETs were served from the cache");
    } finally {
      redis.thaw();
      await other.close();
      await h.close();
      await redis.dispose();
    }
  });
});

describe("a near cache whose invalidation connection stops answering", () => {
  it("serves nothing once its lease lapses, though its entries have not expired", async () => {
    const redis = await startPrivateRedis();
    const h = createHarness({
      redisUrl: redis.url,
      nearMaxEntries: 1000,
      freshnessMs: 5000,
      commandTimeoutMs,
    });
    try {
      await waitUntil(() => h.near!.stats().active, { message: "near cache active" });
      const wallet = await enabledWallet(h.app); // the enable's write-through is kept in memory
      const key = `wallet:${wallet.walletId}`;
      await waitUntil(() => h.near!.get(key) !== undefined, {
        message: "served from memory while Redis answers",
      });
      redis.freeze();
      await waitUntil(() => h.near!.get(key) === undefined, { message: "the near cache stopped serving" });
      assert.ok(h.near!.stats().leaseLapses >= 1, "refused for want of a lease, not for expiry");
    } finally {
      redis.thaw();
      await h.close();
      await redis.dispose();
    }
  });
});

describe("Redis stopped and started again", () => {
  let topic: string;
  before(async () => topic = await createTestTopic(config.KAFKA_BROKERS, { label: "redis-restart" }));

  it("heals every connection: GET from the cache, near-cache tracking, the consumer's writes", async () => {
    const redis = await startPrivateRedis();
    const api = createHarness({ redisUrl: redis.url, nearMaxEntries: 1000, commandTimeoutMs });
    const pipeline = createPipeline({ topic, redisUrl: redis.url, commandTimeoutMs });
    const relay = pipeline.startRelay();
    const consumer = pipeline.startConsumer();
    try {
      const wallet = await enabledWallet(api.app);
      await deposit(api, wallet.token, 10);
      await waitUntil(async () => (await api.cache.get(wallet.walletId))?.balance === "10", {
        message: "the consumer applied the deposit",
      });
      const beforeStop = consumer.metrics.cacheApplied;

      await redis.stop();
      await deposit(api, wallet.token, 5);
      assert.equal(await balanceOf(api, wallet.token), 15, "PostgreSQL answers while Redis is down");
      await waitUntil(() => api.near!.stats().active === false, { message: "near cache off" });

      await redis.start(); // empty: no persistence
      await waitUntil(() => api.near!.stats().active, { message: "near-cache tracking re-established" });
      await waitUntil(() => api.cache.stats().breaker!.state === "closed", { message: "breaker closed" });
      await deposit(api, wallet.token, 1);
      await waitUntil(async () => (await api.cache.get(wallet.walletId))?.balance === "16", {
        message: "the consumer applies events again",
      });
      assert.ok(consumer.metrics.cacheApplied > beforeStop);
      // Read again: a read is served from the near cache, as before the outage.
      await waitUntil(async () => {
        const hits = api.near!.stats().hits;
        assert.equal(await balanceOf(api, wallet.token), 16);
        return api.near!.stats().hits > hits;
      }, { message: "the near cache serves again" });
    } finally {
      await relay.stop();
      await consumer.stop();
      await pipeline.close();
      await api.close();
      await redis.dispose();
    }
  });
});

describe("a status change while Redis refuses writes (CLIENT PAUSE WRITE)", () => {
  let redis: Awaited<ReturnType<typeof startPrivateRedis>>;
  let admin: Redis;
  // Two API instances, each with its own connections and near cache, as two processes have.
  let a: Harness;
  let b: Harness;
  // Short freshness, so the pause outlasts the time a refused status change waits.
  const freshnessMs = 1500;
  before(async () => {
    redis = await startPrivateRedis();
    admin = new Redis(redis.url);
    a = createHarness({ redisUrl: redis.url, nearMaxEntries: 1000, freshnessMs, commandTimeoutMs });
    b = createHarness({ redisUrl: redis.url, nearMaxEntries: 1000, freshnessMs, commandTimeoutMs });
    await waitUntil(() => a.near!.stats().active && b.near!.stats().active, {
      message: "near caches active",
    });
  });
  after(async () => {
    await admin.call("CLIENT", "UNPAUSE").catch(() => {});
    admin.disconnect();
    await a.close();
    await b.close();
    await redis.dispose();
  });

  /** Keep `walletId`'s entry in b's near cache (and in Redis): b's next GET is a near-cache hit. */
  async function readOnB(token: string, walletId: string) {
    await balanceOf(b, token);
    await waitUntil(async () => {
      const hits = b.near!.stats().hits;
      await b.cache.get(walletId);
      return b.near!.stats().hits === hits + 1;
    }, { message: "b keeps the entry in memory" });
  }

  it("never shows the old status after the change answered 200", async () => {
    const wallet = await enabledWallet(a.app);
    await deposit(a, wallet.token, 10);
    await readOnB(wallet.token, wallet.walletId);

    await admin.call("CLIENT", "PAUSE", String(3 * freshnessMs), "WRITE");
    const disable = await call(a.app, "PATCH", "/api/v1/wallet", {
      token: wallet.token,
      body: { is_disabled: true },
    });
    assert.equal(disable.status, 200, JSON.stringify(disable.body));
    assert.equal(a.wallets.statusWaits(), 1, "Redis did not take the change: a waited for the old entries");
    const onB = await call(b.app, "GET", "/api/v1/wallet", { token: wallet.token });
    assert.equal(onB.status, 404, `b still showed ${JSON.stringify(onB.body)}`);
    assert.equal(onB.body.data.error, "Wallet disabled");
    await admin.call("CLIENT", "UNPAUSE");

    // And back: enabled on b while writes are refused, then read on a.
    await waitUntil(async () => (await a.cache.get(wallet.walletId))?.status === "disabled", {
      message: "the disable reached Redis after the pause",
    });
    await a.cache.get(wallet.walletId); // a keeps the disabled entry in memory
    await admin.call("CLIENT", "PAUSE", String(3 * freshnessMs), "WRITE");
    const enable = await call(b.app, "POST", "/api/v1/wallet", { token: wallet.token });
    assert.equal(enable.status, 201, JSON.stringify(enable.body));
    assert.equal(b.wallets.statusWaits(), 1);
    assert.equal(await balanceOf(a, wallet.token), 10, "a shows the wallet enabled");
    await admin.call("CLIENT", "UNPAUSE");
  });

  it("answers at once when Redis takes the change, and the other instance's near cache drops the old entry", async () => {
    const wallet = await enabledWallet(a.app);
    await readOnB(wallet.token, wallet.walletId);
    const waits = a.wallets.statusWaits();
    const disable = await call(a.app, "PATCH", "/api/v1/wallet", {
      token: wallet.token,
      body: { is_disabled: true },
    });
    assert.equal(disable.status, 200);
    assert.equal(a.wallets.statusWaits(), waits, "no wait: Redis took the change");
    const onB = await call(b.app, "GET", "/api/v1/wallet", { token: wallet.token });
    assert.equal(onB.status, 404, `b still showed ${JSON.stringify(onB.body)}`);
  });
});
