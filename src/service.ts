/**
 * Starts the roles a process runs and returns one handle to stop them all. Kept apart from main.ts so tests
 * and benchmarks can run a whole service in-process with their own configuration.
 *
 * Each role's modules are imported only when the role runs: the pipeline thread then holds no Hono, routes or
 * OpenAPI schemas, and the API thread no relay or consumer. A small saving (idle RSS of a process: 85-87 MB
 * with either part alone, 90 MB with both), but each thread is a heap of its own under load.
 *
 * Every process listens on PORT: with the API role it serves the whole app, without it only the operators'
 * endpoints (/health, /ready, /metrics), so a relay or consumer process can be probed and scraped too. The
 * pipeline thread does not listen: the main thread reports for it.
 */
import type { Config } from "./config.ts";
import type { Logger } from "./log.ts";
import type { BalanceCacheStats } from "./cache/balance_cache.ts";
import type { NearCacheStats } from "./cache/near_cache.ts";
import { openCache } from "./cache/open_cache.ts";
import { createSql, dbTimeouts, pingDatabase, poolStats } from "./db/client.ts";
import type { WalletService } from "./wallet/wallet_service.ts";
import { PipelineMetrics } from "../outbox/metrics.ts";
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue } from "prom-client";
import { ServiceMetrics } from "./observability/metrics.ts";
import {
  type Check,
  checkAll,
  dependenciesOf,
  type Dependency,
  mergeReports,
  type ReadinessReport,
} from "./observability/readiness.ts";
import type { OpsEndpoints } from "./http/routes/ops_routes.ts";

/** A registry's values as prom-client hands them between threads. */
export type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

/** What another thread of this process (the pipeline thread) contributes to /ready and /metrics. */
export interface ThreadReports {
  readiness(): Promise<ReadinessReport>;
  metrics(): Promise<MetricsJson>;
}

export interface RunningService {
  /** The HTTP port (the API, or the operators' endpoints alone), when this thread listens. */
  port: number | null;
  metrics: PipelineMetrics;
  /** This thread's Prometheus registry and instruments. */
  serviceMetrics: ServiceMetrics;
  /** The dependencies of this thread's roles, checked now. */
  readiness(): Promise<ReadinessReport>;
  /** The balance cache's counters (hits, misses, errors, breaker) and the near cache's, if it runs one. */
  cacheStats(): { balanceCache: BalanceCacheStats; nearCache: NearCacheStats | null };
  /** Wake this process's relay, when it runs one (a no-op otherwise). */
  wakeRelay(): void;
  stop(): Promise<void>;
}

export interface ServiceOptions {
  /**
   * Wakes the relays after a commit that wrote outbox rows, when they run elsewhere in this process (the
   * pipeline thread). Without it, a relay of this process is woken directly, and others by a NOTIFY.
   */
  wakeRelay?: () => void;
  /** Listen on PORT (default true); the pipeline thread does not. */
  listen?: boolean;
  /** The pipeline thread of this process, whose readiness and metrics join this thread's. */
  otherThread?: ThreadReports;
}

