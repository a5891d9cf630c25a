/**
 * What the pipeline counts: backlog, publish rate, consumer apply counts, consumer lag and the event-to-cache
 * delay. Plain numbers, cheap enough to update on every event; src/observability/metrics.ts exports them to
 * Prometheus when it scrapes (a new counter here needs one line in its `watchPipeline`).
 */
import { Histogram } from "prom-client";

/** Latency buckets (seconds) of the pipeline: milliseconds normally, seconds when Kafka or Redis struggles. */
const PIPELINE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** A fixed-size window of recent samples with percentiles. */
export class SampleWindow {
  readonly #samples: number[] = [];
  #next = 0;

  /** `histogram`, if given, also observes every sample (in seconds: samples are milliseconds). */
  constructor(private readonly capacity = 10_000, private readonly histogram?: Histogram) {}

  add(value: number): void {
    this.histogram?.observe(Math.max(0, value) / 1000);
    if (this.#samples.length < this.capacity) this.#samples.push(value);
    else this.#samples[this.#next] = value;
    this.#next = (this.#next + 1) % this.capacity;
  }

  /** The p-th percentile (0..100) of the window, or null when empty. */
  percentile(p: number): number | null {
    if (this.#samples.length === 0) return null;
    const sorted = [...this.#samples].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? sorted[0];
  }

  get count(): number {
    return this.#samples.length;
  }
}

export class PipelineMetrics {
  /** Outbox rows acknowledged by Kafka. */
  published = 0;
  /** Publish attempts that failed (a whole batch counts once). */
  publishFailures = 0;
  /** Relay cycles that failed (Kafka or PostgreSQL unreachable, say); each is followed by a backoff. */
  relayCycleFailures = 0;
  /** Relay cycles that backed off because Kafka refused the topic as a whole (nothing counted against rows). */
  topicRefusals = 0;
  /** Refusals counted against one row: Kafka refused it alone while it accepted other rows. */
  rowRefusals = 0;
  /** Rows set aside after RELAY_MAX_ATTEMPTS counted refusals (their wallets' later rows are held). */
  setAside = 0;
  /** The former name of `setAside` (rows the relay used to move to the dead-letter table at that point). */
  get deadLettered(): number {
    return this.setAside;
  }
  /** At the last measurement: rows set aside, rows held behind them, rows backing off after a refusal. */
  setAsideRows = 0;
  heldRows = 0;
  backingOffRows = 0;
  /** The events topic's partition count as the relay found it at start (0: not read). */
  topicPartitions = 0;
  /** Sent rows deleted by the retention. */
  retentionDeleted = 0;
  /** Malformed events the consumer could not put on `<topic>.dlq` (it retries the batch, loudly). */
  deadLetterTopicFailures = 0;
  /** Unsent outbox rows at the last measurement, and the age of the oldest. */
  unsent = 0;
  oldestUnsentAgeMs = 0;
  /** Events read by the consumer, applied to the cache, skipped as not newer, and set aside as malformed. */
  consumed = 0;
  cacheApplied = 0;
  cacheStale = 0;
  malformed = 0;
  /** Per partition this consumer owns: messages not applied yet, as of its last batch there. */
  readonly consumerLag = new Map<number, number>();
  /** The two latencies below for Prometheus, registered by the thread's metrics registry (not here). */
  readonly publishLatency = new Histogram({
    name: "mini_wallet_relay_publish_latency_seconds",
    help: "From an outbox row's insert (its commit) to Kafka's acknowledgement of its event.",
    buckets: PIPELINE_BUCKETS,
    registers: [],
  });
  readonly eventToCacheLatency = new Histogram({
    name: "mini_wallet_event_to_cache_seconds",
    help: "From an event's occurrence (its commit) to its balance in the Redis cache.",
    buckets: PIPELINE_BUCKETS,
    registers: [],
  });
  /** Milliseconds from an outbox row's insert to the broker's acknowledgement. */
  readonly insertToPublishMs = new SampleWindow(10_000, this.publishLatency);
  /** Milliseconds from an event's occurrence to its cache write. */
  readonly eventToCacheMs = new SampleWindow(10_000, this.eventToCacheLatency);
  readonly #publishTimes: Array<{ at: number; count: number }> = [];

  recordPublished(count: number, at = Date.now()): void {
    this.published += count;
    this.#publishTimes.push({ at, count });
    while (this.#publishTimes.length > 0 && this.#publishTimes[0].at < at - 10_000) {
      this.#publishTimes.shift();
    }
  }

  /** Events per second published over the last 10 s. */
  publishRate(now = Date.now()): number {
    const recent = this.#publishTimes.filter((p) => p.at >= now - 10_000);
    return recent.reduce((sum, p) => sum + p.count, 0) / 10;
  }

  snapshot() {
    return {
      published: this.published,
      publishFailures: this.publishFailures,
      relayCycleFailures: this.relayCycleFailures,
      publishRatePerSecond: this.publishRate(),
      topicRefusals: this.topicRefusals,
      rowRefusals: this.rowRefusals,
      setAside: this.setAside,
      setAsideRows: this.setAsideRows,
      heldRows: this.heldRows,
      backingOffRows: this.backingOffRows,
      retentionDeleted: this.retentionDeleted,
      topicPartitions: this.topicPartitions,
      deadLetterTopicFailures: this.deadLetterTopicFailures,
      unsent: this.unsent,
      oldestUnsentAgeMs: this.oldestUnsentAgeMs,
      consumed: this.consumed,
      cacheApplied: this.cacheApplied,
      cacheStale: this.cacheStale,
      malformed: this.malformed,
      insertToPublishMs: {
        p50: this.insertToPublishMs.percentile(50),
        p99: this.insertToPublishMs.percentile(99),
      },
      eventToCacheMs: {
        p50: this.eventToCacheMs.percentile(50),
        p99: this.eventToCacheMs.percentile(99),
        samples: this.eventToCacheMs.count,
      },
    };
  }
}
