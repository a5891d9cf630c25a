/**
 * The wallet use cases: each runs the wallet rules against the wallet's current state and persists the
 * decision, its ledger rows and its outbox rows in one transaction that holds the wallet's row lock. The
 * state is either the row as locked, or the state this process last committed, checked under the lock by
 * its version. Knows nothing of HTTP.
 */
import postgres from "postgres";
import { pipelinedTransaction, type Sql } from "../db/client.ts";
import { isTransientDbError } from "../db/transient_errors.ts";
import {
  findTransactionsByReference,
  findWallet,
  findWallets,
  listTransactions,
  lockWallets,
  openHistory,
  setLocalLockTimeout,
  upsertWalletForCustomer,
  type WalletChange,
  writeWalletChanges,
  writeWalletChangesIfCurrent,
} from "../db/wallet_repository.ts";
import type { BatchReader } from "../db/cursor_batches.ts";
import type { BalanceCache, CachedWallet } from "../cache/balance_cache.ts";
import { DEFAULT_LEASE_MS } from "../cache/near_cache.ts";
import { RedisUnavailableError } from "../cache/redis_breaker.ts";
import type { Logger } from "../log.ts";
import { centsToDecimal } from "./money.ts";
import { type BatchEntry, WriteBatcher, type WriteBatcherOptions } from "./wallet_batcher.ts";
import { KnownWallets } from "./known_wallets.ts";
import { Slots } from "./lock_wait_slots.ts";
import { RequestDeadline } from "./request_deadline.ts";
import { RequestTimeoutError, WalletRefusedError, WriteNotAppliedError } from "./wallet_errors.ts";
import {
  decideDisable,
  decideEnable,
  decideMoneyRequests,
  type HistoryEntry,
  type MoneyDecision,
  type MoneyOutcome,
  type MoneyRequest,
  replayRefusal,
  type StatusDecision,
  type Wallet,
  type WalletTransaction,
} from "./wallet_rules.ts";

/** What the wallet service reports for metrics (src/observability/metrics.ts implements it). */
export interface WalletMetrics {
  /**
   * A use case ended: kind (init, enable, disable, deposit, withdrawal) and result (success, replayed, a
   * refusal, error).
   */
  operation(kind: string, result: string): void;
  /** A write batch ran: its size, how long its oldest request waited, how long it ran (ms). */
  batch(size: number, waitMs: number, durationMs: number): void;
}

export interface WalletServiceOptions {
  metrics?: WalletMetrics;
  sql: Sql;
  log: Logger;
  /** Absent when this process runs without Redis: balances are then read from PostgreSQL. */
  cache?: BalanceCache;
  /** Called after every commit that wrote outbox rows: an in-process wake-up hint for the relay. */
  onOutboxWritten?: () => void;
  /** How money requests are grouped into transactions. */
  batching?: WriteBatcherOptions;
  /**
   * Wallets whose last committed state this process keeps, so their next batch is written in one round trip
   * (see known_wallets.ts); 0 decides every batch on locked rows. Default 10,000.
   */
  knownWallets?: number;
  /** How long a wallet another process wrote is decided on locked rows only (ms). Default 5,000. */
  contendedMs?: number;
  /**
   * Every request is answered within this (ms); a write not sent by then is answered with a
   * RequestTimeoutError and never written. Default 10,000.
   */
  requestTimeoutMs?: number;
  /**
   * Transactions that wait for a wallet row another session holds (each holds a connection). A batch never
   * waits for such a row: it writes the other wallets and hands that wallet's requests to one of these.
   * Default 4.
   */
  lockWaiters?: number;
  /**
   * The near caches' lease (NEAR_CACHE_LEASE_MS): a status change that Redis took is answered this long
   * after, so that every near cache has heard of it (see near_cache.ts). Default DEFAULT_LEASE_MS.
   */
  nearCacheLeaseMs?: number;
}

