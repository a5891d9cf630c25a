/**
 * The service configuration: every environment variable, parsed once with zod at start-up.
 *
 * A bad or missing value stops the process with a list of every bad field, so a deployment fails
 * loudly at boot instead of half-working later.
 */
import { z } from "zod";

/**
 * The secret the test runner gives every test process (src/ops/run_tests.ts). It is public, so it is accepted
 * only with APP_ENV=test.
 */
export const TEST_JWT_SECRET = "test-secret-for-mini-wallet-tests-000000";

/** Secrets that were published in this repository (the old example and benchmark ones): never accepted. */
export const PUBLIC_JWT_SECRETS: readonly string[] = [
  "change-me-to-a-long-random-secret-of-32-chars-or-more",
  "bench-secret-for-mini-wallet-benchmarks-0000",
];

/** How to make a secret, shown with every refusal. */
const GENERATE_SECRET = "generate one with `openssl rand -base64 48`";

/** Every role a process can run; by default one process runs all of them. */
export const ROLES = ["api", "relay", "consumer"] as const;
export type Role = typeof ROLES[number];

const positiveInt = (label: string) =>
  z.coerce.number({ error: `${label} must be a whole number` }).int(`${label} must be a whole number`)
    .positive(`${label} must be positive`);

/** A duration in milliseconds, 0 meaning "none"; at most a day (PostgreSQL's settings hold up to 2^31-1 ms). */
const millis = (label: string) =>
  z.coerce.number({ error: `${label} must be a whole number of milliseconds` }).int(
    `${label} must be a whole number of milliseconds`,
  ).min(0, `${label} must be 0 or more`).max(86_400_000, `${label} must be at most 86400000 (a day)`);

function isUrlWithProtocol(value: string, protocols: string[]): boolean {
  try {
    return protocols.includes(new URL(value).protocol);
  } catch {
    return false;
  }
}

