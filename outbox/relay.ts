/**
 * The outbox relay: publishes committed outbox rows to Kafka, keyed by wallet id, and marks them sent only
 * after the broker acknowledged them.
 *
 * - Never skips a row: it reads every unsent row (not "ids above the last one"), so a row that commits late
 *   is picked up by the next cycle.
 * - Keeps each wallet's order with any number of relays: a cycle runs inside a transaction holding advisory
 *   locks on the outbox shards it publishes (a shard is a hash of the wallet id).
 * - One `send()` per batch, acks from all in-sync replicas, one request in flight.
 * - Wakes on an in-process hint (and a cross-process NOTIFY) and sweeps periodically anyway.
 * - Kafka down: rows wait in PostgreSQL and the relay backs off. A row the broker keeps refusing is retried
 *   a bounded number of times, then set aside in the dead-letter table without blocking other wallets.
 */
import type { Kafka, Message, Producer } from "kafkajs";
import type { Config } from "../src/config.ts";
import { pipelinedTransaction, type ReservedSql, type Sql, type WriteStep } from "../src/db/client.ts";
import {
  backlog,
  claimUnsent,
  deleteSentBefore,
  markSent,
  type OutboxRow,
  recordFailure,
} from "../src/db/outbox_repository.ts";
import { analyzeStaleTables, summarizeSentIndex, vacuumOutboxIfBloated } from "../src/db/table_upkeep.ts";
import type { Logger } from "../src/log.ts";
import { createKafka, createOrderedProducer, isTransientKafkaError } from "./kafka.ts";
import type { PipelineMetrics } from "./metrics.ts";

/** Channel of the cross-process wake-up hint. */
export const OUTBOX_CHANNEL = "outbox_written";
const MAX_BACKOFF_MS = 5000;
const MAINTENANCE_EVERY_MS = 5000;
/** Sent rows are kept for hours: looking for expired ones once a minute is plenty. */
const RETENTION_EVERY_MS = 60_000;
/** Dead outbox rows that make the maintenance vacuum the outbox: about 5 s of sending at 2,000 events/s. */
const VACUUM_AFTER_DEAD_ROWS = 10_000;

export interface RelayOptions {
  config: Pick<
    Config,
    | "KAFKA_BROKERS"
    | "KAFKA_CLIENT_ID"
    | "KAFKA_TOPIC"
    | "RELAY_BATCH_SIZE"
    | "RELAY_SWEEP_MS"
    | "RELAY_LINGER_MS"
    | "RELAY_LINGER_MAX_MS"
    | "RELAY_MAX_ATTEMPTS"
    | "RELAY_RETENTION_HOURS"
  >;
  sql: Sql;
  log: Logger;
  metrics: PipelineMetrics;
  /** Injected in tests to use a prepared client; by default one is made from the configuration. */
  kafka?: Kafka;
}

export interface RunningRelay {
  /** Hint that rows were committed: the relay looks now instead of at its next sweep. */
  wake(): void;
  stop(): Promise<void>;
  /** Resolves after the relay has published everything that was unsent when called (tests, benchmarks). */
  drained(): Promise<void>;
}

/** What one relay cycle did: rows handled (sent or set aside), the rows sent, and when Kafka acknowledged. */
interface CycleResult {
  handled: number;
  published: OutboxRow[];
  ackedAt: number;
}

/**
 * How long the relay lets rows gather after a cycle that sent `handled` rows: half a millisecond per row,
 * within [RELAY_LINGER_MS, RELAY_LINGER_MAX_MS]. A light stream keeps the short linger (events reach Kafka
 * fast); a heavy one gets bigger batches, which cost the relay, Kafka and the consumer less per event
 * (measured at 3,000 deposits/s: relay 83 -> 63 µs, consumer 61 -> 44 µs of CPU per event; events ~10 ms
 * later). A 40 ms ceiling instead of 20 gave 6,092-6,253 spread deposits/s against 5,371-5,983 (scratch, two
 * pairs) for ~7 MB more RSS; at 500 deposits/s a cycle carries a few rows and the floor still applies.
 */
