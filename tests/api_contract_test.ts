// deno-lint-ignore-file no-explicit-any -- response bodies are arbitrary JSON; tests assert on their fields
/**
 * The API contract (docs: /work/shared/spec/api.md), endpoint by endpoint, status by status, against the real
 * PostgreSQL and Redis.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { decodeJwt } from "jose";
import {
  call,
  countWrites,
  createHarness,
  dbWallet,
  enabledWallet,
  freshView,
  type Harness,
  initCustomer,
  newCustomerXid,
} from "./support/harness.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const MISSING = "Missing data for required field.";
const CONFLICT = {
  status: "fail",
  data: { error: { reference_id: ["Reference ID has already been used."] } },
};

let h: Harness;
before(() => {
  h = createHarness();
});
after(async () => {
  await h.close();
});

function failWith(error: unknown) {
  return { status: "fail", data: { error } };
}

function assertTimestamp(value: unknown) {
  assert.equal(typeof value, "string");
  assert.match(value as string, TIMESTAMP);
  assert.ok(!Number.isNaN(Date.parse(value as string)));
}

/** Each field of a field-error body is a non-empty list of non-empty messages. */
function assertFieldError(body: any, fields: string[]) {
  assert.equal(body.status, "fail");
  const error = body.data.error;
  assert.equal(typeof error, "object", JSON.stringify(body));
  assert.deepEqual(Object.keys(error).sort(), [...fields].sort(), JSON.stringify(body));
  for (const field of fields) {
    assert.ok(Array.isArray(error[field]) && error[field].length > 0, JSON.stringify(body));
    for (const message of error[field]) assert.ok(typeof message === "string" && message.length > 0);
  }
}

const deposit = (token: string, amount: unknown, reference_id: unknown = crypto.randomUUID()) =>
  call(h.app, "POST", "/api/v1/wallet/deposits", { token, body: { amount, reference_id } });
const withdraw = (token: string, amount: unknown, reference_id: unknown = crypto.randomUUID()) =>
  call(h.app, "POST", "/api/v1/wallet/withdrawals", { token, body: { amount, reference_id } });
const disable = (token: string, body: unknown = { is_disabled: true }) =>
  call(h.app, "PATCH", "/api/v1/wallet", { token, body });
const enable = (token: string) => call(h.app, "POST", "/api/v1/wallet", { token });
const transactions = (token: string, query = "") =>
  call(h.app, "GET", `/api/v1/wallet/transactions${query}`, { token });

describe("POST /api/v1/init", () => {
  it("201 with a token whose sub is the customer_xid", async () => {
    const xid = newCustomerXid();
    const res = await call(h.app, "POST", "/api/v1/init", { body: { customer_xid: xid } });
    assert.equal(res.status, 201);
    assert.deepEqual(Object.keys(res.body), ["status", "data"]);
    assert.equal(res.body.status, "success");
    assert.deepEqual(Object.keys(res.body.data), ["token"]);
    assert.equal(typeof res.body.data.token, "string");
    assert.equal(decodeJwt(res.body.data.token).sub, xid);
  });

  it("400 with the exact body when customer_xid is missing", async () => {
    for (const body of [{}, { customer_xid: null }, { other: "x" }]) {
      const res = await call(h.app, "POST", "/api/v1/init", { body });
      assert.equal(res.status, 400);
      assert.deepEqual(res.body, failWith({ customer_xid: [MISSING] }));
    }
  });

  it("the same customer_xid again gets a fresh, different token for the same wallet", async () => {
    const { token: first, xid } = await initCustomer(h.app);
    const { token: second } = await initCustomer(h.app, xid);
    assert.notEqual(first, second);
    const enabled = await enable(first);
    assert.equal(enabled.status, 201);
    const viewed = await call(h.app, "GET", "/api/v1/wallet", { token: second });
    assert.equal(viewed.status, 200);
    assert.equal(viewed.body.data.wallet.id, enabled.body.data.wallet.id);
    assert.equal(viewed.body.data.wallet.owned_by, xid);
    // the earlier token is not revoked
    assert.equal((await call(h.app, "GET", "/api/v1/wallet", { token: first })).status, 200);
    const [{ count }] = await h.sql<{ count: number }[]>`
      SELECT count(*)::int AS count FROM wallets WHERE customer_xid = ${xid}`;
    assert.equal(count, 1);
  });

  it("customer_xid: blank, over 64 code points and non-strings are refused; 64 emoji are accepted", async () => {
    for (
      const customer_xid of ["", "   ", "\t\n", "x".repeat(65), "😀".repeat(65), 12345, true, { a: 1 }, ["a"]]
    ) {
      const res = await call(h.app, "POST", "/api/v1/init", { body: { customer_xid } });
      assert.equal(res.status, 400, JSON.stringify(customer_xid));
      assertFieldError(res.body, ["customer_xid"]);
      assert.notEqual(res.body.data.error.customer_xid[0], MISSING, JSON.stringify(customer_xid));
    }
    const emoji = "😀".repeat(63) + crypto.randomUUID().slice(0, 1);
    assert.equal([...emoji].length, 64);
    const ok = await call(h.app, "POST", "/api/v1/init", { body: { customer_xid: emoji } });
    assert.equal(ok.status, 201, JSON.stringify(ok.body));
    assert.equal(decodeJwt(ok.body.data.token).sub, emoji);
  });
});

