/**
 * The wallet use cases: each runs the wallet rules against the wallet's current state and persists the
 * decision, its ledger rows and its outbox rows in one transaction that holds the wallet's row lock. The
 * state is either the row as locked, or the state this process last committed, checked under the lock by
 * its version. Knows nothing of HTTP.
 */
import { pipelinedTransaction, type Sql } from "../db/client.ts";
import {
  findTransactionsByReference,
  findWallet,
  findWallets,
  listTransactions,
  lockWallet,
  lockWallets,
  upsertWalletForCustomer,
  type WalletChange,
  writeWalletChange,
  writeWalletChanges,
  writeWalletChangesIfCurrent,
} from "../db/wallet_repository.ts";
import type { BalanceCache, CachedWallet } from "../cache/balance_cache.ts";
import type { Logger } from "../log.ts";
import { centsToDecimal } from "./money.ts";
import { WriteBatcher, type WriteBatcherOptions } from "./wallet_batcher.ts";
import { KnownWallets } from "./known_wallets.ts";
import { WalletRefusedError } from "./wallet_errors.ts";
import {
  decideDisable,
  decideEnable,
  decideMoneyRequests,
  type MoneyDecision,
  type MoneyOutcome,
  type MoneyRequest,
  replayRefusal,
  type StatusDecision,
  type Wallet,
  type WalletTransaction,
} from "./wallet_rules.ts";

export interface WalletServiceOptions {
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
}