export function relayLinger(
  handled: number,
  config: Pick<Config, "RELAY_LINGER_MS" | "RELAY_LINGER_MAX_MS">,
): number {
  return Math.min(config.RELAY_LINGER_MAX_MS, Math.max(config.RELAY_LINGER_MS, handled / 2));
}

/** Start the relay loop in the background. */
export function startRelay(options: RelayOptions): RunningRelay {
  const { config, sql, log, metrics } = options;
  const kafka = options.kafka ??
    createKafka({ brokers: config.KAFKA_BROKERS, clientId: config.KAFKA_CLIENT_ID }, log);
  let producer: Producer | null = null;
  let running = true;
  let wakeUp: (() => void) | null = null;
  let endPause: (() => void) | null = null;
  let pendingWake = false;
  let stopUpkeepWait = () => {};
  let lastRetention = 0;

  const idleWaiters: Array<() => void> = [];

  function wake() {
    pendingWake = true;
    wakeUp?.();
  }

  /**
   * Wait `ms`; stop ends it early, and so does a wake-up (rows were committed) when `wakeable`. The backoff
   * after a failed cycle is not: under write load every commit wakes the relay, and a Kafka outage turned the
   * backoff into back-to-back retries (seen: one failed cycle every 0.3 s while the log said 5000 ms).
   */
  function pause(ms: number, { wakeable }: { wakeable: boolean }): Promise<void> {
    if (!running || (wakeable && pendingWake)) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        wakeUp = null;
        endPause = null;
        resolve();
      }
      if (wakeable) wakeUp = done;
      endPause = done;
    });
  }

  async function connectedProducer(): Promise<Producer> {
    if (producer) return producer;
    const fresh = createOrderedProducer(kafka);
    await fresh.connect();
    producer = fresh;
    return fresh;
  }

  async function dropProducer() {
    const old = producer;
    producer = null;
    await old?.disconnect().catch(() => {});
  }

  function toMessage(row: OutboxRow): Message {
    return {
      key: row.walletId,
      value: row.payload,
      headers: { "event-id": row.eventId, "wallet-version": row.walletVersion },
    };
  }

  /**
   * Publish one batch; returns the number of rows handled (sent or failed). Two round trips to PostgreSQL:
   * BEGIN with the shard locks and the read, then the move of the sent rows with COMMIT; the locks are held
   * across the Kafka request, so no other relay publishes these shards meanwhile.
   */
  async function cycle(): Promise<number> {
    const kafkaProducer = await connectedProducer();
    const { handled, published, ackedAt } = await pipelinedTransaction(
      sql,
      (tx) => claimUnsent(tx, config.RELAY_BATCH_SIZE),
      async (rows, tx): Promise<WriteStep<CycleResult>> => {
        if (rows.length === 0) return { result: { handled: 0, published: [], ackedAt: 0 }, statements: [] };
        try {
          await kafkaProducer.send({ topic: config.KAFKA_TOPIC, acks: -1, messages: rows.map(toMessage) });
        } catch (error) {
          metrics.publishFailures++;
          if (isTransientKafkaError(error)) throw error; // nothing marked: the rows wait for Kafka
          log.warn("batch refused by Kafka; publishing row by row to isolate the bad rows", { error });
          return await publishRowByRow(tx, kafkaProducer, rows);
        }
        // A database error from here on rolls back: the rows stay unsent and go again (a harmless duplicate).
        return {
          result: { handled: rows.length, published: rows, ackedAt: Date.now() },
          statements: [markSent(tx, rows.map((r) => r.id))],
        };
      },
    );
    // Counted once committed: rows rolled back go again and are counted then.
    metrics.recordPublished(published.length);
    for (const row of published) metrics.insertToPublishMs.add(ackedAt - row.createdAt.getTime());
    return handled;
  }

  /** After a non-transient refusal: send rows one by one, stopping a wallet at its first failing row. */
  async function publishRowByRow(
    tx: ReservedSql,
    kafkaProducer: Producer,
    rows: OutboxRow[],
  ): Promise<WriteStep<CycleResult>> {
    const blockedWallets = new Set<string>();
    const sent: OutboxRow[] = [];
    for (const row of rows) {
      if (blockedWallets.has(row.walletId)) continue; // later events of that wallet wait for it, in order
      try {
        await kafkaProducer.send({ topic: config.KAFKA_TOPIC, acks: -1, messages: [toMessage(row)] });
        sent.push(row);
      } catch (error) {
        if (isTransientKafkaError(error)) break;
        blockedWallets.add(row.walletId);
        const moved = await recordFailure(
          tx,
          [row.id],
          String((error as Error).message),
          config.RELAY_MAX_ATTEMPTS,
        );
        if (moved > 0) {
          metrics.deadLettered += moved;
          log.error("outbox row moved to the dead-letter table", {
            outboxId: row.id,
            walletId: row.walletId,
            error,
          });
        }
      }
    }
    return {
      result: { handled: sent.length + blockedWallets.size, published: sent, ackedAt: Date.now() },
      statements: [markSent(tx, sent.map((r) => r.id))],
    };
  }

  /**
   * Retention cleanup, table upkeep and backlog metrics, on a timer of their own: an ANALYZE or VACUUM can
   * take a while, and publishing must not wait for it.
   */
  async function maintenance() {
    if (Date.now() - lastRetention >= RETENTION_EVERY_MS) {
      lastRetention = Date.now();
      await summarizeSentIndex(sql);
      const cutoff = new Date(Date.now() - config.RELAY_RETENTION_HOURS * 3600_000);
      const deleted = await deleteSentBefore(sql, cutoff);
      if (deleted > 0) log.debug("deleted sent outbox rows past retention", { deleted });
    }
    // Table upkeep rides along: every deployment runs a relay, and a relay's writes are what bloat the outbox.
    if (await vacuumOutboxIfBloated(sql, VACUUM_AFTER_DEAD_ROWS)) log.debug("vacuumed the outbox");
    const analyzed = await analyzeStaleTables(sql);
    if (analyzed.length > 0) log.debug("analyzed tables with stale statistics", { tables: analyzed });
    const lag = await backlog(sql);
    metrics.unsent = lag.unsent;
    metrics.oldestUnsentAgeMs = lag.oldestAgeMs;
  }

  const listening = sql.listen(OUTBOX_CHANNEL, () => wake()).catch((error) => {
    log.warn("cannot LISTEN for outbox hints; relying on the sweep", { error });
    return null;
  });

  const upkeep = (async () => {
    while (running) {
      await maintenance().catch((error) => log.warn("outbox maintenance failed", { error }));
      if (!running) return;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, MAINTENANCE_EVERY_MS);
        stopUpkeepWait = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  })();

  const loop = (async () => {
    let backoff = 100;
    while (running) {
      pendingWake = false;
      try {
        const handled = await cycle();
        backoff = 100;
        if (handled >= config.RELAY_BATCH_SIZE) continue; // backlog: go again at once
        if (handled === 0) { for (const resolve of idleWaiters.splice(0)) resolve(); }
        // Under a steady stream, let rows gather for a moment so each cycle (two round trips to PostgreSQL
        // and a Kafka request) carries many of them; an idle relay still reacts at once to its first wake-up.
        else await new Promise((resolve) => setTimeout(resolve, relayLinger(handled, config)));
        await pause(config.RELAY_SWEEP_MS, { wakeable: true });
      } catch (error) {
        metrics.relayCycleFailures++;
        log.warn("relay cycle failed; backing off", { error, backoffMs: backoff });
        if (isTransientKafkaError(error)) await dropProducer();
        await pause(backoff, { wakeable: false });
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      }
    }
  })();

  return {
    wake,
    drained() {
      return new Promise((resolve) => {
        idleWaiters.push(resolve);
        wake();
      });
    },
    async stop() {
      running = false;
      endPause?.();
      stopUpkeepWait();
      await Promise.all([loop, upkeep]);
      await (await listening)?.unlisten().catch(() => {});
      await dropProducer();
    },
  };
}
