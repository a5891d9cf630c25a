/** Unit tests of the pure wallet rules (src/wallet/wallet_rules.ts): no database, no HTTP. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  decideDisable,
  decideEnable,
  decideMoneyRequests,
  type MoneyRequest,
  replayRefusal,
  type Wallet,
  type WalletTransaction,
} from "../src/wallet/wallet_rules.ts";
import { MAX_BALANCE_CENTS } from "../src/wallet/money.ts";

const NOW = new Date("2026-11-24T04:36:14.123Z");

function wallet(overrides: Partial<Wallet> = {}): Wallet {
  return {
    id: crypto.randomUUID(),
    customerXid: "cust-1",
    status: "enabled",
    balance: 0n,
    version: 1n,
    enabledAt: new Date("2026-01-01T00:00:00Z"),
    disabledAt: null,
    ...overrides,
  };
}

const deposit = (amount: bigint, referenceId: string): MoneyRequest => ({
  type: "deposit",
  amount,
  referenceId,
});
const withdrawal = (amount: bigint, referenceId: string): MoneyRequest => ({
  type: "withdrawal",
  amount,
  referenceId,
});

function created(outcome: ReturnType<typeof decideMoneyRequests>["outcomes"][number]): WalletTransaction {
  assert.equal(outcome.kind, "created");
  return (outcome as { transaction: WalletTransaction }).transaction;
}

describe("decideMoneyRequests", () => {
  it("applies a batch in request order: a withdrawal before the deposit fails, after it succeeds", () => {
    const locked = wallet({ balance: 0n, version: 4n });
    const decision = decideMoneyRequests(
      locked,
      [withdrawal(5000n, "w1"), deposit(10000n, "d1"), withdrawal(5000n, "w2"), withdrawal(6000n, "w3")],
      new Map(),
      NOW,
    );
    const [w1, d1, w2, w3] = decision.outcomes.map(created);
    assert.deepEqual([w1.status, d1.status, w2.status, w3.status], [
      "failed",
      "success",
      "success",
      "failed",
    ]);
    assert.deepEqual([w1.balanceAfter, d1.balanceAfter, w2.balanceAfter, w3.balanceAfter], [
      0n,
      10000n,
      5000n,
      5000n,
    ]);
    assert.equal(decision.wallet.balance, 5000n);
    assert.equal(decision.wallet.version, 8n, "one version per created transaction, failed ones included");
    assert.equal(decision.newTransactions.length, 4);
    assert.deepEqual(decision.newTransactions, [w1, d1, w2, w3]);
    for (const t of decision.newTransactions) {
      assert.equal(t.walletId, locked.id);
      assert.equal(t.createdAt, NOW);
      assert.match(t.id, /^[0-9a-f-]{36}$/);
    }
    assert.equal(new Set(decision.newTransactions.map((t) => t.id)).size, 4);
    // the locked input is not mutated
    assert.equal(locked.balance, 0n);
    assert.equal(locked.version, 4n);
  });

  it("emits one outbox entry per created transaction carrying balance_after and consecutive versions", () => {
    const locked = wallet({ balance: 100n, version: 10n });
    const decision = decideMoneyRequests(
      locked,
      [deposit(50n, "a"), withdrawal(500n, "b"), withdrawal(150n, "c")],
      new Map(),
      NOW,
    );
    assert.deepEqual(decision.outbox.map((o) => o.version), [11n, 12n, 13n]);
    assert.deepEqual(decision.outbox.map((o) => o.type), [
      "deposit.succeeded",
      "withdrawal.failed",
      "withdrawal.succeeded",
    ]);
    assert.deepEqual(decision.outbox.map((o) => o.payload.balance), ["1.5", "1.5", "0"]);
    assert.deepEqual(decision.outbox.map((o) => o.payload.version), [11, 12, 13]);
    decision.outbox.forEach((entry, i) => {
      const transaction = decision.newTransactions[i];
      assert.equal(entry.walletId, locked.id);
      assert.equal(entry.payload.event_id, entry.eventId);
      assert.equal(entry.payload.type, entry.type);
      assert.equal(entry.payload.wallet_id, locked.id);
      assert.equal(entry.payload.customer_xid, "cust-1");
      assert.equal(entry.payload.wallet_status, "enabled");
      assert.equal(entry.payload.occurred_at, NOW.toISOString());
      assert.deepEqual(entry.payload.transaction, {
        id: transaction.id,
        type: transaction.type,
        status: transaction.status,
        amount: ["0.5", "5", "1.5"][i],
        reference_id: transaction.referenceId,
        transacted_at: NOW.toISOString(),
      });
    });
    assert.equal(new Set(decision.outbox.map((o) => o.eventId)).size, 3);
  });

  it("replays a reference repeated inside one batch (same type and amount) without a new transaction", () => {
    const decision = decideMoneyRequests(
      wallet(),
      [deposit(100n, "r"), deposit(100n, "r"), withdrawal(100n, "r")],
      new Map(),
      NOW,
    );
    const first = created(decision.outcomes[0]);
    assert.deepEqual(decision.outcomes[1], { kind: "replayed", transaction: first });
    assert.deepEqual(decision.outcomes[2], { kind: "refused", refusal: "reference_conflict" });
    assert.equal(decision.newTransactions.length, 1);
    assert.equal(decision.outbox.length, 1);
    assert.equal(decision.wallet.balance, 100n);
    assert.equal(decision.wallet.version, 2n);
  });

  it("refuses another amount for a reference used earlier in the batch", () => {
    const decision = decideMoneyRequests(wallet(), [deposit(100n, "r"), deposit(101n, "r")], new Map(), NOW);
    assert.equal(decision.outcomes[0].kind, "created");
    assert.deepEqual(decision.outcomes[1], { kind: "refused", refusal: "reference_conflict" });
    assert.equal(decision.wallet.balance, 100n);
  });

  it("replays or refuses against transactions already recorded", () => {
    const locked = wallet({ balance: 700n, version: 3n });
    const recordedDeposit: WalletTransaction = {
      id: crypto.randomUUID(),
      walletId: locked.id,
      type: "deposit",
      status: "success",
      amount: 700n,
      referenceId: "old",
      balanceAfter: 700n,
      createdAt: new Date("2026-01-02T00:00:00Z"),
    };
    const recordedFailure: WalletTransaction = {
      ...recordedDeposit,
      id: crypto.randomUUID(),
      type: "withdrawal",
      status: "failed",
      amount: 5000n,
      referenceId: "refused",
    };
    const recorded = new Map([["old", recordedDeposit], ["refused", recordedFailure]]);
    const decision = decideMoneyRequests(
      locked,
      [deposit(700n, "old"), withdrawal(700n, "old"), withdrawal(5000n, "refused"), withdrawal(500n, "new")],
      recorded,
      NOW,
    );
    assert.deepEqual(decision.outcomes[0], { kind: "replayed", transaction: recordedDeposit });
    assert.deepEqual(decision.outcomes[1], { kind: "refused", refusal: "reference_conflict" });
    // a failed withdrawal is replayed as such even though the balance would now suffice... it does not here,
    // but the point is that it is not decided afresh
    assert.deepEqual(decision.outcomes[2], { kind: "replayed", transaction: recordedFailure });
    assert.equal(replayRefusal(recordedFailure), "insufficient_balance");
    assert.equal(replayRefusal(recordedDeposit), null);
    const fresh = created(decision.outcomes[3]);
    assert.equal(fresh.status, "success");
    assert.equal(decision.wallet.balance, 200n);
    assert.equal(decision.wallet.version, 4n);
    assert.equal(decision.newTransactions.length, 1);
  });

  it("a refused withdrawal replays as refused even after the balance became enough", () => {
    const locked = wallet({ balance: 0n });
    const first = decideMoneyRequests(locked, [withdrawal(100n, "w")], new Map(), NOW);
    const failed = created(first.outcomes[0]);
    assert.equal(failed.status, "failed");
    const rich = { ...first.wallet, balance: 1000n };
    const again = decideMoneyRequests(rich, [withdrawal(100n, "w")], new Map([["w", failed]]), NOW);
    assert.deepEqual(again.outcomes[0], { kind: "replayed", transaction: failed });
    assert.equal(again.newTransactions.length, 0);
    assert.equal(again.wallet.balance, 1000n);
  });

  it("refuses a deposit past the balance limit, writes nothing for it, and goes on with the batch", () => {
    const locked = wallet({ balance: MAX_BALANCE_CENTS - 100n, version: 7n });
    const decision = decideMoneyRequests(
      locked,
      [deposit(101n, "over"), deposit(100n, "exact"), deposit(1n, "one-more"), deposit(1n, "over")],
      new Map(),
      NOW,
    );
    assert.deepEqual(decision.outcomes[0], { kind: "refused", refusal: "balance_limit_exceeded" });
    assert.equal(created(decision.outcomes[1]).balanceAfter, MAX_BALANCE_CENTS);
    assert.deepEqual(decision.outcomes[2], { kind: "refused", refusal: "balance_limit_exceeded" });
    // the refused reference was not recorded, so reusing it is decided afresh (refused again here)
    assert.deepEqual(decision.outcomes[3], { kind: "refused", refusal: "balance_limit_exceeded" });
    assert.equal(decision.newTransactions.length, 1);
    assert.equal(decision.outbox.length, 1);
    assert.equal(decision.wallet.version, 8n);
    assert.equal(decision.wallet.balance, MAX_BALANCE_CENTS);
  });

  it("withdraws the whole balance exactly", () => {
    const decision = decideMoneyRequests(
      wallet({ balance: 12345n }),
      [withdrawal(12345n, "all")],
      new Map(),
      NOW,
    );
    assert.equal(created(decision.outcomes[0]).status, "success");
    assert.equal(decision.wallet.balance, 0n);
  });

  it("refuses everything on a disabled wallet, replays included, and writes nothing", () => {
    const locked = wallet({ status: "disabled", balance: 500n, disabledAt: NOW });
    const recorded = new Map<string, WalletTransaction>();
    const decision = decideMoneyRequests(locked, [deposit(1n, "a"), withdrawal(1n, "b")], recorded, NOW);
    assert.deepEqual(decision.outcomes, [
      { kind: "refused", refusal: "wallet_disabled" },
      { kind: "refused", refusal: "wallet_disabled" },
    ]);
    assert.equal(decision.newTransactions.length, 0);
    assert.equal(decision.outbox.length, 0);
    assert.equal(decision.wallet, locked);
  });
});

describe("decideEnable", () => {
  it("enables a disabled wallet, keeps its balance and bumps the version by one", () => {
    const locked = wallet({
      status: "disabled",
      balance: 4200n,
      version: 5n,
      enabledAt: null,
      disabledAt: NOW,
    });
    const decision = decideEnable(locked, NOW);
    assert.equal(decision.kind, "changed");
    if (decision.kind !== "changed") return;
    assert.equal(decision.wallet.status, "enabled");
    assert.equal(decision.wallet.balance, 4200n);
    assert.equal(decision.wallet.version, 6n);
    assert.equal(decision.wallet.enabledAt, NOW);
    assert.equal(decision.outbox.type, "wallet.enabled");
    assert.equal(decision.outbox.version, 6n);
    assert.equal(decision.outbox.payload.version, 6);
    assert.equal(decision.outbox.payload.balance, "42");
    assert.equal(decision.outbox.payload.wallet_status, "enabled");
    assert.equal(decision.outbox.payload.enabled_at, NOW.toISOString());
    assert.equal(decision.outbox.payload.transaction, null);
    assert.equal(locked.status, "disabled", "input not mutated");
  });

  it("refuses an enabled wallet with already_enabled", () => {
    assert.deepEqual(decideEnable(wallet(), NOW), { kind: "refused", refusal: "already_enabled" });
  });
});

describe("decideDisable", () => {
  it("disables an enabled wallet and bumps the version by one", () => {
    const locked = wallet({ balance: 99n, version: 2n });
    const decision = decideDisable(locked, NOW);
    assert.equal(decision.kind, "changed");
    if (decision.kind !== "changed") return;
    assert.equal(decision.wallet.status, "disabled");
    assert.equal(decision.wallet.disabledAt, NOW);
    assert.equal(decision.wallet.balance, 99n);
    assert.equal(decision.wallet.version, 3n);
    assert.equal(decision.outbox.type, "wallet.disabled");
    assert.equal(decision.outbox.version, 3n);
    assert.equal(decision.outbox.payload.balance, "0.99");
    assert.equal(decision.outbox.payload.wallet_status, "disabled");
    assert.equal(decision.outbox.payload.disabled_at, NOW.toISOString());
  });

  it("refuses a never-enabled or disabled wallet with already_disabled", () => {
    const never = wallet({ status: "disabled", enabledAt: null, version: 0n });
    assert.deepEqual(decideDisable(never, NOW), { kind: "refused", refusal: "already_disabled" });
    const disabled = wallet({ status: "disabled", disabledAt: NOW });
    assert.deepEqual(decideDisable(disabled, NOW), { kind: "refused", refusal: "already_disabled" });
  });
});
