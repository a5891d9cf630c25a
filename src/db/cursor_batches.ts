/**
 * Pull-based reading of a postgres.js cursor. postgres.js asks PostgreSQL for a cursor's next batch only once
 * the callback of the batch before has resolved; here that callback waits for the reader's next `next()`, so a
 * batch is fetched only when a consumer wants it, and a consumer that stops reading holds one batch at most.
 */

/** A cursor read one batch at a time, on demand. */
export interface BatchReader<T> {
  /** The next batch (never empty), or null after the last one. Call again only once it has settled. */
  next(): Promise<T[] | null>;
  /**
   * Stop reading: resolves once the cursor is closed and its connection is back in the pool. Safe at any
   * moment (also while a batch is being fetched) and more than once; `next()` answers null afterwards.
   */
  close(): Promise<void>;
}

/**
 * The callback a cursor runs for each batch: it resolves when the consumer wants the next batch, or with
 * the cursor's CLOSE token when it wants none. That is postgres.js's own protocol: "new results won't be
 * requested until the promise / async callback function has resolved", and returning `sql.CLOSE` ends the
 * cursor early.
 */
export type BatchCallback<T> = (batch: T[]) => Promise<unknown>;

/**
 * Read a cursor through `run`, which must start it at once with the given callback and settle once the cursor
 * is finished and its connection released (e.g. the promise of `sql.begin` around the cursor query). `close`
 * is postgres.js's `sql.CLOSE` token.
 */
export function cursorBatches<T>(
  run: (onBatch: BatchCallback<T>) => Promise<unknown>,
  close: unknown,
): BatchReader<T> {
  /** Batches handed over by the cursor and not yet taken; null: the cursor ended. At most a batch and the end. */
  const ready: Array<T[] | null> = [];
  let failure: { error: unknown } | null = null;
  /** A `next()` waiting for the cursor. */
  let waiter: { resolve(batch: T[] | null): void; reject(error: unknown): void } | null = null;
  /** The cursor, waiting for the consumer: called to fetch the next batch, or with `close` to stop. */
  let resume: ((signal?: unknown) => void) | null = null;
  let closing = false;

  function settleWaiter(): void {
    if (!waiter) return;
    const w = waiter;
    if (ready.length > 0) {
      waiter = null;
      w.resolve(ready.shift()!);
    } else if (failure) {
      waiter = null;
      w.reject(failure.error);
    }
  }

  // Never rejects: a failure is kept for the next `next()`, so no rejection goes unhandled when nobody reads.
  const finished = run((batch) => {
    if (closing) return Promise.resolve(close);
    const wanted = new Promise<unknown>((resolve) => resume = resolve);
    if (batch.length > 0) ready.push(batch);
    else resume!(); // nothing to hand over: fetch on
    settleWaiter();
    return wanted;
  }).then(
    () => {
      ready.push(null);
      settleWaiter();
    },
    (error) => {
      failure = { error };
      settleWaiter();
    },
  );

  return {
    next() {
      if (closing) return Promise.resolve(null);
      if (ready.length > 0) return Promise.resolve(ready.shift()!);
      if (failure) return Promise.reject(failure.error);
      const promise = new Promise<T[] | null>((resolve, reject) => waiter = { resolve, reject });
      // The cursor waits for us after handing over its last batch: let it fetch the next one. (Before its
      // first batch, or while fetching, there is nothing to resume: the batch is on its way.)
      const fetch = resume;
      resume = null;
      fetch?.();
      return promise;
    },
    async close() {
      closing = true;
      ready.length = 0;
      const stop = resume;
      resume = null;
      // A cursor waiting for us stops now; one fetching a batch gets `close` back when the batch arrives.
      stop?.(close);
      const w = waiter;
      waiter = null;
      w?.resolve(null);
      await finished;
    },
  };
}