describe("POST /api/v1/wallet (enable)", () => {
  it("201 with id, owned_by, status, enabled_at and balance 0", async () => {
    const { token, xid } = await initCustomer(h.app);
    const res = await enable(token);
    assert.equal(res.status, 201);
    assert.equal(res.body.status, "success");
    const wallet = res.body.data.wallet;
    assert.deepEqual(Object.keys(wallet).sort(), ["balance", "enabled_at", "id", "owned_by", "status"]);
    assert.match(wallet.id, UUID);
    assert.equal(wallet.owned_by, xid);
    assert.equal(wallet.status, "enabled");
    assertTimestamp(wallet.enabled_at);
    assert.equal(wallet.balance, 0);
    assert.equal(decodeJwt(token).wid, wallet.id);
  });

  it("400 Already enabled", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    const before = await countWrites(h.sql, walletId);
    const res = await enable(token);
    assert.equal(res.status, 400);
    assert.deepEqual(res.body, failWith("Already enabled"));
    assert.deepEqual(await countWrites(h.sql, walletId), before);
  });

  it("enabled again after a disable keeps its balance", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    assert.equal((await deposit(token, "150.25")).status, 201);
    const disabled = await disable(token);
    assert.equal(disabled.status, 200);
    assert.equal(disabled.body.data.wallet.balance, 150.25);
    const again = await enable(token);
    assert.equal(again.status, 201);
    assert.equal(again.body.data.wallet.id, walletId);
    assert.equal(again.body.data.wallet.balance, 150.25);
    assert.equal(again.body.data.wallet.status, "enabled");
    const view = await call(h.app, "GET", "/api/v1/wallet", { token });
    assert.equal(view.status, 200);
    assert.equal(view.body.data.wallet.balance, 150.25);
  });
});

describe("GET /api/v1/wallet (view balance)", () => {
  it("200 with the enabled wallet shape", async () => {
    const { token, walletId, xid } = await enabledWallet(h.app);
    const res = await call(h.app, "GET", "/api/v1/wallet", { token });
    assert.equal(res.status, 200);
    assert.equal(res.body.status, "success");
    const wallet = res.body.data.wallet;
    assert.deepEqual(Object.keys(wallet).sort(), ["balance", "enabled_at", "id", "owned_by", "status"]);
    assert.equal(wallet.id, walletId);
    assert.equal(wallet.owned_by, xid);
    assert.equal(wallet.status, "enabled");
    assertTimestamp(wallet.enabled_at);
    assert.equal(wallet.balance, 0);
  });

  it("shows the balance from PostgreSQL on a cache miss", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    assert.equal((await deposit(token, "12.34")).status, 201);
    const res = await freshView(h, token, walletId);
    assert.equal(res.status, 200);
    assert.equal(res.body.data.wallet.balance, 12.34);
  });

  it("404 Wallet disabled when never enabled (cache hit or miss)", async () => {
    const { token } = await initCustomer(h.app);
    for (let i = 0; i < 2; i++) {
      const res = await call(h.app, "GET", "/api/v1/wallet", { token });
      assert.equal(res.status, 404);
      assert.deepEqual(res.body, failWith("Wallet disabled"));
    }
  });

  it("404 Wallet disabled at once after a disable (cached and from PostgreSQL)", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    assert.equal((await call(h.app, "GET", "/api/v1/wallet", { token })).status, 200); // cache filled
    assert.equal((await disable(token)).status, 200);
    const cached = await call(h.app, "GET", "/api/v1/wallet", { token });
    assert.equal(cached.status, 404);
    assert.deepEqual(cached.body, failWith("Wallet disabled"));
    const fresh = await freshView(h, token, walletId);
    assert.equal(fresh.status, 404);
    assert.deepEqual(fresh.body, failWith("Wallet disabled"));
  });
});

