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
 * - Never skips a wallet's event. Kafka down, or refusing the whole topic: rows wait in PostgreSQL, nothing is
 *   counted against them, and the relay backs off (growing, capped, jittered). A batch refused for its
 *   content is split (bisected by wallet) to find the rows Kafka refuses while it accepts others; only such a
 *   refusal counts against a row, which then backs off on its own. After RELAY_MAX_ATTEMPTS it is set aside
 *   in the outbox, and its wallet's later rows are held behind it until an operator retries or releases it
 *   (`deno task outbox`, docs/outbox.md). Other wallets keep flowing throughout.
 */
import type { Kafka, Message, Producer } from "kafkajs";
import type { Config } from "../src/config.ts";
import { pipelinedTransaction, type ReservedSql, type Sql, type WriteStep } from "../src/db/client.ts";
import {
  backlog,
  blockedCounts,
  claimUnsent,
  markSent,
  type OutboxRow,
  purgeSentBefore,
  recordRefusals,
  type Refusal,
  setsAside,
} from "../src/db/outbox_repository.ts";
import { analyzeStaleTables, summarizeSentIndex, vacuumOutboxIfBloated } from "../src/db/table_upkeep.ts";
import type { Logger } from "../src/log.ts";
import { createKafka, createOrderedProducer, publishErrorScope } from "./kafka.ts";
import { PartitionCountMismatchError } from "./kafka_admin.ts";
import type { PipelineMetrics } from "./metrics.ts";

/** Channel of the cross-process wake-up hint. */
export const OUTBOX_CHANNEL = "outbox_written";
/** The relay's pause after a failed cycle (Kafka unreachable, or refusing the whole topic). */
export const CYCLE_BACKOFF = { baseMs: 100, maxMs: 5000 };
/** A refused row's wait before its next try: 1, 2, 4 ... 60 s (10 tries span about 4 minutes). */
export const ROW_BACKOFF = { baseMs: 1000, maxMs: 60_000 };
/** Time one cycle may spend isolating refused rows before it commits what it found (shard locks are held). */
const ISOLATION_BUDGET_MS = 30_000;
const MAINTENANCE_EVERY_MS = 5000;
/** Sent rows are kept for hours: looking for expired ones once a minute is plenty, unless the last run was cut. */
const RETENTION_EVERY_MS = 60_000;
/** How long one retention run may delete before it yields to the rest of the upkeep (it resumes 5 s later). */
const RETENTION_BUDGET_MS = 20_000;
/** How often a warning repeats while rows are set aside or held. */
const HELD_WARNING_EVERY_MS = 60_000;
/** Dead outbox rows that make the maintenance vacuum the outbox: about 5 s of sending at 2,000 events/s. */
const VACUUM_AFTER_DEAD_ROWS = 10_000;

export interface RelayOptions {
  config: Pick<
    Config,
    | "KAFKA_BROKERS"
    | "KAFKA_CLIENT_ID"
    | "KAFKA_TOPIC"
    | "KAFKA_TOPIC_PARTITIONS"
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

/** What one relay cycle did: rows handled (sent or refused), the rows sent, and when Kafka acknowledged. */
interface CycleResult {
  handled: number;
  published: OutboxRow[];
  ackedAt: number;
  /** Set when Kafka refused for a reason that is not one row's: the loop backs off after the commit. */
  stalled?: { error: unknown; scope: "unreachable" | "topic" };
}

/**
 * Exponential backoff with jitter: `baseMs * 2^failures`, capped at `maxMs`, plus up to a quarter more at
 * random so relays that failed together do not retry together. Never shorter than the exponential step.
 */
export function backoffDelay(
  failures: number,
  { baseMs, maxMs }: { baseMs: number; maxMs: number },
  random: () => number = Math.random,
): number {
  const step = Math.min(maxMs, baseMs * 2 ** Math.min(failures, 30));
  return Math.round(step * (1 + random() / 4));
}

/** A batch's rows grouped by wallet, each group in id (commit) order, groups in order of their first row. */
function groupByWallet(rows: OutboxRow[]): OutboxRow[][] {
  const groups = new Map<string, OutboxRow[]>();
  for (const row of rows) {
    const group = groups.get(row.walletId);
    if (group) group.push(row);
    else groups.set(row.walletId, [row]);
  }
  return [...groups.values()];
}

/** Raised inside an isolation when Kafka fails for a reason that is not the rows': stop and back off. */
class StalledError extends Error {
  constructor(override readonly cause: unknown, readonly scope: "unreachable" | "topic") {
    super("Kafka refused for a reason that is not one row's");
  }
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
  let lastHeldWarning = 0;

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
   * Publish one batch. Two round trips to PostgreSQL: BEGIN with the shard locks and the read, then the move
   * of the sent rows (and the refusals) with COMMIT; the locks are held across the Kafka requests, so no other
   * relay publishes these shards meanwhile.
   */
  async function cycle(): Promise<CycleResult> {
    const kafkaProducer = await connectedProducer();
    const result = await pipelinedTransaction(
      sql,
      (tx) => claimUnsent(tx, config.RELAY_BATCH_SIZE),
      async (rows, tx): Promise<WriteStep<CycleResult>> => {
        if (rows.length === 0) return { result: { handled: 0, published: [], ackedAt: 0 }, statements: [] };
        try {
          await send(kafkaProducer, rows);
        } catch (error) {
          metrics.publishFailures++;
          const scope = publishErrorScope(error);
          if (scope !== "record") throw new StalledError(error, scope); // nothing counted: rows wait
          log.info("batch refused for its content; sending parts to find the refused rows", { error });
          return await isolate(tx, kafkaProducer, rows);
        }
        // A database error from here on rolls back: the rows stay unsent and go again (a harmless duplicate).
        return {
          result: { handled: rows.length, published: rows, ackedAt: Date.now() },
          statements: [markSent(tx, rows.map((r) => r.id))],
        };
      },
    );
    // Counted once committed: rows rolled back go again and are counted then.
    metrics.recordPublished(result.published.length);
    for (const row of result.published) {
      metrics.insertToPublishMs.add(result.ackedAt - row.createdAt.getTime());
    }
    return result;
  }

