/**
 * The relay under failure: killed with SIGKILL in the middle of a big backlog it loses nothing; with Kafka
 * unreachable it keeps backing off. (Refused rows: tests/outbox_hold_test.ts.)
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  createKafka,
  createOrderedProducer,
  hideKafkajsTimeoutWarning,
  isTransientKafkaError,
} from "../outbox/kafka.ts";
import { relayLinger } from "../outbox/relay.ts";
import { outboxShard } from "../src/db/wallet_repository.ts";
import type { Sql } from "../src/db/client.ts";
import { createLogger } from "../src/log.ts";
import { config } from "./support/harness.ts";
import { createPipeline } from "./support/pipeline.ts";
import { collectTopic, createTestTopic, uniqueTopicName, waitUntil } from "./support/topic.ts";

hideKafkajsTimeoutWarning();

const brokers = config.KAFKA_BROKERS;

/**
 * Insert `perWallet` valid deposit events for each of `wallets` new wallets straight into the outbox, as if
 * the API had written them; returns the event ids in insertion order.
 */
async function insertBacklog(sql: Sql, wallets: number, perWallet: number): Promise<string[]> {
  const ids = Array.from({ length: wallets }, () => crypto.randomUUID());
  await sql`
    INSERT INTO wallets (id, customer_xid, status, enabled_at)
    SELECT id, 'backlog-' || id, 'enabled', now() FROM unnest(${ids}::uuid[]) AS id`;
  const rows = await sql<{ event_id: string }[]>`
    INSERT INTO outbox (event_id, wallet_id, shard, wallet_version, event_type, payload)
    SELECT e.event_id, e.id, e.shard, e.v, 'deposit.succeeded', json_build_object(
      'schema_version', 1, 'event_id', e.event_id, 'type', 'deposit.succeeded', 'wallet_id', e.id,
      'customer_xid', 'backlog-' || e.id, 'version', e.v, 'wallet_status', 'enabled',
      'enabled_at', '2024-01-01T00:00:00.000Z', 'disabled_at', null, 'balance', e.v::text,
      'transaction', json_build_object('id', gen_random_uuid(), 'type', 'deposit', 'status', 'success',
        'amount', '1', 'reference_id', 'ref-' || e.v, 'transacted_at', '2024-01-01T00:00:00.000Z'),
      'occurred_at', '2024-01-01T00:00:00.000Z')
    FROM (
      SELECT w.id, w.shard, v, gen_random_uuid() AS event_id
      FROM unnest(${ids}::uuid[], ${ids.map(outboxShard)}::int[]) AS w(id, shard)
      CROSS JOIN generate_series(1, ${perWallet}::int) AS v
      ORDER BY w.id, v
    ) AS e
    RETURNING event_id`;
  return rows.map((r) => r.event_id);
}

