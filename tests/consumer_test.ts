/**
 * The balance-cache consumer on real Kafka and Redis: replay from offset 0 and reordered events leave the
 * cache right, malformed messages go to `<topic>.dlq` without stopping it, a flushed Redis is refilled from
 * PostgreSQL, and enable/disable show at once without the consumer.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { hideKafkajsTimeoutWarning } from "../outbox/kafka.ts";
import { ensureTopics } from "../outbox/kafka_admin.ts";
import type { WalletEvent } from "../outbox/event.ts";
import { FETCH_MAX_BYTES } from "../outbox/consumer.ts";
import { call, config, enabledWallet, initCustomer } from "./support/harness.ts";
import { createPipeline, dbBalance, type Pipeline } from "./support/pipeline.ts";
import {
  collectTopic,
  committedOffsetTotal,
  createTestTopic,
  handProducer,
  testKafka,
  topicMessageCount,
  uniqueTopicName,
  waitUntil,
} from "./support/topic.ts";

hideKafkajsTimeoutWarning();

const brokers = config.KAFKA_BROKERS;

/** Some wallets with a few changes each, written through the API. */
async function makeActivity(pipeline: Pipeline, wallets: number) {
  const made = await Promise.all(Array.from({ length: wallets }, () => enabledWallet(pipeline.app)));
  await Promise.all(made.map(async ({ token }, w) => {
    for (let i = 0; i < 4; i++) {
      const response = await call(pipeline.app, "POST", "/api/v1/wallet/deposits", {
        token,
        body: { amount: 10 + w + i, reference_id: `dep-${i}` },
      });
      assert.equal(response.status, 201);
    }
    const withdrawal = await call(pipeline.app, "POST", "/api/v1/wallet/withdrawals", {
      token,
      body: { amount: 5, reference_id: "wd" },
    });
    assert.equal(withdrawal.status, 201);
  }));
  return made;
}

/** Wait until the cache holds each wallet's PostgreSQL version and balance. */
async function cacheConverged(pipeline: Pipeline, walletIds: string[]) {
  await waitUntil(async () => {
    for (const id of walletIds) {
      const [cached, db] = await Promise.all([pipeline.cache.get(id), dbBalance(pipeline.sql, id)]);
      if (cached?.version !== db.version || cached.balance !== db.balance) return false;
    }
    return true;
  }, { message: "cache equals PostgreSQL for every wallet" });
}

async function snapshotHashes(pipeline: Pipeline, walletIds: string[]) {
  return Object.fromEntries(
    await Promise.all(walletIds.map(async (id) => [id, await pipeline.redis.hgetall(`wallet:${id}`)])),
  );
}

