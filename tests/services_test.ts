import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Kafka, logLevel, Partitioners } from "kafkajs";
import { parseConfig } from "../src/config.ts";
import { DLQ_SUFFIX, ensureServices } from "../src/ops/services.ts";
import { runningKafkaPid } from "../src/ops/kafka_local.ts";
import { runningRedisPid } from "../src/ops/redis_local.ts";
import { deletedAfterRun, testEnv, testTopicName } from "../src/ops/run_tests.ts";
import { deleteTopics, ensureTopics } from "../outbox/kafka_admin.ts";
import { hideKafkajsTimeoutWarning } from "../outbox/kafka.ts";

// Real services: these tests only start what is missing and never stop anything. They always use the test
// settings (test topic, test database), so a plain `deno test` never writes to the development topic.
const config = parseConfig({ ...Deno.env.toObject(), ...testEnv() });
hideKafkajsTimeoutWarning();
const quiet = () => {};

function kafkaClient(): Kafka {
  return new Kafka({
    clientId: "services-test",
    brokers: config.KAFKA_BROKERS,
    logLevel: logLevel.NOTHING,
    retry: { retries: 2 },
  });
}

describe("local services", () => {
  before(async () => {
    await ensureServices(config, { log: quiet });
  });

  it("reuses running services on a second call without starting processes", async () => {
    const pids = { kafka: runningKafkaPid(), redis: runningRedisPid() };
    const result = await ensureServices(config, { log: quiet });
    assert.deepEqual(result.started, { postgres: false, redis: false, kafka: false });
    assert.ok(result.seconds < 5, `second call took ${result.seconds}s`);
    assert.deepEqual({ kafka: runningKafkaPid(), redis: runningRedisPid() }, pids);
  });

  it("has the topic with the configured partitions and a one-partition dead-letter topic, all led", async () => {
    const admin = kafkaClient().admin();
    await admin.connect();
    try {
      const { topics } = await admin.fetchTopicMetadata({
        topics: [config.KAFKA_TOPIC, config.KAFKA_TOPIC + DLQ_SUFFIX],
      });
      const byName = new Map(topics.map((t) => [t.name, t.partitions]));
      assert.equal(byName.get(config.KAFKA_TOPIC)?.length, config.KAFKA_TOPIC_PARTITIONS);
      assert.equal(byName.get(config.KAFKA_TOPIC + DLQ_SUFFIX)?.length, 1);
      for (const partitions of byName.values()) {
        assert.ok(partitions.every((p) => p.leader >= 0), "every partition has a leader");
      }
    } finally {
      await admin.disconnect();
    }
  });

  it("accepts a produced message", async () => {
    const producer = kafkaClient().producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    try {
      const [record] = await producer.send({
        topic: config.KAFKA_TOPIC,
        acks: -1,
        // Marked so a consumer of the test topic can tell it is not a wallet event.
        messages: [{
          key: "services-test",
          value: JSON.stringify({ probe: "services_test", at: new Date().toISOString() }),
          headers: { "x-probe": "services_test" },
        }],
      });
      assert.equal(record.errorCode, 0);
    } finally {
      await producer.disconnect();
    }
  });
});

describe("test topic cleanup", () => {
  it("picks this run's topics and those of runs that started over an hour ago, never a recent run's", () => {
    const now = Date.parse("2026-12-01T12:00:00Z");
    const tag = (ms: number) => ms.toString(36);
    const thisRun = tag(now - 5 * 60_000);
    const sideBySide = tag(now - 10 * 60_000);
    const crashed = tag(now - 2 * 3600_000);
    const topics = [
      `mw-test.${thisRun}.outage.1a2b3c4d`,
      `mw-test.${thisRun}.outage.1a2b3c4d.dlq`,
      `mw-test.${sideBySide}.reorder.5e6f7a8b`,
      `mw-test.${crashed}.relay-kill.9c0d1e2f`,
      "mw-test.reorder-source.0a1b2c3d", // the naming before runs were tagged
      "wallet.created-transaction",
      "wallet.created-transaction.test",
      "wallet.bench.abc123",
    ];
    assert.deepEqual(topics.filter((topic) => deletedAfterRun(topic, thisRun, now)), [
      `mw-test.${thisRun}.outage.1a2b3c4d`,
      `mw-test.${thisRun}.outage.1a2b3c4d.dlq`,
      `mw-test.${crashed}.relay-kill.9c0d1e2f`,
      "mw-test.reorder-source.0a1b2c3d",
    ]);
  });

  it("deletes the topics a match accepts on the real broker, and only those", async () => {
    const run = Date.now().toString(36);
    const doomed = testTopicName(run, "cleanup-doomed");
    const kept = testTopicName(run, "cleanup-kept");
    await ensureTopics({
      brokers: config.KAFKA_BROKERS,
      clientId: "services-test",
      topics: [{ topic: doomed, partitions: 1 }, { topic: kept, partitions: 1 }],
    });
    try {
      const deleted = await deleteTopics({
        brokers: config.KAFKA_BROKERS,
        clientId: "services-test",
        match: (topic) => topic === doomed,
      });
      assert.deepEqual(deleted, [doomed]);
      const admin = kafkaClient().admin();
      await admin.connect();
      try {
        const left = new Set(await admin.listTopics());
        assert.ok(!left.has(doomed), "the matched topic is gone");
        assert.ok(left.has(kept), "the other topic is still there");
      } finally {
        await admin.disconnect();
      }
    } finally {
      await deleteTopics({
        brokers: config.KAFKA_BROKERS,
        clientId: "services-test",
        match: (t) => t === kept,
      });
    }
  });
});
