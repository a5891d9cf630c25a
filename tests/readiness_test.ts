/**
 * GET /ready against servers this test starts and stops itself: a private PostgreSQL cluster, a private
 * redis-server, a private Kafka broker, and PostgreSQL at a port where nothing listens. 200 while every dependency of the process's roles
 * answers, 503 JSend error naming the one that does not, 200 again once it is back; /health stays 200
 * throughout. A process without the API serves the operators' endpoints on a listener of its own.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import type { Config } from "../src/config.ts";
import { createLogger } from "../src/log.ts";
import { dependenciesOf } from "../src/observability/readiness.ts";
import { startService } from "../src/service.ts";
import { hideKafkajsTimeoutWarning } from "../outbox/kafka.ts";
import { config } from "./support/harness.ts";
import { type PrivateBroker, startPrivateBroker } from "./support/kafka_broker.ts";
import { hasMetric, parseMetrics } from "./support/prometheus.ts";
import {
  freePort,
  type PrivatePostgres,
  type PrivateRedis,
  startPrivatePostgres,
  startPrivateRedis,
} from "./support/private_servers.ts";
import { migrateUp } from "../src/db/migrate.ts";
import { createTestTopic, waitUntil } from "./support/topic.ts";

hideKafkajsTimeoutWarning();

// deno-lint-ignore no-explicit-any -- JSend bodies; the test asserts on their fields
async function get(url: string): Promise<{ status: number; body: any }> {
  const response = await fetch(url);
  const text = await response.text();
  try {
    return { status: response.status, body: JSON.parse(text) };
  } catch {
    return { status: response.status, body: text };
  }
}

/** The status of each dependency in a /ready body, e.g. { postgres: "up", redis: "down" }. */
// deno-lint-ignore no-explicit-any
function statuses(body: any): Record<string, string> {
  const checks = body.data.checks as Record<string, { status: string; duration_ms: number }>;
  for (const check of Object.values(checks)) {
    assert.equal(typeof check.duration_ms, "number");
    assert.ok(check.duration_ms >= 0);
  }
  return Object.fromEntries(Object.entries(checks).map(([name, check]) => [name, check.status]));
}

