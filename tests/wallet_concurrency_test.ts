// deno-lint-ignore-file no-explicit-any -- response bodies are arbitrary JSON; tests assert on their fields
/**
 * Concurrency against the real PostgreSQL: many simultaneous requests on one wallet, through one service
 * (in-process batching) and through two services with separate pools (like two processes), where only the
 * database row lock and the unique reference constraint can keep the books straight.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { call, createHarness, dbWallet, enabledWallet, type Harness } from "./support/harness.ts";
import { parseAmount } from "../src/wallet/money.ts";

let one: Harness;
let two: Harness;
before(() => {
  one = createHarness({ poolSize: 10 });
  two = createHarness({ poolSize: 10 });
});
after(async () => {
  await one.close();
  await two.close();
});

interface Sent {
  type: "deposit" | "withdrawal";
  amount: string;
  referenceId: string;
  status: number;
  body: any;
}

function cents(amount: string): bigint {
  const parsed = parseAmount(amount);
  if ("error" in parsed) throw new Error(parsed.error);
  return parsed.cents;
}

/** A deterministic pseudo-random sequence, so a failure can be reproduced. */
function rng(seed: number) {
  let state = seed;
  return () => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state / 2147483648;
  };
}

async function send(
  h: Harness,
  token: string,
  type: Sent["type"],
  amount: string,
  referenceId: string,
): Promise<Sent> {
  const path = type === "deposit" ? "/api/v1/wallet/deposits" : "/api/v1/wallet/withdrawals";
  const res = await call(h.app, "POST", path, { token, body: { amount, reference_id: referenceId } });
  return { type, amount, referenceId, status: res.status, body: res.body };
}

interface Row {
  id: string;
  type: string;
  status: string;
  amount: string;
  reference_id: string;
  balance_after: string;
  seq: string;
}

async function ledger(h: Harness, walletId: string): Promise<Row[]> {
  return await h.sql<Row[]>`
    SELECT id, type, status, amount::text, reference_id, balance_after::text, seq::text
    FROM wallet_transactions WHERE wallet_id = ${walletId} ORDER BY wallet_transactions.seq`;
}

/** Every invariant of the books of one wallet after a storm of requests. */
async function assertConsistent(h: Harness, walletId: string, sent: Sent[], enableEvents: number) {
  for (const s of sent) {
    assert.ok(s.status === 201 || s.status === 400, `unexpected ${s.status}: ${JSON.stringify(s.body)}`);
    if (s.status === 400) {
      assert.equal(s.type, "withdrawal", JSON.stringify(s));
      assert.deepEqual(s.body, { status: "fail", data: { error: "Insufficient balance" } });
    }
  }
  const wallet = (await dbWallet(h.sql, walletId))!;
  const rows = await ledger(h, walletId);
  const byRef = new Map(rows.map((r) => [r.reference_id, r]));
  assert.equal(rows.length, sent.length, "one ledger row per request");

  // every HTTP answer matches its recorded row
  let fromResponses = 0n;
  for (const s of sent) {
    const row = byRef.get(s.referenceId);
    assert.ok(row, `no row for ${s.referenceId}`);
    assert.equal(row.type, s.type);
    assert.equal(BigInt(row.amount), cents(s.amount));
    if (s.status === 201) {
      const data = s.type === "deposit" ? s.body.data.deposit : s.body.data.withdrawal;
      assert.equal(row.status, "success");
      assert.equal(data.id, row.id);
      assert.equal(data.reference_id, s.referenceId);
      assert.equal(BigInt(Math.round(data.amount * 100)), cents(s.amount));
      fromResponses += s.type === "deposit" ? cents(s.amount) : -cents(s.amount);
    } else {
      assert.equal(row.status, "failed");
    }
  }

  // the balance is the sum of the successful answers and of the ledger, and was never negative
  let fromLedger = 0n;
  let running = 0n;
  for (const row of rows) {
    if (row.status === "success") {
      fromLedger += row.type === "deposit" ? BigInt(row.amount) : -BigInt(row.amount);
    }
    running = row.status === "success" ? fromLedger : running;
    assert.equal(BigInt(row.balance_after), running, `balance_after of seq ${row.seq}`);
    assert.ok(BigInt(row.balance_after) >= 0n);
    if (row.status === "failed") {
      // refused only when the balance at that point really was too small
      assert.ok(BigInt(row.amount) > BigInt(row.balance_after), `seq ${row.seq} refused with enough balance`);
    }
  }
  assert.equal(wallet.balance, fromResponses);
  assert.equal(wallet.balance, fromLedger);
  assert.ok(wallet.balance >= 0n);

  // exactly one outbox row per committed change, versions 1..N without gaps
  const outbox = await h.sql<{ wallet_version: string; event_type: string }[]>`
    SELECT wallet_version::text, event_type FROM outbox WHERE wallet_id = ${walletId} ORDER BY outbox.wallet_version`;
  assert.equal(outbox.length, rows.length + enableEvents);
  assert.equal(wallet.version, BigInt(outbox.length));
  assert.deepEqual(outbox.map((o) => Number(o.wallet_version)), outbox.map((_, i) => i + 1));
  const counts = (type: string) => outbox.filter((o) => o.event_type === type).length;
  assert.equal(counts("deposit.succeeded"), rows.filter((r) => r.type === "deposit").length);
  assert.equal(
    counts("withdrawal.succeeded"),
    rows.filter((r) => r.type === "withdrawal" && r.status === "success").length,
  );
  assert.equal(counts("withdrawal.failed"), rows.filter((r) => r.status === "failed").length);
  assert.equal(counts("wallet.enabled"), enableEvents);
}