/** Everything but the token secret: what the tools that start no API (migrate, services, topics) read. */
const toolConfigSchema = z.object({
  APP_ENV: z.enum(["development", "test", "production"], {
    error: "APP_ENV must be one of development, test, production",
  }).default("development"),
  PORT: positiveInt("PORT").max(65535, "PORT must be at most 65535").default(8089),
  HOST: z.string().min(1).default("0.0.0.0"),
  DATABASE_URL: z.string().refine(
    (v) => isUrlWithProtocol(v, ["postgres:", "postgresql:"]),
    "DATABASE_URL must be a postgres:// URL",
  ).default("postgres://postgres@127.0.0.1:5432/mini_wallet"),
  DATABASE_POOL_SIZE: positiveInt("DATABASE_POOL_SIZE").max(200).default(20),
  // Bounds on every connection of the service's pools (src/db/client.ts); 0 leaves one to PostgreSQL's own
  // setting (none by default). See docs/postgres_driver.md for the choice of defaults.
  DB_STATEMENT_TIMEOUT_MS: millis("DB_STATEMENT_TIMEOUT_MS").default(5000),
  DB_LOCK_TIMEOUT_MS: millis("DB_LOCK_TIMEOUT_MS").default(2000),
  DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: millis("DB_IDLE_IN_TRANSACTION_TIMEOUT_MS").default(10_000),
  REDIS_URL: z.string().refine(
    (v) => isUrlWithProtocol(v, ["redis:", "rediss:"]),
    "REDIS_URL must be a redis:// URL",
  )
    .default("redis://127.0.0.1:6379/0"),
  KAFKA_BROKERS: z.string().default("127.0.0.1:9092").transform((v, ctx) => {
    const brokers = v.split(",").map((b) => b.trim()).filter(Boolean);
    if (brokers.length === 0 || brokers.some((b) => !/^[^\s:]+:\d{1,5}$/.test(b))) {
      ctx.addIssue({ code: "custom", message: "KAFKA_BROKERS must be a comma-separated list of host:port" });
      return z.NEVER;
    }
    return brokers;
  }),
  KAFKA_TOPIC: z.string().regex(/^[A-Za-z0-9._-]{1,249}$/, "KAFKA_TOPIC must be a valid Kafka topic name")
    .default("wallet.created-transaction"),
  KAFKA_TOPIC_PARTITIONS: positiveInt("KAFKA_TOPIC_PARTITIONS").max(1000).default(6),
  KAFKA_CLIENT_ID: z.string().min(1).default("mini-wallet"),
  KAFKA_CONSUMER_GROUP: z.string().min(1).default("mini-wallet-balance-cache"),
  TOKEN_TTL_SECONDS: positiveInt("TOKEN_TTL_SECONDS").default(30 * 24 * 3600),
  LOG_LEVEL: z.enum(["debug", "info", "warn", "error", "silent"], {
    error: "LOG_LEVEL must be one of debug, info, warn, error, silent",
  }).default("info"),
  ROLES: z.string().default(ROLES.join(",")).transform((v, ctx) => {
    const roles = v.split(",").map((r) => r.trim()).filter(Boolean);
    const unknown = roles.filter((r) => !(ROLES as readonly string[]).includes(r));
    if (roles.length === 0 || unknown.length > 0) {
      ctx.addIssue({
        code: "custom",
        message: `ROLES must be a comma-separated subset of ${ROLES.join(",")}`,
      });
      return z.NEVER;
    }
    return [...new Set(roles)] as Role[];
  }),
  // Where the relay and the consumer run when the process also runs the API: "worker", a thread of their own
  // (src/pipeline_thread.ts), or "main", the API's event loop.
  PIPELINE_THREAD: z.enum(["worker", "main"], { error: "PIPELINE_THREAD must be worker or main" }).default(
    "worker",
  ),
  CACHE_FRESHNESS_MS: positiveInt("CACHE_FRESHNESS_MS").max(
    5000,
    "CACHE_FRESHNESS_MS must be at most 5000 (the contract's lag)",
  )
    .default(3000),
  // A Redis command that takes longer fails (the reader goes to PostgreSQL); this many failures in a row open
  // the breaker, which skips Redis and probes it every REDIS_BREAKER_OPEN_MS (src/cache/redis_breaker.ts).
  REDIS_COMMAND_TIMEOUT_MS: positiveInt("REDIS_COMMAND_TIMEOUT_MS").max(10_000).default(200),
  REDIS_BREAKER_FAILURES: positiveInt("REDIS_BREAKER_FAILURES").max(1000).default(3),
  REDIS_BREAKER_OPEN_MS: positiveInt("REDIS_BREAKER_OPEN_MS").max(60_000).default(1000),
  // A near cache serves only while a PING on its invalidation connection was answered within this lease; a
  // status change that Redis took is answered this long after (src/cache/near_cache.ts).
  NEAR_CACHE_LEASE_MS: positiveInt("NEAR_CACHE_LEASE_MS").max(1000).default(100),
  NEAR_CACHE_MAX_ENTRIES: z.coerce.number({ error: "NEAR_CACHE_MAX_ENTRIES must be a whole number" }).int()
    .min(0).default(100_000),
  // One batch in flight: a write transaction is two round trips, so the next batch gathers everything that
  // arrived meanwhile. Measured against 2: fewer, larger batches, 3-17 % less CPU per deposit, more deposits/s.
  WRITE_BATCH_CONCURRENCY: positiveInt("WRITE_BATCH_CONCURRENCY").max(100).default(1),
  WRITE_BATCH_MAX: positiveInt("WRITE_BATCH_MAX").max(10000).default(500),
  // Wallets whose last committed state an API process keeps: their next batch is decided on it and written in
  // one round trip, compared-and-set on the version (src/wallet/known_wallets.ts). 0: every batch locks first.
  WRITE_KNOWN_WALLETS: z.coerce.number({ error: "WRITE_KNOWN_WALLETS must be a whole number" }).int().min(0)
    .max(10_000_000).default(10_000),
  // Every request is answered within this: a write that could not be sent by then is answered 503 (with
  // Retry-After) and never committed; a write already sent waits for its commit's outcome.
  REQUEST_TIMEOUT_MS: positiveInt("REQUEST_TIMEOUT_MS").max(600_000).default(10_000),
  // Money requests waiting for a batch; past it, a request is answered 503 at once (backpressure).
  WRITE_QUEUE_MAX: positiveInt("WRITE_QUEUE_MAX").max(1_000_000).default(10_000),
  // Transactions that wait for a wallet row another session holds (each holds a connection); batches never
  // wait for such a row, they write the other wallets and hand that wallet's requests to one of these.
  WRITE_LOCK_WAITERS: positiveInt("WRITE_LOCK_WAITERS").max(100).default(4),
  // GET /api/v1/wallet/transactions without limit streams the whole history from a cursor
  // (src/http/history_stream.ts): streams at once per process (each holds a database connection; more get 503),
  // how long a client may take no data, and the longest a stream may last.
  // Unset: 4, or fewer when the pool is small (src/http/history_stream.ts defaultMaxStreams).
  HISTORY_STREAMS_MAX: positiveInt("HISTORY_STREAMS_MAX").max(1000).optional(),
  HISTORY_STREAM_STALL_MS: positiveInt("HISTORY_STREAM_STALL_MS").default(10_000),
  HISTORY_STREAM_MAX_MS: positiveInt("HISTORY_STREAM_MAX_MS").default(600_000),
  // How long /ready waits for each dependency (checked side by side) before it counts it as down.
  READY_CHECK_TIMEOUT_MS: positiveInt("READY_CHECK_TIMEOUT_MS").max(10_000).default(1000),
  RELAY_BATCH_SIZE: positiveInt("RELAY_BATCH_SIZE").max(10000).default(1000),
  RELAY_LINGER_MS: z.coerce.number({ error: "RELAY_LINGER_MS must be a whole number" }).int().min(0).max(1000)
    .default(5),
  RELAY_LINGER_MAX_MS: z.coerce.number({ error: "RELAY_LINGER_MAX_MS must be a whole number" }).int().min(0)
    .max(1000).default(40),
  RELAY_SWEEP_MS: positiveInt("RELAY_SWEEP_MS").default(500),
  RELAY_MAX_ATTEMPTS: positiveInt("RELAY_MAX_ATTEMPTS").default(10),
  RELAY_RETENTION_HOURS: positiveInt("RELAY_RETENTION_HOURS").default(24),
});

