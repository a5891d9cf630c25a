/**
 * A model of the API contract (../shared/spec/api.md) for the fuzz test: which status a request must get and
 * what it may write, decided from a description of the request and the model's own wallet states, written
 * from the contract's words and independent of the code under test.
 */

/** A JSON number literal as the request writes it. */
export class NumText {
  constructor(readonly text: string) {}
}

/** A field value as sent: JSON can carry any of them, forms only strings. */
export type FieldValue = string | NumText | boolean | null | FieldValue[] | { [key: string]: FieldValue };

export const MAX_TRANSACTION_CENTS = 100_000_000_000_000n;
export const MAX_BALANCE_CENTS = 999_999_999_999_999n;

/** Cents of a contract amount, or null: digits with an optional fraction, positive, <= 2 decimals by value, <= 1e12. */
export function contractAmount(value: FieldValue | undefined): bigint | null {
  const text = value instanceof NumText ? value.text : typeof value === "string" ? value : null;
  if (text === null) return null;
  const match = /^([0-9]+)(?:\.([0-9]+))?$/.exec(text);
  if (!match) return null;
  const fraction = (match[2] ?? "").padEnd(2, "0");
  if (/[^0]/.test(fraction.slice(2))) return null;
  const cents = BigInt(match[1]) * 100n + BigInt(fraction.slice(0, 2));
  return cents > 0n && cents <= MAX_TRANSACTION_CENTS ? cents : null;
}

/** An opaque id: a string, not blank, at most 64 code points, valid Unicode without NUL. */
export function contractId(value: FieldValue | undefined): boolean {
  return typeof value === "string" && value.trim() !== "" && [...value].length <= 64 &&
    value.isWellFormed() &&
    !value.includes("\0");
}

/** `is_disabled`: JSON true or the string "true" in any case. */
export function contractTrue(value: FieldValue | undefined): boolean {
  return value === true || (typeof value === "string" && value.toLowerCase() === "true");
}

/** The fields a body must carry on each endpoint, with their rules. */
export const FIELD_RULES: Record<string, Record<string, (value: FieldValue | undefined) => boolean>> = {
  init: { customer_xid: contractId },
  deposit: { amount: (v) => contractAmount(v) !== null, reference_id: contractId },
  withdrawal: { amount: (v) => contractAmount(v) !== null, reference_id: contractId },
  disable: { is_disabled: contractTrue },
};

/** The names of the fields that are missing (absent or null) or invalid; empty when the fields are good. */
export function fieldProblems(operation: string, fields: Record<string, FieldValue | undefined>): string[] {
  return Object.entries(FIELD_RULES[operation]).filter(([name, valid]) => !valid(fields[name])).map((
    [name],
  ) => name);
}

/** A wallet as the model knows it. */
export interface ModelWallet {
  enabled: boolean;
  balance: bigint;
  /** reference_id -> the first request's type, amount and status (replayed for an identical retry). */
  references: Map<string, { type: string; cents: bigint; status: number }>;
}

/** What the model expects of one request: its status, and the writes it makes. */
export interface Expectation {
  status: number;
  /** Field names of a 400 field error, or "message" for a 4xx whose error is a message. */
  errorFields?: string[] | "message";
  writes: { wallets: number; transactions: number; outbox: number; balance: bigint };
}

export function noWrites(status: number, errorFields?: string[] | "message"): Expectation {
  return { status, errorFields, writes: { wallets: 0, transactions: 0, outbox: 0, balance: 0n } };
}

/** Apply a deposit or withdrawal with valid fields to an enabled or disabled wallet. */
export function moneyRequest(
  wallet: ModelWallet,
  type: "deposit" | "withdrawal",
  cents: bigint,
  reference: string,
): Expectation {
  if (!wallet.enabled) return noWrites(404, "message");
  const prior = wallet.references.get(reference);
  if (prior) {
    if (prior.type === type && prior.cents === cents) return noWrites(prior.status);
    return noWrites(409, ["reference_id"]);
  }
  if (type === "deposit") {
    if (wallet.balance + cents > MAX_BALANCE_CENTS) return noWrites(400, "message");
    wallet.balance += cents;
    wallet.references.set(reference, { type, cents, status: 201 });
    return { status: 201, writes: { wallets: 0, transactions: 1, outbox: 1, balance: cents } };
  }
  if (cents > wallet.balance) {
    // refused, and still recorded as a failed transaction (with its event)
    wallet.references.set(reference, { type, cents, status: 400 });
    return {
      status: 400,
      errorFields: "message",
      writes: { wallets: 0, transactions: 1, outbox: 1, balance: 0n },
    };
  }
  wallet.balance -= cents;
  wallet.references.set(reference, { type, cents, status: 201 });
  return { status: 201, writes: { wallets: 0, transactions: 1, outbox: 1, balance: -cents } };
}