/** 200 mixed requests, half deposits half withdrawals, sized so that some withdrawals must fail. */
function storm(seed: number, count = 199) {
  const random = rng(seed);
  return Array.from({ length: count }, (_, i) => {
    const type: Sent["type"] = random() < 0.5 ? "deposit" : "withdrawal";
    const amount = `${1 + Math.floor(random() * 300)}.${String(Math.floor(random() * 100)).padStart(2, "0")}`;
    return { type, amount, referenceId: `${type}-${i}-${crypto.randomUUID()}` };
  }).concat(
    // more than every deposit together: refused whenever it runs
    { type: "withdrawal", amount: "1000000", referenceId: `too-much-${crypto.randomUUID()}` },
  );
}

describe("simultaneous deposits and withdrawals on one wallet", () => {
  it("200 mixed requests through one service keep balance == deposits - withdrawals, one event each", async () => {
    const { token, walletId } = await enabledWallet(one.app);
    const requests = storm(1);
    const sent = await Promise.all(requests.map((r) => send(one, token, r.type, r.amount, r.referenceId)));
    assert.ok(sent.some((s) => s.status === 400), "the mix makes some withdrawals fail");
    assert.ok(sent.some((s) => s.type === "withdrawal" && s.status === 201));
    await assertConsistent(one, walletId, sent, 1);
  });

  it("200 mixed requests through two services (two pools) keep the same invariants", async () => {
    const { token, walletId } = await enabledWallet(one.app);
    const requests = storm(2);
    const sent = await Promise.all(
      requests.map((r, i) => send(i % 2 === 0 ? one : two, token, r.type, r.amount, r.referenceId)),
    );
    assert.ok(sent.some((s) => s.status === 400));
    await assertConsistent(one, walletId, sent, 1);
  });

  it("withdrawals racing for the last money: exactly the affordable ones succeed", async () => {
    const { token, walletId } = await enabledWallet(one.app);
    const seed = await send(one, token, "deposit", "100", `seed-${crypto.randomUUID()}`);
    assert.equal(seed.status, 201);
    const sent = await Promise.all(
      Array.from({ length: 60 }, (_, i) => send(i % 2 ? one : two, token, "withdrawal", "10", `w-${i}`)),
    );
    assert.equal(sent.filter((s) => s.status === 201).length, 10);
    assert.equal(sent.filter((s) => s.status === 400).length, 50);
    assert.equal((await dbWallet(one.sql, walletId))!.balance, 0n);
    await assertConsistent(one, walletId, [seed, ...sent], 1);
  });
});

