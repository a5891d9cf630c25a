/**
 * The Redis balance cache: one hash per wallet, written only through a compare-and-set on the wallet
 * version, so redelivered, replayed or reordered updates can never move it backwards.
 *
 * Staleness is bounded: an entry is known to be current as of `confirmedAt` (when its event happened, or when
 * PostgreSQL was read) and expires `freshnessMs` after that. If the pipeline stalls (relay, Kafka or consumer
 * down or lagging), entries run out and readers fall back to PostgreSQL, so the contract's 5 s lag holds.
 */
import { Redis } from "ioredis";
import type { NearCache } from "./near_cache.ts";
import type { BreakerStats, RedisBreaker } from "./redis_breaker.ts";

/** What the cache holds for a wallet: enough to answer GET /api/v1/wallet on its own. */
export interface CachedWallet {
  id: string;
  customerXid: string;
  status: "enabled" | "disabled";
  enabledAt: string | null;
  disabledAt: string | null;
  /** Exact decimal text of the balance, e.g. "1234.5". */
  balance: string;
  version: number;
  /** Ms since epoch at which this state was known to be current (the event's time, or a database read). */
  confirmedAt: number;
}

// For each key KEYS[i], with its nine arguments at ARGV[(i-1)*9+1 ..]: sets the hash only when the incoming
// version is newer than the cached one, or is the same version confirmed at a later moment (a fresh
// PostgreSQL read of an unchanged wallet: only its freshness moves on), expiring at its ninth argument (ms
// since epoch). An entry already past its freshness is not stored, but still removes an older cached version.
// Returns one 1 (stored) or 0 per key. Atomic in Redis. Each key is read last (EXISTS), so that a near cache on
// the calling connection goes on hearing of the key's changes: its write ended the key's tracking.
//
// Many keys per call because the consumer applies a fetched batch at once: one command per wallet cost the
// consumer an ioredis command, a reply and a command timer each (measured: ioredis was a quarter of the
// consumer's JavaScript time, and its command objects a quarter of the bytes the service's major GCs found).
// All keys of one call must live on one Redis node; with Redis Cluster they would need grouping by slot.
const COMPARE_AND_SET = `
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local results = {}
for i, key in ipairs(KEYS) do
  local a = (i - 1) * 9
  local incoming, confirmed_at = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 8])
  local current = redis.call('HMGET', key, 'version', 'confirmed_at')
  local newer = true
  if current[1] then
    local cached = tonumber(current[1])
    if cached > incoming or (cached == incoming and (tonumber(current[2]) or 0) >= confirmed_at) then
      newer = false
    end
  end
  results[i] = 0
  if newer then
    if tonumber(ARGV[a + 9]) <= now_ms then
      redis.call('DEL', key)
    else
      redis.call('HSET', key, 'version', ARGV[a + 1], 'id', ARGV[a + 2], 'customer_xid', ARGV[a + 3],
        'status', ARGV[a + 4], 'enabled_at', ARGV[a + 5], 'disabled_at', ARGV[a + 6], 'balance', ARGV[a + 7],
        'confirmed_at', ARGV[a + 8])
      redis.call('PEXPIREAT', key, ARGV[a + 9])
      results[i] = 1
    end
    redis.call('EXISTS', key)
  end
end
return results
`;

/** Most entries one script call compares (a wallet a few microseconds each): Redis serves others between calls. */
const KEYS_PER_CALL = 200;

/** How long an entry stays usable after the moment it was known to be current (the contract allows 5 s). */
export const DEFAULT_FRESHNESS_MS = 3000;

/** How long a Redis command may take before it counts as failed (readers then go to PostgreSQL). */
export const DEFAULT_COMMAND_TIMEOUT_MS = 200;

/** What the balance cache did so far; counters only grow. */
export interface BalanceCacheStats {
  /** Reads that found an entry (in the near cache or in Redis), and reads that found none. */
  hits: number;
  misses: number;
  /** Reads and writes that failed or were skipped (Redis unreachable, slow, or its breaker open). */
  errors: number;
  /** The circuit breaker's state and counters, when there is one. */
  breaker: BreakerStats | null;
}

type CasRedis = Redis & {
  /** `numberOfKeys`, then the keys, then nine arguments per key (#casArgs): one 1 or 0 per key. */
  walletsCompareAndSet(numberOfKeys: number, ...keysAndArgs: string[]): Promise<number[]>;
};

/**
 * Open a Redis client that fails fast instead of queueing when Redis is down (readers fall back). A
 * `subscriber` connection is left to its owner to subscribe again after a reconnect (see NearCache).
 */
export function createRedis(
  redisUrl: string,
  options: { name?: string; subscriber?: boolean; commandTimeoutMs?: number } = {},
): Redis {
  return new Redis(redisUrl, {
    connectionName: options.name ?? "mini-wallet",
    autoResubscribe: !options.subscriber,
    // Redis sends tracking invalidations to a RESP3 connection as "invalidate" pushes, which ioredis drops;
    // to a RESP2 subscriber they arrive as messages on __redis__:invalidate.
    ...(options.subscriber ? { protocol: 2 as const } : {}),
    enableOfflineQueue: false,
    // Commands issued in the same tick share one socket write: under load, one syscall serves many reads.
    enableAutoPipelining: true,
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    // Short: a hung Redis costs the requests in flight this much, then the breaker skips it (redis_breaker.ts).
    commandTimeout: options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
    // Keep reconnecting in the background, at most once a second.
    retryStrategy: (attempt) => Math.min(attempt * 100, 1000),
  });
}

/** Read and compare-and-set cached wallets. */
export class BalanceCache {
  readonly #redis: CasRedis;
  #hits = 0;
  #misses = 0;
  #errors = 0;