describe("GET /ready", () => {
  let postgres: PrivatePostgres;
  let redis: PrivateRedis;
  let broker: PrivateBroker;

  before(async () => {
    [postgres, redis, broker] = await Promise.all([
      startPrivatePostgres(),
      startPrivateRedis(),
      startPrivateBroker(),
    ]);
    await migrateUp(postgres.url("postgres"), { log: () => {} });
  });
  after(async () => {
    await postgres?.dispose();
    await redis?.dispose();
    await broker?.dispose();
  });

  it("knows what each role needs", () => {
    assert.deepEqual(dependenciesOf(["api"]), ["postgres", "redis"]);
    assert.deepEqual(dependenciesOf(["relay"]), ["postgres", "kafka"]);
    assert.deepEqual(dependenciesOf(["consumer"]), ["redis", "kafka"]);
    assert.deepEqual(dependenciesOf(["api", "relay", "consumer"]), ["postgres", "redis", "kafka"]);
  });

  it("with every role: 200 while all answer, 503 naming each dependency once stopped, 200 again after", async () => {
    const topic = await createTestTopic(broker.brokers, { label: "ready", partitions: 1 });
    const settings: Config = {
      ...config,
      ROLES: ["api", "relay", "consumer"],
      PORT: freePort(),
      HOST: "127.0.0.1",
      DATABASE_URL: postgres.url("postgres"),
      REDIS_URL: redis.url,
      KAFKA_BROKERS: broker.brokers,
      KAFKA_TOPIC: topic,
      KAFKA_CONSUMER_GROUP: `mw-test-ready-${crypto.randomUUID()}`,
      // Generous: this machine is shared and slow at times; a stopped server refuses at once anyway.
      READY_CHECK_TIMEOUT_MS: 5000,
    };
    const service = await startService(settings, createLogger("silent"));
    const base = `http://127.0.0.1:${service.port}`;
    try {
      // Not ready until its connections are up (Redis connects in the background).
      await waitUntil(async () => (await get(`${base}/ready`)).status === 200, { message: "ready at start" });
      const up = await get(`${base}/ready`);
      assert.equal(up.status, 200, JSON.stringify(up.body));
      assert.equal(up.body.status, "success");
      assert.deepEqual(statuses(up.body), { postgres: "up", redis: "up", kafka: "up" });

      await redis.stop();
      const noRedis = await get(`${base}/ready`);
      assert.equal(noRedis.status, 503, JSON.stringify(noRedis.body));
      assert.equal(noRedis.body.status, "error");
      assert.equal(noRedis.body.message, "Not ready: redis is down");
      assert.deepEqual(statuses(noRedis.body), { postgres: "up", redis: "down", kafka: "up" });
      assert.deepEqual(
        await get(`${base}/health`),
        { status: 200, body: { status: "ok" } },
        "liveness unmoved",
      );

      await redis.start();
      await waitUntil(async () => (await get(`${base}/ready`)).status === 200, {
        message: "ready again once Redis is back",
      });

      await postgres.stop();
      const noPostgres = await get(`${base}/ready`);
      assert.equal(noPostgres.status, 503, JSON.stringify(noPostgres.body));
      assert.equal(noPostgres.body.message, "Not ready: postgres is down");
      assert.deepEqual(statuses(noPostgres.body), { postgres: "down", redis: "up", kafka: "up" });
      assert.deepEqual(await get(`${base}/health`), { status: 200, body: { status: "ok" } });

      await postgres.start();
      await waitUntil(async () => (await get(`${base}/ready`)).status === 200, {
        message: "ready again once PostgreSQL is back",
      });

      await broker.stop();
      const noKafka = await get(`${base}/ready`);
      assert.equal(noKafka.status, 503, JSON.stringify(noKafka.body));
      assert.equal(noKafka.body.message, "Not ready: kafka is down");
      assert.deepEqual(statuses(noKafka.body), { postgres: "up", redis: "up", kafka: "down" });
      assert.deepEqual(await get(`${base}/health`), { status: 200, body: { status: "ok" } });
    } finally {
      await service.stop();
    }
  });

  it("without the API: serves /health, /ready and /metrics alone, and reports PostgreSQL down when unreachable", async () => {
    const closedPort = freePort(); // nothing listens there
    const settings: Config = {
      ...config,
      ROLES: ["relay"],
      PORT: freePort(),
      HOST: "127.0.0.1",
      DATABASE_URL: `postgres://postgres@127.0.0.1:${closedPort}/mini_wallet_nowhere`,
      KAFKA_TOPIC: `${config.KAFKA_TOPIC}.unused`,
      READY_CHECK_TIMEOUT_MS: 5000,
    };
    const service = await startService(settings, createLogger("silent"));
    const base = `http://127.0.0.1:${service.port}`;
    try {
      const ready = await get(`${base}/ready`);
      assert.equal(ready.status, 503, JSON.stringify(ready.body));
      assert.equal(ready.body.message, "Not ready: postgres is down");
      assert.deepEqual(statuses(ready.body), { postgres: "down", kafka: "up" }, "a relay needs no Redis");
      assert.deepEqual(await get(`${base}/health`), { status: 200, body: { status: "ok" } });

      const metrics = await fetch(`${base}/metrics`);
      assert.equal(metrics.status, 200);
      const samples = parseMetrics(await metrics.text());
      assert.ok(hasMetric(samples, "mini_wallet_relay_published_total"), "the relay's counters");
      assert.ok(!hasMetric(samples, "mini_wallet_consumer_messages_total"), "no consumer here");
      assert.ok(!hasMetric(samples, "mini_wallet_wallet_operations_total"), "no API here");

      const api = await get(`${base}/api/v1/init`);
      assert.equal(api.status, 404, "no API in this process");
      assert.equal(api.body.status, "fail");
    } finally {
      await service.stop();
    }
  });
});