/** How many wallets each write path wrote: counted per wallet per batch. */
export interface WriteStats {
  /** Written in one round trip on the state this process knew. */
  onKnownState: number;
  /**
   * Decided on the known state, but its version had moved or a reference id was already used: decided again
   * on the locked row, and the wallet is decided on locked rows only for a while (`contendedMs`).
   */
  versionMoved: number;
  /** Decided on the known state, but the statement failed (outcome unknown): decided again on the locked row. */
  knownStateFailed: number;
  /** Decided on the locked row (no known state, a refusal or replay to decide, or a moved version). */
  onLockedState: number;
  /** Wallets a batch found locked by another session: their requests were waited for apart. */
  lockedElsewhere: number;
  /** Writes answered "not applied" at their deadline (503); nothing of them was committed. */
  timedOut: number;
  /** Money requests refused at once because the write queue was full (503). */
  queueFull: number;
  /** Money requests waiting for a batch now (a gauge). */
  queued: number;
  /** Transactions waiting for a wallet row another session holds, now (a gauge). */
  lockWaiting: number;
}

/** The requests of one wallet in a batch, their places in the batch, and their deadlines. */
interface WalletRequests {
  walletId: string;
  positions: number[];
  requests: MoneyRequest[];
  deadlines: Array<RequestDeadline | undefined>;
}

/** What the results of a batch are filled with. */
type Results = Array<MoneyOutcome | Error | Promise<MoneyOutcome>>;

/** What GET /api/v1/wallet shows. */
export interface WalletView {
  id: string;
  customerXid: string;
  status: "enabled" | "disabled";
  enabledAt: string | null;
  disabledAt: string | null;
  balance: string;
}

/** Most wallets confirmed again by one background read. */
const REFRESH_BATCH = 500;
/**
 * How long due wallets gather before a background read starts. Started at once, the reads carried 1.6 wallets
 * each (about 300 statements a second for 470 wallets a second under a cached-GET load over 1,000 wallets);
 * an entry is due long before it expires (50-90 % of its freshness), so waiting this long costs nothing.
 */
const REFRESH_GATHER_MS = 20;
/**
 * Added to the freshness when a status change waits for old cache entries to expire: Redis expires a key once
 * its clock is past the deadline, and the API hosts' clocks must agree with it within this (same host: 0).
 */
const STATUS_EXPIRY_MARGIN_MS = 5;

/** A page of the transaction history. */
export interface TransactionPage {
  transactions: WalletTransaction[];
  nextCursor: bigint | null;
}