describe("balance cache consumer", () => {
  it("leaves the cache unchanged when the topic is replayed from offset 0 by a new consumer group", async () => {
    const topic = await createTestTopic(brokers, { label: "replay" });
    // Entries normally expire CACHE_FRESHNESS_MS after their event; a long freshness keeps that expiry out of
    // the before/after comparison, which is about the version compare-and-set.
    const pipeline = createPipeline({ topic, freshnessMs: 120_000 });
    try {
      const relay = pipeline.startRelay();
      const first = pipeline.startConsumer();
      const wallets = await makeActivity(pipeline, 5);
      const ids = wallets.map((w) => w.walletId);
      await cacheConverged(pipeline, ids);
      await relay.drained();
      await relay.stop();
      await first.stop();
      const before = await snapshotHashes(pipeline, ids);
      for (const id of ids) assert.equal(before[id].version, "6");

      const onTopic = await topicMessageCount(brokers, topic);
      const replay = pipeline.startConsumer(); // new group: starts at offset 0
      await waitUntil(() => replay.metrics.consumed >= onTopic, {
        message: "the replaying group read the whole topic",
        detail: () => ({ consumed: replay.metrics.consumed, onTopic }),
      });
      assert.deepEqual(await snapshotHashes(pipeline, ids), before);
      assert.ok(replay.metrics.cacheStale >= ids.length, "replayed events were recognised as not newer");
    } finally {
      await pipeline.close();
    }
  });

  it("keeps the newer state when older events arrive after newer ones, and sets malformed messages aside", async () => {
    // Real events of one wallet, taken from a pipeline's topic.
    const source = await createTestTopic(brokers, { label: "reorder-source" });
    const sourcePipeline = createPipeline({ topic: source });
    const sourceCollector = await collectTopic(brokers, source);
    let events: WalletEvent[] = [];
    let walletId = "";
    try {
      sourcePipeline.startRelay();
      [{ walletId }] = await makeActivity(sourcePipeline, 1);
      await waitUntil(() => new Set(sourceCollector.eventsOf(walletId).map((e) => e.version)).size === 6, {
        message: "the wallet's 6 events on the source topic",
      });
      events = [...new Map(sourceCollector.eventsOf(walletId).map((e) => [e.version, e])).values()];
    } finally {
      await sourceCollector.stop();
      await sourcePipeline.close();
    }

    const topic = await createTestTopic(brokers, { label: "reorder" });
    // Silent: the set-aside is logged as an error. A long freshness keeps cache expiry out of the checks.
    const pipeline = createPipeline({ topic, logLevel: "silent", freshnessMs: 120_000 });
    const producer = await handProducer(brokers);
    const dlq = await collectTopic(brokers, `${topic}.dlq`);
    try {
      await pipeline.cache.evict(walletId);
      const consumer = pipeline.startConsumer();
      // Sent as if they just happened: entries older than the cache freshness are never stored.
      const message = (event: WalletEvent) => ({
        key: walletId,
        value: JSON.stringify({ ...event, occurred_at: new Date().toISOString() }),
      });
      const newest = events[5];
      await producer.send({ topic, acks: -1, messages: [message(newest)] });
      await waitUntil(async () => (await pipeline.cache.get(walletId))?.version === 6, {
        message: "the newest event applied",
      });
      // Older versions, newest first, each in its own send so they are separate batches too.
      for (const event of events.slice(0, 5).reverse()) {
        await producer.send({ topic, acks: -1, messages: [message(event)] });
      }
      await waitUntil(() => consumer.metrics.consumed >= 6, { message: "the older events consumed" });
      const cached = await pipeline.cache.get(walletId);
      assert.equal(cached?.version, 6);
      assert.equal(cached?.balance, newest.balance);
      assert.ok(consumer.metrics.cacheStale >= 1, "older events were not applied");

      // Malformed messages, then a valid newer event: set aside, and the consumer goes on.
      const next: WalletEvent = {
        ...newest,
        event_id: crypto.randomUUID(),
        version: 7,
        balance: "12345.67",
        occurred_at: new Date().toISOString(),
      };
      await producer.send({
        topic,
        acks: -1,
        messages: [
          { key: walletId, value: "this is not JSON {" },
          { key: walletId, value: JSON.stringify({ hello: "world", version: 8 }) },
          { key: walletId, value: JSON.stringify({ ...next, version: -1, event_id: "not-a-uuid" }) },
          message(next),
        ],
      });
      await waitUntil(async () => (await pipeline.cache.get(walletId))?.version === 7, {
        message: "the valid event after the malformed ones applied",
      });
      assert.equal((await pipeline.cache.get(walletId))?.balance, "12345.67");
      await waitUntil(() => dlq.messages.length >= 3, {
        message: "3 malformed messages on the dead-letter topic",
      });
      assert.deepEqual(dlq.messages.map((m) => m.value), [
        "this is not JSON {",
        JSON.stringify({ hello: "world", version: 8 }),
        JSON.stringify({ ...next, version: -1, event_id: "not-a-uuid" }),
      ]);
      for (const m of dlq.messages) {
        assert.equal(m.key, walletId);
        assert.ok(m.headers["source-offset"] !== undefined && m.headers["source-partition"] !== undefined);
      }
      assert.equal(consumer.metrics.malformed, 3);

      // Still consuming afterwards.
      await producer.send({
        topic,
        acks: -1,
        messages: [message({ ...next, event_id: crypto.randomUUID(), version: 8 })],
      });
      await waitUntil(async () => (await pipeline.cache.get(walletId))?.version === 8, {
        message: "a later event applied",
      });
      assert.equal(dlq.messages.length, 3);
    } finally {
      await dlq.stop();
      await producer.disconnect();
      await pipeline.close();
      // The hand-made versions 7 and 8 are not in PostgreSQL: do not leave them for other tests.
      const cleanup = createPipeline({ topic });
      await cleanup.cache.evict(walletId).catch(() => {});
      await cleanup.close();
    }
  });

  it("answers GET /api/v1/wallet correctly after Redis is flushed, and refills the cache", async () => {
    const topic = await createTestTopic(brokers, { label: "flush" });
    const pipeline = createPipeline({ topic });
    try {
      pipeline.startRelay();
      pipeline.startConsumer();
      const wallets = await makeActivity(pipeline, 3);
      const ids = wallets.map((w) => w.walletId);
      await cacheConverged(pipeline, ids);
      assert.equal(await pipeline.redis.flushdb(), "OK");
      for (const { token, walletId } of wallets) {
        assert.equal(await pipeline.cache.get(walletId), null);
        const view = await call(pipeline.app, "GET", "/api/v1/wallet", { token });
        assert.equal(view.status, 200);
        const db = await dbBalance(pipeline.sql, walletId);
        assert.equal(view.body.data.wallet.balance, Number(db.balance));
        const refilled = await pipeline.cache.get(walletId);
        assert.equal(refilled?.version, db.version);
        assert.equal(refilled?.balance, db.balance);
      }
    } finally {
      await pipeline.close();
    }
  });

  it("commits the offsets of applied events, on its timer and when it stops", async () => {
    const topic = await createTestTopic(brokers, { label: "commit" });
    const pipeline = createPipeline({ topic });
    try {
      const relay = pipeline.startRelay();
      const consumer = pipeline.startConsumer();
      const wallets = await makeActivity(pipeline, 3);
      await cacheConverged(pipeline, wallets.map((w) => w.walletId));
      await relay.drained();
      const onTopic = await topicMessageCount(brokers, topic);
      assert.equal(onTopic, 3 * 6, "3 wallets, 6 events each");
      await waitUntil(async () => await committedOffsetTotal(brokers, consumer.groupId, topic) === onTopic, {
        message: "every applied event committed by the timer",
        timeoutMs: 10_000,
      });

      // One more event, then a stop: by the timer or by the stop, nothing applied is left uncommitted.
      const { token, walletId } = wallets[0];
      const deposit = await call(pipeline.app, "POST", "/api/v1/wallet/deposits", {
        token,
        body: { amount: 1, reference_id: "after-commit" },
      });
      assert.equal(deposit.status, 201);
      await cacheConverged(pipeline, [walletId]);
      await consumer.stop();
      assert.equal(await committedOffsetTotal(brokers, consumer.groupId, topic), onTopic + 1);
    } finally {
      await pipeline.close();
    }
  });

  it("applies a record batch larger than one fetch may bring", async () => {
    const topic = await createTestTopic(brokers, { label: "big-batch", partitions: 1 });
    const pipeline = createPipeline({ topic, freshnessMs: 120_000 });
    const producer = await handProducer(brokers);
    const walletId = crypto.randomUUID();
    try {
      const consumer = pipeline.startConsumer();
      const now = new Date().toISOString();
      const events: WalletEvent[] = Array.from({ length: 1500 }, (_, i) => ({
        schema_version: 1,
        event_id: crypto.randomUUID(),
        type: "deposit.succeeded",
        wallet_id: walletId,
        customer_xid: `big-batch-${walletId}`,
        version: i + 1,
        wallet_status: "enabled",
        enabled_at: now,
        disabled_at: null,
        balance: `${i + 1}.00`,
        transaction: {
          id: crypto.randomUUID(),
          type: "deposit",
          status: "success",
          amount: "1.00",
          reference_id: `big-batch-reference-${i}-${crypto.randomUUID()}`,
          transacted_at: now,
        },
        occurred_at: now,
      }));
      const messages = events.map((event) => ({ key: walletId, value: JSON.stringify(event) }));
      const bytes = messages.reduce((sum, m) => sum + m.key.length + m.value.length, 0);
      assert.ok(
        bytes > FETCH_MAX_BYTES,
        `one send of ${bytes} bytes, more than a fetch's ${FETCH_MAX_BYTES}`,
      );
      // One send to one partition: a single record batch.
      await producer.send({ topic, acks: -1, messages });
      await waitUntil(async () => (await pipeline.cache.get(walletId))?.version === 1500, {
        message: "the last event of the big batch applied",
        detail: () => consumer.metrics.snapshot(),
      });
      assert.equal((await pipeline.cache.get(walletId))?.balance, "1500.00");
      assert.equal(consumer.metrics.consumed, 1500);
      assert.equal(consumer.metrics.malformed, 0);
    } finally {
      await producer.disconnect();
      await pipeline.cache.evict(walletId).catch(() => {});
      await pipeline.close();
    }
  });

  it("applies the events of a wallet whose id is not an RFC 9562 UUID (an imported wallet)", async () => {
    const topic = await createTestTopic(brokers, { label: "imported-id" });
    const pipeline = createPipeline({ topic });
    try {
      pipeline.startRelay();
      const consumer = pipeline.startConsumer();
      // An md5 turned into a uuid, as a migration from another system may have made: PostgreSQL takes it,
      // but its version and variant bits are not those of any RFC 9562 UUID. A random md5 has RFC-looking bits
      // one time in eight, so its version digit is set to 0 (no RFC 9562 version).
      const xid = `imported-${crypto.randomUUID()}`;
      const [{ id: walletId }] = await pipeline.sql<{ id: string }[]>`
        INSERT INTO wallets (id, customer_xid)
        VALUES (overlay(md5(${xid}) placing '0' from 13 for 1)::uuid, ${xid}) RETURNING id`;
      assert.doesNotMatch(walletId, /^.{14}[1-8].{4}[89ab]/, "the id is outside RFC 9562");
      const { token } = await initCustomer(pipeline.app, xid);
      assert.equal((await call(pipeline.app, "POST", "/api/v1/wallet", { token })).status, 201);
      const deposit = await call(pipeline.app, "POST", "/api/v1/wallet/deposits", {
        token,
        body: { amount: 25, reference_id: "imported-1" },
      });
      assert.equal(deposit.status, 201);
      await cacheConverged(pipeline, [walletId]);
      assert.equal((await pipeline.cache.get(walletId))?.balance, "25");
      await waitUntil(() => consumer.metrics.cacheApplied >= 1, { message: "the deposit event applied" });
      assert.equal(consumer.metrics.malformed, 0);
    } finally {
      await pipeline.close();
    }
  });

  it("shows enable and disable at once, with no consumer running", async () => {
    const topic = await createTestTopic(brokers, { label: "status" });
    const pipeline = createPipeline({ topic }); // no relay, no consumer
    try {
      const { token } = await initCustomer(pipeline.app);
      assert.equal((await call(pipeline.app, "GET", "/api/v1/wallet", { token })).status, 404);
      assert.equal((await call(pipeline.app, "POST", "/api/v1/wallet", { token })).status, 201);
      const enabled = await call(pipeline.app, "GET", "/api/v1/wallet", { token });
      assert.equal(enabled.status, 200);
      assert.equal(enabled.body.data.wallet.status, "enabled");
      const deposit = await call(pipeline.app, "POST", "/api/v1/wallet/deposits", {
        token,
        body: { amount: 10, reference_id: "d" },
      });
      assert.equal(deposit.status, 201);
      const disable = await call(pipeline.app, "PATCH", "/api/v1/wallet", {
        token,
        body: { is_disabled: true },
      });
      assert.equal(disable.status, 200);
      const afterDisable = await call(pipeline.app, "GET", "/api/v1/wallet", { token });
      assert.equal(afterDisable.status, 404, JSON.stringify(afterDisable.body));
      assert.equal(afterDisable.body.data?.error, "Wallet disabled");
      // Enabled again: visible at once, with the balance kept.
      assert.equal((await call(pipeline.app, "POST", "/api/v1/wallet", { token })).status, 201);
      const again = await call(pipeline.app, "GET", "/api/v1/wallet", { token });
      assert.equal(again.status, 200);
      assert.equal(again.body.data.wallet.balance, 10);
    } finally {
      await pipeline.close();
    }
  });

  it("creates a missing <topic>.dlq and sets a malformed message aside there instead of retrying forever", async () => {
    // Only the events topic: its dead-letter topic does not exist (as after a manual topic set-up).
    const topic = uniqueTopicName("no-dlq");
    await ensureTopics({ brokers, clientId: "mini-wallet-tests", topics: [{ topic, partitions: 2 }] });
    const admin = testKafka(brokers).admin();
    await admin.connect();
    const pipeline = createPipeline({ topic, logLevel: "silent" });
    const producer = await handProducer(brokers);
    try {
      assert.ok(!(await admin.listTopics()).includes(`${topic}.dlq`), "no dead-letter topic yet");
      const consumer = pipeline.startConsumer();
      await producer.send({ topic, acks: -1, messages: [{ key: "k", value: "not an event" }] });
      await waitUntil(() => consumer.metrics.malformed >= 1, { message: "the malformed message set aside" });
      const offsets = await admin.fetchTopicOffsets(`${topic}.dlq`);
      assert.equal(offsets.reduce((sum, p) => sum + Number(p.high), 0), 1, "one message on <topic>.dlq");
      assert.equal(consumer.metrics.deadLetterTopicFailures, 0);
    } finally {
      await producer.disconnect();
      await admin.disconnect();
      await pipeline.close();
    }
  });
});
