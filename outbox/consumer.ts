/**
 * The balance-cache consumer: a Kafka consumer group that applies wallet events to the Redis cache through
 * a version compare-and-set, so redelivery, replay from offset 0 and reordering leave the cache right.
 *
 * Offsets are committed only after the cache write, once a second from a timer of their own. A malformed
 * message is logged and set aside on the dead-letter topic (`<topic>.dlq`), which the consumer creates when
 * it is missing; when it cannot be written even then, the batch is retried with an error logged and counted
 * each time (never silently).
 */
import type { Consumer, Kafka, KafkaMessage, Producer } from "kafkajs";
import type { Config } from "../src/config.ts";
import type { BalanceCache, CachedWallet } from "../src/cache/balance_cache.ts";
import type { Logger } from "../src/log.ts";
import { type WalletEvent, walletEventSchema } from "./event.ts";
import { createKafka } from "./kafka.ts";
import { ensureTopics } from "./kafka_admin.ts";
import type { PipelineMetrics } from "./metrics.ts";

export interface ConsumerOptions {
  config: Pick<
    Config,
    "KAFKA_BROKERS" | "KAFKA_CLIENT_ID" | "KAFKA_TOPIC" | "KAFKA_CONSUMER_GROUP" | "KAFKA_TOPIC_PARTITIONS"
  >;
  cache: BalanceCache;
  log: Logger;
  metrics: PipelineMetrics;
  kafka?: Kafka;
}

/** How often applied offsets are committed. A restart re-applies at most this much (harmlessly: CAS). */
const COMMIT_EVERY_MS = 1000;
/**
 * How much one fetch may bring (kafkajs defaults: 10 MiB, 1 MiB per partition). A consumer catching up on a
 * backlog decodes a whole fetch into objects at once; with the defaults a consumer-only process peaked at
 * 227-231 MB of RSS on an 80,000-event backlog, with these at 142 MB, applying 137k instead of 167k events/s
 * (256 KiB: 64k/s). The broker still returns a record batch larger than the limit whole (KIP-74), so one
 * big batch from the relay cannot stall a partition.
 */
export const FETCH_MAX_BYTES = 512 * 1024;
const FETCH_MAX_BYTES_PER_PARTITION = 128 * 1024;

export interface RunningConsumer {
  stop(): Promise<void>;
}

/** The cache entry an event describes. */
export function eventToCacheEntry(event: WalletEvent): CachedWallet {
  return {
    id: event.wallet_id,
    customerXid: event.customer_xid,
    status: event.wallet_status,
    enabledAt: event.enabled_at,
    disabledAt: event.disabled_at,
    balance: event.balance,
    version: event.version,
    confirmedAt: Date.parse(event.occurred_at),
  };
}

/** Parse a message; null when it is not a valid wallet event. */
export function parseEvent(message: KafkaMessage): WalletEvent | null {
  if (!message.value) return null;
  try {
    const result = walletEventSchema.safeParse(JSON.parse(message.value.toString("utf8")));
    return result.success ? result.data : null;
  } catch {
    return null;
  }
}

