/**
 * Opens the balance cache of a process: its Redis connection with a circuit breaker, and (for API
 * processes) the near cache with its invalidation connection. Every connection has an error listener and
 * reconnects in the background; nothing here can end the process.
 */
import type { Redis } from "ioredis";
import { BalanceCache, type CachedWallet, createRedis } from "./balance_cache.ts";
import { NearCache } from "./near_cache.ts";
import { RedisBreaker } from "./redis_breaker.ts";
import type { Logger } from "../log.ts";

export interface OpenCacheOptions {
  redisUrl: string;
  log: Logger;
  freshnessMs: number;
  /** Entries kept in memory; 0 (or absent): no near cache. */
  nearMaxEntries?: number;
  /** The near cache's lease (ms); see near_cache.ts. */
  nearLeaseMs?: number;
  commandTimeoutMs?: number;
  breakerFailures?: number;
  breakerOpenMs?: number;
  /** Connection name prefix, seen in CLIENT LIST. */
  name?: string;
}

export interface OpenedCache {
  cache: BalanceCache;
  /** The data connection (also the near cache's tracked connection). */
  redis: Redis;
  near: NearCache<CachedWallet> | null;
  close(): void;
}

/** Open the cache's connections; they connect in the background (the cache fails fast until then). */
export function openCache(options: OpenCacheOptions): OpenedCache {
  const { log } = options;
  const name = options.name ?? "mini-wallet";
  const redis = createRedis(options.redisUrl, { name, commandTimeoutMs: options.commandTimeoutMs });
  // Errors also arrive as rejected commands, which readers handle; the event is for the log (once a second at
  // most while reconnecting).
  redis.on("error", (error) => log.debug("redis connection error", { error }));
  const breaker = new RedisBreaker(redis, {
    failures: options.breakerFailures,
    openMs: options.breakerOpenMs,
    onOpen: (error) => log.warn("redis breaker open: reading PostgreSQL only until Redis answers", { error }),
    onClose: () => log.info("redis breaker closed: Redis answers again"),
  });
  let invalidations: Redis | null = null;
  let near: NearCache<CachedWallet> | null = null;
  if ((options.nearMaxEntries ?? 0) > 0) {
    invalidations = createRedis(options.redisUrl, {
      name: `${name}-invalidations`,
      subscriber: true,
      commandTimeoutMs: options.commandTimeoutMs,
    });
    invalidations.on("error", (error) => log.debug("redis connection error", { error }));
    near = new NearCache(redis, invalidations, {
      maxEntries: options.nearMaxEntries!,
      leaseMs: options.nearLeaseMs,
      onError: (error) => log.warn("near cache not active; reading Redis", { error }),
    });
  }
  const cache = new BalanceCache(redis, {
    freshnessMs: options.freshnessMs,
    near: near ?? undefined,
    breaker,
  });
  return {
    cache,
    redis,
    near,
    close() {
      breaker.stop();
      near?.stop();
      redis.disconnect();
      invalidations?.disconnect();
    },
  };
}
