/** The PostgreSQL connection pool (postgres.js), configured once for every role. */
import net from "node:net";
import postgres from "postgres";

export type Sql = postgres.Sql;
export type TransactionSql = postgres.TransactionSql;
export type ReservedSql = postgres.ReservedSql;

/**
 * Bounds PostgreSQL enforces on every connection of a pool, in milliseconds; 0 leaves one to the server's
 * own setting (none, unless the server, database or role sets one).
 *
 * - `statementMs` (`statement_timeout`): a statement running longer is cancelled (SQLSTATE 57014).
 * - `lockMs` (`lock_timeout`): a statement waiting longer for a lock (a row another transaction holds) is
 *   cancelled (55P03).
 * - `idleInTransactionMs` (`idle_in_transaction_session_timeout`): a session that leaves its transaction open
 *   and silent longer is ended (25P03); its locks go with it.
 *
 * Work that legitimately takes longer raises its own bound for its transaction (`set_config(..., true)`):
 * the relay's Kafka send (outbox_repository.ts), table upkeep (table_upkeep.ts). Migrations use a client of
 * their own, without these bounds.
 */
export interface DbTimeouts {
  statementMs: number;
  lockMs: number;
  idleInTransactionMs: number;
}

/** The defaults of DB_STATEMENT_TIMEOUT_MS, DB_LOCK_TIMEOUT_MS and DB_IDLE_IN_TRANSACTION_TIMEOUT_MS. */
export const DEFAULT_DB_TIMEOUTS: DbTimeouts = {
  statementMs: 5000,
  lockMs: 2000,
  idleInTransactionMs: 10_000,
};

/** Open a pool; connections are made lazily, on first use. bigint columns arrive as strings (never Number). */
export function createSql(
  databaseUrl: string,
  options: { max?: number; applicationName?: string; timeouts?: DbTimeouts } = {},
): Sql {
  const timeouts = options.timeouts ?? DEFAULT_DB_TIMEOUTS;
  // A variable, not a literal: the typings of postgres.js 3.4 omit its documented `socket` option.
  const settings = {
    max: options.max ?? 10,
    // Notices (e.g. "relation exists, skipping") are not errors; keep logs quiet.
    onnotice: () => {},
    // Fail fast when PostgreSQL is unreachable: a request should get a 503, not hang for 30 s.
    connect_timeout: 5,
    backoff: reconnectBackoff,
    // Startup parameters: in force from the connection's first statement, with no extra round trip, and what
    // RESET goes back to. postgres.js leaves a 0 out of the startup message, so 0 means "not set here": the
    // server's (or role's, or database's) own setting applies, which is "none" unless someone set one.
    connection: {
      application_name: options.applicationName ?? "mini-wallet",
      statement_timeout: timeouts.statementMs,
      lock_timeout: timeouts.lockMs,
      idle_in_transaction_session_timeout: timeouts.idleInTransactionMs,
    },
    socket: connectWithoutNagle,
  };
  const sql = postgres(databaseUrl, settings);
  countHeldConnections(sql, settings.max);
  return sql;
}

/** How a pool's connections are held, for metrics. */
export interface PoolStats {
  /** Most connections the pool opens. */
  size: number;
  /** Connections held by a transaction (`reserve()` until released, `begin()` until it settles). */
  inUse: number;
  /** `reserve()` calls waiting for a free connection. */
  waiting: number;
}

const poolStatsOf = new WeakMap<Sql, PoolStats>();

/** The pool's current statistics (zeros for a pool not made by createSql). */
export function poolStats(sql: Sql): PoolStats {
  return { ...(poolStatsOf.get(sql) ?? { size: 0, inUse: 0, waiting: 0 }) };
}

/** Whether PostgreSQL answers a trivial query on this pool. */
export async function pingDatabase(sql: Sql): Promise<void> {
  await sql`SELECT 1`;
}

/**
 * postgres.js keeps its pool's queues to itself, so the connections that matter for saturation are counted
 * where they are taken: `reserve()` (write batches, relay cycles) and `begin()` (status changes, migrations)
 * hold a connection for a whole transaction. Single statements outside a transaction are pipelined by
 * postgres.js onto busy connections and are not counted.
 */
function countHeldConnections(sql: Sql, size: number): void {
  const stats: PoolStats = { size, inUse: 0, waiting: 0 };
  poolStatsOf.set(sql, stats);
  const reserve = sql.reserve;
  sql.reserve = async () => {
    stats.waiting++;
    let reserved: ReservedSql;
    try {
      reserved = await reserve();
    } finally {
      stats.waiting--;
    }
    stats.inUse++;
    const release = reserved.release;
    let released = false;
    reserved.release = () => {
      if (!released) stats.inUse--;
      released = true;
      release();
    };
    return reserved;
  };
  const begin = sql.begin;
  sql.begin = ((...args: Parameters<Sql["begin"]>) => {
    stats.inUse++;
    return (begin as (...a: unknown[]) => Promise<unknown>)(...args).finally(() => stats.inUse--);
  }) as Sql["begin"];
}