async function sentCount(sql: Sql, eventIds: string[]): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM outbox_sent WHERE event_id = ANY(${eventIds}::uuid[])`;
  return row.n;
}

describe("outbox relay under failure", () => {
  it("loses nothing when a relay process is killed with SIGKILL in the middle of a backlog", async () => {
    const topic = await createTestTopic(brokers, { label: "relay-kill", partitions: 6 });
    const pipeline = createPipeline({ topic });
    const collector = await collectTopic(brokers, topic);
    let child: Deno.ChildProcess | null = null;
    try {
      const eventIds = await insertBacklog(pipeline.sql, 100, 200); // 20k rows
      child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", new URL("./support/relay_process.ts", import.meta.url).pathname],
        env: {
          ...Deno.env.toObject(),
          KAFKA_TOPIC: topic,
          KAFKA_CLIENT_ID: "mini-wallet-tests-killed-relay",
          RELAY_BATCH_SIZE: "200",
          RELAY_SWEEP_MS: "20",
          LOG_LEVEL: "error",
        },
        stdout: "null",
        stderr: "inherit",
      }).spawn();
      // Kill it a few batches in: some rows sent, most not, most likely a batch in flight.
      await waitUntil(async () => await sentCount(pipeline.sql, eventIds) >= 2000, {
        intervalMs: 5,
        message: "the relay process published a few batches",
      });
      child.kill("SIGKILL");
      const status = await child.status;
      child = null;
      assert.equal(status.signal, "SIGKILL");
      const sentAtKill = await sentCount(pipeline.sql, eventIds);
      assert.ok(sentAtKill < eventIds.length, `killed after everything was sent (${sentAtKill})`);

      const relay = pipeline.startRelay({ batchSize: 1000 });
      await waitUntil(async () => await sentCount(pipeline.sql, eventIds) === eventIds.length, {
        timeoutMs: 60_000,
        message: "the second relay marked the whole backlog sent",
      });
      await relay.stop();
      await waitUntil(() => {
        const seen = collector.eventIds();
        return eventIds.every((id) => seen.has(id));
      }, {
        timeoutMs: 60_000,
        message: "every backlog event on the topic",
        detail: () => eventIds.length - eventIds.filter((id) => collector.eventIds().has(id)).length,
      });
      const wanted = new Set(eventIds);
      const copies = collector.messages.filter((m) => m.event && wanted.has(m.event.event_id)).length;
      console.log(
        `relay killed after ${sentAtKill}/${eventIds.length} rows were marked sent; ` +
          `${copies - eventIds.length} events published twice (at-least-once)`,
      );
    } finally {
      if (child) {
        child.kill("SIGKILL");
        await child.status;
      }
      await collector.stop();
      await pipeline.close();
    }
  });

  it("keeps backing off while Kafka is unreachable, however often commits wake it", async () => {
    // A port nothing listens on: every cycle fails at connect, quickly.
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const deadPort = listener.addr.port;
    listener.close();
    const pipeline = createPipeline({
      topic: uniqueTopicName("unreachable"),
      brokers: [`127.0.0.1:${deadPort}`],
    });
    const relay = pipeline.startRelay({ sweepMs: 20 });
    // Commits under load wake the relay all the time; here every 5 ms.
    const waker = setInterval(() => relay.wake(), 5);
    const failedAt: number[] = [];
    try {
      await waitUntil(() => {
        if (relay.metrics.relayCycleFailures > failedAt.length) failedAt.push(performance.now());
        return failedAt.length >= 6;
      }, { timeoutMs: 30_000, intervalMs: 5, message: "six failed relay cycles" });
    } finally {
      clearInterval(waker);
      await pipeline.close();
    }
    // The 5th backoff is 1,600 ms (100, 200, 400, 800, 1,600): the 6th failure cannot come sooner than that
    // after the 5th, whatever the machine's speed (a timer never fires early; a slow machine only makes gaps
    // longer). Woken out of its backoff, the relay retried right after one failed connect (0.63 s here).
    const lastGap = failedAt[5] - failedAt[4];
    assert.ok(
      lastGap >= 1590,
      `6th failure ${lastGap.toFixed(0)} ms after the 5th; the backoff was cut short`,
    );
  });

  it("classifies a message too large for the broker as not transient", async () => {
    const topic = await createTestTopic(brokers, { label: "too-large", partitions: 1 });
    const kafka = createKafka({ brokers, clientId: "mini-wallet-tests" }, createLogger("silent"));
    const producer = createOrderedProducer(kafka);
    await producer.connect();
    try {
      const error = await producer.send({
        topic,
        acks: -1,
        messages: [{ key: "k", value: "x".repeat(2 * 1024 * 1024) }],
      }).then(
        () => null,
        (e: unknown) => e as Error & { retriable?: boolean; type?: string; cause?: Error },
      );
      assert.ok(error, "the broker accepted a 2 MB message");
      console.log(
        `2 MB message refused: ${error.name} ${error.type} (retriable ${error.retriable}, ` +
          `cause ${error.cause?.name}): ${error.message}`,
      );
      assert.equal(isTransientKafkaError(error), false);
    } finally {
      await producer.disconnect();
    }
  });
});

describe("relay linger", () => {
  it("stays short for a light stream and grows with the rows of the last cycle, up to its maximum", () => {
    const config = { RELAY_LINGER_MS: 5, RELAY_LINGER_MAX_MS: 20 };
    assert.equal(relayLinger(1, config), 5);
    assert.equal(relayLinger(10, config), 5);
    assert.equal(relayLinger(24, config), 12);
    assert.equal(relayLinger(40, config), 20);
    assert.equal(relayLinger(999, config), 20);
  });
});
