/**
 * Group commit per wallet: requests for one wallet that arrive while a transaction on that wallet is in
 * flight wait, then go together in the next transaction. One hot wallet is limited by how long its row lock
 * is held; sharing one lock, one write and one commit among many requests moves that limit.
 */

/** Runs one batch of items for a key; returns one result (or error) per item, in order. */
export type BatchRunner<Item, Result> = (key: string, items: Item[]) => Promise<Array<Result | Error>>;

interface Waiting<Item, Result> {
  item: Item;
  resolve: (result: Result) => void;
  reject: (error: unknown) => void;
}

/** Queue items per key and run at most one batch per key at a time. */
export class KeyedBatcher<Item, Result> {
  readonly #queues = new Map<string, Waiting<Item, Result>[]>();

  constructor(
    private readonly run: BatchRunner<Item, Result>,
    private readonly maxBatch = 256,
  ) {}

  /** Submit an item; resolves with its own result once its batch committed. */
  submit(key: string, item: Item): Promise<Result> {
    return new Promise((resolve, reject) => {
      const queue = this.#queues.get(key);
      if (queue) {
        queue.push({ item, resolve, reject }); // a batch is running: wait for the next one
        return;
      }
      const fresh = [{ item, resolve, reject }];
      this.#queues.set(key, fresh);
      void this.#drain(key, fresh);
    });
  }

  async #drain(key: string, queue: Waiting<Item, Result>[]): Promise<void> {
    // The queue stays registered while batches run so newcomers join it instead of starting their own.
    while (queue.length > 0) {
      const batch = queue.splice(0, this.maxBatch);
      try {
        const results = await this.run(key, batch.map((w) => w.item));
        batch.forEach((waiting, i) => {
          const result = results[i];
          if (result instanceof Error) waiting.reject(result);
          else waiting.resolve(result);
        });
      } catch (error) {
        for (const waiting of batch) waiting.reject(error);
      }
    }
    this.#queues.delete(key);
  }
}
