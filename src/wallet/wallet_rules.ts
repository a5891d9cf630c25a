/**
 * The wallet rules, in one place and free of HTTP and SQL: given a wallet as read under its row lock, decide
 * what each request does, what gets written, and which event each change emits.
 *
 * Every function here is pure, so the rules are unit-testable and the caller decides how to persist.
 */
import { EVENT_SCHEMA_VERSION, type WalletEvent, type WalletEventType } from "../../outbox/event.ts";
import { centsToDecimal, MAX_BALANCE_CENTS } from "./money.ts";
import type { WalletRefusal } from "./wallet_errors.ts";

export type WalletStatus = "enabled" | "disabled";
export type TransactionType = "deposit" | "withdrawal";
export type TransactionStatus = "success" | "failed";

/** A wallet as read under its row lock. */
export interface Wallet {
  id: string;
  customerXid: string;
  status: WalletStatus;
  balance: bigint;
  version: bigint;
  enabledAt: Date | null;
  disabledAt: Date | null;
}

/** A recorded deposit or withdrawal. */
export interface WalletTransaction {
  id: string;
  walletId: string;
  type: TransactionType;
  status: TransactionStatus;
  amount: bigint;
  referenceId: string;
  balanceAfter: bigint;
  createdAt: Date;
}

/** What a wallet's history shows of each transaction. */
export type HistoryEntry = Pick<
  WalletTransaction,
  "id" | "type" | "status" | "amount" | "referenceId" | "createdAt"
>;

/** One deposit or withdrawal request, already validated. */
export interface MoneyRequest {
  type: TransactionType;
  amount: bigint;
  referenceId: string;
}

/** What one money request came to. `replayed` answers a retry with the first request's transaction. */
export type MoneyOutcome =
  | { kind: "created"; transaction: WalletTransaction }
  | { kind: "replayed"; transaction: WalletTransaction }
  | { kind: "refused"; refusal: WalletRefusal };

/** An outbox row to write in the same database transaction as the change it describes. */
export interface OutboxEntry {
  eventId: string;
  walletId: string;
  version: bigint;
  type: WalletEventType;
  payload: WalletEvent;
}

/** Everything a batch of money requests writes, plus one outcome per request in request order. */
export interface MoneyDecision {
  outcomes: MoneyOutcome[];
  wallet: Wallet;
  newTransactions: WalletTransaction[];
  outbox: OutboxEntry[];
}

/** Decide a batch of deposits and withdrawals for one locked wallet, applied in order. */
export function decideMoneyRequests(
  locked: Wallet,
  requests: MoneyRequest[],
  recorded: ReadonlyMap<string, WalletTransaction>,
  now: Date,
): MoneyDecision {
  if (locked.status !== "enabled") {
    return {
      outcomes: requests.map(() => ({ kind: "refused", refusal: "wallet_disabled" })),
      wallet: locked,
      newTransactions: [],
      outbox: [],
    };
  }
  let wallet = locked;
  const known = new Map(recorded);
  const outcomes: MoneyOutcome[] = [];
  const newTransactions: WalletTransaction[] = [];
  const outbox: OutboxEntry[] = [];
  for (const request of requests) {
    const previous = known.get(request.referenceId);
    if (previous) {
      const sameRequest = previous.type === request.type && previous.amount === request.amount;
      outcomes.push(
        sameRequest
          ? { kind: "replayed", transaction: previous }
          : { kind: "refused", refusal: "reference_conflict" },
      );
      continue;
    }
    let status: TransactionStatus = "success";
    let balance = wallet.balance;
    if (request.type === "deposit") {
      balance += request.amount;
      // Past the limit nothing is written, so a later retry is decided afresh.
      if (balance > MAX_BALANCE_CENTS) {
        outcomes.push({ kind: "refused", refusal: "balance_limit_exceeded" });
        continue;
      }
    } else if (request.amount > balance) {
      status = "failed"; // recorded, shown in the history, balance unchanged
    } else {
      balance -= request.amount;
    }
    wallet = { ...wallet, balance, version: wallet.version + 1n };
    const transaction: WalletTransaction = {
      id: crypto.randomUUID(),
      walletId: wallet.id,
      type: request.type,
      status,
      amount: request.amount,
      referenceId: request.referenceId,
      balanceAfter: balance,
      createdAt: now,
    };
    known.set(request.referenceId, transaction);
    newTransactions.push(transaction);
    outbox.push(buildOutboxEntry(wallet, transactionEventType(transaction), now, transaction));
    outcomes.push({ kind: "created", transaction });
  }
  return { outcomes, wallet, newTransactions, outbox };
}

/** The refusal a replayed transaction answers with again (a failed withdrawal stays refused). */
export function replayRefusal(transaction: WalletTransaction): WalletRefusal | null {
  return transaction.status === "failed" ? "insufficient_balance" : null;
}

/** A change of wallet status (enable or disable) and the event it emits. */
export type StatusDecision =
  | { kind: "changed"; wallet: Wallet; outbox: OutboxEntry }
  | { kind: "refused"; refusal: WalletRefusal };

/** Enable a disabled wallet; its balance is kept from before. */
export function decideEnable(locked: Wallet, now: Date): StatusDecision {
  if (locked.status === "enabled") return { kind: "refused", refusal: "already_enabled" };
  const wallet: Wallet = { ...locked, status: "enabled", enabledAt: now, version: locked.version + 1n };
  return { kind: "changed", wallet, outbox: buildOutboxEntry(wallet, "wallet.enabled", now, null) };
}

/** Disable an enabled wallet. A wallet never enabled counts as already disabled. */
export function decideDisable(locked: Wallet, now: Date): StatusDecision {
  if (locked.status !== "enabled") return { kind: "refused", refusal: "already_disabled" };
  const wallet: Wallet = { ...locked, status: "disabled", disabledAt: now, version: locked.version + 1n };
  return { kind: "changed", wallet, outbox: buildOutboxEntry(wallet, "wallet.disabled", now, null) };
}

function transactionEventType(transaction: WalletTransaction): WalletEventType {
  if (transaction.type === "deposit") return "deposit.succeeded";
  return transaction.status === "success" ? "withdrawal.succeeded" : "withdrawal.failed";
}

function buildOutboxEntry(
  wallet: Wallet,
  type: WalletEventType,
  now: Date,
  transaction: WalletTransaction | null,
): OutboxEntry {
  const eventId = crypto.randomUUID();
  return {
    eventId,
    walletId: wallet.id,
    version: wallet.version,
    type,
    payload: {
      schema_version: EVENT_SCHEMA_VERSION,
      event_id: eventId,
      type,
      wallet_id: wallet.id,
      customer_xid: wallet.customerXid,
      version: Number(wallet.version),
      wallet_status: wallet.status,
      enabled_at: wallet.enabledAt?.toISOString() ?? null,
      disabled_at: wallet.disabledAt?.toISOString() ?? null,
      balance: centsToDecimal(wallet.balance),
      transaction: transaction && {
        id: transaction.id,
        type: transaction.type,
        status: transaction.status,
        amount: centsToDecimal(transaction.amount),
        reference_id: transaction.referenceId,
        transacted_at: transaction.createdAt.toISOString(),
      },
      occurred_at: now.toISOString(),
    },
  };
}