describe("GET /api/v1/wallet/transactions", () => {
  it("200 with every transaction oldest first, a failed withdrawal included", async () => {
    const { token } = await enabledWallet(h.app);
    const steps = [
      { kind: "deposit", amount: 100, ref: `a-${crypto.randomUUID()}` },
      { kind: "withdrawal", amount: 500, ref: `b-${crypto.randomUUID()}` },
      { kind: "withdrawal", amount: 30.5, ref: `c-${crypto.randomUUID()}` },
      { kind: "deposit", amount: 0.01, ref: `d-${crypto.randomUUID()}` },
    ];
    const ids: string[] = [];
    for (const step of steps) {
      const res = step.kind === "deposit"
        ? await deposit(token, step.amount, step.ref)
        : await withdraw(token, step.amount, step.ref);
      ids.push(res.body.data?.deposit?.id ?? res.body.data?.withdrawal?.id ?? null);
    }
    const res = await transactions(token);
    assert.equal(res.status, 200);
    assert.equal(res.body.status, "success");
    assert.deepEqual(Object.keys(res.body.data), ["transactions"], "no next_cursor without limit");
    const list = res.body.data.transactions;
    assert.equal(list.length, 4);
    assert.deepEqual(list.map((t: any) => t.reference_id), steps.map((s) => s.ref));
    assert.deepEqual(list.map((t: any) => t.type), ["deposit", "withdrawal", "withdrawal", "deposit"]);
    assert.deepEqual(list.map((t: any) => t.status), ["success", "failed", "success", "success"]);
    assert.deepEqual(list.map((t: any) => t.amount), [100, 500, 30.5, 0.01]);
    for (const t of list) {
      assert.deepEqual(Object.keys(t).sort(), [
        "amount",
        "id",
        "reference_id",
        "status",
        "transacted_at",
        "type",
      ]);
      assert.match(t.id, UUID);
      assertTimestamp(t.transacted_at);
    }
    assert.equal(list[0].id, ids[0]);
    assert.equal(list[2].id, ids[2]);
    assert.equal(ids[1], null, "the failed withdrawal answered 400");
    const times = list.map((t: any) => Date.parse(t.transacted_at));
    assert.deepEqual([...times].sort((a, b) => a - b), times);
  });

  it("200 with an empty list for a new wallet", async () => {
    const { token } = await enabledWallet(h.app);
    const res = await transactions(token);
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { status: "success", data: { transactions: [] } });
    const paged = await transactions(token, "?limit=10");
    assert.deepEqual(paged.body, { status: "success", data: { transactions: [], next_cursor: null } });
  });

  it("pages with limit and next_cursor over every transaction; the last page has next_cursor null", async () => {
    const { token } = await enabledWallet(h.app);
    const refs: string[] = [];
    for (let i = 0; i < 7; i++) {
      const ref = `page-${i}`;
      refs.push(ref);
      assert.equal((await deposit(token, i + 1, ref)).status, 201);
    }
    for (const limit of [1, 2, 3, 7, 1000]) {
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const query: string = `?limit=${limit}${
          cursor === null ? "" : `&cursor=${encodeURIComponent(cursor)}`
        }`;
        const res = await transactions(token, query);
        assert.equal(res.status, 200, JSON.stringify(res.body));
        assert.ok("next_cursor" in res.body.data);
        const page = res.body.data.transactions;
        assert.ok(page.length <= limit);
        seen.push(...page.map((t: any) => t.reference_id));
        cursor = res.body.data.next_cursor;
        if (cursor !== null) {
          assert.equal(typeof cursor, "string");
          assert.equal(page.length, limit, "only a full page may have a next page");
        }
        pages++;
        assert.ok(pages <= 8, "paging terminates");
      } while (cursor !== null);
      assert.deepEqual(seen, refs, `limit=${limit}`);
      assert.equal(pages, Math.ceil(7 / limit), `limit=${limit}`);
    }
  });

  it("400 field errors for a bad limit, a bad cursor or a cursor without a limit", async () => {
    const { token } = await enabledWallet(h.app);
    for (const limit of ["0", "1001", "abc", "-1", "", "1.5", "10000", "%201"]) {
      const res = await transactions(token, `?limit=${limit}`);
      assert.equal(res.status, 400, `limit=${limit}`);
      assertFieldError(res.body, ["limit"]);
    }
    for (
      const cursor of [
        "abc",
        "0",
        "-1",
        "",
        "1.5",
        "99999999999999999999999",
        "9223372036854775808",
        "9999999999999999999",
      ]
    ) {
      const res = await transactions(token, `?limit=10&cursor=${cursor}`);
      assert.equal(res.status, 400, `cursor=${cursor}`);
      assertFieldError(res.body, ["cursor"]);
    }
    const withoutLimit = await transactions(token, "?cursor=5");
    assert.equal(withoutLimit.status, 400);
    assertFieldError(withoutLimit.body, ["cursor"]);
    const both = await transactions(token, "?limit=0&cursor=x");
    assert.equal(both.status, 400);
    assertFieldError(both.body, ["limit", "cursor"]);
  });

  it("404 Wallet disabled when never enabled and after a disable", async () => {
    const { token } = await initCustomer(h.app);
    const never = await transactions(token);
    assert.equal(never.status, 404);
    assert.deepEqual(never.body, failWith("Wallet disabled"));
    const enabled = await enabledWallet(h.app);
    assert.equal((await disable(enabled.token)).status, 200);
    const res = await transactions(enabled.token, "?limit=5");
    assert.equal(res.status, 404);
    assert.deepEqual(res.body, failWith("Wallet disabled"));
  });
});

