/**
 * Group commit for money requests. Requests that arrive while earlier ones are being written wait, then go
 * together in the next transaction: many requests share one lock acquisition, one write and one commit.
 *
 * - At most one batch per key (wallet) is in flight, so a wallet's requests are decided in arrival order and
 *   a batch never waits on another batch's row lock in this process.
 * - Up to `maxConcurrent` batches run at once, each on its own connection; a batch spans many wallets.
 * - A batch may hand some of its items on (a promise as their result: a wallet whose row another session
 *   holds, waited for apart): the batch's slot is free at once, but their key stays busy until they settle,
 *   so that wallet's later requests still wait their turn.
 * - The queue is bounded: past `maxQueued` waiting items, `submit` refuses at once (WriteNotAppliedError).
 *   An item whose deadline passes while it waits leaves the queue.
 */
import type { RequestDeadline } from "./request_deadline.ts";
import { WriteNotAppliedError } from "./wallet_errors.ts";

/** One submitted item and where its result goes. */
export interface Submitted<Item, Result> {
  key: string;
  item: Item;
  deadline?: RequestDeadline;
  /** performance.now() at submission. */
  at: number;
  resolve: (result: Result) => void;
  reject: (error: unknown) => void;
}

/** One item of a batch, as the runner sees it. */
export interface BatchEntry<Item> {
  key: string;
  item: Item;
  deadline?: RequestDeadline;
}

/**
 * Runs one batch; returns one result per entry, in the same order: a value, an Error, or a promise of the
 * value for an item handed on (its key stays busy until it settles).
 */
export type BatchRunner<Item, Result> = (
  entries: Array<BatchEntry<Item>>,
) => Promise<Array<Result | Error | Promise<Result>>>;

export interface WriteBatcherOptions {
  /** Batches in flight at once (each holds a database connection). */
  maxConcurrent?: number;
  /** Most items in one batch. */
  maxBatch?: number;
  /** Most items waiting for a batch; more are refused at once. */
  maxQueued?: number;
  /** Told of every batch run: its size, how long its oldest item waited, how long it ran (ms). */
  onBatch?: (size: number, waitMs: number, durationMs: number) => void;
}

export class WriteBatcher<Item, Result> {
  #pending: Submitted<Item, Result>[] = [];
  readonly #busyKeys = new Set<string>();
  #inFlight = 0;
  readonly #maxConcurrent: number;
  readonly #maxBatch: number;
  readonly #maxQueued: number;
  readonly #onBatch?: WriteBatcherOptions["onBatch"];

  constructor(private readonly run: BatchRunner<Item, Result>, options: WriteBatcherOptions = {}) {
    this.#maxConcurrent = options.maxConcurrent ?? 1; // as WRITE_BATCH_CONCURRENCY's default
    this.#maxBatch = options.maxBatch ?? 500;
    this.#maxQueued = options.maxQueued ?? 10_000;
    this.#onBatch = options.onBatch;
  }

  /** Items waiting for a batch now. */
  get queued(): number {
    return this.#pending.length;
  }

  /**
   * Submit an item for `key`; resolves with its own result once its batch committed. Rejects at once with
   * WriteNotAppliedError("queue_full") when the queue is full. An item whose deadline expires while it waits
   * is dropped from the queue (its caller answered it already).
   */
  submit(key: string, item: Item, deadline?: RequestDeadline): Promise<Result> {
    if (this.#pending.length >= this.#maxQueued) {
      return Promise.reject(new WriteNotAppliedError("queue_full"));
    }
    return new Promise((resolve, reject) => {
      const entry: Submitted<Item, Result> = { key, item, deadline, at: performance.now(), resolve, reject };
      this.#pending.push(entry);
      deadline?.onExpire(() => {
        const at = this.#pending.indexOf(entry);
        if (at >= 0) this.#pending.splice(at, 1);
      });
      this.#pump();
    });
  }

  #pump(): void {
    while (this.#inFlight < this.#maxConcurrent && this.#pending.length > 0) {
      const batch: Submitted<Item, Result>[] = [];
      const keys = new Set<string>();
      const waiting: Submitted<Item, Result>[] = [];
      for (const entry of this.#pending) {
        if (entry.deadline?.expired) continue; // answered already; never written
        // Items of a busy wallet, or past the batch size, keep their place (and their order) in the queue;
        // a wallet cut off by maxBatch is marked busy below, so its remainder waits for this batch.
        if (!this.#busyKeys.has(entry.key) && batch.length < this.#maxBatch) {
          batch.push(entry);
          keys.add(entry.key);
        } else {
          waiting.push(entry);
        }
      }
      this.#pending = waiting;
      if (batch.length === 0) return; // everything pending belongs to wallets already in flight
      for (const key of keys) this.#busyKeys.add(key);
      this.#inFlight++;
      void this.#execute(batch, keys);
    }
  }

  async #execute(batch: Submitted<Item, Result>[], keys: Set<string>): Promise<void> {
    // Keys of items handed on, and what they wait for: released when all of them settled.
    const handedOn = new Map<string, Promise<unknown>[]>();
    const started = performance.now();
    try {
      const results = await this.run(
        batch.map(({ key, item, deadline }) => ({ key, item, deadline })),
      );
      batch.forEach((entry, i) => {
        const result = results[i];
        if (result instanceof Promise) {
          const settled = result.then(entry.resolve, entry.reject);
          handedOn.set(entry.key, [...handedOn.get(entry.key) ?? [], settled]);
        } else if (result instanceof Error) entry.reject(result);
        else entry.resolve(result);
      });
    } catch (error) {
      for (const entry of batch) entry.reject(error);
    } finally {
      // The queue keeps arrival order, so the first item of a batch waited longest.
      this.#onBatch?.(batch.length, started - batch[0].at, performance.now() - started);
      for (const key of keys) {
        if (!handedOn.has(key)) this.#busyKeys.delete(key);
      }
      for (const [key, waits] of handedOn) {
        void Promise.all(waits).finally(() => {
          this.#busyKeys.delete(key);
          this.#pump();
        });
      }
      this.#inFlight--;
      this.#pump();
    }
  }
}
