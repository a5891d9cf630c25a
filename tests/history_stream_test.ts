// deno-lint-ignore-file no-explicit-any -- response bodies are arbitrary JSON; tests assert on their fields
/**
 * GET /api/v1/wallet/transactions without `limit`: the whole history, streamed from a cursor
 * (src/http/history_stream.ts), against the real PostgreSQL: the same bytes as the unstreamed implementation,
 * order and completeness, backpressure, a client going away, the stream limit, and what a client sees when a
 * stream is cut off after its first bytes. The 1,000,000-row memory bound is in history_memory_test.ts.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Hono } from "hono";
import { call, createHarness, enabledWallet, type Harness } from "./support/harness.ts";
import { referenceHistoryBody, seedHistory } from "./support/history.ts";
import { openHistory } from "../src/db/wallet_repository.ts";
import type { BatchReader } from "../src/db/cursor_batches.ts";
import { HISTORY_BUSY_MESSAGE, HistoryStreams } from "../src/http/history_stream.ts";
import { createLogger } from "../src/log.ts";
import type { HistoryEntry } from "../src/wallet/wallet_rules.ts";

const harnesses: Harness[] = [];
/** A harness closed after the file. */
function harness(options: Parameters<typeof createHarness>[0] = {}): Harness {
  const h = createHarness(options);
  harnesses.push(h);
  return h;
}

let h: Harness;
before(() => {
  h = harness();
});
after(async () => {
  for (const each of harnesses) await each.close();
});

async function history(app: Harness["app"], token: string): Promise<Response> {
  return await app.request("/api/v1/wallet/transactions", { headers: { authorization: `Token ${token}` } });
}

/** An enabled wallet with `count` generated transactions. */
async function walletWithHistory(target: Harness, count: number) {
  const wallet = await enabledWallet(target.app);
  if (count > 0) await seedHistory(target.sql, wallet.walletId, count);
  return wallet;
}

/** Fail instead of hanging when `promise` never settles (e.g. a query queued behind a leaked connection). */
async function settles<T>(promise: Promise<T>, what: string, ms = 20_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, hang]);
  } finally {
    clearTimeout(timer);
  }
}