describe("POST /api/v1/wallet/deposits", () => {
  it("201 with id, deposited_by, status, deposited_at, amount as a JSON number and reference_id", async () => {
    const { token, walletId, xid } = await enabledWallet(h.app);
    const ref = crypto.randomUUID();
    const res = await call(h.app, "POST", "/api/v1/wallet/deposits", {
      token,
      body: { amount: "100000", reference_id: ref },
    });
    assert.equal(res.status, 201);
    assert.equal(res.body.status, "success");
    const d = res.body.data.deposit;
    assert.deepEqual(Object.keys(d).sort(), [
      "amount",
      "deposited_at",
      "deposited_by",
      "id",
      "reference_id",
      "status",
    ]);
    assert.match(d.id, UUID);
    assert.equal(d.deposited_by, xid);
    assert.equal(d.status, "success");
    assertTimestamp(d.deposited_at);
    assert.equal(d.amount, 100000);
    assert.equal(typeof d.amount, "number");
    assert.equal(d.reference_id, ref);
    const [row] = await h.sql<{ id: string; amount: string; status: string }[]>`
      SELECT id, amount, status FROM wallet_transactions WHERE wallet_id = ${walletId}`;
    assert.deepEqual(row, { id: d.id, amount: "10000000", status: "success" });
    assert.equal((await dbWallet(h.sql, walletId))!.balance, 10000000n);
  });

  it("404 Wallet disabled when never enabled or disabled, nothing written", async () => {
    const { token } = await initCustomer(h.app);
    const never = await deposit(token, 10);
    assert.equal(never.status, 404);
    assert.deepEqual(never.body, failWith("Wallet disabled"));
    const { token: t2, walletId } = await enabledWallet(h.app);
    assert.equal((await disable(t2)).status, 200);
    const before = await countWrites(h.sql, walletId);
    const res = await deposit(t2, 10);
    assert.equal(res.status, 404);
    assert.deepEqual(res.body, failWith("Wallet disabled"));
    assert.deepEqual(await countWrites(h.sql, walletId), before);
  });
});

describe("POST /api/v1/wallet/withdrawals", () => {
  it("201 with id, withdrawn_by, status, withdrawn_at, amount and reference_id", async () => {
    const { token, walletId, xid } = await enabledWallet(h.app);
    assert.equal((await deposit(token, 100)).status, 201);
    const ref = crypto.randomUUID();
    const res = await withdraw(token, "60.5", ref);
    assert.equal(res.status, 201);
    assert.equal(res.body.status, "success");
    const w = res.body.data.withdrawal;
    assert.deepEqual(Object.keys(w).sort(), [
      "amount",
      "id",
      "reference_id",
      "status",
      "withdrawn_at",
      "withdrawn_by",
    ]);
    assert.match(w.id, UUID);
    assert.equal(w.withdrawn_by, xid);
    assert.equal(w.status, "success");
    assertTimestamp(w.withdrawn_at);
    assert.equal(w.amount, 60.5);
    assert.equal(w.reference_id, ref);
    assert.equal((await dbWallet(h.sql, walletId))!.balance, 3950n);
  });

  it("withdrawing the whole balance is allowed", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    assert.equal((await deposit(token, "10.10")).status, 201);
    assert.equal((await withdraw(token, 10.1)).status, 201);
    assert.equal((await dbWallet(h.sql, walletId))!.balance, 0n);
  });

  it("400 Insufficient balance, recorded as failed, balance unchanged", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    assert.equal((await deposit(token, 10)).status, 201);
    const ref = crypto.randomUUID();
    const res = await withdraw(token, "10.01", ref);
    assert.equal(res.status, 400);
    assert.deepEqual(res.body, failWith("Insufficient balance"));
    assert.equal((await dbWallet(h.sql, walletId))!.balance, 1000n);
    const list = (await transactions(token)).body.data.transactions;
    assert.equal(list.length, 2);
    assert.deepEqual(
      {
        type: list[1].type,
        status: list[1].status,
        amount: list[1].amount,
        reference_id: list[1].reference_id,
      },
      { type: "withdrawal", status: "failed", amount: 10.01, reference_id: ref },
    );
    const view = await freshView(h, token, walletId);
    assert.equal(view.body.data.wallet.balance, 10);
  });

  it("404 Wallet disabled when never enabled or disabled", async () => {
    const { token } = await initCustomer(h.app);
    const never = await withdraw(token, 1);
    assert.equal(never.status, 404);
    assert.deepEqual(never.body, failWith("Wallet disabled"));
    const { token: t2, walletId } = await enabledWallet(h.app);
    assert.equal((await deposit(t2, 5)).status, 201);
    assert.equal((await disable(t2)).status, 200);
    const before = await countWrites(h.sql, walletId);
    const res = await withdraw(t2, 1);
    assert.equal(res.status, 404);
    assert.deepEqual(res.body, failWith("Wallet disabled"));
    assert.deepEqual(await countWrites(h.sql, walletId), before);
  });
});