  constructor(
    redis: Redis,
    private readonly options: {
      freshnessMs?: number;
      prefix?: string;
      /** Keeps read entries in memory, invalidated by Redis (API processes). */
      near?: NearCache<CachedWallet>;
      /** Skips Redis after repeated failures (see redis_breaker.ts). */
      breaker?: RedisBreaker;
    } = {},
  ) {
    if (!("walletsCompareAndSet" in redis)) {
      // No fixed numberOfKeys: each call says how many keys it carries.
      redis.defineCommand("walletsCompareAndSet", { lua: COMPARE_AND_SET });
    }
    this.#redis = redis as CasRedis;
  }

  #key(walletId: string): string {
    return `${this.options.prefix ?? "wallet:"}${walletId}`;
  }

  /**
   * The cached wallet, or null on a miss. Throws when Redis is unreachable, slow (the command timeout) or
   * skipped (its breaker is open; then at once, and the near cache is not consulted either).
   */
  get(walletId: string): Promise<CachedWallet | null> {
    const key = this.#key(walletId);
    const near = this.options.near;
    if (near && this.options.breaker?.allows() !== false) {
      const kept = near.get(key);
      if (kept) {
        this.#hits++;
        return Promise.resolve(kept); // the hot path: no Redis, no extra promise
      }
    }
    const loading = near
      ? near.read(
        key,
        () => this.#guarded(() => this.#load(key)),
        (entry) => entry.confirmedAt + this.freshnessMs,
      )
      : this.#guarded(() => this.#load(key));
    return loading.then((entry) => {
      if (entry) this.#hits++;
      else this.#misses++;
      return entry;
    }, (error) => {
      this.#errors++;
      throw error;
    });
  }

  /** How long an entry serves after the moment it was known to be current (ms). */
  get freshnessMs(): number {
    return this.options.freshnessMs ?? DEFAULT_FRESHNESS_MS;
  }

  stats(): BalanceCacheStats {
    return {
      hits: this.#hits,
      misses: this.#misses,
      errors: this.#errors,
      breaker: this.options.breaker?.stats() ?? null,
    };
  }

  /** Send a command through the breaker, when there is one. */
  #guarded<T>(command: () => Promise<T>): Promise<T> {
    return this.options.breaker ? this.options.breaker.run(command) : command();
  }

  /**
   * Whether an entry is due to be confirmed again from PostgreSQL while it still serves readers, so that a
   * wallet read steadily never makes a reader wait for its entry to be refilled. Due after 50-90 % of the
   * freshness, the share fixed per wallet (from its id): entries filled together are not all due together.
   */
  dueForRefresh(entry: CachedWallet, now = Date.now()): boolean {
    const spread = parseInt(entry.id.slice(-4), 16) / 0x10000 || 0;
    return entry.confirmedAt + this.freshnessMs * (0.5 + 0.4 * spread) <= now;
  }

  async #load(key: string): Promise<CachedWallet | null> {
    const hash = await this.#redis.hgetall(key);
    if (!hash.version) return null;
    return {
      id: hash.id,
      customerXid: hash.customer_xid,
      status: hash.status === "enabled" ? "enabled" : "disabled",
      enabledAt: hash.enabled_at || null,
      disabledAt: hash.disabled_at || null,
      balance: hash.balance,
      version: Number(hash.version),
      confirmedAt: Number(hash.confirmed_at),
    };
  }

  /** Store the entry if it is newer than what is cached; true when it was stored. */
  async put(entry: CachedWallet): Promise<boolean> {
    return (await this.putMany([entry]))[0];
  }

  /**
   * Compare-and-set many entries in one Redis command (one script call); one boolean (stored, or not newer)
   * per entry. Each entry is compared on its own; a wallet appearing twice is compared in order.
   */
  async putMany(entries: CachedWallet[]): Promise<boolean[]> {
    if (entries.length === 0) return [];
    const keys = entries.map((entry) => this.#key(entry.id));
    const near = this.options.near;
    const tickets = near ? keys.map((key) => near.writing(key)) : [];
    let stored: boolean[] | undefined;
    try {
      // Chunks, so one call never holds Redis for long; issued together, auto-pipelining sends them at once.
      const calls: Promise<number[]>[] = [];
      for (let start = 0; start < entries.length; start += KEYS_PER_CALL) {
        const chunk = entries.slice(start, start + KEYS_PER_CALL);
        calls.push(this.#guarded(() =>
          this.#redis.walletsCompareAndSet(
            chunk.length,
            ...keys.slice(start, start + KEYS_PER_CALL),
            ...chunk.flatMap((entry) => this.#casArgs(entry)),
          )
        ));
      }
      stored = (await Promise.all(calls)).flat().map((result) => result === 1);
      return stored;
    } catch (error) {
      this.#errors++;
      throw error;
    } finally {
      // Read-your-writes: the near cache keeps what Redis stored (it is not told of this connection's writes).
      keys.forEach((key, i) => {
        const entry = entries[i];
        near?.wrote(key, tickets[i], stored?.[i] ? entry : null, entry.confirmedAt + this.freshnessMs);
      });
    }
  }

  #casArgs(entry: CachedWallet): string[] {
    return [
      String(entry.version),
      entry.id,
      entry.customerXid,
      entry.status,
      entry.enabledAt ?? "",
      entry.disabledAt ?? "",
      entry.balance,
      String(entry.confirmedAt),
      String(entry.confirmedAt + this.freshnessMs),
    ];
  }

  /** Forget a wallet (used when a write-through could not be confirmed). */
  async evict(walletId: string): Promise<void> {
    const key = this.#key(walletId);
    await this.#guarded(() => this.#redis.del(key)).finally(() => this.options.near?.forget(key));
  }
}
