/**
 * GET /api/v1/wallet/transactions without `limit`: the whole history, sent as it is read from a cursor, in
 * memory bounded per stream (about two batches) whatever the history's length.
 *
 * - A history that fits in one batch is answered whole, exactly as before (`c.json`).
 * - A longer one is streamed: the same bytes `c.json` would send (the JSend envelope around the rows, each
 *   row by `presentTransaction`), produced only as fast as the client takes them (a ReadableStream pulled by
 *   the server; the next batch is read from PostgreSQL when the one before is handed over).
 * - At most `maxStreams` at once per process (each holds a database connection): more are answered 503 with
 *   Retry-After before anything is read past the first batch.
 * - Once the 200 and the first bytes are out, a failure cannot become a JSend error any more. The stream is
 *   then aborted: the server closes the connection without ending the chunked body, so the client sees a
 *   broken transfer, never a complete-looking, shortened list. The same happens to a client that takes no
 *   data for `stallMs`, and to a stream older than `maxMs`, so a slow reader cannot hold a connection forever.
 * - A client that goes away cancels the stream: the cursor is closed and its connection goes back to the pool.
 */
import type { Context } from "hono";
import type { BatchReader } from "../db/cursor_batches.ts";
import type { Logger } from "../log.ts";
import type { HistoryEntry } from "../wallet/wallet_rules.ts";
import { RETRY_AFTER_SECONDS } from "./errors.ts";
import { errorBody, successBody } from "./jsend.ts";
import { presentTransaction } from "./presenters.ts";

export interface HistoryStreamOptions {
  /** Whole histories this process streams at once; each holds a database connection while it lasts. */
  maxStreams: number;
  /** A client that takes no data for this long (ms) is cut off. */
  stallMs: number;
  /** The longest a stream may last (ms); also its cursor's statement_timeout. */
  maxMs: number;
  /** Rows per cursor batch, and the longest history answered in one piece. */
  batchRows: number;
}

/**
 * Defaults. Batches of 500 rows (about 85 kB of JSON): measured serving 1,000,000 rows with the V8 flags of
 * `deno task start`, the server used 2.6-3.3 CPU s at 92-95 MB peak RSS; with 1,000 rows 5.3-5.9 CPU s at
 * 127 MB (more scavenges with 4 MB semi-spaces, larger chunks to copy); 250 rows, more round trips: 3.7-4.2 s.
 */
export const HISTORY_STREAM_DEFAULTS: HistoryStreamOptions = {
  maxStreams: 4,
  stallMs: 10_000,
  maxMs: 600_000,
  batchRows: 500,
};

/** Streams at once when HISTORY_STREAMS_MAX is unset: 4, but always leaving the pool a connection for the rest. */
export function defaultMaxStreams(poolSize: number): number {
  return Math.max(1, Math.min(HISTORY_STREAM_DEFAULTS.maxStreams, poolSize - 1));
}

/** The 503 message when every stream slot is taken. */
export const HISTORY_BUSY_MESSAGE =
  "Too many full histories are being sent right now; retry shortly, or read it in pages with limit.";

/** The JSON around the rows: exactly what `JSON.stringify(successBody({ transactions }))` puts there. */
const ENVELOPE = (() => {
  const empty = JSON.stringify(successBody({ transactions: [] }));
  const at = empty.indexOf("[]") + 1;
  return { head: empty.slice(0, at), tail: empty.slice(at) };
})();

/** Why a stream was cut off after its first bytes. */
export class HistoryStreamAborted extends Error {
  constructor(message: string) {
    super(message);
    this.name = "HistoryStreamAborted";
  }
}

/** What a cursor for a history needs: rows per batch and its time bound. */
export interface HistoryCursorOptions {
  batchRows: number;
  timeoutMs: number;
}

/** Counts of whole-history streams since start (a history answered in one piece is not a stream). */
export interface HistoryStreamStats {
  /** Being sent now. */
  active: number;
  /** Sent to the end. */
  sent: number;
  /** Ended by the client going away. */
  cancelled: number;
  /** Cut off by us after the first bytes (a failure, a stalled client, `maxMs`). */
  aborted: number;
  /** Answered 503 because every slot was taken. */
  refused: number;
}

/** Sends whole histories, at most `maxStreams` at a time. */
export class HistoryStreams {
  readonly #options: HistoryStreamOptions;
  readonly #log: Logger;
  readonly #stats: HistoryStreamStats = { active: 0, sent: 0, cancelled: 0, aborted: 0, refused: 0 };

  constructor(options: Partial<HistoryStreamOptions> & { log: Logger }) {
    const { log, ...rest } = options;
    this.#options = { ...HISTORY_STREAM_DEFAULTS, ...rest };
    this.#log = log;
  }