describe("PATCH /api/v1/wallet (disable)", () => {
  for (const is_disabled of [true, "true", "TRUE", "True"]) {
    it(`200 with disabled_at and balance for is_disabled=${JSON.stringify(is_disabled)}`, async () => {
      const { token, walletId, xid } = await enabledWallet(h.app);
      assert.equal((await deposit(token, "7.25")).status, 201);
      const res = await disable(token, { is_disabled });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.status, "success");
      const wallet = res.body.data.wallet;
      assert.deepEqual(Object.keys(wallet).sort(), ["balance", "disabled_at", "id", "owned_by", "status"]);
      assert.equal(wallet.id, walletId);
      assert.equal(wallet.owned_by, xid);
      assert.equal(wallet.status, "disabled");
      assertTimestamp(wallet.disabled_at);
      assert.equal(wallet.balance, 7.25);
      assert.equal((await dbWallet(h.sql, walletId))!.status, "disabled");
    });
  }

  it("400 field error for false, other strings, numbers or a missing is_disabled; the wallet stays enabled", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    for (const is_disabled of [false, "false", "yes", "1", 1, "", " true", ["true"], { a: true }]) {
      const res = await disable(token, { is_disabled });
      assert.equal(res.status, 400, JSON.stringify(is_disabled));
      assertFieldError(res.body, ["is_disabled"]);
    }
    for (const body of [{}, { is_disabled: null }]) {
      const res = await disable(token, body);
      assert.equal(res.status, 400);
      assert.deepEqual(res.body, failWith({ is_disabled: [MISSING] }));
    }
    assert.equal((await dbWallet(h.sql, walletId))!.status, "enabled");
  });

  it("400 Already disabled for a wallet never enabled and for one already disabled", async () => {
    const { token } = await initCustomer(h.app);
    const never = await disable(token);
    assert.equal(never.status, 400);
    assert.deepEqual(never.body, failWith("Already disabled"));
    const enabled = await enabledWallet(h.app);
    assert.equal((await disable(enabled.token)).status, 200);
    const before = await countWrites(h.sql, enabled.walletId);
    const again = await disable(enabled.token, { is_disabled: "true" });
    assert.equal(again.status, 400);
    assert.deepEqual(again.body, failWith("Already disabled"));
    assert.deepEqual(await countWrites(h.sql, enabled.walletId), before);
  });
});

