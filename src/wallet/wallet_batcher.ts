/**
 * Group commit for money requests. Requests that arrive while earlier ones are being written wait, then go
 * together in the next transaction: many requests share one lock acquisition, one write and one commit.
 *
 * - At most one batch per key (wallet) is in flight, so a wallet's requests are decided in arrival order and
 *   a batch never waits on another batch's row lock in this process.
 * - Up to `maxConcurrent` batches run at once, each on its own connection; a batch spans many wallets.
 */

/** One submitted item and where its result goes. */
export interface Submitted<Item, Result> {
  key: string;
  item: Item;
  resolve: (result: Result) => void;
  reject: (error: unknown) => void;
}

/** Runs one batch; returns one result (or Error) per entry, in the same order. */
export type BatchRunner<Item, Result> = (
  entries: Array<{ key: string; item: Item }>,
) => Promise<Array<Result | Error>>;

export interface WriteBatcherOptions {
  /** Batches in flight at once (each holds a database connection). */
  maxConcurrent?: number;
  /** Most items in one batch. */
  maxBatch?: number;
}

export class WriteBatcher<Item, Result> {
  #pending: Submitted<Item, Result>[] = [];
  readonly #busyKeys = new Set<string>();
  #inFlight = 0;
  readonly #maxConcurrent: number;
  readonly #maxBatch: number;

  constructor(private readonly run: BatchRunner<Item, Result>, options: WriteBatcherOptions = {}) {
    this.#maxConcurrent = options.maxConcurrent ?? 1; // as WRITE_BATCH_CONCURRENCY's default
    this.#maxBatch = options.maxBatch ?? 500;
  }

  /** Submit an item for `key`; resolves with its own result once its batch committed. */
  submit(key: string, item: Item): Promise<Result> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ key, item, resolve, reject });
      this.#pump();
    });
  }

  #pump(): void {
    while (this.#inFlight < this.#maxConcurrent && this.#pending.length > 0) {
      const batch: Submitted<Item, Result>[] = [];
      const keys = new Set<string>();
      const waiting: Submitted<Item, Result>[] = [];
      for (const entry of this.#pending) {
        // Items of a busy wallet, or past the batch size, keep their place (and their order) in the queue;
        // a wallet cut off by maxBatch is marked busy below, so its remainder waits for this batch.
        if (!this.#busyKeys.has(entry.key) && batch.length < this.#maxBatch) {
          batch.push(entry);
          keys.add(entry.key);
        } else {
          waiting.push(entry);
        }
      }
      if (batch.length === 0) return; // everything pending belongs to wallets already in flight
      this.#pending = waiting;
      for (const key of keys) this.#busyKeys.add(key);
      this.#inFlight++;
      void this.#execute(batch, keys);
    }
  }

  async #execute(batch: Submitted<Item, Result>[], keys: Set<string>): Promise<void> {
    try {
      const results = await this.run(batch.map(({ key, item }) => ({ key, item })));
      batch.forEach((entry, i) => {
        const result = results[i];
        if (result instanceof Error) entry.reject(result);
        else entry.resolve(result);
      });
    } catch (error) {
      for (const entry of batch) entry.reject(error);
    } finally {
      for (const key of keys) this.#busyKeys.delete(key);
      this.#inFlight--;
      this.#pump();
    }
  }
}
