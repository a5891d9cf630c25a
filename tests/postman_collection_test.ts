/**
 * Conformance by a client nobody here wrote: the public Postman collection
 * (shared/clients/mini-wallet-exercise.postman_collection.json) run with newman, programmatically, against
 * the real app served on 127.0.0.1 and a random port.
 *
 * The collection is used as published (form-data bodies, `Token` headers, collection-level `Bearer` auth).
 * It has no script that keeps the token from init, so the test does what a Postman user does by hand:
 * when init answers, its token goes into the `mw_api_token` environment variable before the next request.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import newman from "newman";
import { type LiveServer, startLiveServer } from "./support/live_server.ts";

const COLLECTION_PATH = new URL(
  "../../shared/clients/mini-wallet-exercise.postman_collection.json",
  import.meta.url,
);

/** The item names in the order they must run, with the contract's success status of each. */
const EXPECTED: [string, number][] = [
  ["Initialize my account for wallet", 201],
  ["Enable my wallet", 201],
  ["View my wallet balance", 200],
  ["View my wallet transactions", 200],
  ["Add virtual money to my wallet", 201],
  ["Use virtual money from my wallet", 201],
  ["Disable my wallet", 200],
];

interface Execution {
  name: string;
  method: string;
  url: string;
  status: number | undefined;
  body: string;
  error: string | undefined;
}

// deno-lint-ignore no-explicit-any
type Any = any;

/** Run the collection with newman; resolve with newman's summary and what each request did. */
function runCollection(
  collection: unknown,
  env: Record<string, string>,
): Promise<{ summary: Any; executions: Execution[] }> {
  return new Promise((resolve, reject) => {
    const executions: Execution[] = [];
    const emitter = newman.run(
      {
        collection,
        reporters: [],
        envVar: Object.entries(env).map(([key, value]) => ({ key, value })),
        timeoutRequest: 10_000,
        bail: false,
      },
      (error: Error | null, summary: Any) => error ? reject(error) : resolve({ summary, executions }),
    );
    emitter.on("request", (error: Error | null, args: Any) => {
      const body = args.response?.stream ? args.response.stream.toString() : "";
      executions.push({
        name: args.item.name,
        method: args.request.method,
        url: args.request.url.toString(),
        status: args.response?.code,
        body,
        error: error?.message,
      });
      // What a Postman user does after init: keep the token in mw_api_token.
      if (args.item.name === EXPECTED[0][0] && args.response?.code === 201) {
        emitter.summary.environment.set("mw_api_token", JSON.parse(body).data.token);
      }
    });
  });
}

describe("the public Postman collection, run by newman", () => {
  let live: LiveServer;
  let result: { summary: Any; executions: Execution[] };
  /** What the server received, in order. */
  const received: {
    method: string;
    path: string;
    authorization: string | null;
    contentType: string | null;
  }[] = [];
  const xid = `postman-${crypto.randomUUID()}`;
  const depositRef = crypto.randomUUID();
  const withdrawRef = crypto.randomUUID();

  before(async () => {
    live = startLiveServer({
      onRequest(request) {
        received.push({
          method: request.method,
          path: new URL(request.url).pathname,
          authorization: request.headers.get("authorization"),
          contentType: request.headers.get("content-type"),
        });
      },
    });
    const collection = JSON.parse(await Deno.readTextFile(COLLECTION_PATH));
    result = await runCollection(collection, {
      mw_base_url: live.baseUrl,
      mw_customer_xid: xid,
      mw_api_token: "",
      mw_deposit_amount: "100000",
      mw_deposit_reference_id: depositRef,
      mw_withdraw_amount: "50000",
      mw_withdraw_reference_id: withdrawRef,
    });
  });

  after(async () => {
    await live?.close();
  });

  it("runs the seven requests in order, each answered with the contract's success status", () => {
    const seen = result.executions.map((e) => [e.name, e.status]);
    assert.deepEqual(seen, EXPECTED, JSON.stringify(result.executions, null, 2));
    for (const execution of result.executions) {
      assert.equal(execution.error, undefined, `${execution.name}: ${execution.error}`);
      assert.ok(execution.url.startsWith(`${live.baseUrl}/api/v1/`), execution.url);
      assert.equal(JSON.parse(execution.body).status, "success", `${execution.name}: ${execution.body}`);
    }
  });

  it("sends what the collection says: form-data bodies and the token from init", () => {
    assert.deepEqual(received.map((r) => `${r.method} ${r.path}`), [
      "POST /api/v1/init",
      "POST /api/v1/wallet",
      "GET /api/v1/wallet",
      "GET /api/v1/wallet/transactions",
      "POST /api/v1/wallet/deposits",
      "POST /api/v1/wallet/withdrawals",
      "PATCH /api/v1/wallet",
    ]);
    for (const index of [0, 4, 5, 6]) {
      assert.match(
        received[index].contentType ?? "",
        /^multipart\/form-data; boundary=/,
        received[index].path,
      );
    }
    assert.equal(received[0].authorization, null, "init is noauth");
    const token = JSON.parse(result.executions[0].body).data.token;
    assert.equal(received[1].authorization, `Bearer ${token}`, "enable uses the collection's Bearer auth");
    for (const request of received.slice(2)) {
      assert.match(request.authorization ?? "", new RegExp(`^(Token|Bearer) ${token}$`), request.path);
    }
  });

  it("passes the collection's own pm.test scripts, with no failure reported by newman", () => {
    const { run } = result.summary;
    assert.deepEqual(
      run.failures.map((f: Any) => `${f.source?.name}: ${f.error?.message}`),
      [],
    );
    const assertions = run.executions.flatMap((e: Any) =>
      (e.assertions ?? []).map((a: Any) => [e.item.name, a.assertion, a.error?.message ?? null])
    );
    assert.deepEqual(assertions, [
      ["View my wallet balance", "Status code is 200", null],
      ["View my wallet transactions", "Status code is 200", null],
    ]);
    assert.equal(run.stats.assertions.failed, 0);
    assert.equal(run.stats.requests.failed, 0);
  });

  it("leaves the wallet the requests describe: 100000 in, 50000 out, disabled", () => {
    const byName = new Map(result.executions.map((e) => [e.name, JSON.parse(e.body).data]));
    const enabled = byName.get(EXPECTED[1][0]).wallet;
    assert.equal(enabled.owned_by, xid);
    assert.equal(enabled.status, "enabled");
    assert.equal(enabled.balance, 0);
    assert.equal(byName.get(EXPECTED[2][0]).wallet.balance, 0);
    assert.deepEqual(byName.get(EXPECTED[3][0]).transactions, []);
    const deposit = byName.get(EXPECTED[4][0]).deposit;
    assert.deepEqual([deposit.amount, deposit.reference_id, deposit.deposited_by, deposit.status], [
      100000,
      depositRef,
      xid,
      "success",
    ]);
    const withdrawal = byName.get(EXPECTED[5][0]).withdrawal;
    assert.deepEqual(
      [withdrawal.amount, withdrawal.reference_id, withdrawal.withdrawn_by, withdrawal.status],
      [50000, withdrawRef, xid, "success"],
    );
    const disabled = byName.get(EXPECTED[6][0]).wallet;
    assert.deepEqual([disabled.id, disabled.status, disabled.balance], [enabled.id, "disabled", 50000]);
  });
});