export class WalletService {
  readonly #sql: Sql;
  readonly #log: Logger;
  readonly #cache?: BalanceCache;
  readonly #onOutboxWritten: () => void;
  readonly #metrics?: WalletMetrics;
  readonly #batcher: WriteBatcher<MoneyRequest, MoneyOutcome>;
  readonly #known: KnownWallets;
  readonly #writeStats: Omit<WriteStats, "queued" | "lockWaiting"> = {
    onKnownState: 0,
    versionMoved: 0,
    knownStateFailed: 0,
    onLockedState: 0,
    lockedElsewhere: 0,
    timedOut: 0,
    queueFull: 0,
  };
  readonly #requestTimeoutMs: number;
  readonly #lockWaitSlots: Slots;
  #lockWaiting = 0;
  /** Wallets whose cache entry is due to be confirmed again; read together, in the background. */
  readonly #refreshDue = new Set<string>();
  #refreshing = false;
  /** Status changes that Redis did not take, answered only once the old entries had expired. */
  #statusWaits = 0;
  readonly #nearCacheLeaseMs: number;

  constructor(options: WalletServiceOptions) {
    this.#sql = options.sql;
    this.#log = options.log;
    this.#cache = options.cache;
    this.#onOutboxWritten = options.onOutboxWritten ?? (() => {});
    this.#nearCacheLeaseMs = options.nearCacheLeaseMs ?? DEFAULT_LEASE_MS;
    this.#metrics = options.metrics;
    const metrics = options.metrics;
    this.#batcher = new WriteBatcher((entries) => this.#runMoneyBatch(entries), {
      ...options.batching,
      onBatch: metrics ? (size, waitMs, durationMs) => metrics.batch(size, waitMs, durationMs) : undefined,
    });
    this.#known = new KnownWallets({
      maxEntries: options.knownWallets ?? 10_000,
      contendedMs: options.contendedMs,
    });
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.#lockWaitSlots = new Slots(options.lockWaiters ?? 4);
  }

  /** What the write paths did so far (a copy). */
  writeStats(): WriteStats {
    return { ...this.#writeStats, queued: this.#batcher.queued, lockWaiting: this.#lockWaiting };
  }

  /** Status changes that Redis did not take in time, so their answer waited for the old entries to expire. */
  statusWaits(): number {
    return this.#statusWaits;
  }

  /**
   * Create the customer's account and (disabled) wallet, or find the existing ones. One statement that never
   * waits for a row lock; sent only if a connection was free before the deadline.
   */
  initAccount(customerXid: string): Promise<Wallet> {
    const deadline = this.#deadline();
    return this.#counted("init", () =>
      this.#guarded(
        deadline,
        (async () => {
          const connection = await this.#sql.reserve();
          try {
            if (!deadline.seal()) throw new RequestTimeoutError();
            return await upsertWalletForCustomer(connection, customerXid);
          } finally {
            connection.release();
          }
        })(),
      ));
  }

  /** Enable the wallet; refused when already enabled. */
  enable(walletId: string): Promise<Wallet> {
    return this.#counted("enable", () => this.#changeStatus(walletId, decideEnable));
  }

  /** Disable the wallet; refused when not enabled. */
  disable(walletId: string): Promise<Wallet> {
    return this.#counted("disable", () => this.#changeStatus(walletId, decideDisable));
  }

  /** Deposit into an enabled wallet. Resolves with the transaction (new or replayed), or throws a refusal. */
  deposit(walletId: string, amount: bigint, referenceId: string): Promise<WalletTransaction> {
    return this.#money(walletId, { type: "deposit", amount, referenceId });
  }

  /** Withdraw from an enabled wallet; an insufficient balance is recorded as a failed transaction. */
  withdraw(walletId: string, amount: bigint, referenceId: string): Promise<WalletTransaction> {
    return this.#money(walletId, { type: "withdrawal", amount, referenceId });
  }

  /** The wallet as shown to its owner: from the cache, or from PostgreSQL on a miss or with Redis down. */
  async view(walletId: string): Promise<WalletView> {
    const cached = await this.#readCache(walletId);
    if (cached) {
      if (this.#cache!.dueForRefresh(cached)) this.#refreshAhead(walletId);
      return requireEnabled(cached);
    }
    const readAt = Date.now(); // the row read below is current at least as of this moment
    const wallet = await this.#deadline().guard(findWallet(this.#sql, walletId));
    if (!wallet) throw new WalletRefusedError("wallet_not_found");
    const entry = toCached(wallet, readAt);
    // Not awaited: the answer never waits for Redis (the write is bounded by the command timeout and skipped
    // while the breaker is open; a failure only costs the next reader a PostgreSQL read).
    void this.#writeCache(entry);
    return requireEnabled(entry);
  }

  /** The wallet's history, oldest first; `limit` null means all of it. */
  async transactions(
    walletId: string,
    page: { limit: number | null; after: bigint | null },
  ): Promise<TransactionPage> {
    const deadline = this.#deadline();
    const wallet = await deadline.guard(findWallet(this.#sql, walletId));
    if (!wallet) throw new WalletRefusedError("wallet_not_found");
    if (wallet.status !== "enabled") throw new WalletRefusedError("wallet_disabled");
    const result = await deadline.guard(listTransactions(this.#sql, walletId, {
      afterSeq: page.after ?? 0n,
      limit: page.limit,
    }));
    return { transactions: result.transactions, nextCursor: result.hasMore ? result.lastSeq : null };
  }

  /**
   * The wallet's whole history, oldest first, read from a cursor one batch at a time (see openHistory): the
   * caller reads it at its own pace and must close it. The request deadline covers the wallet check and the
   * first batch (the answer's first bytes); the rest is bounded by `timeoutMs` and the caller.
   */
  async history(
    walletId: string,
    options: { batchRows: number; timeoutMs: number },
  ): Promise<BatchReader<HistoryEntry>> {
    const deadline = this.#deadline();
    const wallet = await deadline.guard(findWallet(this.#sql, walletId));
    if (!wallet) throw new WalletRefusedError("wallet_not_found");
    if (wallet.status !== "enabled") throw new WalletRefusedError("wallet_disabled");
    const reader = openHistory(this.#sql, walletId, { ...options, lockTimeoutMs: deadline.remaining() });
    let first = true;
    return {
      next() {
        if (!first) return reader.next();
        first = false;
        return deadline.guard(reader.next());
      },
      close: () => reader.close(),
    };
  }

  async #money(walletId: string, request: MoneyRequest): Promise<WalletTransaction> {
    const deadline = this.#deadline();
    let outcome: MoneyOutcome;
    try {
      outcome = await this.#guarded(deadline, this.#batcher.submit(walletId, request, deadline));
    } catch (error) {
      this.#metrics?.operation(request.type, resultOf(error));
      throw error;
    }
    if (outcome.kind === "refused") {
      this.#metrics?.operation(request.type, outcome.refusal);
      throw new WalletRefusedError(outcome.refusal);
    }
    // A withdrawal past the balance is created too (recorded as failed), but refused to the client.
    const result = outcome.kind === "replayed"
      ? "replayed"
      : outcome.transaction.status === "failed"
      ? "insufficient_balance"
      : "success";
    this.#metrics?.operation(request.type, result);
    const refusal = replayRefusal(outcome.transaction);
    if (refusal) throw new WalletRefusedError(refusal);
    return outcome.transaction;
  }

  /** Run a use case and count its result (success, the refusal, or error). */
  async #counted<T>(kind: string, run: () => Promise<T>): Promise<T> {
    try {
      const result = await run();
      this.#metrics?.operation(kind, "success");
      return result;
    } catch (error) {
      this.#metrics?.operation(kind, resultOf(error));
      throw error;
    }
  }

  /**
   * A batch of requests on any number of wallets. Wallets whose state this process knows are decided on it
   * and written in ONE round trip, compared-and-set on their version (#writeOnKnownState); the rest, and any
   * whose version moved, are decided on their locked rows (#writeOnLockedState). Neither waits for a row
   * another session holds: such a wallet is left out and its requests are handed to #waitForLockedWallet,
   * whose promises are their results (the batcher keeps the wallet busy until they settle).
   */
  async #runMoneyBatch(entries: Array<BatchEntry<MoneyRequest>>): Promise<Results> {
    const groups = new Map<string, WalletRequests>();
    entries.forEach(({ key, item, deadline }, position) => {
      let group = groups.get(key);
      if (!group) groups.set(key, group = { walletId: key, positions: [], requests: [], deadlines: [] });
      group.positions.push(position);
      group.requests.push(item);
      group.deadlines.push(deadline);
    });
    const results: Results = new Array(entries.length);
    const { left, skipped } = await this.#writeOnKnownState([...groups.values()], results);
    if (left.length > 0) skipped.push(...await this.#writeOnLockedState(left, results, "skip"));
    if (results.some((r) => isCreated(r))) this.#onOutboxWritten();
    for (const group of mergeByWallet(skipped)) {
      this.#writeStats.lockedElsewhere++;
      const waited = this.#waitForLockedWallet(group);
      group.positions.forEach((position, i) => {
        results[position] = waited.then((outcomes) => {
          const outcome = outcomes[i];
          if (outcome instanceof Error) throw outcome;
          return outcome;
        });
      });
    }
    return results;
  }

  /**
   * Decide each wallet's requests on the state this process last committed for it, and write every wallet
   * that is still at that version in one statement (its own transaction, so its COMMIT rides in the same
   * round trip). Only wallets whose every request is created are written this way: a refusal or a replay
   * must be decided on the row as it is now, not as it was. Returns the groups left for the locked path, and
   * the wallets another session holds locked.
   */
  async #writeOnKnownState(
    groups: WalletRequests[],
    results: Results,
  ): Promise<{ left: WalletRequests[]; skipped: WalletRequests[] }> {
    const left: WalletRequests[] = [];
    const skipped: WalletRequests[] = [];
    const candidates = groups.filter((group) => {
      const known = this.#known.get(group.walletId);
      if (known?.status === "enabled") return true;
      left.push(group);
      return false;
    });
    if (candidates.length === 0) return { left, skipped };
    // A connection first: requests are sealed only when their statement can go out at once.
    const connection = await this.#sql.reserve();
    const now = new Date();
    const decided: Array<{ group: WalletRequests; decision: MoneyDecision; expectedVersion: bigint }> = [];
    let outcome: { written: Set<string>; skipped: Set<string> } | null;
    try {
      for (const candidate of candidates) {
        // Re-read: the known state may have changed while the connection was awaited.
        const known = this.#known.get(candidate.walletId);
        const group = claim(candidate, results);
        if (!group) continue;
        if (!known || known.status !== "enabled") {
          unseal(group);
          left.push(group);
          continue;
        }
        const decision = decideMoneyRequests(known, group.requests, new Map(), now);
        if (decision.outcomes.every((o) => o.kind === "created")) {
          decided.push({ group, decision, expectedVersion: known.version });
        } else {
          unseal(group);
          left.push(group);
        }
      }
      if (decided.length === 0) return { left, skipped };
      try {
        outcome = await writeWalletChangesIfCurrent(
          connection,
          decided.map(({ decision, expectedVersion }) => ({
            wallet: decision.wallet,
            transactions: decision.newTransactions,
            outbox: decision.outbox,
            expectedVersion,
          })),
        );
      } catch (error) {
        // The outcome is unknown: the locked path finds out (a committed request is replayed by its
        // reference), and the requests stay sealed until it does.
        this.#log.warn("write on known state failed; deciding on locked rows", {
          wallets: decided.length,
          error,
        });
        outcome = null;
      }
    } finally {
      connection.release();
    }
    for (const { group, decision } of decided) {
      if (outcome?.written.has(group.walletId)) {
        this.#known.remember(decision.wallet);
        decision.outcomes.forEach((o, i) => results[group.positions[i]] = o);
        this.#writeStats.onKnownState++;
      } else if (outcome) {
        unseal(group); // certainly not written
        if (outcome.skipped.has(group.walletId)) {
          skipped.push(group);
        } else {
          this.#known.contended(group.walletId);
          this.#writeStats.versionMoved++;
          left.push(group);
        }
      } else {
        this.#known.forget(group.walletId);
        this.#writeStats.knownStateFailed++;
        left.push(group);
      }
    }
    return { left, skipped };
  }

  /**
   * One transaction for the given wallets, in two round trips: BEGIN, the locks (wallets in id order) and
   * the reference ids already used go out together; the wallet rules decide; the one write statement and
   * COMMIT go out together. Fills in the results of the groups' requests.
   *
   * - "skip": rows another session holds are not waited for; their groups are returned untouched.
   * - "wait": (one wallet, see #waitForLockedWallet) the lock is waited for until the last deadline of its
   *   requests (SET LOCAL lock_timeout); a wallet that is not there is refused.
   *
   * Requests are sealed in the decision step, right before the write goes out; those already answered at
   * their deadline are left out.
   */
  async #writeOnLockedState(
    groups: WalletRequests[],
    results: Results,
    locking: "skip" | "wait",
  ): Promise<WalletRequests[]> {
    let lockTimeoutMs: number | null = null;
    if (locking === "wait") {
      const live = groups.flatMap((g) => g.deadlines).filter((d) => !d?.expired);
      if (live.length === 0) {
        timeOut(groups, results);
        return [];
      }
      // A sealed request (its earlier write's outcome unknown) must be found out, not timed out: then the
      // connection's own lock_timeout applies.
      if (live.every((d) => d !== undefined && !d.sealed)) {
        lockTimeoutMs = Math.max(...live.map((d) => d!.remaining()));
        if (lockTimeoutMs <= 0) {
          timeOut(groups, results);
          return [];
        }
      }
    }
    const skipped: WalletRequests[] = [];
    const claimed: WalletRequests[] = [];
    try {
      const committed: Wallet[] = [];
      const outcomes = await pipelinedTransaction(
        this.#sql,
        (tx) =>
          Promise.all([
            lockTimeoutMs === null ? null : setLocalLockTimeout(tx, lockTimeoutMs),
            lockWallets(tx, groups.map((g) => g.walletId), { skipLocked: locking === "skip" }),
            findTransactionsByReference(
              tx,
              groups.flatMap((g) =>
                g.requests.map((r) => ({ walletId: g.walletId, referenceId: r.referenceId }))
              ),
            ),
          ]),
        ([, locked, recorded], tx) => {
          const now = new Date();
          const outcomes = new Map<WalletRequests, MoneyOutcome[]>();
          const changes: WalletChange[] = [];
          for (const candidate of groups) {
            const wallet = locked.get(candidate.walletId);
            if (!wallet && locking === "skip") {
              skipped.push(candidate); // held by another session (or not there): waited for apart
              continue;
            }
            const group = claim(candidate, results);
            if (!group) continue;
            claimed.push(group);
            if (!wallet) {
              outcomes.set(
                group,
                group.requests.map(() => ({ kind: "refused", refusal: "wallet_not_found" })),
              );
              continue;
            }
            const decision = decideMoneyRequests(
              wallet,
              group.requests,
              recorded.get(wallet.id) ?? new Map(),
              now,
            );
            outcomes.set(group, decision.outcomes);
            committed.push(decision.wallet);
            if (decision.newTransactions.length > 0) {
              changes.push({
                wallet: decision.wallet,
                transactions: decision.newTransactions,
                outbox: decision.outbox,
              });
            }
          }
          return { result: outcomes, statements: [writeWalletChanges(tx, changes)] };
        },
      );
      for (const wallet of committed) this.#known.remember(wallet);
      this.#writeStats.onLockedState += committed.length;
      for (const [group, groupOutcomes] of outcomes) {
        groupOutcomes.forEach((outcome, i) => results[group.positions[i]] = outcome);
      }
      return skipped;
    } catch (error) {
      for (const group of groups) this.#known.forget(group.walletId);
      // A refusal by PostgreSQL rolled the transaction back: nothing of it was written. Any other failure
      // (a lost connection) leaves the outcome unknown: the requests stay sealed until a retry finds out.
      if (error instanceof postgres.PostgresError) claimed.forEach(unseal);
      if (locking === "wait" && isLockWaitEnd(error)) {
        // The lock was not granted before the last deadline: nothing was written.
        for (const group of groups) {
          group.positions.forEach((position, i) => {
            results[position] = group.deadlines[i]?.sealed ? asError(error) : new RequestTimeoutError();
          });
        }
        return [];
      }
      const requests = groups.reduce((n, g) => n + g.requests.length, 0);
      if (requests === 1) {
        results[groups[0].positions[0]] = asError(error);
        return [];
      }
      // One bad request must not fail its neighbours: each is retried in a transaction of its own.
      this.#log.warn("write batch failed; retrying its requests one by one", { size: requests, error });
      const left: WalletRequests[] = [];
      for (const group of groups) {
        for (let i = 0; i < group.requests.length; i++) {
          const single = {
            walletId: group.walletId,
            positions: [group.positions[i]],
            requests: [group.requests[i]],
            deadlines: [group.deadlines[i]],
          };
          left.push(...await this.#writeOnLockedState([single], results, locking));
        }
      }
      return left;
    }
  }

  /**
   * The requests of a wallet whose row another session held when their batch ran: written in a transaction of
   * their own that waits for the row lock, at most until their last deadline, while batches of every other
   * wallet go on. At most `lockWaiters` such transactions at once (each holds a connection while it waits).
   * Returns one outcome (or Error) per request.
   */
  async #waitForLockedWallet(group: WalletRequests): Promise<Array<MoneyOutcome | Error>> {
    const local: WalletRequests = { ...group, positions: group.requests.map((_, i) => i) };
    const results: Results = new Array(group.requests.length);
    await this.#lockWaitSlots.acquire();
    this.#lockWaiting++;
    try {
      await this.#writeOnLockedState([local], results, "wait");
    } catch (error) {
      results.fill(asError(error));
    } finally {
      this.#lockWaiting--;
      this.#lockWaitSlots.release();
    }
    if (results.some((r) => isCreated(r))) this.#onOutboxWritten();
    return results as Array<MoneyOutcome | Error>;
  }

  /**
   * A status change: BEGIN, the lock wait bounded by the deadline (SET LOCAL lock_timeout) and the locked row
   * go out together; the rule decides; the write (sealed first) and COMMIT go out together.
   */
  #changeStatus(
    walletId: string,
    decide: (wallet: Wallet, now: Date) => StatusDecision,
  ): Promise<Wallet> {
    const deadline = this.#deadline();
    return this.#guarded(deadline, this.#changeStatusBy(walletId, decide, deadline));
  }

  async #changeStatusBy(
    walletId: string,
    decide: (wallet: Wallet, now: Date) => StatusDecision,
    deadline: RequestDeadline,
  ): Promise<Wallet> {
    const now = new Date();
    let decision: StatusDecision;
    try {
      decision = await pipelinedTransaction<[unknown, Map<string, Wallet>], StatusDecision>(
        this.#sql,
        (tx) =>
          Promise.all([
            setLocalLockTimeout(tx, deadline.remaining()),
            lockWallets(tx, [walletId]),
          ]),
        ([, locked], tx) => {
          const wallet = locked.get(walletId);
          if (!wallet) throw new WalletRefusedError("wallet_not_found");
          const decided = decide(wallet, now);
          if (decided.kind === "refused") return { result: decided, statements: [] };
          if (!deadline.seal()) throw new RequestTimeoutError();
          const change = { wallet: decided.wallet, transactions: [], outbox: [decided.outbox] };
          return { result: decided, statements: [writeWalletChanges(tx, [change])] };
        },
      );
    } catch (error) {
      if (isLockWaitEnd(error) && !deadline.sealed) throw new RequestTimeoutError();
      throw error;
    }
    if (decision.kind === "refused") throw new WalletRefusedError(decision.refusal);
    // Every cache entry (Redis or any near cache) with the old status was known current before this moment:
    // it was read from a snapshot taken before the commit, or made from an earlier event.
    const committedAt = Date.now();
    this.#known.remember(decision.wallet);
    this.#onOutboxWritten();
    // Status changes take effect at once for readers of the cache too, not only after the event arrives.
    await this.#statusVisible(toCached(decision.wallet, now.getTime()), committedAt);
    return decision.wallet;
  }

  /** A new request's deadline. */
  #deadline(): RequestDeadline {
    return new RequestDeadline(this.#requestTimeoutMs);
  }

  /**
   * `work`, answered by its deadline unless sealed (see RequestDeadline); counts the writes not applied. A
   * transient PostgreSQL failure (transient_errors.ts) of a write never sealed is certainly "not applied"; of
   * a sealed one (its statement may have been sent) it goes on as is: 503 too, with the outcome unknown.
   */
  #guarded<T>(deadline: RequestDeadline, work: Promise<T>): Promise<T> {
    return deadline.guard(work).catch((error) => {
      if (!(error instanceof WriteNotAppliedError) && !deadline.sealed && isTransientDbError(error)) {
        throw new WriteNotAppliedError("unavailable", { cause: error });
      }
      if (error instanceof WriteNotAppliedError) {
        if (error.reason === "deadline") this.#writeStats.timedOut++;
        else if (error.reason === "queue_full") this.#writeStats.queueFull++;
      }
      throw error;
    });
  }

  /**
   * Resolve once no reader anywhere can be shown the wallet's old status. When Redis took the new entry (its
   * compare-and-set replaced the old one and sent every near cache that read it an invalidation): one
   * near-cache lease later, when every near cache has either heard the invalidation or stopped serving. When
   * Redis did not take it in time: once every entry that could hold the old status has expired, `freshnessMs`
   * after the commit. Redis is not a dependency of the write: a failing Redis costs a status change at most
   * the freshness (3 s), a working one the lease (100 ms).
   */
  async #statusVisible(entry: CachedWallet, committedAt: number): Promise<void> {
    if (!this.#cache) return;
    const oldEntriesExpired = committedAt + this.#cache.freshnessMs + STATUS_EXPIRY_MARGIN_MS;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), Math.max(0, oldEntriesExpired - Date.now()));
    });
    try {
      if (await Promise.race([this.#writeCache(entry), expired])) {
        await new Promise((resolve) => setTimeout(resolve, this.#nearCacheLeaseMs));
        return;
      }
      this.#statusWaits++;
      this.#log.warn("status change not written to Redis; answered once old cache entries expired", {
        walletId: entry.id,
      });
      await expired;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Confirm a wallet's cache entry from PostgreSQL before it expires. Without this, every entry of a wallet
   * that is read but not written expires after the freshness, and its next readers wait for PostgreSQL; the
   * entries filled together expire together, so their refills come in bursts (measured: p99 of the cached GET
   * 15 ms at a 3 s freshness, 9 ms at 5 s). Due wallets gather for REFRESH_GATHER_MS, then are read in one
   * statement and compared-and-set in one script call; at most one such read in flight per process.
   */
  #refreshAhead(walletId: string): void {
    this.#refreshDue.add(walletId);
    if (this.#refreshing) return; // a read is gathering or in flight; the wallet rides it or the next one
    this.#refreshing = true;
    setTimeout(() => void this.#refreshDueWallets(), REFRESH_GATHER_MS);
  }

  async #refreshDueWallets(): Promise<void> {
    try {
      while (this.#refreshDue.size > 0) {
        const ids = [...this.#refreshDue].slice(0, REFRESH_BATCH);
        const readAt = Date.now(); // the rows read below are current at least as of this moment
        try {
          const wallets = await findWallets(this.#sql, ids);
          await this.#cache!.putMany(wallets.map((wallet) => toCached(wallet, readAt)));
        } catch (error) {
          // Harmless: the entries still serve until they expire, and then readers go to PostgreSQL.
          this.#log.warn("balance cache refresh failed", { wallets: ids.length, error });
        } finally {
          for (const id of ids) this.#refreshDue.delete(id);
        }
      }
    } finally {
      this.#refreshing = false;
    }
  }

  async #readCache(walletId: string): Promise<CachedWallet | null> {
    if (!this.#cache) return null;
    try {
      return await this.#cache.get(walletId);
    } catch (error) {
      // Skipped by the open breaker: it logged the outage once; a line per request would flood the log.
      if (!(error instanceof RedisUnavailableError)) {
        this.#log.warn("balance cache unavailable; reading PostgreSQL", { error });
      }
      return null;
    }
  }

  /** Compare-and-set the cache; false when Redis could not be reached. */
  async #writeCache(entry: CachedWallet): Promise<boolean> {
    if (!this.#cache) return true;
    try {
      await this.#cache.put(entry);
      return true;
    } catch (error) {
      if (!(error instanceof RedisUnavailableError)) {
        this.#log.warn("balance cache write failed", { walletId: entry.id, error });
      }
      return false;
    }
  }
}

/** The cache entry describing a wallet as read from PostgreSQL. */
export function toCached(wallet: Wallet, confirmedAt: number): CachedWallet {
  return {
    id: wallet.id,
    customerXid: wallet.customerXid,
    status: wallet.status,
    enabledAt: wallet.enabledAt?.toISOString() ?? null,
    disabledAt: wallet.disabledAt?.toISOString() ?? null,
    balance: centsToDecimal(wallet.balance),
    version: Number(wallet.version),
    confirmedAt,
  };
}

function requireEnabled(wallet: CachedWallet): WalletView {
  if (wallet.status !== "enabled") throw new WalletRefusedError("wallet_disabled");
  return wallet;
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

function isCreated(result: MoneyOutcome | Error | Promise<MoneyOutcome> | undefined): boolean {
  return result !== undefined && !(result instanceof Error) && !(result instanceof Promise) &&
    result.kind === "created";
}

/**
 * The group's requests that may still be written, sealed (see RequestDeadline): those answered at their
 * deadline already get that error as their result and are left out. Null when none is left. The caller sends
 * the write in the same synchronous step, or unseals.
 */
function claim(group: WalletRequests, results: Results): WalletRequests | null {
  const kept: WalletRequests = { walletId: group.walletId, positions: [], requests: [], deadlines: [] };
  group.requests.forEach((request, i) => {
    const deadline = group.deadlines[i];
    if (deadline && !deadline.seal()) {
      results[group.positions[i]] = new RequestTimeoutError();
      return;
    }
    kept.positions.push(group.positions[i]);
    kept.requests.push(request);
    kept.deadlines.push(deadline);
  });
  return kept.requests.length > 0 ? kept : null;
}

/** The group's write certainly did not commit: its deadlines apply again. */
function unseal(group: WalletRequests): void {
  for (const deadline of group.deadlines) deadline?.unseal();
}

/** Every request of the groups answered "not applied" (their deadlines passed; nothing was written). */
function timeOut(groups: WalletRequests[], results: Results): void {
  for (const group of groups) {
    for (const position of group.positions) results[position] = new RequestTimeoutError();
  }
}

/** Groups of the same wallet joined, in order (retried one by one, a wallet's requests come apart). */
function mergeByWallet(groups: WalletRequests[]): WalletRequests[] {
  const byWallet = new Map<string, WalletRequests>();
  for (const group of groups) {
    const joined = byWallet.get(group.walletId);
    if (!joined) byWallet.set(group.walletId, { ...group });
    else {
      joined.positions = [...joined.positions, ...group.positions];
      joined.requests = [...joined.requests, ...group.requests];
      joined.deadlines = [...joined.deadlines, ...group.deadlines];
    }
  }
  return [...byWallet.values()];
}

/** A lock wait (or the statement waiting for it) ended by its timeout: the transaction was rolled back. */
function isLockWaitEnd(error: unknown): boolean {
  return error instanceof postgres.PostgresError &&
    (error.code === "55P03" || error.code === "57014");
}

/** The metrics result of a failed use case: the refusal, a timeout or full queue (503), or error. */
function resultOf(error: unknown): string {
  if (error instanceof WalletRefusedError) return error.refusal;
  if (error instanceof RequestTimeoutError) return "timeout";
  if (error instanceof WriteNotAppliedError) return error.reason;
  return "error";
}