describe("idempotency by reference_id", () => {
  it("an identical deposit retry gets the identical status and body and writes nothing", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    const ref = crypto.randomUUID();
    const first = await deposit(token, "100.50", ref);
    assert.equal(first.status, 201);
    const before = await countWrites(h.sql, walletId);
    for (const amount of ["100.50", 100.5, "0100.5", "100.500"]) {
      const again = await deposit(token, amount, ref);
      assert.equal(again.status, 201);
      assert.deepEqual(again.body, first.body);
    }
    assert.deepEqual(await countWrites(h.sql, walletId), before);
    assert.equal((await dbWallet(h.sql, walletId))!.balance, 10050n);
  });

  it("an identical withdrawal retry gets the identical body", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    assert.equal((await deposit(token, 50)).status, 201);
    const ref = crypto.randomUUID();
    const first = await withdraw(token, 20, ref);
    assert.equal(first.status, 201);
    const again = await withdraw(token, "20.00", ref);
    assert.equal(again.status, 201);
    assert.deepEqual(again.body, first.body);
    assert.equal((await dbWallet(h.sql, walletId))!.balance, 3000n);
  });

  it("a refused withdrawal stays 400 Insufficient balance on retry, even after a deposit makes it affordable", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    const ref = crypto.randomUUID();
    const first = await withdraw(token, 25, ref);
    assert.equal(first.status, 400);
    assert.deepEqual(first.body, failWith("Insufficient balance"));
    assert.equal((await deposit(token, 100)).status, 201);
    const before = await countWrites(h.sql, walletId);
    const again = await withdraw(token, 25, ref);
    assert.equal(again.status, 400);
    assert.deepEqual(again.body, first.body);
    assert.deepEqual(await countWrites(h.sql, walletId), before);
    assert.equal((await dbWallet(h.sql, walletId))!.balance, 10000n);
  });

  it("409 with the exact body for the same reference_id with another amount or type; nothing written", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    const ref = crypto.randomUUID();
    assert.equal((await deposit(token, 100, ref)).status, 201);
    const failedRef = crypto.randomUUID();
    assert.equal((await withdraw(token, 1000, failedRef)).status, 400);
    const before = await countWrites(h.sql, walletId);
    const attempts = [
      await deposit(token, 100.01, ref),
      await deposit(token, "99", ref),
      await withdraw(token, 100, ref),
      await withdraw(token, 1, ref),
      await deposit(token, 1000, failedRef),
      await withdraw(token, 10, failedRef),
    ];
    for (const res of attempts) {
      assert.equal(res.status, 409);
      assert.deepEqual(res.body, CONFLICT);
    }
    assert.deepEqual(await countWrites(h.sql, walletId), before);
    assert.equal((await dbWallet(h.sql, walletId))!.balance, 10000n);
  });

  it("reference_id is per wallet: another wallet may use the same one", async () => {
    const a = await enabledWallet(h.app);
    const b = await enabledWallet(h.app);
    const ref = crypto.randomUUID();
    assert.equal((await deposit(a.token, 1, ref)).status, 201);
    const other = await deposit(b.token, 2, ref);
    assert.equal(other.status, 201);
    assert.equal(other.body.data.deposit.amount, 2);
  });
});

describe("amounts", () => {
  const accepted: Array<[unknown, number]> = [
    ["100", 100],
    ["100.5", 100.5],
    ["0100.50", 100.5],
    ["1.500", 1.5],
    ["0.01", 0.01],
    [100.5, 100.5],
    [100, 100],
    [1e3, 1000],
    ["1000000000000", 1000000000000],
    [1000000000000, 1000000000000],
  ];
  for (const [amount, expected] of accepted) {
    it(`accepts ${JSON.stringify(amount)} as ${expected}`, async () => {
      const { token, walletId } = await enabledWallet(h.app);
      const res = await deposit(token, amount);
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.equal(res.body.data.deposit.amount, expected);
      assert.equal((await dbWallet(h.sql, walletId))!.balance, BigInt(Math.round(expected * 100)));
    });
  }

  it("refuses malformed, non-positive, too precise or too large amounts with a field error, nothing written", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    assert.equal((await deposit(token, 5)).status, 201);
    const before = await countWrites(h.sql, walletId);
    const refused: unknown[] = [
      "1.001",
      "0",
      "0.00",
      0,
      "-1",
      -1,
      "+1",
      " 1",
      "1 ",
      "1e3",
      "0x10",
      "",
      "abc",
      "1000000000000.01",
      1000000000000.01,
      1.001,
      0.1 + 0.2,
      true,
      { value: 1 },
      [1],
    ];
    for (const amount of refused) {
      for (const send of [deposit, withdraw]) {
        const res = await send(token, amount);
        assert.equal(res.status, 400, `${JSON.stringify(amount)}: ${JSON.stringify(res.body)}`);
        assertFieldError(res.body, ["amount"]);
        assert.notEqual(res.body.data.error.amount[0], MISSING);
      }
    }
    const precise = await deposit(token, "1.001");
    assert.deepEqual(
      precise.body,
      failWith({ amount: ["Must be a positive amount with at most 2 decimal places."] }),
    );
    assert.deepEqual(await countWrites(h.sql, walletId), before);
    assert.equal((await dbWallet(h.sql, walletId))!.balance, 500n);
  });

  it("a null or missing amount is a missing field", async () => {
    const { token } = await enabledWallet(h.app);
    for (const body of [{ amount: null, reference_id: "x" }, { reference_id: "x" }]) {
      const res = await call(h.app, "POST", "/api/v1/wallet/deposits", { token, body });
      assert.equal(res.status, 400);
      assert.deepEqual(res.body, failWith({ amount: [MISSING] }));
    }
    const both = await call(h.app, "POST", "/api/v1/wallet/withdrawals", { token, body: {} });
    assert.equal(both.status, 400);
    assert.deepEqual(both.body, failWith({ amount: [MISSING], reference_id: [MISSING] }));
  });

  it("deposits may reach 9999999999999.99 exactly; one cent past is 400 Balance limit exceeded and writes nothing", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    for (let i = 0; i < 9; i++) assert.equal((await deposit(token, "1000000000000")).status, 201);
    const top = await deposit(token, "999999999999.99");
    assert.equal(top.status, 201);
    assert.equal((await dbWallet(h.sql, walletId))!.balance, 999999999999999n);
    const before = await countWrites(h.sql, walletId);
    const ref = crypto.randomUUID();
    const over = await deposit(token, "0.01", ref);
    assert.equal(over.status, 400);
    assert.deepEqual(over.body, failWith("Balance limit exceeded"));
    const big = await deposit(token, 1000000000000);
    assert.equal(big.status, 400);
    assert.deepEqual(big.body, failWith("Balance limit exceeded"));
    assert.deepEqual(await countWrites(h.sql, walletId), before);
    assert.equal((await dbWallet(h.sql, walletId))!.balance, 999999999999999n);
    // the balance is shown exactly
    const view = await freshView(h, token, walletId);
    assert.equal(view.status, 200);
    assert.equal(view.body.data.wallet.balance, 9999999999999.99);
    const raw = await h.app.request("/api/v1/wallet", { headers: { authorization: `Token ${token}` } });
    assert.match(await raw.text(), /"balance":9999999999999\.99[,}]/);
    // nothing was recorded for the refused reference: after a withdrawal it is decided afresh
    assert.equal((await withdraw(token, 1)).status, 201);
    const retried = await deposit(token, "0.01", ref);
    assert.equal(retried.status, 201);
    assert.equal((await dbWallet(h.sql, walletId))!.balance, 999999999999900n);
    const disabled = await disable(token);
    assert.equal(disabled.body.data.wallet.balance, 9999999999999);
  });

  it("0.1 + 0.2 is exactly 0.3", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    assert.equal((await deposit(token, 0.1)).status, 201);
    assert.equal((await deposit(token, "0.2")).status, 201);
    assert.equal((await dbWallet(h.sql, walletId))!.balance, 30n);
    const view = await freshView(h, token, walletId);
    assert.equal(view.body.data.wallet.balance, 0.3);
    assert.equal((await withdraw(token, 0.3)).status, 201);
    assert.equal((await dbWallet(h.sql, walletId))!.balance, 0n);
    const disabled = await disable(token);
    assert.equal(disabled.body.data.wallet.balance, 0);
  });
});

