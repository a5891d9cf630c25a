/**
 * The relay never skips a wallet's event, on real Kafka: a topic that refuses every row (its
 * `max.message.bytes` lowered) costs the rows nothing and they go out in order once it is restored; a row
 * refused while others pass backs off, is set aside, and holds its wallet's later rows while other wallets
 * flow; `deno task outbox` lists, retries and releases set-aside rows. Also the error classification, the
 * backoff, and the partition-count guard.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import kafkajs, { ConfigResourceTypes } from "kafkajs";
import { hideKafkajsTimeoutWarning, publishErrorScope } from "../outbox/kafka.ts";
import { ensureTopics, PartitionCountMismatchError } from "../outbox/kafka_admin.ts";
import { parseOutboxArgs, runOutboxCommand } from "../outbox/outbox_cli.ts";
import { backoffDelay, CYCLE_BACKOFF, ROW_BACKOFF } from "../outbox/relay.ts";
import { outboxShard } from "../src/db/wallet_repository.ts";
import type { Sql } from "../src/db/client.ts";
import { config } from "./support/harness.ts";
import { createPipeline, type Pipeline } from "./support/pipeline.ts";
import {
  assertOrderedVersions,
  type Collected,
  collectTopic,
  createTestTopic,
  testKafka,
  waitUntil,
} from "./support/topic.ts";

hideKafkajsTimeoutWarning();

// kafkajs spreads its error classes into its exports, which Deno's CommonJS analysis does not see by name.
const {
  KafkaJSConnectionError,
  KafkaJSNonRetriableError,
  KafkaJSNumberOfRetriesExceeded,
  KafkaJSProtocolError,
} = kafkajs;

const brokers = config.KAFKA_BROKERS;
/** Kafka's default max.message.bytes (what a topic has when nobody set it). */
const DEFAULT_MAX_MESSAGE_BYTES = "1048588";