  function send(kafkaProducer: Producer, rows: OutboxRow[]) {
    return kafkaProducer.send({ topic: config.KAFKA_TOPIC, acks: -1, messages: rows.map(toMessage) });
  }

  /**
   * After a batch was refused for its content: find which rows Kafka refuses while it accepts others.
   *
   * First the smallest row that heads its wallet goes alone. Refused too, Kafka accepts none of these rows
   * (the topic's limit was lowered, say): nothing is counted against any row and the relay backs off. Accepted,
   * it proves the topic takes rows, and the rest is bisected by wallet: a part that goes through is sent; a
   * part refused is split in halves, down to one wallet, whose rows go one by one up to the first refused
   * one. That row's refusal is counted, and the wallet's later rows wait for the next cycle, so a wallet's
   * events never overtake each other. k bad rows among n wallets cost about 2k·log2(n) requests.
   */
  async function isolate(tx: ReservedSql, kafkaProducer: Producer, rows: OutboxRow[]) {
    const deadline = Date.now() + ISOLATION_BUDGET_MS;
    const sent: OutboxRow[] = [];
    const refusals: Refusal[] = [];
    let stalled: CycleResult["stalled"];

    async function trySend(part: OutboxRow[]): Promise<unknown> {
      if (Date.now() >= deadline) throw new StalledError(new Error("isolation budget spent"), "unreachable");
      try {
        await send(kafkaProducer, part);
        sent.push(...part);
        return null;
      } catch (error) {
        metrics.publishFailures++;
        const scope = publishErrorScope(error);
        if (scope !== "record") throw new StalledError(error, scope);
        return error;
      }
    }

    async function bisect(groups: OutboxRow[][]): Promise<void> {
      if (groups.length === 0) return;
      const error = await trySend(groups.flat());
      if (!error) return;
      if (groups.length > 1) {
        const middle = Math.ceil(groups.length / 2);
        await bisect(groups.slice(0, middle));
        await bisect(groups.slice(middle));
        return;
      }
      // One wallet: its rows in order, up to the first that is refused on its own.
      for (const row of groups[0]) {
        const refused = await trySend([row]);
        if (refused) {
          refusals.push({
            row,
            error: String((refused as Error).message ?? refused),
            retryInMs: backoffDelay(row.attempts, ROW_BACKOFF),
          });
          return;
        }
      }
    }

    try {
      const groups = groupByWallet(rows);
      const probe = groups.reduce((best, g) => (g[0].payload.length < best[0].payload.length ? g : best));
      const refused = await trySend([probe[0]]);
      if (refused) {
        // Not even the smallest row goes through: the refusal concerns the topic, not a row.
        throw new StalledError(refused, "topic");
      }
      probe.shift();
      await bisect(groups.filter((g) => g.length > 0));
    } catch (error) {
      if (!(error instanceof StalledError)) throw error;
      stalled = { error: error.cause, scope: error.scope };
    }
    for (const refusal of refusals) {
      metrics.rowRefusals++;
      if (setsAside(refusal, config.RELAY_MAX_ATTEMPTS)) {
        metrics.setAside++;
        log.warn(
          "outbox row set aside: Kafka kept refusing it while accepting other rows; the wallet's later events " +
            "are held behind it (deno task outbox list / retry / release)",
          {
            outboxId: refusal.row.id,
            walletId: refusal.row.walletId,
            walletVersion: refusal.row.walletVersion,
            attempts: refusal.row.attempts + 1,
            error: refusal.error,
          },
        );
      } else {
        log.warn("outbox row refused by Kafka while other rows were accepted; it waits and goes again", {
          outboxId: refusal.row.id,
          walletId: refusal.row.walletId,
          attempts: refusal.row.attempts + 1,
          retryInMs: refusal.retryInMs,
          error: refusal.error,
        });
      }
    }
    const result: CycleResult = {
      handled: sent.length + refusals.length,
      published: sent,
      ackedAt: Date.now(),
      stalled,
    };
    return {
      result,
      statements: [
        markSent(tx, sent.map((r) => r.id)),
        recordRefusals(tx, refusals, config.RELAY_MAX_ATTEMPTS),
      ],
    };
  }

