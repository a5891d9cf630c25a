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

/**
 * The write could not be done now, and nothing of it was or will be committed: its deadline passed before it
 * could be written, the write queue was full, or PostgreSQL failed before its statement was sent. A retry
 * (with the same reference_id) is safe.
 */
export class WriteNotAppliedError extends Error {
  constructor(readonly reason: "deadline" | "queue_full" | "unavailable", options?: ErrorOptions) {
    super(NOT_APPLIED_REASONS[reason], options);
    this.name = "WriteNotAppliedError";
  }
}

const NOT_APPLIED_REASONS = {
  deadline: "Request deadline passed; nothing was written",
  queue_full: "Write queue is full",
  unavailable: "PostgreSQL failed before the write was sent; nothing was written",
};

/** The request's deadline passed before it could be done; for a write, nothing of it was committed. */
export class RequestTimeoutError extends WriteNotAppliedError {
  constructor() {
    super("deadline");
    this.name = "RequestTimeoutError";
  }
}