describe("reference_id", () => {
  it("blank, over 64 code points and non-strings are refused with a field error", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    for (
      const reference_id of ["", "   ", "\t", "r".repeat(65), "😀".repeat(65), 12345, true, { a: 1 }, ["a"]]
    ) {
      const res = await deposit(token, 1, reference_id);
      assert.equal(res.status, 400, JSON.stringify(reference_id));
      assertFieldError(res.body, ["reference_id"]);
      assert.notEqual(res.body.data.error.reference_id[0], MISSING);
    }
    for (const body of [{ amount: 1 }, { amount: 1, reference_id: null }]) {
      const res = await call(h.app, "POST", "/api/v1/wallet/withdrawals", { token, body });
      assert.equal(res.status, 400);
      assert.deepEqual(res.body, failWith({ reference_id: [MISSING] }));
    }
    assert.deepEqual(await countWrites(h.sql, walletId), { transactions: 0, outbox: 1 });
  });

  it("64 code points are accepted, emoji included, and returned as sent", async () => {
    const { token } = await enabledWallet(h.app);
    const emoji = "😀".repeat(64);
    assert.equal(emoji.length, 128, "128 UTF-16 units");
    const res = await deposit(token, 1, emoji);
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.equal(res.body.data.deposit.reference_id, emoji);
    const plain = await deposit(token, 1, "r".repeat(64));
    assert.equal(plain.status, 201);
    const list = (await transactions(token)).body.data.transactions;
    assert.deepEqual(list.map((t: any) => t.reference_id), [emoji, "r".repeat(64)]);
  });
});

describe("ids PostgreSQL text cannot hold are refused as fields, never a 500", () => {
  it("customer_xid with a NUL character or a lone surrogate gets a 400 field error", async () => {
    for (const customer_xid of [`a\u0000${crypto.randomUUID()}`, `\uD800${crypto.randomUUID()}`]) {
      const res = await call(h.app, "POST", "/api/v1/init", { body: { customer_xid } });
      assert.equal(res.status, 400, JSON.stringify(res.body));
      assertFieldError(res.body, ["customer_xid"]);
    }
  });

  it("reference_id with a NUL character or lone surrogates gets a 400 field error, nothing written", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    for (const reference_id of ["x\u0000y", "\uD800", "\uDBFF", "ok\uDC00"]) {
      const res = await deposit(token, 1, reference_id);
      assert.equal(res.status, 400, JSON.stringify(res.body));
      assertFieldError(res.body, ["reference_id"]);
    }
    assert.deepEqual(await countWrites(h.sql, walletId), { transactions: 0, outbox: 1 });
  });
});

