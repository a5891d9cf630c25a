/**
 * The wallet use cases: each runs the wallet rules against the wallet as locked in PostgreSQL and persists
 * the decision, its ledger rows and its outbox rows in one transaction. Knows nothing of HTTP.
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
} from "../db/wallet_repository.ts";
import type { BalanceCache, CachedWallet } from "../cache/balance_cache.ts";
import type { Logger } from "../log.ts";
import { centsToDecimal } from "./money.ts";
import { WriteBatcher, type WriteBatcherOptions } from "./wallet_batcher.ts";
import { WalletRefusedError } from "./wallet_errors.ts";
import {
  decideDisable,
  decideEnable,
  decideMoneyRequests,
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
  /** Wallets whose cache entry is due to be confirmed again; read together, in the background. */
  readonly #refreshDue = new Set<string>();
  #refreshing = false;

  constructor(options: WalletServiceOptions) {
    this.#sql = options.sql;
    this.#log = options.log;
    this.#cache = options.cache;
    this.#onOutboxWritten = options.onOutboxWritten ?? (() => {});
    this.#batcher = new WriteBatcher((entries) => this.#runMoneyBatch(entries), options.batching);
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
   * One transaction for a batch of requests on any number of wallets, in two round trips: BEGIN, the locks
   * (wallets in id order) and the reference ids already used go out together; the wallet rules decide; the
   * one write statement and COMMIT go out together.
   */
  async #runMoneyBatch(
    entries: Array<{ key: string; item: MoneyRequest }>,
  ): Promise<Array<MoneyOutcome | Error>> {
    const groups = new Map<string, { positions: number[]; requests: MoneyRequest[] }>();
    entries.forEach(({ key, item }, position) => {
      let group = groups.get(key);
      if (!group) groups.set(key, group = { positions: [], requests: [] });
      group.positions.push(position);
      group.requests.push(item);
    });
    try {
      const outcomes = await pipelinedTransaction(
        this.#sql,
        (tx) =>
          Promise.all([
            lockWallets(tx, [...groups.keys()]),
            findTransactionsByReference(
              tx,
              entries.map(({ key, item }) => ({ walletId: key, referenceId: item.referenceId })),
            ),
          ]),
        ([locked, recorded], tx) => {
          const now = new Date();
          const results: MoneyOutcome[] = new Array(entries.length);
          const changes: WalletChange[] = [];
          for (const [walletId, group] of groups) {
            const wallet = locked.get(walletId);
            if (!wallet) {
              for (const position of group.positions) {
                results[position] = { kind: "refused", refusal: "wallet_not_found" };
              }
              continue;
            }
            const decision = decideMoneyRequests(
              wallet,
              group.requests,
              recorded.get(walletId) ?? new Map(),
              now,
            );
            decision.outcomes.forEach((outcome, i) => results[group.positions[i]] = outcome);
            if (decision.newTransactions.length > 0) {
              changes.push({
                wallet: decision.wallet,
                transactions: decision.newTransactions,
                outbox: decision.outbox,
              });
            }
          }
          return { result: results, statements: [writeWalletChanges(tx, changes)] };
        },
      );
      if (outcomes.some((o) => o.kind === "created")) this.#onOutboxWritten();
      return outcomes;
    } catch (error) {
      if (entries.length === 1) return [asError(error)];
      // One bad request must not fail its neighbours: each is retried in a transaction of its own.
      this.#log.warn("write batch failed; retrying its requests one by one", { size: entries.length, error });
      const results: Array<MoneyOutcome | Error> = [];
      for (const entry of entries) results.push(...await this.#runMoneyBatch([entry]));
      return results;
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
   * 15 ms at a 3 s freshness, 9 ms at 5 s). Due wallets are read in one statement and written with one
   * pipelined compare-and-set each, at most one such read in flight per process.
   */
  #refreshAhead(walletId: string): void {
    this.#refreshDue.add(walletId);
    if (!this.#refreshing) void this.#refreshDueWallets();
  }

  async #refreshDueWallets(): Promise<void> {
    this.#refreshing = true;
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
