/**
 * Kafka clients (kafkajs) for the relay and the consumer, configured in one place: broker addresses from
 * configuration, kafkajs logs routed to our logger, bounded retries so callers decide how to back off.
 */
import { type Admin, type ISocketFactory, Kafka, type LogEntry, logLevel, Partitioners } from "kafkajs";
import net from "node:net";
import process from "node:process";
import type { Logger } from "../src/log.ts";

export interface KafkaSettings {
  brokers: string[];
  clientId: string;
}

/** A kafkajs client whose own logs go through our logger (warnings and errors only). */
export function createKafka(settings: KafkaSettings, log: Logger): Kafka {
  return new Kafka({
    clientId: settings.clientId,
    brokers: settings.brokers,
    connectionTimeout: 3000,
    requestTimeout: 10_000,
    retry: { retries: 3, initialRetryTime: 100, maxRetryTime: 2000 },
    socketFactory: plainSocketWithoutNagle,
    logLevel: logLevel.WARN,
    logCreator: () => ({ level, namespace, log: entry }: LogEntry) => {
      const fields = { namespace, kafka: entry.message };
      if (level <= logLevel.ERROR) log.debug("kafkajs error", fields); // our callers log what matters
      else log.debug("kafkajs", fields);
    },
  });
}

/** A readiness check of the brokers: one admin connection kept open, asked for the cluster's metadata. */
export interface KafkaProbe {
  /** Resolves when a broker answered; rejects otherwise (the next check connects afresh). */
  check(): Promise<void>;
  close(): Promise<void>;
}

/**
 * A probe for /ready. No retries: the caller's timeout bounds the check, and a failed check drops the
 * connection. Checks that overlap share one request, so a probe storm costs Kafka one request at a time.
 */
export function createKafkaProbe(settings: KafkaSettings): KafkaProbe {
  const kafka = new Kafka({
    clientId: `${settings.clientId}-readiness`,
    brokers: settings.brokers,
    connectionTimeout: 1000,
    requestTimeout: 2000,
    retry: { retries: 0 },
    socketFactory: plainSocketWithoutNagle,
    logLevel: logLevel.NOTHING,
  });
  let admin: Admin | null = null;
  let inFlight: Promise<void> | null = null;

  async function ask(): Promise<void> {
    try {
      if (!admin) {
        const fresh = kafka.admin({ retry: { retries: 0 } });
        admin = fresh;
        await fresh.connect();
      }
      await admin.describeCluster();
    } catch (error) {
      const failed = admin;
      admin = null;
      await failed?.disconnect().catch(() => {});
      throw error;
    }
  }

  return {
    check() {
      inFlight ??= ask().finally(() => inFlight = null);
      return inFlight;
    },
    async close() {
      await inFlight?.catch(() => {});
      await admin?.disconnect().catch(() => {});
      admin = null;
    },
  };
}

/**
 * kafkajs's own socket factory, without Nagle's algorithm (left on by Deno's node:net): a small request written
 * behind a large unacknowledged one would wait for the broker's answer to it (see connectWithoutNagle in
 * src/db/client.ts for the measurement). Plain TCP only: this service configures no TLS for Kafka.
 */
export const plainSocketWithoutNagle: ISocketFactory = ({ host, port, ssl, onConnect }) => {
  if (ssl) throw new Error("TLS to Kafka is not configured in this service");
  const socket = net.connect({ host, port }, () => {
    socket.setNoDelay(true);
    onConnect();
  });
  socket.setKeepAlive(true, 60_000); // as kafkajs's default factory
  return socket;
};

/** The relay's producer: every message acknowledged by all in-sync replicas, one request in flight. */
export function createOrderedProducer(kafka: Kafka) {
  return kafka.producer({
    createPartitioner: Partitioners.DefaultPartitioner, // murmur2 of the key, like the Java client
    maxInFlightRequests: 1,
    idempotent: false,
    allowAutoTopicCreation: false,
    retry: { retries: 2, initialRetryTime: 100, maxRetryTime: 1000 },
  });
}

/** Errors that mean "Kafka is unreachable or unhappy", not "this message is bad": retried without counting. */
export function isTransientKafkaError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const names = [
    "KafkaJSConnectionError",
    "KafkaJSRequestTimeoutError",
    "KafkaJSNumberOfRetriesExceeded",
    "KafkaJSBrokerNotFound",
    "KafkaJSConnectionClosedError",
    "KafkaJSNonRetriableError",
    "KafkaJSLockTimeout",
  ];
  if (names.includes(error.name)) {
    // A protocol error wrapped by the retrier is about the message when it is not retriable.
    const cause = (error as { cause?: unknown }).cause;
    if (cause instanceof Error && cause.name === "KafkaJSProtocolError") {
      return (cause as { retriable?: boolean }).retriable !== false;
    }
    return true;
  }
  if (error.name === "KafkaJSProtocolError") return (error as { retriable?: boolean }).retriable !== false;
  return false;
}

/**
 * Where a failed publish points:
 * - `unreachable`: the broker cannot be reached or is busy (retriable): nothing is wrong with the rows.
 * - `record`: Kafka refused the content of a record or record batch (too large, invalid, corrupt). It may be
 *   one bad row, a batch too large as a whole, or a topic whose limit every row now exceeds (its
 *   `max.message.bytes` lowered): the relay tells these apart by sending smaller parts.
 * - `topic`: anything else non-retriable: authorization, unknown or invalid topic, policy, unsupported
 *   version, or an error we do not know. It concerns the topic, the broker or the client, never one row, so
 *   it is never counted against a row.
 */
export type PublishErrorScope = "unreachable" | "record" | "topic";

/** Protocol errors about a record or a record batch (kafkajs `type` names of Kafka's error codes). */
const RECORD_ERROR_TYPES = new Set([
  "MESSAGE_TOO_LARGE", // 10: a record (batch) larger than the topic's max.message.bytes
  "RECORD_LIST_TOO_LARGE", // 18: a batch larger than a log segment
  "INVALID_RECORD", // 87: the broker's validation refused a record
  "INVALID_TIMESTAMP", // 32: a record timestamp outside the topic's allowed range
  "CORRUPT_MESSAGE", // 2: a CRC or size mismatch in the request
]);

/** The first KafkaJSProtocolError in an error's cause chain (kafkajs wraps them in retry errors). */
function protocolErrorOf(error: unknown): (Error & { type?: string }) | null {
  let current = error;
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    if (current.name === "KafkaJSProtocolError") return current as Error & { type?: string };
    current = (current as { cause?: unknown }).cause;
  }
  return null;
}

/** Classify an error of `producer.send` (see PublishErrorScope). */
export function publishErrorScope(error: unknown): PublishErrorScope {
  const protocol = protocolErrorOf(error);
  if (protocol?.type && RECORD_ERROR_TYPES.has(protocol.type)) return "record";
  if (isTransientKafkaError(error)) return "unreachable";
  return "topic";
}

/**
 * Hide the harmless TimeoutNegativeWarning kafkajs 2.2.4 triggers (its request queue schedules a negative
 * timeout when idle); every other process warning is still printed.
 */
export function hideKafkajsTimeoutWarning(): void {
  const listeners = process.listeners("warning");
  process.removeAllListeners("warning");
  process.on("warning", (warning) => {
    if (warning.name === "TimeoutNegativeWarning") return;
    for (const listener of listeners) listener(warning);
  });
}