/** Start every role listed in `config.ROLES`. */
export async function startService(
  config: Config,
  log: Logger,
  options: ServiceOptions = {},
): Promise<RunningService> {
  const roles = new Set(config.ROLES);
  const listen = options.listen ?? true;
  const sql = createSql(config.DATABASE_URL, {
    max: config.DATABASE_POOL_SIZE,
    timeouts: dbTimeouts(config),
  });
  // API processes keep what they read in memory, told by Redis when it changes (see near_cache.ts).
  const opened = openCache({
    redisUrl: config.REDIS_URL,
    log,
    freshnessMs: config.CACHE_FRESHNESS_MS,
    nearMaxEntries: roles.has("api") ? config.NEAR_CACHE_MAX_ENTRIES : 0,
    nearLeaseMs: config.NEAR_CACHE_LEASE_MS,
    commandTimeoutMs: config.REDIS_COMMAND_TIMEOUT_MS,
    breakerFailures: config.REDIS_BREAKER_FAILURES,
    breakerOpenMs: config.REDIS_BREAKER_OPEN_MS,
  });
  const { cache, near } = opened;
  const metrics = new PipelineMetrics();
  // Process-wide metrics (CPU, memory, event loop) once per process: by the thread that serves HTTP.
  const serviceMetrics = new ServiceMetrics({ processMetrics: listen });
  serviceMetrics.watchPool(() => poolStats(sql));
  const stops: Array<() => Promise<void>> = [];

  const checks: Partial<Record<Dependency, Check>> = {};
  const needs = dependenciesOf(config.ROLES);
  if (needs.includes("postgres")) checks.postgres = () => pingDatabase(sql);
  if (needs.includes("redis")) checks.redis = () => opened.redis.ping();

  if (roles.has("relay") || roles.has("consumer")) {
    const { hideKafkajsTimeoutWarning, createKafkaProbe } = await import("../outbox/kafka.ts");
    hideKafkajsTimeoutWarning();
    const probe = createKafkaProbe({ brokers: config.KAFKA_BROKERS, clientId: config.KAFKA_CLIENT_ID });
    checks.kafka = () => probe.check();
    stops.push(() => probe.close());
    serviceMetrics.watchPipeline(metrics, { relay: roles.has("relay"), consumer: roles.has("consumer") });
  }
  const readiness = () => checkAll(checks, { timeoutMs: config.READY_CHECK_TIMEOUT_MS, log });
  const relay = roles.has("relay")
    ? (await import("../outbox/relay.ts")).startRelay({
      config,
      sql,
      log: log.child({ role: "relay" }),
      metrics,
    })
    : null;
  if (relay) stops.push(() => relay.stop());

  if (roles.has("consumer")) {
    const { startConsumer } = await import("../outbox/consumer.ts");
    const consumer = startConsumer({ config, cache, log: log.child({ role: "consumer" }), metrics });
    stops.push(() => consumer.stop());
  }

  const ops: OpsEndpoints = {
    async readiness() {
      const other = options.otherThread;
      return mergeReports(await Promise.all([readiness(), ...(other ? [other.readiness()] : [])]));
    },
    async metricsText() {
      const other = options.otherThread;
      if (!other) return await serviceMetrics.text();
      const [own, theirs] = await Promise.all([serviceMetrics.registry.getMetricsAsJSON(), other.metrics()]);
      // Each metric is counted by one thread or, like the pool gauges, added up across both.
      return await AggregatorRegistry.aggregate([own as MetricsJson, theirs]).metrics();
    },
  };

  let port: number | null = null;
  let wallets: WalletService | null = null;
  let handler: ((request: Request) => Response | Promise<Response>) | null = null;
  if (roles.has("api")) {
    const [{ createApp }, { createTokenService }, { WalletService }, { HistoryStreams, defaultMaxStreams }] =
      await Promise.all([
        import("./app.ts"),
        import("./auth/tokens.ts"),
        import("./wallet/wallet_service.ts"),
        import("./http/history_stream.ts"),
      ]);
    const wakeRelay = relay
      ? () => relay.wake()
      : options.wakeRelay ?? (await import("../outbox/outbox_hint.ts")).createOutboxHint(sql, log);
    wallets = new WalletService({
      sql,
      log,
      cache,
      metrics: serviceMetrics,
      batching: {
        maxConcurrent: config.WRITE_BATCH_CONCURRENCY,
        maxBatch: config.WRITE_BATCH_MAX,
        maxQueued: config.WRITE_QUEUE_MAX,
      },
      knownWallets: config.WRITE_KNOWN_WALLETS,
      requestTimeoutMs: config.REQUEST_TIMEOUT_MS,
      lockWaiters: config.WRITE_LOCK_WAITERS,
      nearCacheLeaseMs: config.NEAR_CACHE_LEASE_MS,
      // A relay of this thread or this process's pipeline thread is woken directly; relays in other processes
      // get a coalesced NOTIFY.
      onOutboxWritten: wakeRelay,
    });
    const tokens = createTokenService({ secret: config.JWT_SECRET, ttlSeconds: config.TOKEN_TTL_SECONDS });
    const histories = new HistoryStreams({
      maxStreams: config.HISTORY_STREAMS_MAX ?? defaultMaxStreams(config.DATABASE_POOL_SIZE),
      stallMs: config.HISTORY_STREAM_STALL_MS,
      maxMs: config.HISTORY_STREAM_MAX_MS,
      log,
    });
    const walletService = wallets;
    serviceMetrics.watchWritePaths(() => walletService.writeStats());
    serviceMetrics.watchBalanceCache(() => cache.stats());
    if (near) serviceMetrics.watchNearCache(() => near.stats());
    serviceMetrics.watchHistoryStreams(() => histories.stats());
    handler = createApp({ wallets, tokens, log, histories, metrics: serviceMetrics, ops }).fetch;
  } else if (listen) {
    const { createOpsApp } = await import("./app.ts");
    handler = createOpsApp({ log, metrics: serviceMetrics, ops }).fetch;
  }
  if (listen && handler) {
    const server = Deno.serve({
      port: config.PORT,
      hostname: config.HOST,
      onListen: ({ hostname, port }) => log.info("listening", { url: `http://${hostname}:${port}` }),
    }, handler);
    port = server.addr.port;
    // Stop accepting first, so in-flight requests finish before their connections close.
    stops.unshift(() => server.shutdown());
  }
  log.info("started", { roles: [...roles] });

  return {
    port,
    metrics,
    serviceMetrics,
    readiness,
    cacheStats: () => ({ balanceCache: cache.stats(), nearCache: near?.stats() ?? null }),
    wakeRelay: () => relay?.wake(),
    async stop() {
      for (const stop of stops) {
        await stop().catch((error) => log.error("stop failed", { error }));
      }
      opened.close();
      await sql.end({ timeout: 5 });
    },
  };
}
