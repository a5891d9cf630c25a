/**
 * The Prometheus metrics of one thread (prom-client): one registry per thread, every metric name of the service
 * in this module or in outbox/metrics.ts, and docs/metrics.md saying what each means.
 *
 * Two kinds of source:
 * - Instruments updated where things happen: HTTP requests, wallet operations, write batches, and the
 *   pipeline's latency histograms (outbox/metrics.ts).
 * - Counters the parts already keep as plain numbers (PipelineMetrics, the near cache, the balance cache, the
 *   write paths, the pool): read when Prometheus scrapes (`collect`), so their hot paths stay a `++`. A new
 *   plain counter is exported by one more line in the `watch*` function of its object.
 *
 * With the pipeline on its own thread, that thread has a registry of its own; the main thread asks for its
 * values at each scrape and adds them up with its own (prom-client's AggregatorRegistry), so nothing is
 * counted twice and one /metrics shows the whole process.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, type LabelValues, Registry } from "prom-client";
import type { NearCacheStats } from "../cache/near_cache.ts";
import type { BalanceCacheStats } from "../cache/balance_cache.ts";
import type { HistoryStreamStats } from "../http/history_stream.ts";
import type { PoolStats } from "../db/client.ts";
import type { WalletMetrics, WriteStats } from "../wallet/wallet_service.ts";
import type { PipelineMetrics } from "../../outbox/metrics.ts";

/** Every metric name starts with this. */
export const PREFIX = "mini_wallet_";

/** Request latency buckets (seconds): the cached GET answers in well under a millisecond. */
const HTTP_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
/** Write batch sizes: one request up to WRITE_BATCH_MAX (500 by default). */
const BATCH_SIZE_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];
const BATCH_SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

type Labeled = Array<[LabelValues<string>, number]>;

/**
 * The HTTP latency histogram, observed on every request. prom-client's Histogram hashes its label object on
 * every observation (5 % of a cached GET's CPU in the bench's profile); this one keeps its series in a Map by
 * a string key and counts into a plain array, and hands prom-client's registry the same values at a scrape
 * (the `get()` shape of prom-client's metrics, so text output and thread aggregation work unchanged).
 */
class LabeledHistogram {
  readonly type = "histogram";
  readonly aggregator = "sum";
  readonly #series = new Map<string, { labels: Record<string, string>; counts: number[]; sum: number }>();

  constructor(readonly name: string, readonly help: string, readonly buckets: readonly number[]) {}

  observe(route: string, method: string, status: number, seconds: number): void {
    const key = `${route} ${method} ${status}`;
    let series = this.#series.get(key);
    if (!series) {
      series = {
        labels: { route, method, status: String(status) },
        counts: new Array(this.buckets.length + 1).fill(0),
        sum: 0,
      };
      this.#series.set(key, series);
    }
    let bucket = 0;
    while (bucket < this.buckets.length && seconds > this.buckets[bucket]) bucket++;
    series.counts[bucket]++;
    series.sum += seconds;
  }

  get() {
    const values: Array<{ labels: Record<string, string | number>; value: number; metricName: string }> = [];
    for (const { labels, counts, sum } of this.#series.values()) {
      let cumulative = 0;
      this.buckets.forEach((le, i) => {
        cumulative += counts[i];
        values.push({ labels: { ...labels, le }, value: cumulative, metricName: `${this.name}_bucket` });
      });
      const count = cumulative + counts[this.buckets.length];
      values.push({ labels: { ...labels, le: "+Inf" }, value: count, metricName: `${this.name}_bucket` });
      values.push({ labels, value: sum, metricName: `${this.name}_sum` });
      values.push({ labels, value: count, metricName: `${this.name}_count` });
    }
    return Promise.resolve({
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values,
    });
  }

  reset(): void {
    this.#series.clear();
  }
}

/** One thread's registry and the instruments the HTTP layer and the wallet service update. */
export class ServiceMetrics implements WalletMetrics {
  readonly registry = new Registry();
  readonly #httpDuration: LabeledHistogram;
  readonly #operations: Counter<"kind" | "result">;
  readonly #operationChildren = new Map<string, { inc(): void }>();
  readonly #batchSize: Histogram;
  readonly #batchWait: Histogram;
  readonly #batchDuration: Histogram;