/** Start consuming in the background; a Kafka outage is retried, never fatal. */
export function startConsumer(options: ConsumerOptions): RunningConsumer {
  const { config, cache, log, metrics } = options;
  const kafka = options.kafka ??
    createKafka({ brokers: config.KAFKA_BROKERS, clientId: config.KAFKA_CLIENT_ID }, log);
  const deadLetterTopic = `${config.KAFKA_TOPIC}.dlq`;
  let consumer: Consumer | null = null;
  let dlqProducer: Producer | null = null;
  let running = true;
  let signalStop = () => {};
  const stopped = new Promise<void>((resolve) => signalStop = resolve);

  /** Create `<topic>.dlq` if it is missing (one partition: order does not matter there). */
  async function ensureDeadLetterTopic() {
    await ensureTopics({
      brokers: config.KAFKA_BROKERS,
      clientId: config.KAFKA_CLIENT_ID,
      topics: [{ topic: deadLetterTopic, partitions: 1, keyed: false }],
      timeoutMs: 10_000,
    });
  }

  async function sendToDeadLetterTopic(messages: KafkaMessage[], partition: number) {
    if (!dlqProducer) {
      const producer = kafka.producer({ allowAutoTopicCreation: false, retry: { retries: 2 } });
      await producer.connect();
      dlqProducer = producer;
    }
    await dlqProducer.send({
      topic: deadLetterTopic,
      acks: -1,
      messages: messages.map((m) => ({
        key: m.key,
        value: m.value,
        headers: { ...m.headers, "source-partition": String(partition), "source-offset": m.offset },
      })),
    });
  }

  /**
   * Put malformed messages on `<topic>.dlq`. A failure makes sure the topic exists and tries once more; if
   * that fails too, the error is logged and counted, and thrown: the batch is not acknowledged and kafkajs
   * retries it with backoff, so nothing is lost, and the log says why the partition does not move.
   */
  async function setAside(messages: KafkaMessage[], partition: number) {
    try {
      await sendToDeadLetterTopic(messages, partition);
    } catch (first) {
      try {
        await ensureDeadLetterTopic();
        await sendToDeadLetterTopic(messages, partition);
      } catch (error) {
        metrics.deadLetterTopicFailures++;
        log.error(
          "cannot set malformed events aside on the dead-letter topic; the partition waits and retries",
          {
            topic: deadLetterTopic,
            partition,
            error,
            firstError: first,
          },
        );
        throw error;
      }
    }
  }

  // Partition -> offset to commit (the next one to read), for batches whose cache write succeeded.
  // With kafkajs's own auto-commit we saw an OffsetCommit per partition after every batch despite
  // autoCommitInterval, and the next fetch waited for them: ~20 ms added to every event's way to the cache.
  const applied = new Map<number, string>();
  async function commitApplied(target: Consumer | null) {
    if (!target || applied.size === 0) return;
    const offsets = [...applied].map(([partition, offset]) => ({
      topic: config.KAFKA_TOPIC,
      partition,
      offset,
    }));
    applied.clear();
    try {
      await target.commitOffsets(offsets);
    } catch (error) {
      // After a rebalance the partition may be another member's now; it resumes from the last commit.
      log.debug("offset commit failed; the events will be applied again (idempotent)", { error });
    }
  }
  const committer = setInterval(() => void commitApplied(consumer), COMMIT_EVERY_MS);

  async function run() {
    let backoff = 200;
    while (running) {
      const fresh = kafka.consumer({
        groupId: config.KAFKA_CONSUMER_GROUP,
        sessionTimeout: 10_000,
        heartbeatInterval: 1000,
        // A fetch returns as soon as there is data (minBytes 1), so the wait only bounds how long the broker
        // holds a fetch on a quiet topic. At 20 ms the idle consumer used 7 % of a core on fetch round trips
        // (3 % at 250 ms); the delay from a deposit to the cache did not move (measured at 20 and 500/s).
        minBytes: 1,
        maxWaitTimeInMs: 250,
        maxBytes: FETCH_MAX_BYTES,
        maxBytesPerPartition: FETCH_MAX_BYTES_PER_PARTITION,
        retry: { retries: 5 },
      });
      try {
        // Every role that writes to `<topic>.dlq` makes sure it exists; a failure here is retried on demand.
        await ensureDeadLetterTopic().catch((error) =>
          log.warn("cannot ensure the dead-letter topic yet; trying again when it is needed", {
            topic: deadLetterTopic,
            error,
          })
        );
        await fresh.connect();
        await fresh.subscribe({ topic: config.KAFKA_TOPIC, fromBeginning: true });
        consumer = fresh;
        // kafkajs restarts itself after retriable crashes; after any other crash we start over.
        // The lag of partitions now owned by another member is theirs to report.
        fresh.on(fresh.events.GROUP_JOIN, ({ payload }) => {
          const owned = new Set(payload.memberAssignment[config.KAFKA_TOPIC] ?? []);
          for (const partition of metrics.consumerLag.keys()) {
            if (!owned.has(partition)) metrics.consumerLag.delete(partition);
          }
        });
        const crashed = new Promise<void>((resolve) => {
          fresh.on(fresh.events.CRASH, ({ payload }) => {
            if (!payload.restart) resolve();
          });
        });
        await fresh.run({
          // Partitions are applied side by side (each wallet lives in one partition, so per-wallet order
          // holds); one after the other, a busy partition adds its processing time to every other's delay.
          partitionsConsumedConcurrently: config.KAFKA_TOPIC_PARTITIONS,
          autoCommit: false,
          eachBatchAutoResolve: false,
          eachBatch: async ({ batch, resolveOffset, heartbeat }) => {
            const latest = new Map<string, WalletEvent>();
            const malformed: KafkaMessage[] = [];
            for (const message of batch.messages) {
              const event = parseEvent(message);
              if (!event) {
                malformed.push(message);
                continue;
              }
              // Within a batch only the newest version of each wallet matters.
              const seen = latest.get(event.wallet_id);
              if (!seen || seen.version < event.version) latest.set(event.wallet_id, event);
            }
            metrics.consumed += batch.messages.length;
            if (malformed.length > 0) {
              log.error("malformed events set aside", {
                topic: deadLetterTopic,
                count: malformed.length,
                offsets: malformed.map((m) => m.offset),
              });
              await setAside(malformed, batch.partition);
              metrics.malformed += malformed.length;
            }
            const events = [...latest.values()];
            const stored = await cache.putMany(events.map(eventToCacheEntry));
            const now = Date.now();
            events.forEach((event, i) => {
              if (stored[i]) {
                metrics.cacheApplied++;
                metrics.eventToCacheMs.add(now - Date.parse(event.occurred_at));
              } else metrics.cacheStale++;
            });
            metrics.consumerLag.set(batch.partition, Math.max(0, Number(batch.offsetLag())));
            // Offsets move only after the cache write succeeded.
            resolveOffset(batch.lastOffset());
            applied.set(batch.partition, (BigInt(batch.lastOffset()) + 1n).toString());
            await heartbeat();
          },
        });
        await Promise.race([crashed, stopped]);
        if (!running) return;
        throw new Error("consumer crashed");
      } catch (error) {
        consumer = null;
        await fresh.disconnect().catch(() => {});
        if (!running) return;
        log.warn("consumer could not start; retrying", { error, backoffMs: backoff });
        await new Promise((resolve) => setTimeout(resolve, backoff));
        backoff = Math.min(backoff * 2, 5000);
      }
    }
  }

  const started = run();
  return {
    async stop() {
      running = false;
      clearInterval(committer);
      const last = consumer;
      signalStop();
      await started;
      await commitApplied(last);
      await last?.disconnect().catch(() => {});
      await dlqProducer?.disconnect().catch(() => {});
    },
  };
}
