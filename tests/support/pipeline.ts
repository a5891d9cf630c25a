/**
 * The whole pipeline in-process for tests: the app on the test database and Redis, plus relays and balance
 * consumers on a topic of the test's own, each with its own consumer group. Everything started here is
 * stopped by `close()`.
 */
import type { Config } from "../../src/config.ts";
import { createApp } from "../../src/app.ts";
import { createTokenService } from "../../src/auth/tokens.ts";
import type { BalanceCache } from "../../src/cache/balance_cache.ts";
import { openCache } from "../../src/cache/open_cache.ts";
import { createSql, type Sql } from "../../src/db/client.ts";
import { createLogger, type Logger } from "../../src/log.ts";
import { WalletService } from "../../src/wallet/wallet_service.ts";
import { centsToDecimal } from "../../src/wallet/money.ts";
import { PipelineMetrics } from "../../outbox/metrics.ts";
import { type RunningRelay, startRelay } from "../../outbox/relay.ts";
import { type RunningConsumer, startConsumer } from "../../outbox/consumer.ts";
import type { Redis } from "ioredis";
import { config as testConfig, TEST_COMMAND_TIMEOUT_MS } from "./harness.ts";

export interface PipelineRelay extends RunningRelay {
  metrics: PipelineMetrics;
}

export interface PipelineConsumer extends RunningConsumer {
  metrics: PipelineMetrics;
  groupId: string;
}

export interface Pipeline {
  config: Config;
  sql: Sql;
  redis: Redis;
  cache: BalanceCache;
  log: Logger;
  app: ReturnType<typeof createApp>;
  /** Start a relay on its own pool (closed on stop). */
  startRelay(
    options?: { sweepMs?: number; batchSize?: number; maxAttempts?: number; metrics?: PipelineMetrics },
  ): PipelineRelay;
  /** Start a balance consumer with a fresh consumer group (or the one given). */
  startConsumer(options?: { groupId?: string; metrics?: PipelineMetrics }): PipelineConsumer;
  close(): Promise<void>;
}

/** Build the pipeline for `topic` on `brokers`; relays started through it are woken after each commit. */
export function createPipeline(
  options: {
    topic: string;
    brokers?: string[];
    logLevel?: Config["LOG_LEVEL"];
    freshnessMs?: number;
    /** Another Redis than the test environment's (a private server the test stops). */
    redisUrl?: string;
    /** Redis command timeout (ms); TEST_COMMAND_TIMEOUT_MS unless set. */
    commandTimeoutMs?: number;
  },
): Pipeline {
  const config: Config = {
    ...testConfig,
    KAFKA_TOPIC: options.topic,
    KAFKA_BROKERS: options.brokers ?? testConfig.KAFKA_BROKERS,
    KAFKA_CLIENT_ID: "mini-wallet-tests",
    REDIS_URL: options.redisUrl ?? testConfig.REDIS_URL,
    RELAY_SWEEP_MS: 50,
  };
  const log = createLogger(options.logLevel ?? "error");
  const sql = createSql(config.DATABASE_URL, { max: 10 });
  // Entries expire `freshnessMs` after they were known current (CACHE_FRESHNESS_MS unless a test says).
  const opened = openCache({
    redisUrl: config.REDIS_URL,
    log,
    freshnessMs: options.freshnessMs ?? config.CACHE_FRESHNESS_MS,
    commandTimeoutMs: options.commandTimeoutMs ?? TEST_COMMAND_TIMEOUT_MS,
    nearLeaseMs: config.NEAR_CACHE_LEASE_MS,
    breakerFailures: config.REDIS_BREAKER_FAILURES,
    breakerOpenMs: config.REDIS_BREAKER_OPEN_MS,
    name: "mini-wallet-test",
  });
  const { redis, cache } = opened;
  const relays = new Set<PipelineRelay>();
  const consumers = new Set<PipelineConsumer>();
  const wallets = new WalletService({
    sql,
    log,
    cache,
    nearCacheLeaseMs: config.NEAR_CACHE_LEASE_MS,
    onOutboxWritten: () => {
      for (const relay of relays) relay.wake();
    },
  });
  const tokens = createTokenService({ secret: config.JWT_SECRET, ttlSeconds: config.TOKEN_TTL_SECONDS });
  const app = createApp({ wallets, tokens, log });

  return {
    config,
    sql,
    redis,
    cache,
    log,
    app,
    startRelay({ sweepMs = 20, batchSize = 500, maxAttempts = 10, metrics = new PipelineMetrics() } = {}) {
      const relaySql = createSql(config.DATABASE_URL, { max: 3 });
      const running = startRelay({
        config: {
          ...config,
          RELAY_SWEEP_MS: sweepMs,
          RELAY_BATCH_SIZE: batchSize,
          RELAY_MAX_ATTEMPTS: maxAttempts,
        },
        sql: relaySql,
        log: log.child({ role: "relay" }),
        metrics,
      });
      const relay: PipelineRelay = {
        metrics,
        wake: () => running.wake(),
        drained: () => running.drained(),
        async stop() {
          if (!relays.delete(relay)) return;
          await running.stop();
          await relaySql.end({ timeout: 5 });
        },
      };
      relays.add(relay);
      return relay;
    },
    startConsumer(
      { groupId = `mw-test-cache-${crypto.randomUUID()}`, metrics = new PipelineMetrics() } = {},
    ) {
      const running = startConsumer({
        config: { ...config, KAFKA_CONSUMER_GROUP: groupId },
        cache,
        log: log.child({ role: "consumer" }),
        metrics,
      });
      const consumer: PipelineConsumer = {
        metrics,
        groupId,
        async stop() {
          if (!consumers.delete(consumer)) return;
          await running.stop();
        },
      };
      consumers.add(consumer);
      return consumer;
    },
    async close() {
      for (const relay of [...relays]) await relay.stop();
      for (const consumer of [...consumers]) await consumer.stop();
      opened.close();
      await sql.end({ timeout: 5 });
    },
  };
}

/** The wallet's balance (decimal text, like events and the cache) and version in PostgreSQL. */
export async function dbBalance(sql: Sql, walletId: string): Promise<{ balance: string; version: number }> {
  const [row] = await sql<{ balance: string; version: string }[]>`
    SELECT balance, version FROM wallets WHERE id = ${walletId}`;
  return { balance: centsToDecimal(BigInt(row.balance)), version: Number(row.version) };
}