/** Set the topic's max.message.bytes (the broker applies it at once to new produce requests). */
async function setMaxMessageBytes(topic: string, bytes: string): Promise<void> {
  const admin = testKafka(brokers).admin();
  await admin.connect();
  try {
    await admin.alterConfigs({
      validateOnly: false,
      resources: [{
        type: ConfigResourceTypes.TOPIC,
        name: topic,
        configEntries: [{ name: "max.message.bytes", value: bytes }],
      }],
    });
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

/** A new enabled wallet, written straight to the database. */
async function newWallet(sql: Sql): Promise<string> {
  const id = crypto.randomUUID();
  await sql`INSERT INTO wallets (id, customer_xid, status, enabled_at) VALUES (${id}, ${
    "hold-" + id
  }, 'enabled', now())`;
  return id;
}

/**
 * Insert valid deposit events `versions` of `walletId` into the outbox, as the API would; `padBytes` makes
 * an event that large (a field the event schema ignores). Returns the outbox ids in order.
 */
async function insertEvents(
  sql: Sql,
  walletId: string,
  versions: number[],
  padBytes = 0,
): Promise<string[]> {
  const ids: string[] = [];
  for (const version of versions) {
    const [row] = await sql<{ id: string }[]>`
      INSERT INTO outbox (event_id, wallet_id, shard, wallet_version, event_type, payload)
      SELECT e.event_id, ${walletId}, ${
      outboxShard(walletId)
    }, ${version}, 'deposit.succeeded', json_build_object(
        'schema_version', 1, 'event_id', e.event_id, 'type', 'deposit.succeeded', 'wallet_id', ${walletId}::uuid,
        'customer_xid', ${"hold-" + walletId}::text, 'version', ${version}::int, 'wallet_status', 'enabled',
        'enabled_at', '2024-01-01T00:00:00.000Z', 'disabled_at', null, 'balance', ${String(version)}::text,
        'transaction', json_build_object('id', gen_random_uuid(), 'type', 'deposit', 'status', 'success',
          'amount', '1', 'reference_id', ${
      "ref-" + version
    }::text, 'transacted_at', '2024-01-01T00:00:00.000Z'),
        'occurred_at', '2024-01-01T00:00:00.000Z', 'padding', repeat('x', ${padBytes}::int))
      FROM (SELECT gen_random_uuid() AS event_id) AS e
      RETURNING id`;
    ids.push(row.id);
  }
  return ids;
}

/** Versions of one wallet's messages on the topic, in the order a consumer reads them (by header). */
function versionsOf(collected: Collected[], walletId: string): number[] {
  return collected
    .filter((m) => m.key === walletId)
    .sort((a, b) => a.partition - b.partition || Number(BigInt(a.offset) - BigInt(b.offset)))
    .map((m) => Number(m.headers["wallet-version"]));
}

async function outboxState(sql: Sql, ids: string[]) {
  return await sql<{ id: string; attempts: number; set_aside: boolean; backing_off: boolean }[]>`
    SELECT id, attempts, set_aside_at IS NOT NULL AS set_aside, retry_at IS NOT NULL AS backing_off
    FROM outbox WHERE id = ANY(${ids}::bigint[]) ORDER BY id`;
}

/** Remove what a test left in the shared test database, so later relays do not trip over it. */
async function removeRows(pipeline: Pipeline, walletIds: string[]) {
  await pipeline.sql`DELETE FROM outbox WHERE wallet_id = ANY(${walletIds}::uuid[])`;
}

describe("relay: a topic that refuses every row", () => {
  it("counts nothing against rows, sets nothing aside, and publishes all in order once the topic is restored", async () => {
    const topic = await createTestTopic(brokers, { label: "topic-refuses", partitions: 3 });
    const pipeline = createPipeline({ topic });
    const collector = await collectTopic(brokers, topic);
    const wallets: string[] = [];
    try {
      await setMaxMessageBytes(topic, "100"); // every event is larger
      const rows: string[] = [];
      for (let w = 0; w < 4; w++) {
        const walletId = await newWallet(pipeline.sql);
        wallets.push(walletId);
        rows.push(...await insertEvents(pipeline.sql, walletId, [1, 2, 3, 4, 5]));
      }
      const relay = pipeline.startRelay({ maxAttempts: 2 });
      // Four refused cycles: twice RELAY_MAX_ATTEMPTS, so counting them would have set rows aside.
      await waitUntil(() => relay.metrics.topicRefusals >= 4, { message: "four topic-wide refusals" });
      const state = await outboxState(pipeline.sql, rows);
      assert.equal(state.length, rows.length, "every row is still in the outbox");
      assert.ok(
        state.every((r) => r.attempts === 0 && !r.set_aside && !r.backing_off),
        JSON.stringify(state),
      );
      assert.equal(relay.metrics.rowRefusals, 0);
      assert.equal(relay.metrics.setAside, 0);
      assert.equal(relay.metrics.published, 0);
      const [{ dead }] = await pipeline.sql<{ dead: number }[]>`
        SELECT count(*)::int AS dead FROM outbox_dead_letter WHERE wallet_id = ANY(${wallets}::uuid[])`;
      assert.equal(dead, 0);

      await setMaxMessageBytes(topic, DEFAULT_MAX_MESSAGE_BYTES);
      await waitUntil(() => wallets.every((w) => collector.eventsOf(w).length >= 5), {
        message: "every wallet's events published once the topic takes them",
        detail: () => wallets.map((w) => collector.eventsOf(w).length),
      });
      for (const walletId of wallets) assertOrderedVersions(walletId, collector.eventsOf(walletId), 5);
      console.log(
        `topic-wide refusal: ${relay.metrics.topicRefusals} refused cycles, ${relay.metrics.publishFailures} ` +
          `failed sends, 0 attempts counted`,
      );
    } finally {
      await collector.stop();
      await removeRows(pipeline, wallets).catch(() => {});
      await pipeline.close();
    }
  });
});

describe("relay: a batch too large as a whole", () => {
  it("splits it and publishes every row in order, counting nothing against any row", async () => {
    const topic = await createTestTopic(brokers, { label: "batch-too-large", partitions: 1 });
    const pipeline = createPipeline({ topic });
    const collector = await collectTopic(brokers, topic);
    const wallets: string[] = [];
    try {
      // One event (~700 bytes) fits; a record batch of several does not.
      await setMaxMessageBytes(topic, "2000");
      const rows: string[] = [];
      for (let w = 0; w < 3; w++) {
        const walletId = await newWallet(pipeline.sql);
        wallets.push(walletId);
        rows.push(...await insertEvents(pipeline.sql, walletId, [1, 2, 3, 4]));
      }
      const relay = pipeline.startRelay({ maxAttempts: 1 });
      await waitUntil(() => wallets.every((w) => collector.eventsOf(w).length >= 4), {
        message: "every row published in parts",
        detail: () => wallets.map((w) => collector.eventsOf(w).length),
      });
      for (const walletId of wallets) assertOrderedVersions(walletId, collector.eventsOf(walletId), 4);
      assert.ok(relay.metrics.publishFailures >= 1, "the whole batch was refused first");
      assert.equal(relay.metrics.rowRefusals, 0);
      assert.equal(relay.metrics.setAside, 0);
      await waitUntil(async () => (await outboxState(pipeline.sql, rows)).length === 0, {
        message: "every row left the outbox",
      });
    } finally {
      await collector.stop();
      await removeRows(pipeline, wallets).catch(() => {});
      await pipeline.close();
    }
  });
});

describe("relay: one row Kafka refuses while it takes the others", () => {
  it("backs it off, sets it aside, holds the wallet's later rows while other wallets flow; retry sends them in order", async () => {
    const topic = await createTestTopic(brokers, { label: "poisoned-row", partitions: 3 });
    const pipeline = createPipeline({ topic });
    const collector = await collectTopic(brokers, topic);
    const wallets: string[] = [];
    try {
      const big = await newWallet(pipeline.sql);
      const other = await newWallet(pipeline.sql);
      wallets.push(big, other);
      await insertEvents(pipeline.sql, big, [1]);
      const [bigRow] = await insertEvents(pipeline.sql, big, [2], 2 * 1024 * 1024); // above the 1 MB limit
      const heldRows = await insertEvents(pipeline.sql, big, [3, 4]);
      await insertEvents(pipeline.sql, other, [1, 2, 3]);
      const relay = pipeline.startRelay({ maxAttempts: 2 });

      // Other wallets keep writing, as in production: a refusal counts against a row only in a cycle where
      // Kafka accepted another row (alone, the row could as well be refused for a topic-wide reason).
      let otherVersion = 3;
      await waitUntil(async () => {
        if ((await outboxState(pipeline.sql, [bigRow]))[0]?.set_aside === true) return true;
        await insertEvents(pipeline.sql, other, [++otherVersion]);
        relay.wake();
        return false;
      }, { intervalMs: 300, message: "the refused row set aside after two counted refusals" });
      // The other wallet's next event goes out while the big wallet's rows are held.
      await insertEvents(pipeline.sql, other, [++otherVersion]);
      relay.wake();
      await waitUntil(() => collector.eventsOf(other).some((e) => e.version === otherVersion), {
        message: "the other wallet flows",
      });
      assertOrderedVersions(other, collector.eventsOf(other), otherVersion);
      assert.deepEqual(versionsOf(collector.messages, big), [1], "only the row before the refused one");
      const [state] = await outboxState(pipeline.sql, [bigRow]);
      assert.equal(state.attempts, 2);
      const held = await outboxState(pipeline.sql, heldRows);
      assert.deepEqual(held.map((r) => r.attempts), [0, 0], "held rows were never tried");
      assert.equal(relay.metrics.rowRefusals, 2);
      assert.equal(relay.metrics.setAside, 1);
      await waitUntil(() => relay.metrics.heldRows === 2 && relay.metrics.setAsideRows === 1, {
        timeoutMs: 30_000,
        message: "the held and set-aside gauges",
        detail: () => relay.metrics.snapshot(),
      });
      assert.ok(!collector.messages.some((m) => m.key === big && m.headers["wallet-version"] !== "1"));

      // `list` shows the set-aside row and what waits behind it.
      const lines: string[] = [];
      assert.equal(await runOutboxCommand(pipeline.sql, { kind: "list" }, (l) => lines.push(l)), 0);
      const line = lines.find((l) => l.startsWith(`${bigRow}\t`));
      assert.ok(line, lines.join("\n"));
      const fields = line.split("\t");
      assert.deepEqual(fields.slice(1, 4), ["set_aside", big, "2"]);
      assert.equal(fields[6], "2", "two rows held behind it");

      // The cause fixed (the topic takes 4 MB now), `retry` sends it and then the held rows, in order.
      await setMaxMessageBytes(topic, String(4 * 1024 * 1024));
      const out: string[] = [];
      const code = await runOutboxCommand(
        pipeline.sql,
        { kind: "retry", selection: { walletId: big } },
        (l) => out.push(l),
      );
      assert.equal(code, 0);
      assert.deepEqual(out, [`re-queued 1 row(s): ${bigRow}`]);
      await waitUntil(() => versionsOf(collector.messages, big).length >= 4, {
        message: "the retried row and the held rows published",
        detail: () => versionsOf(collector.messages, big),
      });
      assert.deepEqual(versionsOf(collector.messages, big), [1, 2, 3, 4]);
      assert.equal((await outboxState(pipeline.sql, [bigRow, ...heldRows])).length, 0, "all left the outbox");
    } finally {
      await collector.stop();
      await removeRows(pipeline, wallets).catch(() => {});
      await pipeline.close();
    }
  });

  it("release (the CLI as a subprocess) gives the row up and lets the wallet's held rows go on", async () => {
    const topic = await createTestTopic(brokers, { label: "release-row", partitions: 3 });
    const pipeline = createPipeline({ topic });
    const collector = await collectTopic(brokers, topic);
    const wallets: string[] = [];
    try {
      const poisoned = await newWallet(pipeline.sql);
      const other = await newWallet(pipeline.sql);
      wallets.push(poisoned, other);
      const [badRow] = await insertEvents(pipeline.sql, poisoned, [1], 2 * 1024 * 1024);
      await insertEvents(pipeline.sql, poisoned, [2, 3]);
      await insertEvents(pipeline.sql, other, [1, 2]);
      pipeline.startRelay({ maxAttempts: 1 });
      await waitUntil(async () => (await outboxState(pipeline.sql, [badRow]))[0]?.set_aside === true, {
        message: "the row set aside at its first counted refusal",
      });
      await waitUntil(() => collector.eventsOf(other).length >= 2, { message: "the other wallet flows" });
      assert.deepEqual(versionsOf(collector.messages, poisoned), []);

      const cli = new URL("../outbox/outbox_cli.ts", import.meta.url).pathname;
      const run = async (...args: string[]) => {
        const output = await new Deno.Command(Deno.execPath(), {
          args: ["run", "--allow-net", "--allow-env", "--allow-read", "--allow-sys", cli, ...args],
          env: { DATABASE_URL: config.DATABASE_URL, LOG_LEVEL: "error" },
          stdout: "piped",
          stderr: "piped",
        }).output();
        return {
          code: output.code,
          stdout: new TextDecoder().decode(output.stdout),
          stderr: new TextDecoder().decode(output.stderr),
        };
      };
      const released = await run("release", badRow);
      assert.equal(released.code, 0, released.stderr);
      assert.equal(released.stdout.trim(), `released 1 row(s): ${badRow}`);
      await waitUntil(() => versionsOf(collector.messages, poisoned).length >= 2, {
        message: "the held rows published after the release",
      });
      assert.deepEqual(versionsOf(collector.messages, poisoned), [2, 3], "the released version is the gap");
      const [dead] = await pipeline.sql<{ wallet_version: string; released: boolean }[]>`
        SELECT wallet_version, released_at IS NOT NULL AS released FROM outbox_dead_letter WHERE id = ${badRow}`;
      assert.deepEqual({ ...dead }, { wallet_version: "1", released: true });

      // Nothing is set aside any more: a second release matches nothing (exit 1); bad arguments exit 2.
      const again = await run("release", badRow);
      assert.equal(again.code, 1);
      assert.match(again.stdout, /no set-aside row matched/);
      assert.equal((await run("release", "--all")).code, 2, "release --all is refused: a gap per wallet");
      const list = await run("list");
      assert.equal(list.code, 0, list.stderr);
      assert.match(list.stdout, new RegExp(`^${badRow}\\t${poisoned}\\t1\\t`, "m"));

      // `republish` puts the released row back: once the topic takes it, it goes out late, after versions 2-3.
      await setMaxMessageBytes(topic, String(4 * 1024 * 1024));
      const out: string[] = [];
      assert.equal(
        await runOutboxCommand(pipeline.sql, { kind: "republish", ids: [badRow] }, (l) => out.push(l)),
        0,
      );
      assert.deepEqual(out, [`put back 1 released row(s): ${badRow}`]);
      await waitUntil(() => versionsOf(collector.messages, poisoned).length >= 3, {
        message: "the republished row published",
      });
      assert.deepEqual(versionsOf(collector.messages, poisoned), [2, 3, 1]);
      const [{ left }] = await pipeline.sql<{ left: number }[]>`
        SELECT count(*)::int AS left FROM outbox_dead_letter WHERE id = ${badRow}`;
      assert.equal(left, 0);
    } finally {
      await collector.stop();
      await removeRows(pipeline, wallets).catch(() => {});
      await pipeline.close();
    }
  });
});

describe("outbox command arguments", () => {
  it("accepts ids, one wallet or --all for retry, and refuses anything else", () => {
    const wallet = crypto.randomUUID();
    assert.deepEqual(parseOutboxArgs(["list"]), { kind: "list" });
    assert.deepEqual(parseOutboxArgs(["retry", "12", "13"]), {
      kind: "retry",
      selection: { ids: ["12", "13"] },
    });
    assert.deepEqual(parseOutboxArgs(["retry", "--wallet", wallet]), {
      kind: "retry",
      selection: { walletId: wallet },
    });
    assert.deepEqual(parseOutboxArgs(["retry", "--all"]), { kind: "retry", selection: { all: true } });
    assert.equal(parseOutboxArgs(["release", "--all"]), null);
    assert.equal(parseOutboxArgs(["retry"]), null);
    assert.equal(parseOutboxArgs(["retry", "abc"]), null);
    assert.equal(parseOutboxArgs(["release", "--wallet", "nope"]), null);
    assert.equal(parseOutboxArgs(["list", "x"]), null);
    assert.equal(parseOutboxArgs(["drop"]), null);
    assert.deepEqual(parseOutboxArgs(["republish", "7"]), { kind: "republish", ids: ["7"] });
    assert.equal(parseOutboxArgs(["republish", "--wallet", wallet]), null);
  });
});

describe("publish error classification", () => {
  const protocol = (type: string, code: number, retriable: boolean) =>
    new KafkaJSProtocolError({ message: type, type, code, retriable } as unknown as Error);

  it("calls a refused record a record's problem, wrapped or not", () => {
    const tooLarge = protocol("MESSAGE_TOO_LARGE", 10, false);
    assert.equal(publishErrorScope(tooLarge), "record");
    assert.equal(
      publishErrorScope(Object.assign(new KafkaJSNonRetriableError(tooLarge), { cause: tooLarge })),
      "record",
    );
    assert.equal(publishErrorScope(protocol("INVALID_RECORD", 87, false)), "record");
    const corrupt = protocol("CORRUPT_MESSAGE", 2, true);
    assert.equal(
      publishErrorScope(new KafkaJSNumberOfRetriesExceeded(corrupt, { retryCount: 2, retryTime: 100 })),
      "record",
    );
  });

  it("never blames a row for authorization, policy, unknown errors or an unreachable broker", () => {
    assert.equal(publishErrorScope(protocol("TOPIC_AUTHORIZATION_FAILED", 29, false)), "topic");
    assert.equal(publishErrorScope(protocol("POLICY_VIOLATION", 44, false)), "topic");
    assert.equal(publishErrorScope(protocol("INVALID_REQUIRED_ACKS", 21, false)), "topic");
    assert.equal(publishErrorScope(new TypeError("something else")), "topic");
    assert.equal(publishErrorScope(new KafkaJSConnectionError("refused")), "unreachable");
    const leader = protocol("NOT_LEADER_FOR_PARTITION", 6, true);
    assert.equal(
      publishErrorScope(new KafkaJSNumberOfRetriesExceeded(leader, { retryCount: 2, retryTime: 100 })),
      "unreachable",
    );
  });
});

describe("relay backoff", () => {
  it("grows, is capped, and adds up to a quarter of jitter", () => {
    const low = (n: number) => backoffDelay(n, ROW_BACKOFF, () => 0);
    const high = (n: number) => backoffDelay(n, ROW_BACKOFF, () => 0.999);
    assert.deepEqual([0, 1, 2, 3].map(low), [1000, 2000, 4000, 8000]);
    assert.equal(low(10), 60_000);
    assert.equal(high(10), 74_985);
    assert.equal(high(0), 1250);
    assert.equal(backoffDelay(100, CYCLE_BACKOFF, () => 0.5), 5625);
  });
});

describe("partition count guard", () => {
  it("refuses an existing topic with another partition count and leaves the topic unchanged", async () => {
    const topic = await createTestTopic(brokers, { label: "partitions", partitions: 3 });
    await assert.rejects(
      ensureTopics({ brokers, clientId: "mini-wallet-tests", topics: [{ topic, partitions: 6 }] }),
      (error: unknown) => {
        assert.ok(error instanceof PartitionCountMismatchError);
        assert.match(error.message, /has 3 partitions but KAFKA_TOPIC_PARTITIONS is 6/);
        assert.match(error.message, /docs\/outbox\.md/);
        return true;
      },
    );
    const admin = testKafka(brokers).admin();
    await admin.connect();
    try {
      const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
      assert.equal(topics[0].partitions.length, 3, "the topic was not grown");
    } finally {
      await admin.disconnect().catch(() => {});
    }
    // The same count is fine, and a dead-letter topic (keyed: false) takes any count.
    const [same] = await ensureTopics({
      brokers,
      clientId: "mini-wallet-tests",
      topics: [{ topic, partitions: 3 }],
    });
    assert.deepEqual(same, { topic, created: false, partitions: 3 });
    const [dlq] = await ensureTopics({
      brokers,
      clientId: "mini-wallet-tests",
      topics: [{ topic, partitions: 1, keyed: false }],
    });
    assert.equal(dlq.partitions, 3);

    // A relay started against it (KAFKA_TOPIC_PARTITIONS is 6 in the tests) reads the real count and says so.
    assert.equal(config.KAFKA_TOPIC_PARTITIONS, 6);
    const pipeline = createPipeline({ topic });
    try {
      const relay = pipeline.startRelay();
      await waitUntil(() => relay.metrics.topicPartitions === 3, {
        message: "the relay read the partition count",
      });
    } finally {
      await pipeline.close();
    }
  });
});
