/**
 * Topic set-up with the kafkajs admin client: create what is missing, then wait until every partition
 * has a leader, so the first produce after start-up does not fail. An existing topic's partition count is
 * never changed: keys hash to partitions by that count, so changing it moves wallets to other partitions and
 * a consumer could read a wallet's new events before its old ones (docs/outbox.md has the safe procedure).
 * Also deletes topics (tests, benchmarks).
 */
import { Kafka, logLevel } from "kafkajs";

/** One topic to ensure. */
export interface TopicSpec {
  topic: string;
  partitions: number;
  /**
   * Whether per-key order matters on this topic (default true): an existing one whose partition count differs
   * from `partitions` is refused with PartitionCountMismatchError. Otherwise (a dead-letter topic) any count
   * is accepted.
   */
  keyed?: boolean;
}

/** An existing keyed topic has another partition count than configured; nothing was changed. */
export class PartitionCountMismatchError extends Error {
  constructor(readonly topic: string, readonly actual: number, readonly configured: number) {
    super(
      `Kafka topic ${topic} has ${actual} partitions but KAFKA_TOPIC_PARTITIONS is ${configured}. ` +
        `The partition count of an existing topic is never changed here: a wallet's events are keyed to a ` +
        `partition by that count, and changing it would move wallets to other partitions, where consumers ` +
        `could read their new events before the old ones. Set KAFKA_TOPIC_PARTITIONS=${actual} to keep the ` +
        `topic as it is, or follow "Changing the partition count" in docs/outbox.md.`,
    );
    this.name = "PartitionCountMismatchError";
  }
}

/** Where to connect and which topics to ensure. */
export interface EnsureTopicsOptions {
  brokers: string[];
  clientId: string;
  topics: TopicSpec[];
  /** How long to wait for partition leaders. */
  timeoutMs?: number;
}

/** What ensureTopics found or did for one topic. */
export interface TopicState {
  topic: string;
  created: boolean;
  partitions: number;
}

/** Ensure one topic exists with at least `partitions` partitions (replication 1); safe to call repeatedly. */
export async function ensureTopic(
  { brokers, clientId, topic, partitions, timeoutMs }: Omit<EnsureTopicsOptions, "topics"> & TopicSpec,
): Promise<TopicState> {
  const [state] = await ensureTopics({ brokers, clientId, topics: [{ topic, partitions }], timeoutMs });
  return state;
}

/** Ensure several topics over one admin connection; always disconnects. */
export async function ensureTopics(
  { brokers, clientId, topics, timeoutMs = 30_000 }: EnsureTopicsOptions,
): Promise<TopicState[]> {
  const kafka = new Kafka({
    clientId,
    brokers,
    logLevel: logLevel.NOTHING,
    connectionTimeout: 3000,
    requestTimeout: 10_000,
    retry: { retries: 3, initialRetryTime: 200 },
  });
  const admin = kafka.admin();
  try {
    await admin.connect();
    const existing = new Set(await admin.listTopics());
    const missing = topics.filter((t) => !existing.has(t.topic));
    if (missing.length > 0) {
      // Leaders are awaited below, by a poll that tolerates errors until its deadline: kafkajs's own wait
      // gave up on a loaded broker with "This server does not host this topic-partition" (metadata not yet
      // propagated) right after the creation succeeded.
      await admin.createTopics({
        topics: missing.map((t) => ({ topic: t.topic, numPartitions: t.partitions, replicationFactor: 1 })),
        waitForLeaders: false,
        timeout: timeoutMs,
      });
    }
    const counts = await waitForLeaders(admin, topics, new Set(missing.map((t) => t.topic)), timeoutMs);
    for (const t of topics) {
      const actual = counts.get(t.topic) ?? 0;
      if ((t.keyed ?? true) && !missing.includes(t) && actual !== t.partitions) {
        throw new PartitionCountMismatchError(t.topic, actual, t.partitions);
      }
    }
    return topics.map((t) => ({
      topic: t.topic,
      created: missing.includes(t),
      partitions: counts.get(t.topic) ?? 0,
    }));
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

type Admin = ReturnType<Kafka["admin"]>;

/**
 * Poll topic metadata until every partition of every topic has a leader (and a topic just created shows all
 * its partitions); returns partition counts.
 */
async function waitForLeaders(
  admin: Admin,
  topics: TopicSpec[],
  created: Set<string>,
  timeoutMs: number,
): Promise<Map<string, number>> {
  const deadline = Date.now() + timeoutMs;
  let problem = "";
  while (true) {
    try {
      const { topics: metadata } = await admin.fetchTopicMetadata({ topics: topics.map((t) => t.topic) });
      const counts = new Map(metadata.map((m) => [m.name, m.partitions.length]));
      const notReady = topics.filter((t) => {
        const found = metadata.find((m) => m.name === t.topic);
        return !found || found.partitions.length === 0 ||
          (created.has(t.topic) && found.partitions.length < t.partitions) ||
          found.partitions.some((p) => p.leader < 0 || p.partitionErrorCode !== 0);
      });
      if (notReady.length === 0) return counts;
      problem = `no leader yet for ${notReady.map((t) => t.topic).join(", ")}`;
    } catch (error) {
      problem = (error as Error).message;
    }
    if (Date.now() >= deadline) {
      throw new Error(`Kafka topics are not ready after ${timeoutMs / 1000}s: ${problem}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** Delete every topic whose name `match` accepts; returns the names deleted. Always disconnects. */
export async function deleteTopics(
  { brokers, clientId, match, timeoutMs = 30_000 }: {
    brokers: string[];
    clientId: string;
    match: (topic: string) => boolean;
    timeoutMs?: number;
  },
): Promise<string[]> {
  const admin = new Kafka({ clientId, brokers, logLevel: logLevel.NOTHING, connectionTimeout: 3000 }).admin();
  try {
    await admin.connect();
    const topics = (await admin.listTopics()).filter(match);
    if (topics.length > 0) await admin.deleteTopics({ topics, timeout: timeoutMs });
    return topics;
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

// `deno run -A outbox/kafka_admin.ts`: create the configured topics (used by compose.yaml before start).
if (import.meta.main) {
  const { loadToolConfig } = await import("../src/config.ts");
  const config = loadToolConfig();
  const states = await ensureTopics({
    brokers: config.KAFKA_BROKERS,
    clientId: config.KAFKA_CLIENT_ID,
    topics: [
      { topic: config.KAFKA_TOPIC, partitions: config.KAFKA_TOPIC_PARTITIONS },
      { topic: `${config.KAFKA_TOPIC}.dlq`, partitions: 1, keyed: false },
    ],
  });
  for (const s of states) {
    console.log(`kafka: topic ${s.topic} ${s.created ? "created" : "ok"} (${s.partitions} partitions)`);
  }
}