// No default: a secret anyone can read signs tokens anyone can mint (a token names a wallet, and wallet ids
// travel in every Kafka event). `deno task dev` makes a local one (src/ops/dev_secret.ts); tests set theirs.
const configSchema = toolConfigSchema.extend({
  JWT_SECRET: z.string({ error: `JWT_SECRET is required: ${GENERATE_SECRET}` })
    .min(32, `JWT_SECRET must be at least 32 characters: ${GENERATE_SECRET}`),
}).superRefine((cfg, ctx) => {
  if (cfg.HISTORY_STREAMS_MAX !== undefined && cfg.HISTORY_STREAMS_MAX >= cfg.DATABASE_POOL_SIZE) {
    ctx.addIssue({
      code: "custom",
      path: ["HISTORY_STREAMS_MAX"],
      message: "HISTORY_STREAMS_MAX must be less than DATABASE_POOL_SIZE (each stream holds a connection)",
    });
  }
  const problem = jwtSecretProblem(cfg.JWT_SECRET, cfg.APP_ENV);
  if (problem) {
    ctx.addIssue({ code: "custom", path: ["JWT_SECRET"], message: `${problem}: ${GENERATE_SECRET}` });
  }
});

/** Why `secret` must not sign tokens (a published or placeholder value), or null when it may. */
function jwtSecretProblem(secret: string, appEnv: string): string | null {
  if (secret.length < 32) return null; // reported by the length rule already
  if (PUBLIC_JWT_SECRETS.includes(secret)) return "JWT_SECRET is a value published in this repository";
  if (secret === TEST_JWT_SECRET && appEnv !== "test") return "JWT_SECRET is the test suite's secret";
  // "xxxx…" or "aaaa…bbbb…" placeholders: a random secret of 32 characters has far more distinct ones.
  if (new Set(secret).size < 8) {
    return "JWT_SECRET looks like a placeholder (fewer than 8 distinct characters)";
  }
  return null;
}

export type Config = z.infer<typeof configSchema>;
/** The configuration without the token secret (see `loadToolConfig`). */
export type ToolConfig = z.infer<typeof toolConfigSchema>;

/** Raised with every bad field when the environment does not describe a valid configuration. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

/** Parse a configuration from an environment map (empty strings count as unset). */
export function parseConfig(env: Record<string, string | undefined>): Config {
  return parseWith(configSchema, env);
}

/** Parse everything but `JWT_SECRET`, for tools that start no API (migrations, local services, topics). */
export function parseToolConfig(env: Record<string, string | undefined>): ToolConfig {
  return parseWith(toolConfigSchema, env);
}

function parseWith<T>(schema: z.ZodType<T>, env: Record<string, string | undefined>): T {
  const cleaned = Object.fromEntries(
    Object.keys(configSchema.shape).map((key) => [key, env[key] === "" ? undefined : env[key]]),
  );
  const result = schema.safeParse(cleaned);
  if (result.success) return result.data;
  throw new ConfigError(
    result.error.issues.map((issue) => `${issue.path.join(".") || "(root)"}: ${issue.message}`),
  );
}

/** Parse the process environment, or print every bad field and exit. */
export function loadConfig(): Config {
  return loadOrExit(parseConfig);
}

/** `loadConfig` without `JWT_SECRET`, for tools that start no API. */
export function loadToolConfig(): ToolConfig {
  return loadOrExit(parseToolConfig);
}

function loadOrExit<T>(parse: (env: Record<string, string | undefined>) => T): T {
  try {
    return parse(Deno.env.toObject());
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(error.message);
    Deno.exit(78); // EX_CONFIG
  }
}