  /** `processMetrics`: CPU, memory, event loop and GC of the process (one thread per process asks for them). */
  constructor(options: { processMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (options.processMetrics) collectDefaultMetrics({ register: this.registry });
    this.#httpDuration = new LabeledHistogram(
      `${PREFIX}http_request_duration_seconds`,
      "HTTP requests by route pattern, method and status, and how long each took to answer.",
      HTTP_BUCKETS,
    );
    this.registry.registerMetric(this.#httpDuration as never);
    this.#operations = new Counter({
      name: `${PREFIX}wallet_operations_total`,
      help: "Wallet operations by kind (init, enable, disable, deposit, withdrawal) and result " +
        "(success, replayed, a refusal such as insufficient_balance, or error).",
      labelNames: ["kind", "result"],
      registers,
    });
    this.#batchSize = new Histogram({
      name: `${PREFIX}write_batch_size`,
      help: "Deposits and withdrawals per write batch (one transaction).",
      buckets: BATCH_SIZE_BUCKETS,
      registers,
    });
    this.#batchWait = new Histogram({
      name: `${PREFIX}write_batch_wait_seconds`,
      help: "How long the oldest request of a write batch waited for the batch to start.",
      buckets: BATCH_SECONDS_BUCKETS,
      registers,
    });
    this.#batchDuration = new Histogram({
      name: `${PREFIX}write_batch_duration_seconds`,
      help: "How long a write batch took, from its start to its commit.",
      buckets: BATCH_SECONDS_BUCKETS,
      registers,
    });
  }

  /** One answered HTTP request; `route` is the route pattern (never the raw path). */
  request(route: string, method: string, status: number, seconds: number): void {
    this.#httpDuration.observe(route, method, status, seconds);
  }

  operation(kind: string, result: string): void {
    const key = `${kind} ${result}`;
    let child = this.#operationChildren.get(key);
    if (!child) {
      child = this.#operations.labels({ kind, result });
      this.#operationChildren.set(key, child);
    }
    child.inc();
  }

  batch(size: number, waitMs: number, durationMs: number): void {
    this.#batchSize.observe(size);
    this.#batchWait.observe(waitMs / 1000);
    this.#batchDuration.observe(durationMs / 1000);
  }

  /** The relay's and the consumer's counters, gauges and histograms. */
  watchPipeline(pipeline: PipelineMetrics, roles: { relay: boolean; consumer: boolean }): void {
    if (roles.relay) {
      this.#counter(
        "relay_published_total",
        "Outbox rows published to Kafka and acknowledged.",
        () => pipeline.published,
      );
      this.#counter(
        "relay_publish_failures_total",
        "Publish attempts Kafka refused or did not answer (a whole batch counts once).",
        () => pipeline.publishFailures,
      );
      this.#counter(
        "relay_cycle_failures_total",
        "Relay cycles that failed (Kafka or PostgreSQL unreachable); each is followed by a backoff.",
        () => pipeline.relayCycleFailures,
      );
      this.#labeledCounter(
        "relay_refusals_total",
        "Kafka refusals: topic (the topic as a whole; the relay backs off, no row is charged) and row (one " +
          "row refused while others were accepted; counted against that row).",
        ["scope"],
        () => [[{ scope: "topic" }, pipeline.topicRefusals], [{ scope: "row" }, pipeline.rowRefusals]],
      );
      this.#counter(
        "relay_set_aside_total",
        "Rows set aside after RELAY_MAX_ATTEMPTS refusals; their wallets' later rows are held behind them.",
        () => pipeline.setAside,
      );
      this.#labeledGauge(
        "outbox_rows",
        "Outbox rows by state at the last measurement: set_aside, held (behind a set-aside row of their " +
          "wallet), backing_off (waiting after a refusal).",
        ["state"],
        () => [
          [{ state: "set_aside" }, pipeline.setAsideRows],
          [{ state: "held" }, pipeline.heldRows],
          [{ state: "backing_off" }, pipeline.backingOffRows],
        ],
      );
      this.#counter(
        "outbox_retention_deleted_total",
        "Sent rows deleted after RELAY_RETENTION_HOURS.",
        () => pipeline.retentionDeleted,
      );
      this.#gauge(
        "outbox_unsent_rows",
        "Outbox rows not yet published (measured every 5 s).",
        () => pipeline.unsent,
      );
      this.#gauge(
        "outbox_oldest_unsent_age_seconds",
        "Age of the oldest unpublished outbox row (measured every 5 s); 0 when none.",
        () => pipeline.oldestUnsentAgeMs / 1000,
      );
      this.registry.registerMetric(pipeline.publishLatency);
    }
    if (roles.consumer) {
      this.#counter(
        "consumer_messages_total",
        "Messages the balance-cache consumer read from Kafka.",
        () => pipeline.consumed,
      );
      this.#labeledCounter(
        "consumer_cache_updates_total",
        "Wallet events the consumer compared into Redis: applied, or stale (the cache already had that " +
          "version or a newer one).",
        ["result"],
        () => [[{ result: "applied" }, pipeline.cacheApplied], [{ result: "stale" }, pipeline.cacheStale]],
      );
      this.#counter(
        "consumer_malformed_total",
        "Messages that were not valid wallet events, set aside on the <topic>.dlq topic.",
        () => pipeline.malformed,
      );
      this.#counter(
        "consumer_dead_letter_failures_total",
        "Malformed events the consumer could not put on <topic>.dlq (it retries the batch).",
        () => pipeline.deadLetterTopicFailures,
      );
      this.#labeledGauge(
        "consumer_lag_messages",
        "Messages on each partition this consumer owns that it has not applied yet, as of its last batch.",
        ["partition"],
        () => [...pipeline.consumerLag].map(([partition, lag]) => [{ partition: String(partition) }, lag]),
      );
      this.registry.registerMetric(pipeline.eventToCacheLatency);
    }
  }

  /** The near cache's hits, misses, invalidations and size. */
  watchNearCache(stats: () => NearCacheStats): void {
    this.#counter(
      "near_cache_hits_total",
      "Balance reads served from this process's memory.",
      () => stats().hits,
    );
    this.#counter(
      "near_cache_misses_total",
      "Balance reads the near cache could not serve (went on to Redis).",
      () => stats().misses,
    );
    this.#counter(
      "near_cache_invalidations_total",
      "Keys Redis reported changed by another client (CLIENT TRACKING), dropped from memory.",
      () => stats().invalidations,
    );
    this.#gauge("near_cache_entries", "Wallets kept in memory.", () => stats().size);
    this.#gauge(
      "near_cache_active",
      "1 while the near cache serves (both Redis connections up, tracking on), else 0.",
      () => stats().active ? 1 : 0,
    );
  }

  /** Whole histories streamed from a cursor (GET /api/v1/wallet/transactions without limit). */
  watchHistoryStreams(stats: () => HistoryStreamStats): void {
    this.#gauge(
      "history_streams_active",
      "Whole histories being streamed now (each holds a connection).",
      () => stats().active,
    );
    this.#labeledCounter(
      "history_streams_total",
      "Whole histories by outcome: sent (to the end), cancelled (the client went away), aborted (cut off: " +
        "stalled client, too old, or a database error after the first bytes), refused (503, every slot taken).",
      ["outcome"],
      () => {
        const { sent, cancelled, aborted, refused } = stats();
        return [[{ outcome: "sent" }, sent], [{ outcome: "cancelled" }, cancelled], [
          { outcome: "aborted" },
          aborted,
        ], [{ outcome: "refused" }, refused]];
      },
    );
  }

  /** The balance cache's reads (near cache and Redis together) and its Redis circuit breaker. */
  watchBalanceCache(stats: () => BalanceCacheStats): void {
    this.#labeledCounter(
      "cache_reads_total",
      "Balance reads: hit (an entry, in the near cache or Redis), miss (read PostgreSQL), error (Redis " +
        "unreachable, slow or skipped by its breaker; read PostgreSQL).",
      ["result"],
      () => {
        const s = stats();
        return [[{ result: "hit" }, s.hits], [{ result: "miss" }, s.misses], [{ result: "error" }, s.errors]];
      },
    );
    this.#gauge(
      "redis_breaker_open",
      "1 while the Redis circuit breaker skips Redis, else 0.",
      () => stats().breaker?.state === "open" ? 1 : 0,
    );
    this.#labeledCounter(
      "redis_breaker_transitions_total",
      "Times the Redis circuit breaker opened (Redis skipped) and closed again (a probe answered).",
      ["to"],
      () => {
        const breaker = stats().breaker;
        return [[{ to: "open" }, breaker?.opened ?? 0], [{ to: "closed" }, breaker?.closed ?? 0]];
      },
    );
    this.#counter(
      "redis_breaker_skipped_total",
      "Redis commands not sent because the breaker was open.",
      () => stats().breaker?.skipped ?? 0,
    );
  }

  /** Which write path each wallet of a batch took, the write queue, and writes refused with 503. */
  watchWritePaths(stats: () => WriteStats): void {
    this.#labeledCounter(
      "write_path_wallets_total",
      "Wallets written per batch, by path: known_state (one round trip), locked_state, version_moved " +
        "(another process wrote it: decided again on the locked row), known_state_failed, locked_elsewhere " +
        "(its row was locked by another session: waited for apart).",
      ["path"],
      () => {
        const s = stats();
        return [
          [{ path: "known_state" }, s.onKnownState],
          [{ path: "locked_state" }, s.onLockedState],
          [{ path: "version_moved" }, s.versionMoved],
          [{ path: "known_state_failed" }, s.knownStateFailed],
          [{ path: "locked_elsewhere" }, s.lockedElsewhere],
        ];
      },
    );
    this.#labeledCounter(
      "writes_not_applied_total",
      "Deposits and withdrawals answered 503 with nothing written: deadline (REQUEST_TIMEOUT_MS passed " +
        "before the write was sent) or queue_full (WRITE_QUEUE_MAX requests already waiting).",
      ["reason"],
      () => {
        const s = stats();
        return [[{ reason: "deadline" }, s.timedOut], [{ reason: "queue_full" }, s.queueFull]];
      },
    );
    this.#gauge(
      "write_queue_requests",
      "Deposits and withdrawals waiting for a write batch.",
      () => stats().queued,
    );
    this.#gauge(
      "write_lock_waiting",
      "Transactions waiting for a wallet row another session holds (at most WRITE_LOCK_WAITERS).",
      () => stats().lockWaiting,
    );
  }

  /** The PostgreSQL pool of this thread. */
  watchPool(stats: () => PoolStats): void {
    this.#gauge(
      "db_pool_size",
      "Most connections of the PostgreSQL pool (DATABASE_POOL_SIZE per thread).",
      () => stats().size,
    );
    this.#gauge(
      "db_pool_in_use",
      "Pool connections held by a transaction (write batches, relay cycles, status changes).",
      () => stats().inUse,
    );
    this.#gauge("db_pool_waiting", "Transactions waiting for a free pool connection.", () => stats().waiting);
  }

  /** The Prometheus text of this registry alone. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  #counter(name: string, help: string, read: () => number) {
    this.#labeledCounter(name, help, [], () => [[{}, read()]]);
  }

  #labeledCounter(name: string, help: string, labelNames: string[], read: () => Labeled) {
    new Counter({
      name: `${PREFIX}${name}`,
      help,
      labelNames,
      registers: [this.registry],
      // The source only grows: the counter is set to it at each scrape.
      collect() {
        this.reset();
        for (const [labels, value] of read()) this.inc(labels, value);
      },
    });
  }

  #gauge(name: string, help: string, read: () => number) {
    this.#labeledGauge(name, help, [], () => [[{}, read()]]);
  }

  #labeledGauge(name: string, help: string, labelNames: string[], read: () => Labeled) {
    new Gauge({
      name: `${PREFIX}${name}`,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [labels, value] of read()) this.set(labels, value);
      },
    });
  }
}