/** The longest pause before a closed connection of the pool connects again (seconds). */
export const RECONNECT_BACKOFF_MAX_S = 0.5;

/**
 * The pause (seconds) before a closed connection connects again, after `retries` failed connections of the
 * pool in a row. postgres.js's default grows as 3^retries / 100 up to 20 s (halved at random), and its count
 * is shared by the whole pool and reset only by a connection that succeeds: after PostgreSQL was down for a
 * few seconds (every waiting request's attempt failing fast), each connection waited 10-20 s before trying
 * again, so the requests behind them ran into their deadline (503 at 10 s) long after PostgreSQL was back.
 * Capped at RECONNECT_BACKOFF_MAX_S: while PostgreSQL is down an attempt is only made for a waiting request,
 * and it fails at once, so a short pause costs nothing.
 */
export function reconnectBackoff(retries: number): number {
  return Math.min(0.02 * 2 ** retries, RECONNECT_BACKOFF_MAX_S) * (0.5 + Math.random() / 2);
}

/** The connection bounds a configuration asks for. */
export function dbTimeouts(
  config: {
    DB_STATEMENT_TIMEOUT_MS: number;
    DB_LOCK_TIMEOUT_MS: number;
    DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: number;
  },
): DbTimeouts {
  return {
    statementMs: config.DB_STATEMENT_TIMEOUT_MS,
    lockMs: config.DB_LOCK_TIMEOUT_MS,
    idleInTransactionMs: config.DB_IDLE_IN_TRANSACTION_TIMEOUT_MS,
  };
}

/** What postgres.js hands a custom socket factory: its parsed connection options. */
interface SocketOptions {
  host: string[];
  port: number[];
  path?: string | false;
}

/**
 * Connect with Nagle's algorithm off. postgres.js uses `new net.Socket()`, and under Deno it keeps Nagle on:
 * a small message written right behind a large one that is not yet acknowledged waits for that
 * acknowledgement, which PostgreSQL sends with its answer. So a batch's COMMIT, written behind its (large)
 * write statement, reached PostgreSQL only after the write had run: one more wait inside the row locks.
 * Measured: a 3 kB write followed by a 10 B one took 44 ms with Nagle on and 0.09 ms with it off; spread
 * deposits +12-17 %.
 *
 * The socket is handed over while still connecting (writes wait for the connection): postgres.js then sees
 * a refused or timed-out connection through the socket's own events and retries as usual. A factory that
 * rejects instead leaves its connection stuck for good (measured: every later query hangs). Only the first
 * host of a multi-host URL is used: the service's DATABASE_URL names one.
 */
export function connectWithoutNagle(options: SocketOptions): net.Socket {
  const socket = options.path ? net.connect(options.path) : net.connect(options.port[0], options.host[0]);
  socket.once("connect", () => socket.setNoDelay(true));
  return socket;
}

/** A statement that has not been sent yet (postgres.js queries are lazy until awaited or executed). */
export interface UnsentStatement {
  execute(): Promise<unknown>;
}

/** What the write step of a pipelinedTransaction decided: its result, and the statements to send (null: none). */
export interface WriteStep<T> {
  result: T;
  statements: Array<UnsentStatement | null>;
}

/**
 * A read-decide-write transaction in two round trips instead of five (BEGIN, reads, write, COMMIT each
 * waiting for the one before). postgres.js pipelines the statements issued on one reserved connection, so
 * BEGIN leaves together with the reads, and the writes together with COMMIT. Row locks taken by the reads
 * are therefore held for two round trips plus the decision.
 *
 * - `read` must issue its statements at once (no await between them); they run in the order issued.
 * - `write` decides from what was read and returns its statements unsent, so they are certain to be sent
 *   before COMMIT. If one fails, the transaction is aborted, PostgreSQL answers the COMMIT behind it with a
 *   rollback, and the statement's error is thrown: nothing of the transaction is kept. It may first await
 *   other work (the relay publishes to Kafka there); throwing rolls everything back.
 */
export async function pipelinedTransaction<R, T>(
  sql: Sql,
  read: (tx: ReservedSql) => Promise<R>,
  write: (
    read: R,
    tx: ReservedSql,
  ) => WriteStep<T> | Promise<WriteStep<T>>,
): Promise<T> {
  const tx = await sql.reserve();
  try {
    const begun = tx`BEGIN`.execute();
    const [, readResult] = await Promise.all([begun, read(tx)]);
    const { result, statements } = await write(readResult, tx);
    await Promise.all([...statements.flatMap((s) => s ? [s.execute()] : []), tx`COMMIT`.execute()]);
    return result;
  } catch (error) {
    // Ends the transaction if it is still open; after COMMIT (even a failed one) this is a harmless no-op.
    await tx`ROLLBACK`.catch(() => {});
    throw error;
  } finally {
    tx.release();
  }
}