/** The requests of one wallet in a batch, and their places in the batch. */
interface WalletRequests {
  walletId: string;
  positions: number[];
  requests: MoneyRequest[];
}

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
  readonly #batcher: WriteBatcher<MoneyRequest, MoneyOutcome>;
  readonly #known: KnownWallets;
  readonly #writeStats: WriteStats = {
    onKnownState: 0,
    versionMoved: 0,
    knownStateFailed: 0,
    onLockedState: 0,
  };
  /** Wallets whose cache entry is due to be confirmed again; read together, in the background. */
  readonly #refreshDue = new Set<string>();
  #refreshing = false;

  constructor(options: WalletServiceOptions) {
    this.#sql = options.sql;
    this.#log = options.log;
    this.#cache = options.cache;
    this.#onOutboxWritten = options.onOutboxWritten ?? (() => {});
    this.#batcher = new WriteBatcher((entries) => this.#runMoneyBatch(entries), options.batching);
    this.#known = new KnownWallets({
      maxEntries: options.knownWallets ?? 10_000,
      contendedMs: options.contendedMs,
    });
  }

  /** What the write paths did so far (a copy). */
  writeStats(): WriteStats {
    return { ...this.#writeStats };
  }

  /** Create the customer's account and (disabled) wallet, or find the existing ones. */
  initAccount(customerXid: string): Promise<Wallet> {
    return upsertWalletForCustomer(this.#sql, customerXid);
  }

  /** Enable the wallet; refused when already enabled. */
  enable(walletId: string): Promise<Wallet> {
    return this.#changeStatus(walletId, decideEnable);
  }

  /** Disable the wallet; refused when not enabled. */
  disable(walletId: string): Promise<Wallet> {
    return this.#changeStatus(walletId, decideDisable);
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
    const wallet = await findWallet(this.#sql, walletId);
    if (!wallet) throw new WalletRefusedError("wallet_not_found");
    const entry = toCached(wallet, readAt);
    await this.#writeCache(entry);
    return requireEnabled(entry);
  }

  /** The wallet's history, oldest first; `limit` null means all of it. */
  async transactions(
    walletId: string,
    page: { limit: number | null; after: bigint | null },
  ): Promise<TransactionPage> {
    const wallet = await findWallet(this.#sql, walletId);
    if (!wallet) throw new WalletRefusedError("wallet_not_found");
    if (wallet.status !== "enabled") throw new WalletRefusedError("wallet_disabled");
    const result = await listTransactions(this.#sql, walletId, {
      afterSeq: page.after ?? 0n,
      limit: page.limit,
    });
    return { transactions: result.transactions, nextCursor: result.hasMore ? result.lastSeq : null };
  }

  async #money(walletId: string, request: MoneyRequest): Promise<WalletTransaction> {
    const outcome = await this.#batcher.submit(walletId, request);
    if (outcome.kind === "refused") throw new WalletRefusedError(outcome.refusal);
    const refusal = replayRefusal(outcome.transaction);
    if (refusal) throw new WalletRefusedError(refusal);
    return outcome.transaction;
  }

  /**
   * A batch of requests on any number of wallets. Wallets whose state this process knows are decided on it
   * and written in ONE round trip, compared-and-set on their version (#writeOnKnownState); the rest, and any
   * whose version moved, are decided on their locked rows (#writeOnLockedState).
   */
  async #runMoneyBatch(
    entries: Array<{ key: string; item: MoneyRequest }>,
  ): Promise<Array<MoneyOutcome | Error>> {
    const groups = new Map<string, WalletRequests>();
    entries.forEach(({ key, item }, position) => {
      let group = groups.get(key);
      if (!group) groups.set(key, group = { walletId: key, positions: [], requests: [] });
      group.positions.push(position);
      group.requests.push(item);
    });
    const results: Array<MoneyOutcome | Error> = new Array(entries.length);
    const left = await this.#writeOnKnownState([...groups.values()], results);
    if (left.length > 0) await this.#writeOnLockedState(left, results);
    if (results.some((r) => !(r instanceof Error) && r.kind === "created")) this.#onOutboxWritten();
    return results;
  }

  /**
   * Decide each wallet's requests on the state this process last committed for it, and write every wallet
   * that is still at that version in one statement (its own transaction, so its COMMIT rides in the same
   * round trip). Only wallets whose every request is created are written this way: a refusal or a replay
   * must be decided on the row as it is now, not as it was. Returns the groups left for the locked path.
   */
  async #writeOnKnownState(
    groups: WalletRequests[],
    results: Array<MoneyOutcome | Error>,
  ): Promise<WalletRequests[]> {
    const now = new Date();
    const left: WalletRequests[] = [];
    const decided: Array<{ group: WalletRequests; decision: MoneyDecision; expectedVersion: bigint }> = [];
    for (const group of groups) {
      const known = this.#known.get(group.walletId);
      if (!known || known.status !== "enabled") {
        left.push(group);
        continue;
      }
      const decision = decideMoneyRequests(known, group.requests, new Map(), now);
      if (decision.outcomes.every((o) => o.kind === "created")) {
        decided.push({ group, decision, expectedVersion: known.version });
      } else {
        left.push(group);
      }
    }
    if (decided.length === 0) return left;
    let written: Set<string> | null;
    try {
      written = await writeWalletChangesIfCurrent(
        this.#sql,
        decided.map(({ decision, expectedVersion }) => ({
          wallet: decision.wallet,
          transactions: decision.newTransactions,
          outbox: decision.outbox,
          expectedVersion,
        })),
      );
    } catch (error) {
      // The outcome is unknown: the locked path finds out (a committed request is replayed by its reference).
      this.#log.warn("write on known state failed; deciding on locked rows", {
        wallets: decided.length,
        error,
      });
      written = null;
    }
    for (const { group, decision } of decided) {
      if (written?.has(group.walletId)) {
        this.#known.remember(decision.wallet);
        decision.outcomes.forEach((outcome, i) => results[group.positions[i]] = outcome);
        this.#writeStats.onKnownState++;
      } else {
        if (written) {
          this.#known.contended(group.walletId);
          this.#writeStats.versionMoved++;
        } else {
          this.#known.forget(group.walletId);
          this.#writeStats.knownStateFailed++;
        }
        left.push(group);
      }
    }
    return left;
  }

  /**
   * One transaction for the given wallets, in two round trips: BEGIN, the locks (wallets in id order) and
   * the reference ids already used go out together; the wallet rules decide; the one write statement and
   * COMMIT go out together. Fills in the results of the groups' requests.
   */
  async #writeOnLockedState(groups: WalletRequests[], results: Array<MoneyOutcome | Error>): Promise<void> {
    try {
      const committed: Wallet[] = [];
      const outcomes = await pipelinedTransaction(
        this.#sql,
        (tx) =>
          Promise.all([
            lockWallets(tx, groups.map((g) => g.walletId)),
            findTransactionsByReference(
              tx,
              groups.flatMap((g) =>
                g.requests.map((r) => ({ walletId: g.walletId, referenceId: r.referenceId }))
              ),
            ),
          ]),
        ([locked, recorded], tx) => {
          const now = new Date();
          const outcomes = new Map<WalletRequests, MoneyOutcome[]>();
          const changes: WalletChange[] = [];
          for (const group of groups) {
            const wallet = locked.get(group.walletId);
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
    } catch (error) {
      for (const group of groups) this.#known.forget(group.walletId);
      const requests = groups.reduce((n, g) => n + g.requests.length, 0);
      if (requests === 1) {
        results[groups[0].positions[0]] = asError(error);
        return;
      }
      // One bad request must not fail its neighbours: each is retried in a transaction of its own.
      this.#log.warn("write batch failed; retrying its requests one by one", { size: requests, error });
      for (const group of groups) {
        for (let i = 0; i < group.requests.length; i++) {
          const single = {
            walletId: group.walletId,
            positions: [group.positions[i]],
            requests: [group.requests[i]],
          };
          await this.#writeOnLockedState([single], results);
        }
      }
    }
  }

  async #changeStatus(
    walletId: string,
    decide: (wallet: Wallet, now: Date) => StatusDecision,
  ): Promise<Wallet> {
    const now = new Date();
    const decision = await this.#sql.begin(async (tx) => {
      const locked = await lockWallet(tx, walletId);
      if (!locked) throw new WalletRefusedError("wallet_not_found");
      const decided = decide(locked, now);
      if (decided.kind === "changed") {
        await writeWalletChange(tx, { wallet: decided.wallet, transactions: [], outbox: [decided.outbox] });
      }
      return decided;
    });
    if (decision.kind === "refused") throw new WalletRefusedError(decision.refusal);
    this.#known.remember(decision.wallet);
    this.#onOutboxWritten();
    // Status changes take effect at once for readers of the cache too, not only after the event arrives.
    const entry = toCached(decision.wallet, now.getTime());
    if (!await this.#writeCache(entry)) await this.#evictCache(walletId);
    return decision.wallet;
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
      this.#log.warn("balance cache unavailable; reading PostgreSQL", { error });
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
      this.#log.warn("balance cache write failed", { walletId: entry.id, error });
      return false;
    }
  }

  async #evictCache(walletId: string): Promise<void> {
    try {
      await this.#cache?.evict(walletId);
    } catch (error) {
      this.#log.error("balance cache could not be evicted after a status change", { walletId, error });
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
