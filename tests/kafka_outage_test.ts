/**
 * Kafka down for 20 s while deposits continue, on a PRIVATE broker (the shared one is never stopped): every
 * deposit is accepted, and once the broker is back every event arrives and the cache converges.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { hideKafkajsTimeoutWarning } from "../outbox/kafka.ts";
import type { PipelineMetrics } from "../outbox/metrics.ts";
import { call, enabledWallet } from "./support/harness.ts";
import { type PrivateBroker, startPrivateBroker } from "./support/kafka_broker.ts";
import { createPipeline, dbBalance, type Pipeline } from "./support/pipeline.ts";
import { assertOrderedVersions, collectTopic, createTestTopic, waitUntil } from "./support/topic.ts";

hideKafkajsTimeoutWarning();

const OUTAGE_MS = 20_000;

describe("Kafka outage", () => {
  let broker: PrivateBroker;

  before(async () => {
    broker = await startPrivateBroker();
  });

  after(async () => {
    await broker?.dispose();
  });

  it("accepts deposits while Kafka is stopped for 20 s, then delivers every event and converges", async () => {
    const topic = await createTestTopic(broker.brokers, { label: "outage", partitions: 6 });
    const pipeline: Pipeline = createPipeline({ topic, brokers: broker.brokers, logLevel: "error" });
    try {
      pipeline.startRelay({ sweepMs: 50 });
      const consumer = pipeline.startConsumer();
      const wallets = await Promise.all(Array.from({ length: 5 }, () => enabledWallet(pipeline.app)));
      let depositCount = 0;
      const depositRound = async () => {
        await Promise.all(wallets.map(async ({ token }) => {
          const response = await call(pipeline.app, "POST", "/api/v1/wallet/deposits", {
            token,
            body: { amount: 1.25, reference_id: `dep-${depositCount}-${crypto.randomUUID()}` },
          });
          assert.equal(response.status, 201, JSON.stringify(response.body));
        }));
        depositCount += wallets.length;
      };
      const walletIds = wallets.map((w) => w.walletId);
      await cacheFollows(pipeline, walletIds, depositRound, consumer.metrics);
      await getMatchesDb(pipeline, wallets);

      await broker.stop();
      const outageEnds = Date.now() + OUTAGE_MS;
      while (Date.now() < outageEnds) {
        await depositRound();
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      const [unsentDuringOutage] = await pipeline.sql<{ n: number }[]>`
        SELECT count(*)::int AS n FROM outbox
        WHERE wallet_id = ANY(${wallets.map((w) => w.walletId)}::uuid[]) AND sent_at IS NULL`;
      assert.ok(unsentDuringOutage.n > 0, "rows waited in PostgreSQL during the outage");
      await broker.start();

      // The relay publishes the backlog...
      await waitUntil(async () => {
        const [unsent] = await pipeline.sql<{ n: number }[]>`
          SELECT count(*)::int AS n FROM outbox WHERE wallet_id = ANY(${walletIds}::uuid[]) AND sent_at IS NULL`;
        return unsent.n === 0;
      }, { timeoutMs: 60_000, message: "the relay published every waiting row" });
      // ...every event is on the topic, in order...
      const collector = await collectTopic(broker.brokers, topic);
      try {
        for (const walletId of walletIds) {
          const { version, balance } = await dbBalance(pipeline.sql, walletId);
          await waitUntil(() => new Set(collector.eventsOf(walletId).map((e) => e.version)).size >= version, {
            message: `every event of wallet ${walletId} on the topic`,
          });
          const events = assertOrderedVersions(walletId, collector.eventsOf(walletId), version);
          assert.equal(events.at(-1)!.balance, balance);
        }
      } finally {
        await collector.stop();
      }
      // ...the consumer is back (it keeps the cache fresh again) and GET shows the PostgreSQL balances.
      await cacheFollows(pipeline, walletIds, depositRound, consumer.metrics);
      await getMatchesDb(pipeline, wallets);
      console.log(
        `Kafka outage: ${depositCount} deposits accepted, ${unsentDuringOutage.n} rows waited during the ` +
          `${OUTAGE_MS / 1000} s outage`,
      );
    } finally {
      await pipeline.close();
    }
  });
});

/**
 * The consumer keeps the cache fresh: after a round of deposits, every wallet's cache entry reaches its
 * PostgreSQL version (no GET involved, so only the consumer writes it). Entries older than the cache freshness
 * are never stored, so a round that arrived too late is followed by another, up to a deadline.
 */
async function cacheFollows(
  pipeline: Pipeline,
  walletIds: string[],
  depositRound: () => Promise<void>,
  consumerMetrics: PipelineMetrics,
) {
  const deadline = Date.now() + 60_000;
  while (true) {
    await depositRound();
    try {
      await waitUntil(async () => {
        for (const walletId of walletIds) {
          const [cached, db] = await Promise.all([
            pipeline.cache.get(walletId),
            dbBalance(pipeline.sql, walletId),
          ]);
          if (cached?.version !== db.version || cached.balance !== db.balance) return false;
        }
        return true;
      }, { timeoutMs: 5000, message: "cache entries at the PostgreSQL version" });
      return;
    } catch (error) {
      if (Date.now() > deadline) {
        throw new Error(
          `${(error as Error).message}; consumer: ${JSON.stringify(consumerMetrics.snapshot())}`,
        );
      }
    }
  }
}

/** GET /api/v1/wallet shows the PostgreSQL balance of every wallet. */
async function getMatchesDb(pipeline: Pipeline, wallets: Array<{ token: string; walletId: string }>) {
  for (const { token, walletId } of wallets) {
    const view = await call(pipeline.app, "GET", "/api/v1/wallet", { token });
    assert.equal(view.status, 200);
    assert.equal(view.body.data.wallet.balance, Number((await dbBalance(pipeline.sql, walletId)).balance));
  }
}
