/**
 * Test harness: the real app wired to the real PostgreSQL and Redis of the test environment (set up by
 * `deno task test`), driven in-process with `app.request()`.
 */
import { parseConfig } from "../../src/config.ts";
import { createApp } from "../../src/app.ts";
import { createTokenService, type TokenService } from "../../src/auth/tokens.ts";
import type { BalanceCache, CachedWallet } from "../../src/cache/balance_cache.ts";
import type { NearCache } from "../../src/cache/near_cache.ts";
import { openCache } from "../../src/cache/open_cache.ts";
import { createSql, type Sql } from "../../src/db/client.ts";
import { createLogger } from "../../src/log.ts";
import { type HistoryStreamOptions, HistoryStreams } from "../../src/http/history_stream.ts";
import { WalletService } from "../../src/wallet/wallet_service.ts";
import type { Redis } from "ioredis";

export const config = parseConfig(Deno.env.toObject());

/**
 * The Redis command timeout of test harnesses unless a test sets one: longer than the service's default, so a
 * test process stalled by the shared machine's load does not see its own cache reads time out.
 */
export const TEST_COMMAND_TIMEOUT_MS = 1000;

export interface Harness {
  sql: Sql;
  redis: Redis;
  cache: BalanceCache;
  /** The near cache, when asked for one (`nearMaxEntries`). */
  near: NearCache<CachedWallet> | null;
  tokens: TokenService;
  wallets: WalletService;
  histories: HistoryStreams;
  app: ReturnType<typeof createApp>;
  close(): Promise<void>;
}

/**
 * Build the app against the test database and Redis (or `redisUrl`), as an API process builds it: the cache
 * with its breaker, and a near cache when `nearMaxEntries` is given. Close it in `after()`.
 */
export function createHarness(
  options: {
    poolSize?: number;
    knownWallets?: number;
    contendedMs?: number;
    requestTimeoutMs?: number;
    maxQueued?: number;
    lockWaiters?: number;
    redisUrl?: string;
    nearMaxEntries?: number;
    freshnessMs?: number;
    /** Redis command timeout (ms); the fault tests use the service's default. */
    commandTimeoutMs?: number;
    applicationName?: string;
    history?: Partial<HistoryStreamOptions>;
    /** Another database than the test environment's (e.g. a private PostgreSQL a test stops). */
    databaseUrl?: string;
  } = {},
): Harness {
  const sql = createSql(options.databaseUrl ?? config.DATABASE_URL, {
    max: options.poolSize ?? 10,
    applicationName: options.applicationName,
  });
  const opened = openCache({
    redisUrl: options.redisUrl ?? config.REDIS_URL,
    log: createLogger("silent"),
    freshnessMs: options.freshnessMs ?? config.CACHE_FRESHNESS_MS,
    nearMaxEntries: options.nearMaxEntries,
    commandTimeoutMs: options.commandTimeoutMs ?? TEST_COMMAND_TIMEOUT_MS,
    nearLeaseMs: config.NEAR_CACHE_LEASE_MS,
    breakerFailures: config.REDIS_BREAKER_FAILURES,
    breakerOpenMs: config.REDIS_BREAKER_OPEN_MS,
    name: "mini-wallet-test",
  });
  const { redis, cache, near } = opened;
  const log = createLogger(config.LOG_LEVEL);
  const tokens = createTokenService({ secret: config.JWT_SECRET, ttlSeconds: config.TOKEN_TTL_SECONDS });
  const wallets = new WalletService({
    sql,
    log,
    cache,
    knownWallets: options.knownWallets,
    nearCacheLeaseMs: config.NEAR_CACHE_LEASE_MS,
    contendedMs: options.contendedMs,
    requestTimeoutMs: options.requestTimeoutMs,
    batching: options.maxQueued === undefined ? undefined : { maxQueued: options.maxQueued },
    lockWaiters: options.lockWaiters,
  });
  const histories = new HistoryStreams({ ...options.history, log });
  const app = createApp({ wallets, tokens, log, histories });
  return {
    sql,
    redis,
    cache,
    near,
    tokens,
    wallets,
    histories,
    app,
    async close() {
      opened.close();
      await sql.end({ timeout: 5 });
    },
  };
}

