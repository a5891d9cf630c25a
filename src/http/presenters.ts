/** Turns wallet-domain values into the contract's response fields (snake_case, JSON numbers, ISO times). */
import { centsToNumber } from "../wallet/money.ts";
import type { HistoryEntry, Wallet, WalletTransaction } from "../wallet/wallet_rules.ts";
import type { WalletView } from "../wallet/wallet_service.ts";

/** Exact decimal text -> JSON number (the shortest text of that double is the same decimal). */
function decimalToNumber(decimal: string): number {
  return Number(decimal);
}

export function presentEnabledView(view: WalletView) {
  return {
    id: view.id,
    owned_by: view.customerXid,
    status: "enabled" as const,
    enabled_at: view.enabledAt ?? "",
    balance: decimalToNumber(view.balance),
  };
}

export function presentEnabledWallet(wallet: Wallet) {
  return {
    id: wallet.id,
    owned_by: wallet.customerXid,
    status: "enabled" as const,
    enabled_at: wallet.enabledAt?.toISOString() ?? "",
    balance: centsToNumber(wallet.balance),
  };
}

export function presentDisabledWallet(wallet: Wallet) {
  return {
    id: wallet.id,
    owned_by: wallet.customerXid,
    status: "disabled" as const,
    disabled_at: wallet.disabledAt?.toISOString() ?? "",
    balance: centsToNumber(wallet.balance),
  };
}

export function presentTransaction(transaction: HistoryEntry) {
  return {
    id: transaction.id,
    status: transaction.status,
    transacted_at: transaction.createdAt.toISOString(),
    type: transaction.type,
    amount: centsToNumber(transaction.amount),
    reference_id: transaction.referenceId,
  };
}

export function presentDeposit(transaction: WalletTransaction, customerXid: string) {
  return {
    id: transaction.id,
    deposited_by: customerXid,
    status: "success" as const,
    deposited_at: transaction.createdAt.toISOString(),
    amount: centsToNumber(transaction.amount),
    reference_id: transaction.referenceId,
  };
}

export function presentWithdrawal(transaction: WalletTransaction, customerXid: string) {
  return {
    id: transaction.id,
    withdrawn_by: customerXid,
    status: "success" as const,
    withdrawn_at: transaction.createdAt.toISOString(),
    amount: centsToNumber(transaction.amount),
    reference_id: transaction.referenceId,
  };
}
