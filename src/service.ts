/**
 * Starts the roles a process runs and returns one handle to stop them all. Kept apart from main.ts so tests
 * and benchmarks can run a whole service in-process with their own configuration.
 *
 * Each role's modules are imported only when the role runs: the pipeline thread then holds no Hono, routes or
 * OpenAPI schemas, and the API thread no relay or consumer. A small saving (idle RSS of a process: 85-87 MB
 * with either part alone, 90 MB with both), but each thread is a heap of its own under load.
 */
import type { Config } from "./config.ts";
import type { Logger } from "./log.ts";
import type { BalanceCacheStats } from "./cache/balance_cache.ts";
import type { NearCacheStats } from "./cache/near_cache.ts";
import { openCache } from "./cache/open_cache.ts";
import { createSql, dbTimeouts } from "./db/client.ts";
import type { WalletService } from "./wallet/wallet_service.ts";
import type { HistoryStreams } from "./http/history_stream.ts";
import { PipelineMetrics } from "../outbox/metrics.ts";

export interface RunningService {
  /** The HTTP port, when the API role runs. */
  port: number | null;
  metrics: PipelineMetrics;
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
}

/** Start every role listed in `config.ROLES`. */
export async function startService(
  config: Config,
  log: Logger,
  options: ServiceOptions = {},
): Promise<RunningService> {
  const roles = new Set(config.ROLES);
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
  const stops: Array<() => Promise<void>> = [];

  if (roles.has("relay") || roles.has("consumer")) {
    (await import("../outbox/kafka.ts")).hideKafkajsTimeoutWarning();
  }
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

  let port: number | null = null;
  let wallets: WalletService | null = null;
  let histories: HistoryStreams | null = null;
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
    histories = new HistoryStreams({
      maxStreams: config.HISTORY_STREAMS_MAX ?? defaultMaxStreams(config.DATABASE_POOL_SIZE),
      stallMs: config.HISTORY_STREAM_STALL_MS,
      maxMs: config.HISTORY_STREAM_MAX_MS,
      log,
    });
    const app = createApp({ wallets, tokens, log, histories });
    const server = Deno.serve({
      port: config.PORT,
      hostname: config.HOST,
      onListen: ({ hostname, port }) => log.info("listening", { url: `http://${hostname}:${port}` }),
    }, app.fetch);
    port = server.addr.port;
    // Stop accepting first, so in-flight requests finish before their connections close.
    stops.unshift(() => server.shutdown());
  }
  log.info("started", { roles: [...roles] });

  // Until metrics are exported, the pipeline's counters (and the near cache's and the write paths') go to the log now and then
  // (0 turns this off).
  if (config.METRICS_LOG_INTERVAL_MS > 0) {
    const timer = setInterval(
      () =>
        log.info("pipeline metrics", {
          // Zeros from a process (or thread) that runs neither pipeline role would read as a stalled pipeline.
          ...(roles.has("relay") || roles.has("consumer") ? metrics.snapshot() : {}),
          nearCache: near?.stats(),
          balanceCache: cache.stats(),
          walletWrites: wallets?.writeStats(),
          historyStreams: histories?.stats(),
        }),
      config.METRICS_LOG_INTERVAL_MS,
    );
    stops.push(() => Promise.resolve(clearInterval(timer)));
  }

  return {
    port,
    metrics,
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