  /**
   * Retention cleanup, table upkeep and backlog metrics, on a timer of their own: an ANALYZE or VACUUM can
   * take a while, and publishing must not wait for it.
   */
  async function maintenance() {
    if (Date.now() - lastRetention >= RETENTION_EVERY_MS) {
      await summarizeSentIndex(sql);
      const cutoff = new Date(Date.now() - config.RELAY_RETENTION_HOURS * 3600_000);
      const purge = await purgeSentBefore(sql, cutoff, { budgetMs: RETENTION_BUDGET_MS });
      metrics.retentionDeleted += purge.deleted;
      // Not caught up: go on at the next tick instead of a minute later.
      lastRetention = purge.caughtUp ? Date.now() : 0;
      if (purge.deleted > 0) log.debug("deleted sent outbox rows past retention", { ...purge });
    }
    // Table upkeep rides along: every deployment runs a relay, and a relay's writes are what bloat the outbox.
    if (await vacuumOutboxIfBloated(sql, VACUUM_AFTER_DEAD_ROWS)) log.debug("vacuumed the outbox");
    const analyzed = await analyzeStaleTables(sql);
    if (analyzed.length > 0) log.debug("analyzed tables with stale statistics", { tables: analyzed });
    const lag = await backlog(sql);
    metrics.unsent = lag.unsent;
    metrics.oldestUnsentAgeMs = lag.oldestAgeMs;
    const blocked = await blockedCounts(sql);
    metrics.setAsideRows = blocked.setAside;
    metrics.heldRows = blocked.held;
    metrics.backingOffRows = blocked.backingOff;
    if (blocked.setAside > 0 && Date.now() - lastHeldWarning >= HELD_WARNING_EVERY_MS) {
      lastHeldWarning = Date.now();
      log.warn("outbox rows are set aside and their wallets' later events held; see deno task outbox list", {
        setAside: blocked.setAside,
        held: blocked.held,
      });
    }
  }

  /**
   * Once at start: the topic's partition count against KAFKA_TOPIC_PARTITIONS. The relay publishes correctly
   * either way (keys hash by the topic's actual count), but a mismatch means someone changed the topic or the
   * setting, and a count changed under running consumers breaks per-wallet order: say so loudly.
   */
  async function checkPartitionCount() {
    const admin = kafka.admin();
    try {
      await admin.connect();
      const { topics } = await admin.fetchTopicMetadata({ topics: [config.KAFKA_TOPIC] });
      const actual = topics[0]?.partitions.length ?? 0;
      metrics.topicPartitions = actual;
      if (actual > 0 && actual !== config.KAFKA_TOPIC_PARTITIONS) {
        const mismatch = new PartitionCountMismatchError(
          config.KAFKA_TOPIC,
          actual,
          config.KAFKA_TOPIC_PARTITIONS,
        );
        log.error(mismatch.message, {
          topic: config.KAFKA_TOPIC,
          actual,
          configured: config.KAFKA_TOPIC_PARTITIONS,
        });
      }
    } finally {
      await admin.disconnect().catch(() => {});
    }
  }
  void checkPartitionCount().catch((error) =>
    log.debug("could not read the topic's partition count at start", { error })
  );

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
    let failures = 0;
    async function backOff(
      error: unknown,
      scope: "unreachable" | "topic",
      reconnect = scope === "unreachable",
    ) {
      metrics.relayCycleFailures++;
      if (scope === "topic") metrics.topicRefusals++;
      const backoffMs = backoffDelay(failures++, CYCLE_BACKOFF);
      if (scope === "topic") {
        log.warn(
          "Kafka refuses the topic as a whole (not one row's content); nothing is counted against rows",
          {
            error,
            topic: config.KAFKA_TOPIC,
            backoffMs,
          },
        );
      } else log.warn("relay cycle failed; backing off", { error, backoffMs });
      if (reconnect) await dropProducer();
      await pause(backoffMs, { wakeable: false });
    }
    while (running) {
      pendingWake = false;
      try {
        const { handled, stalled } = await cycle();
        if (stalled) {
          await backOff(stalled.error, stalled.scope);
          continue;
        }
        failures = 0;
        if (handled >= config.RELAY_BATCH_SIZE) continue; // backlog: go again at once
        if (handled === 0) { for (const resolve of idleWaiters.splice(0)) resolve(); }
        // Under a steady stream, let rows gather for a moment so each cycle (two round trips to PostgreSQL
        // and a Kafka request) carries many of them; an idle relay still reacts at once to its first wake-up.
        else await new Promise((resolve) => setTimeout(resolve, relayLinger(handled, config)));
        await pause(config.RELAY_SWEEP_MS, { wakeable: true });
      } catch (error) {
        if (error instanceof StalledError) await backOff(error.cause, error.scope);
        // PostgreSQL, or Kafka before the send (connecting): the producer is only replaced for Kafka's errors.
        else await backOff(error, "unreachable", publishErrorScope(error) === "unreachable");
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