  /** The counts so far (a copy). */
  stats(): HistoryStreamStats {
    return { ...this.#stats };
  }

  /**
   * The response to a whole-history request. `open` opens the history's cursor (and may throw a refusal);
   * the reader it returns is closed on every path. Failures before the response are thrown (errors.ts: 503
   * for a transient database fault, else 500).
   */
  async respond(
    c: Context,
    open: (cursor: HistoryCursorOptions) => Promise<BatchReader<HistoryEntry>>,
    logFields: Record<string, unknown> = {},
  ): Promise<Response> {
    const { batchRows, maxMs, maxStreams } = this.#options;
    const reader = await open({ batchRows, timeoutMs: maxMs });
    const head: HistoryEntry[][] = [];
    try {
      let rows = 0;
      while (rows < batchRows) {
        const batch = await reader.next();
        // The cursor ended, and its connection is free: the short history is answered as it always was.
        if (batch === null) {
          return c.json(successBody({ transactions: head.flat().map(presentTransaction) }), 200);
        }
        head.push(batch);
        rows += batch.length;
      }
    } catch (error) {
      // Not awaited: a cursor still waiting for its first batch (e.g. behind a lock) ends only when that wait
      // does, and the answer must not wait for it.
      void reader.close();
      throw error;
    }
    if (this.#stats.active >= maxStreams) {
      await reader.close();
      this.#stats.refused++;
      this.#log.warn("whole history refused: every stream slot is taken", { maxStreams, ...logFields });
      c.header("Retry-After", String(RETRY_AFTER_SECONDS));
      return c.json(errorBody(HISTORY_BUSY_MESSAGE), 503);
    }
    this.#stats.active++;
    return c.body(this.#stream(reader, head, logFields), 200, { "Content-Type": "application/json" });
  }

  #stream(
    reader: BatchReader<HistoryEntry>,
    head: HistoryEntry[][],
    logFields: Record<string, unknown>,
  ): ReadableStream<Uint8Array> {
    const { stallMs, maxMs } = this.#options;
    const log = this.#log;
    const encoder = new TextEncoder();
    const startedAt = performance.now();
    let rowsSent = 0;
    let ended = false;
    let stallTimer: ReturnType<typeof setTimeout> | undefined;
    let lifeTimer: ReturnType<typeof setTimeout> | undefined;
    /** The batch after the one being sent, already on its way. */
    let ahead: Promise<HistoryEntry[] | null> | null = null;
    let stop: (error: Error) => void = () => {};

    const take = (): Promise<HistoryEntry[] | null> => {
      const batch = head.shift();
      return batch ? Promise.resolve(batch) : reader.next();
    };
    const end = (outcome: "sent" | "cancelled" | "aborted", error?: unknown) => {
      if (ended) return;
      ended = true;
      clearTimeout(stallTimer);
      clearTimeout(lifeTimer);
      this.#stats.active--;
      this.#stats[outcome]++;
      void reader.close(); // never rejects
      const fields = { ...logFields, rows: rowsSent, ms: Math.round(performance.now() - startedAt) };
      if (outcome === "sent") log.debug("whole history sent", fields);
      else if (outcome === "cancelled") log.info("whole history: the client went away", fields);
      else if (error instanceof HistoryStreamAborted) log.warn("whole history cut off", { ...fields, error });
      else log.error("whole history failed after its first bytes", { ...fields, error });
    };

    return new ReadableStream<Uint8Array>({
      start(controller) {
        stop = (error) => {
          if (ended) return;
          controller.error(error); // the server aborts the response: the client sees a broken transfer
          end("aborted", error);
        };
        lifeTimer = setTimeout(
          () => stop(new HistoryStreamAborted(`the stream lasted longer than ${maxMs} ms`)),
          maxMs,
        );
      },
      async pull(controller) {
        clearTimeout(stallTimer);
        try {
          let batch: HistoryEntry[] | null;
          do {
            batch = await (ahead ?? take());
            ahead = null;
          } while (batch !== null && batch.length === 0);
          if (ended) return; // cancelled or cut off meanwhile
          if (batch === null) {
            controller.enqueue(
              encoder.encode(rowsSent === 0 ? ENVELOPE.head + ENVELOPE.tail : ENVELOPE.tail),
            );
            controller.close();
            end("sent");
            return;
          }
          // Read ahead one batch: PostgreSQL and the driver fetch it while this one is encoded and sent.
          ahead = take();
          ahead.catch(() => {}); // its failure is seen when it is awaited
          // The rows as JSON.stringify writes them inside the array: between the brackets.
          const rows = JSON.stringify(batch.map(presentTransaction)).slice(1, -1);
          controller.enqueue(encoder.encode((rowsSent === 0 ? ENVELOPE.head : ",") + rows));
          rowsSent += batch.length;
          // Until the server pulls again, the client is not taking data.
          stallTimer = setTimeout(
            () => stop(new HistoryStreamAborted(`the client took no data for ${stallMs} ms`)),
            stallMs,
          );
        } catch (error) {
          stop(error instanceof Error ? error : new Error(String(error)));
        }
      },
      cancel() {
        end("cancelled");
      },
    });
  }
}
