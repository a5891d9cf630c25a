import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Kafka, logLevel, Partitioners } from "kafkajs";
import { parseConfig } from "../src/config.ts";
import { DLQ_SUFFIX, ensureServices } from "../src/ops/services.ts";
import { runningKafkaPid } from "../src/ops/kafka_local.ts";
import { runningRedisPid } from "../src/ops/redis_local.ts";
import { testEnv } from "../src/ops/run_tests.ts";
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
