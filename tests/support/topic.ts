/**
 * Kafka helpers for the pipeline tests: a unique topic per test (plus its `.dlq`), a consumer that collects
 * everything on a topic with a group of its own, a hand producer, and polling with a deadline.
 */
import { type Consumer, Kafka, logLevel, Partitioners, type Producer } from "kafkajs";
import { ensureTopics } from "../../outbox/kafka_admin.ts";
import { testTopicName } from "../../src/ops/run_tests.ts";
import { type WalletEvent, walletEventSchema } from "../../outbox/event.ts";

/** One message as the collector saw it. */
export interface Collected {
  partition: number;
  offset: string;
  key: string | null;
  value: string | null;
  headers: Record<string, string>;
  /** The parsed wallet event, or null when the value is not a valid event. */
  event: WalletEvent | null;
}

/** This test run's tag (set by `deno task test`, which deletes the run's topics afterwards). */
const TEST_RUN = Deno.env.get("MW_TEST_RUN") ?? Date.now().toString(36);

/** A fresh topic name for one test. */
export function uniqueTopicName(label: string): string {
  return testTopicName(TEST_RUN, label);
}

/** Create `topic` (several partitions) and `topic.dlq` on the brokers; returns the topic name. */
export async function createTestTopic(
  brokers: string[],
  options: { label: string; partitions?: number },
): Promise<string> {
  const topic = uniqueTopicName(options.label);
  await ensureTopics({
    brokers,
    clientId: "mini-wallet-tests",
    topics: [{ topic, partitions: options.partitions ?? 6 }, {
      topic: `${topic}.dlq`,
      partitions: 1,
      keyed: false,
    }],
  });
  return topic;
}

/** A kafkajs client for test helpers: quiet, small retries. */
export function testKafka(brokers: string[]): Kafka {
  return new Kafka({
    clientId: "mini-wallet-tests",
    brokers,
    logLevel: logLevel.NOTHING,
    connectionTimeout: 3000,
    requestTimeout: 10_000,
    retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 1000 },
  });
}

/** Poll `check` until it returns true; throws `message` (plus `detail()`) after the deadline. */
export async function waitUntil(
  check: () => boolean | Promise<boolean>,
  options: { timeoutMs?: number; intervalMs?: number; message: string; detail?: () => unknown },
): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  while (true) {
    if (await check()) return;
    if (Date.now() >= deadline) {
      const detail = options.detail ? `: ${JSON.stringify(options.detail())}` : "";
      throw new Error(`Timed out waiting: ${options.message}${detail}`);
    }
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 50));
  }
}

/** Parse a message value as a wallet event; null when it is not one. */
export function parseWalletEvent(value: string | null): WalletEvent | null {
  if (value === null) return null;
  try {
    const parsed = walletEventSchema.safeParse(JSON.parse(value));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

export interface TopicCollector {
  readonly messages: Collected[];
  /** Valid wallet events of one wallet in (partition, offset) order: the order a consumer sees them. */
  eventsOf(walletId: string): WalletEvent[];
  /** Event ids seen so far. */
  eventIds(): Set<string>;
  stop(): Promise<void>;
}

/** Consume `topic` from the beginning with a group of its own and keep every message in memory. */
export async function collectTopic(brokers: string[], topic: string): Promise<TopicCollector> {
  const kafka = testKafka(brokers);
  const consumer: Consumer = kafka.consumer({
    groupId: `mw-test-collector-${crypto.randomUUID()}`,
    sessionTimeout: 10_000,
    heartbeatInterval: 1000,
    maxWaitTimeInMs: 50,
    retry: { retries: 10 },
  });
  const messages: Collected[] = [];
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      const value = message.value?.toString("utf8") ?? null;
      const headers: Record<string, string> = {};
      for (const [name, header] of Object.entries(message.headers ?? {})) {
        if (header !== undefined) headers[name] = String(header);
      }
      messages.push({
        partition,
        offset: message.offset,
        key: message.key?.toString("utf8") ?? null,
        value,
        headers,
        event: parseWalletEvent(value),
      });
      await Promise.resolve();
    },
  });
  return {
    messages,
    eventsOf(walletId) {
      return messages
        .filter((m) => m.event?.wallet_id === walletId)
        .sort((a, b) => a.partition - b.partition || Number(BigInt(a.offset) - BigInt(b.offset)))
        .map((m) => m.event!);
    },
    eventIds() {
      return new Set(messages.flatMap((m) => (m.event ? [m.event.event_id] : [])));
    },
    async stop() {
      await consumer.disconnect().catch(() => {});
    },
  };
}

/** Total number of messages on a topic (sum of the partitions' high watermarks). */
export async function topicMessageCount(brokers: string[], topic: string): Promise<number> {
  const admin = testKafka(brokers).admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    return offsets.reduce((sum, p) => sum + Number(p.high) - Number(p.low), 0);
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

/** The offsets a consumer group has committed on a topic, summed over its partitions (0 for none). */
export async function committedOffsetTotal(
  brokers: string[],
  groupId: string,
  topic: string,
): Promise<number> {
  const admin = testKafka(brokers).admin();
  await admin.connect();
  try {
    const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
    return (committed?.partitions ?? []).reduce((sum, p) => sum + Math.max(0, Number(p.offset)), 0);
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

/** A connected producer for hand-made messages (key = wallet id, like the relay). */
export async function handProducer(brokers: string[]): Promise<Producer> {
  const producer = testKafka(brokers).producer({
    createPartitioner: Partitioners.DefaultPartitioner,
    allowAutoTopicCreation: false,
    maxInFlightRequests: 1,
  });
  await producer.connect();
  return producer;
}

/**
 * Check one wallet's events as a consumer receives them: versions go 1, 2, ... N without gaps, and anything
 * arriving again is an exact repeat of an event already seen. Returns the distinct events in order.
 */
export function assertOrderedVersions(
  walletId: string,
  events: WalletEvent[],
  expectedLast: number,
): WalletEvent[] {
  const distinct: WalletEvent[] = [];
  for (const event of events) {
    const max = distinct.length;
    if (event.version === max + 1) {
      distinct.push(event);
      continue;
    }
    const earlier = distinct[event.version - 1];
    if (event.version <= max && earlier && JSON.stringify(earlier) === JSON.stringify(event)) continue;
    throw new Error(
      `Wallet ${walletId}: version ${event.version} arrived after ${max} (not the next one, not a repeat); ` +
        `sequence: ${events.map((e) => e.version).join(",")}`,
    );
  }
  if (distinct.length !== expectedLast) {
    throw new Error(`Wallet ${walletId}: expected versions 1..${expectedLast}, got 1..${distinct.length}`);
  }
  return distinct;
}