/** Wait until `condition` holds (polled), or fail. */
async function eventually(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`never happened: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Every chunk of a body as text, and how many chunks there were. */
async function readAll(response: Response): Promise<{ text: string; chunks: number }> {
  const decoder = new TextDecoder();
  let text = "";
  let chunks = 0;
  for await (const chunk of response.body!) {
    text += decoder.decode(chunk, { stream: true });
    chunks++;
  }
  return { text: text + decoder.decode(), chunks };
}

/** The settings of the pool's connection: the stream's transaction must be over, its SET LOCALs gone. */
async function connectionSettings(target: Harness) {
  const [row] = await settles(
    target.sql<
      { read_only: string; statement_timeout: string; plan_cache_mode: string; enable_sort: string }[]
    >`
      SELECT current_setting('transaction_read_only') AS read_only,
        current_setting('statement_timeout') AS statement_timeout,
        current_setting('plan_cache_mode') AS plan_cache_mode, current_setting('enable_sort') AS enable_sort`,
    "a query on the pool",
  );
  return row;
}

/** A reader that counts the batches asked for, and throws instead of reading past `failAfter` batches. */
function watched(reader: BatchReader<HistoryEntry>, options: { failAfter?: number } = {}) {
  const counts = { next: 0 };
  const wrapped: BatchReader<HistoryEntry> = {
    next() {
      counts.next++;
      if (options.failAfter !== undefined && counts.next > options.failAfter) {
        return Promise.reject(new Error("injected: the database went away"));
      }
      return reader.next();
    },
    close: () => reader.close(),
  };
  return { reader: wrapped, counts };
}

describe("GET /api/v1/wallet/transactions without limit", () => {
  it("answers a short history whole, byte for byte as the unstreamed implementation", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    const money = (path: string, amount: unknown) =>
      call(h.app, "POST", path, { token, body: { amount, reference_id: crypto.randomUUID() } });
    assert.equal((await money("/api/v1/wallet/deposits", 100)).status, 201);
    assert.equal((await money("/api/v1/wallet/withdrawals", 500)).status, 400, "a failed withdrawal");
    assert.equal((await money("/api/v1/wallet/withdrawals", 30.5)).status, 201);
    assert.equal((await money("/api/v1/wallet/deposits", "0.01")).status, 201);
    assert.equal((await money("/api/v1/wallet/deposits", 999999999999.99)).status, 201);

    const response = await history(h.app, token);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "application/json");
    const { text } = await readAll(response);
    assert.equal(text, await referenceHistoryBody(h.sql, walletId));
    assert.equal(JSON.parse(text).data.transactions.length, 5);
    assert.equal(h.histories.stats().sent, 0, "one batch: answered whole, not streamed");
  });

  it("sends the same bytes at every length around the batch size (0 to 7 rows in batches of 3)", async () => {
    const small = harness({ history: { batchRows: 3 } });
    for (const count of [0, 1, 2, 3, 4, 5, 6, 7]) {
      const { token, walletId } = await walletWithHistory(small, count);
      const response = await history(small.app, token);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get("content-type"), "application/json");
      assert.equal(
        (await readAll(response)).text,
        await referenceHistoryBody(small.sql, walletId),
        `${count} rows`,
      );
    }
    // 3 to 7 rows fill the first batch, so they were streamed.
    assert.deepEqual(small.histories.stats(), { active: 0, sent: 5, cancelled: 0, aborted: 0, refused: 0 });
  });

  it("streams 20,000 rows complete and oldest first, in many chunks, byte for byte", async () => {
    const { token, walletId } = await walletWithHistory(h, 20_000);
    const response = await history(h.app, token);
    assert.equal(response.status, 200);
    const { text, chunks } = await readAll(response);
    assert.ok(chunks >= 20_000 / 500, `streamed in batches: ${chunks} chunks`);
    assert.equal(text, await referenceHistoryBody(h.sql, walletId));
    const list = JSON.parse(text).data.transactions;
    assert.equal(list.length, 20_000);
    list.forEach((t: any, i: number) =>
      assert.equal(t.reference_id, `seed-${String(i + 1).padStart(9, "0")}`)
    );
    assert.equal(new Set(list.map((t: any) => t.id)).size, 20_000);
    assert.equal(list[0].amount, 1000000000000, "the largest amount, exact");
  });

  it("reads from the database only as fast as the client takes data (one batch ahead)", async () => {
    const paced = harness({ history: { batchRows: 100 } });
    const { walletId } = await walletWithHistory(paced, 5_000);
    let seen: ReturnType<typeof watched> | undefined;
    const app = new Hono().get("/history", (c) =>
      paced.histories.respond(c, (cursor) => {
        seen = watched(openHistory(paced.sql, walletId, cursor));
        return Promise.resolve(seen.reader);
      }));
    const response = await app.request("/history");
    const body = response.body!.getReader();
    assert.equal((await body.read()).done, false);
    // Give an eager producer every chance to run ahead.
    for (let i = 0; i < 10; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    // The first batch, the one queued for the client, and the one read ahead: nothing more.
    assert.ok(seen!.counts.next <= 3, `batches read while the client waited: ${seen!.counts.next}`);
    await body.cancel();
    assert.equal(paced.histories.stats().cancelled, 1);
  });

  it("frees the cursor's connection at once when the client goes away mid-stream", async () => {
    const single = harness({ poolSize: 1, history: { batchRows: 100 } });
    const before = await connectionSettings(single);
    const { token } = await walletWithHistory(single, 5_000);
    const response = await history(single.app, token);
    const body = response.body!.getReader();
    const first = await body.read();
    assert.equal(first.done, false);
    assert.ok(
      new TextDecoder().decode(first.value).startsWith('{"status":"success","data":{"transactions":[{'),
    );
    await body.cancel();
    assert.deepEqual(single.histories.stats(), { active: 0, sent: 0, cancelled: 1, aborted: 0, refused: 0 });
    // The pool's only connection answers again: the cursor is closed and its transaction over.
    assert.deepEqual(await connectionSettings(single), before);
    assert.equal(before.read_only, "off");
    assert.equal(before.enable_sort, "on");
  });

  it("refuses a stream with 503 while every slot is taken; short histories are still answered", async () => {
    const one = harness({ history: { batchRows: 3, maxStreams: 1 } });
    const long = await walletWithHistory(one, 10);
    const short = await walletWithHistory(one, 2);

    const first = await history(one.app, long.token);
    const body = first.body!.getReader();
    assert.equal((await body.read()).done, false);

    const refused = await call(one.app, "GET", "/api/v1/wallet/transactions", { token: long.token });
    assert.equal(refused.status, 503);
    assert.deepEqual(refused.body, { status: "error", message: HISTORY_BUSY_MESSAGE });
    assert.equal(refused.headers.get("retry-after"), "1");

    const answered = await call(one.app, "GET", "/api/v1/wallet/transactions", { token: short.token });
    assert.equal(answered.status, 200);
    assert.equal(answered.body.data.transactions.length, 2);
    const paged = await call(one.app, "GET", "/api/v1/wallet/transactions?limit=4", { token: long.token });
    assert.equal(paged.status, 200, "paging is not limited");
    assert.equal(paged.body.data.transactions.length, 4);

    await body.cancel();
    const again = await history(one.app, long.token);
    assert.equal(again.status, 200);
    assert.equal((await readAll(again)).text, await referenceHistoryBody(one.sql, long.walletId));
    assert.deepEqual(one.histories.stats(), { active: 0, sent: 1, cancelled: 1, aborted: 0, refused: 1 });
  });

  it("answers 503 when the first batch misses the request deadline; the cursor gives up its wait", async () => {
    const slow = harness({ poolSize: 2, requestTimeoutMs: 300, history: { batchRows: 100 } });
    const { token } = await walletWithHistory(slow, 500);
    // Another session holds the ledger table (as DDL would): the cursor's first batch waits for it.
    const locker = await slow.sql.reserve();
    try {
      await locker`BEGIN`;
      await locker`LOCK TABLE wallet_transactions IN ACCESS EXCLUSIVE MODE`;
      const res = await settles(
        call(slow.app, "GET", "/api/v1/wallet/transactions", { token }),
        "the answer at the deadline",
      );
      assert.equal(res.status, 503);
      assert.equal(res.body.status, "error");
      assert.equal(res.headers.get("retry-after"), "1");
      // Still locked, yet the pool's other connection is free again: the cursor's lock_timeout (the rest of
      // the request's deadline) ended its wait and its transaction.
      assert.equal((await connectionSettings(slow)).read_only, "off");
    } finally {
      await locker`ROLLBACK`;
      locker.release();
    }
    assert.equal(slow.histories.stats().active, 0);
    const after = await history(slow.app, token);
    assert.equal(after.status, 200);
    assert.equal(JSON.parse((await readAll(after)).text).data.transactions.length, 500);
  });

  it("cuts off a client that takes no data: the body errors instead of ending, the connection is freed", async () => {
    const stalling = harness({ poolSize: 1, history: { batchRows: 100, stallMs: 100 } });
    const { token } = await walletWithHistory(stalling, 5_000);
    const response = await history(stalling.app, token);
    const body = response.body!.getReader();
    assert.equal((await body.read()).done, false);
    await eventually(() => stalling.histories.stats().aborted === 1, "the stalled stream is cut off");
    await assert.rejects(
      (async () => {
        while (!(await body.read()).done);
      })(),
      /took no data for 100 ms/,
    );
    assert.equal((await connectionSettings(stalling)).read_only, "off");
    assert.equal(stalling.histories.stats().active, 0);
  });

  it("cuts off a stream older than maxMs the same way", async () => {
    const bounded = harness({ poolSize: 1, history: { batchRows: 100, maxMs: 300 } });
    const { token } = await walletWithHistory(bounded, 5_000);
    const response = await history(bounded.app, token);
    const body = response.body!.getReader();
    assert.equal((await body.read()).done, false);
    await eventually(() => bounded.histories.stats().aborted === 1, "the stream is cut off at maxMs");
    await assert.rejects(async () => {
      while (!(await body.read()).done);
    });
    assert.equal((await connectionSettings(bounded)).read_only, "off");
  });

  it("over HTTP, a failure after the first bytes breaks the transfer: never a shorter valid list", async () => {
    const { walletId } = await walletWithHistory(h, 3_000);
    const streams = new HistoryStreams({ batchRows: 100, log: createLogger("silent") });
    const app = new Hono().get(
      "/history",
      (c) =>
        streams.respond(
          c,
          (cursor) => Promise.resolve(watched(openHistory(h.sql, walletId, cursor), { failAfter: 5 }).reader),
        ),
    );
    const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, app.fetch);
    try {
      const response = await fetch(`http://127.0.0.1:${server.addr.port}/history`);
      assert.equal(response.status, 200, "the status went out with the first batch");
      const received: Uint8Array[] = [];
      await assert.rejects(async () => {
        for await (const chunk of response.body!) received.push(chunk);
      }, "the client sees the transfer break");
      const text = new TextDecoder().decode(await new Blob(received as BlobPart[]).arrayBuffer());
      assert.ok(text.startsWith('{"status":"success","data":{"transactions":[{'), "some rows arrived");
      assert.throws(() => JSON.parse(text), "what arrived is not a complete JSON document");
      assert.deepEqual(streams.stats(), { active: 0, sent: 0, cancelled: 0, aborted: 1, refused: 0 });
    } finally {
      await server.shutdown();
    }
    assert.equal((await connectionSettings(h)).read_only, "off");
  });

  it("keeps the route's OpenAPI description as it was", async () => {
    const doc = await (await h.app.request("/openapi.json")).json();
    const operation = doc.paths["/api/v1/wallet/transactions"].get;
    assert.deepEqual(operation.responses["200"].content["application/json"].schema, {
      type: "object",
      properties: {
        status: { type: "string", enum: ["success"] },
        data: {
          type: "object",
          properties: {
            transactions: { type: "array", items: { $ref: "#/components/schemas/Transaction" } },
            next_cursor: { type: ["string", "null"] },
          },
          required: ["transactions"],
        },
      },
      required: ["status", "data"],
    });
    assert.deepEqual(operation.parameters.map((p: any) => p.name), ["limit", "cursor"]);
    assert.deepEqual(Object.keys(operation.responses), ["200", "400", "401", "404", "500", "503"]);
  });
});