describe("racing requests with one reference_id", () => {
  for (const mode of ["one service", "two services"] as const) {
    it(`${mode}: 50 identical deposits make one transaction and 50 identical 201 bodies`, async () => {
      const { token, walletId } = await enabledWallet(one.app);
      const ref = crypto.randomUUID();
      const sent = await Promise.all(
        Array.from(
          { length: 50 },
          (_, i) => send(mode === "two services" && i % 2 ? two : one, token, "deposit", "25.5", ref),
        ),
      );
      for (const s of sent) {
        assert.equal(s.status, 201, JSON.stringify(s.body));
        assert.deepEqual(s.body, sent[0].body);
      }
      const rows = await ledger(one, walletId);
      assert.equal(rows.length, 1);
      assert.equal(rows[0].id, sent[0].body.data.deposit.id);
      const wallet = (await dbWallet(one.sql, walletId))!;
      assert.equal(wallet.balance, 2550n);
      assert.equal(wallet.version, 2n);
      const outbox = await one.sql`SELECT 1 FROM outbox WHERE wallet_id = ${walletId}`;
      assert.equal(outbox.length, 2);
    });

    it(`${mode}: identical refused withdrawals make one failed transaction and identical 400 bodies`, async () => {
      const { token, walletId } = await enabledWallet(one.app);
      const ref = crypto.randomUUID();
      const sent = await Promise.all(
        Array.from(
          { length: 30 },
          (_, i) => send(mode === "two services" && i % 2 ? two : one, token, "withdrawal", "1", ref),
        ),
      );
      for (const s of sent) {
        assert.equal(s.status, 400);
        assert.deepEqual(s.body, { status: "fail", data: { error: "Insufficient balance" } });
      }
      const rows = await ledger(one, walletId);
      assert.equal(rows.length, 1);
      assert.equal(rows[0].status, "failed");
      assert.equal((await dbWallet(one.sql, walletId))!.version, 2n);
    });

    it(`${mode}: different requests with one reference_id make one transaction, the others get 409`, async () => {
      const { token, walletId } = await enabledWallet(one.app);
      assert.equal((await send(one, token, "deposit", "1000", crypto.randomUUID())).status, 201);
      const ref = crypto.randomUUID();
      const variants: Array<[Sent["type"], string]> = [
        ["deposit", "10"],
        ["deposit", "11"],
        ["withdrawal", "10"],
        ["withdrawal", "12.5"],
      ];
      const sent = await Promise.all(
        Array.from({ length: 48 }, (_, i) => {
          const [type, amount] = variants[i % variants.length];
          return send(mode === "two services" && Math.floor(i / 4) % 2 ? two : one, token, type, amount, ref);
        }),
      );
      const winners = sent.filter((s) => s.status === 201);
      const losers = sent.filter((s) => s.status !== 201);
      assert.ok(winners.length >= 1);
      // all winners sent the same request, and got the same body
      for (const w of winners) {
        assert.equal(w.type, winners[0].type);
        assert.equal(w.amount, winners[0].amount);
        assert.deepEqual(w.body, winners[0].body);
      }
      assert.equal(winners.length, 12, "every request identical to the recorded one is answered with it");
      for (const l of losers) {
        assert.equal(l.status, 409, JSON.stringify(l.body));
        assert.deepEqual(l.body, {
          status: "fail",
          data: { error: { reference_id: ["Reference ID has already been used."] } },
        });
        assert.ok(l.type !== winners[0].type || l.amount !== winners[0].amount);
      }
      const rows = (await ledger(one, walletId)).filter((r) => r.reference_id === ref);
      assert.equal(rows.length, 1);
      assert.equal(rows[0].type, winners[0].type);
      assert.equal(BigInt(rows[0].amount), cents(winners[0].amount));
      const wallet = (await dbWallet(one.sql, walletId))!;
      const expected = 100000n + (winners[0].type === "deposit" ? 1n : -1n) * cents(winners[0].amount);
      assert.equal(wallet.balance, expected);
      assert.equal(wallet.version, 3n);
      const outbox = await one.sql`SELECT 1 FROM outbox WHERE wallet_id = ${walletId}`;
      assert.equal(outbox.length, 3);
    });
  }

  it("two services without the in-process batcher between them: the row lock serialises every change", async () => {
    // Each request goes straight to a WalletService (no HTTP), alternating services, to rule out the HTTP
    // layer; the batcher of each service only sees half the requests.
    const { token, walletId } = await enabledWallet(one.app);
    assert.ok(token);
    const jobs = Array.from({ length: 100 }, (_, i) => {
      const service = i % 2 ? two.wallets : one.wallets;
      return i % 3 === 0
        ? service.withdraw(walletId, 700n, `w-${i}`).then(() => "ok", (e) => e.refusal ?? String(e))
        : service.deposit(walletId, 500n, `d-${i}`).then(() => "ok", (e) => e.refusal ?? String(e));
    });
    const results = await Promise.all(jobs);
    for (const r of results) assert.ok(r === "ok" || r === "insufficient_balance", r);
    const rows = await ledger(one, walletId);
    assert.equal(rows.length, 100);
    const balance = rows.reduce(
      (sum, r) =>
        r.status !== "success" ? sum : r.type === "deposit" ? sum + BigInt(r.amount) : sum - BigInt(r.amount),
      0n,
    );
    const wallet = (await dbWallet(one.sql, walletId))!;
    assert.equal(wallet.balance, balance);
    assert.equal(wallet.version, 101n);
    const versions = await one.sql<{ v: string }[]>`
      SELECT wallet_version::text AS v FROM outbox WHERE wallet_id = ${walletId} ORDER BY outbox.wallet_version`;
    assert.deepEqual(versions.map((r) => Number(r.v)), Array.from({ length: 101 }, (_, i) => i + 1));
  });
});
