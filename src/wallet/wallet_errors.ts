/**
 * Outcomes of the wallet rules that are refusals, not faults. The HTTP layer maps each kind to the contract's
 * status and message; the rules themselves know nothing of HTTP.
 */
export type WalletRefusal =
  | "wallet_disabled"
  | "already_enabled"
  | "already_disabled"
  | "insufficient_balance"
  | "balance_limit_exceeded"
  | "reference_conflict"
  | "wallet_not_found";

/** Thrown by the wallet service when a request is refused by a wallet rule. */
export class WalletRefusedError extends Error {
  constructor(readonly refusal: WalletRefusal) {
    super(`Wallet request refused: ${refusal}`);
    this.name = "WalletRefusedError";
  }
}