describe("order of checks", () => {
  it("fields come before wallet state: a disabled wallet with a bad amount gets the field error", async () => {
    const { token } = await initCustomer(h.app);
    const res = await deposit(token, "abc");
    assert.equal(res.status, 400);
    assertFieldError(res.body, ["amount"]);
    const w = await withdraw(token, 1, "   ");
    assert.equal(w.status, 400);
    assertFieldError(w.body, ["reference_id"]);
    const d = await disable(token, { is_disabled: "no" });
    assert.equal(d.status, 400);
    assertFieldError(d.body, ["is_disabled"]);
    const t = await transactions(token, "?limit=0");
    assert.equal(t.status, 400);
    assertFieldError(t.body, ["limit"]);
  });

  it("wallet state comes before reference_id: a used reference on a disabled wallet gets 404", async () => {
    const { token } = await enabledWallet(h.app);
    const ref = crypto.randomUUID();
    assert.equal((await deposit(token, 1, ref)).status, 201);
    assert.equal((await disable(token)).status, 200);
    const same = await deposit(token, 1, ref);
    assert.equal(same.status, 404);
    assert.deepEqual(same.body, failWith("Wallet disabled"));
    const other = await deposit(token, 2, ref);
    assert.equal(other.status, 404);
  });

  it("reference_id comes before balance: a conflicting withdrawal too large gets 409", async () => {
    const { token } = await enabledWallet(h.app);
    const ref = crypto.randomUUID();
    assert.equal((await deposit(token, 1, ref)).status, 201);
    const res = await withdraw(token, 1000, ref);
    assert.equal(res.status, 409);
    assert.deepEqual(res.body, CONFLICT);
  });

  it("the token comes before the body: no token and a bad body is 401", async () => {
    for (const path of ["/api/v1/wallet/deposits", "/api/v1/wallet/withdrawals"]) {
      const res = await call(h.app, "POST", path, { body: { amount: "abc" } });
      assert.equal(res.status, 401);
      assert.equal(res.body.status, "fail");
      assert.equal(typeof res.body.data.error, "string");
    }
    const unsupported = await call(h.app, "PATCH", "/api/v1/wallet", {
      body: "x",
      headers: { "content-type": "text/plain" },
    });
    assert.equal(unsupported.status, 401);
    const huge = await call(h.app, "POST", "/api/v1/wallet/deposits", {
      body: "x".repeat(1_200_000),
      headers: { "content-type": "application/json" },
    });
    assert.equal(huge.status, 401);
  });

  it("route and method come first: unknown routes are 404 and wrong methods 405 with Allow, as JSend", async () => {
    for (const path of ["/nope", "/api/v1", "/api/v1/wallet/unknown", "/api/v2/wallet", "/api/v1/wallets"]) {
      const res = await call(h.app, "GET", path);
      assert.equal(res.status, 404, path);
      assert.equal(res.body.status, "fail");
      assert.equal(typeof res.body.data.error, "string");
    }
    const cases: Array<[string, string, string[]]> = [
      ["DELETE", "/api/v1/wallet", ["GET", "PATCH", "POST"]],
      ["PUT", "/api/v1/wallet", ["GET", "PATCH", "POST"]],
      ["GET", "/api/v1/init", ["POST"]],
      ["POST", "/api/v1/wallet/transactions", ["GET"]],
      ["GET", "/api/v1/wallet/deposits", ["POST"]],
      ["DELETE", "/api/v1/wallet/withdrawals", ["POST"]],
    ];
    for (const [method, path, allow] of cases) {
      // a wrong method without a token is 405, not 401
      const res = await call(h.app, method, path, method === "GET" ? {} : { body: { amount: "abc" } });
      assert.equal(res.status, 405, `${method} ${path}`);
      assert.equal(res.body.status, "fail");
      assert.equal(typeof res.body.data.error, "string");
      const allowed = (res.headers.get("allow") ?? "").split(",").map((m) => m.trim()).filter(Boolean);
      assert.deepEqual(allowed.sort(), allow, `${method} ${path}`);
    }
  });

  it("responses are JSON", async () => {
    const { token } = await enabledWallet(h.app);
    for (
      const res of [
        await h.app.request("/nope"),
        await h.app.request("/api/v1/wallet", { method: "DELETE" }),
        await h.app.request("/api/v1/wallet", { headers: { authorization: `Token ${token}` } }),
        await h.app.request("/api/v1/wallet"),
      ]
    ) {
      assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
      const body = await res.json();
      assert.ok(body.status === "success" || body.status === "fail");
    }
  });
});