/** A cache entry of a wallet that exists only in the cache (a fresh id), confirmed now unless overridden. */
export function cachedWalletEntry(overrides: Partial<CachedWallet> = {}): CachedWallet {
  return {
    id: crypto.randomUUID(),
    customerXid: "cache-test",
    status: "enabled",
    enabledAt: new Date().toISOString(),
    disabledAt: null,
    balance: "10",
    version: 2,
    confirmedAt: Date.now(),
    ...overrides,
  };
}

/** A fresh customer id, so tests never share wallets and run in any order. */
export function newCustomerXid(): string {
  return `test-${crypto.randomUUID()}`;
}

/** Send a request; `body` as an object is sent as JSON, a FormData or URLSearchParams as is. */
export async function call(
  app: Harness["app"],
  method: string,
  path: string,
  options: { token?: string; scheme?: string; body?: unknown; headers?: Record<string, string> } = {},
  // deno-lint-ignore no-explicit-any -- response bodies are arbitrary JSON; tests assert on their fields
): Promise<{ status: number; body: any; headers: Headers }> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token) headers.authorization = `${options.scheme ?? "Token"} ${options.token}`;
  let body: BodyInit | undefined;
  if (options.body instanceof FormData || options.body instanceof URLSearchParams) body = options.body;
  else if (typeof options.body === "string") body = options.body;
  else if (options.body !== undefined) {
    body = JSON.stringify(options.body);
    headers["content-type"] ??= "application/json";
  }
  const response = await app.request(path, { method, headers, body });
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch { /* not JSON: keep the text so the assertion shows it */ }
  return { status: response.status, body: parsed, headers: response.headers };
}

/** Init a new customer and enable the wallet; returns its token and wallet id. */
export async function enabledWallet(
  app: Harness["app"],
): Promise<{ token: string; walletId: string; xid: string }> {
  const xid = newCustomerXid();
  const init = await call(app, "POST", "/api/v1/init", { body: { customer_xid: xid } });
  if (init.status !== 201) throw new Error(`init failed: ${JSON.stringify(init.body)}`);
  const token = init.body.data.token as string;
  const enable = await call(app, "POST", "/api/v1/wallet", { token });
  if (enable.status !== 201) throw new Error(`enable failed: ${JSON.stringify(enable.body)}`);
  return { token, walletId: enable.body.data.wallet.id, xid };
}

/** Init a new customer without enabling the wallet; returns its token. */
export async function initCustomer(
  app: Harness["app"],
  xid: string = newCustomerXid(),
): Promise<{ token: string; xid: string }> {
  const init = await call(app, "POST", "/api/v1/init", { body: { customer_xid: xid } });
  if (init.status !== 201) throw new Error(`init failed: ${JSON.stringify(init.body)}`);
  return { token: init.body.data.token as string, xid };
}

/** The wallet row as PostgreSQL has it (balance and version as bigint), or null. */
export async function dbWallet(
  sql: Harness["sql"],
  walletId: string,
): Promise<{ status: string; balance: bigint; version: bigint } | null> {
  const rows = await sql<{ status: string; balance: string; version: string }[]>`
    SELECT status, balance, version FROM wallets WHERE id = ${walletId}`;
  return rows.length
    ? { status: rows[0].status, balance: BigInt(rows[0].balance), version: BigInt(rows[0].version) }
    : null;
}

/** How many ledger and outbox rows a wallet has: for "nothing was written" checks. */
export async function countWrites(
  sql: Harness["sql"],
  walletId: string,
): Promise<{ transactions: number; outbox: number }> {
  const [row] = await sql<{ transactions: number; outbox: number }[]>`
    SELECT (SELECT count(*)::int FROM wallet_transactions WHERE wallet_id = ${walletId}) AS transactions,
           (SELECT count(*)::int FROM outbox WHERE wallet_id = ${walletId})
             + (SELECT count(*)::int FROM outbox_sent WHERE wallet_id = ${walletId}) AS outbox`;
  return row;
}

/**
 * GET /api/v1/wallet after evicting the cached entry, so the balance is read from PostgreSQL (no consumer
 * refreshes the cache in tests; the contract allows the cached balance to lag).
 */
export async function freshView(harness: Harness, token: string, walletId: string) {
  await harness.cache.evict(walletId);
  return call(harness.app, "GET", "/api/v1/wallet", { token });
}
