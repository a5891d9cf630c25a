/**
 * Exact money: amounts are bigint minor units (cents). No floating-point arithmetic ever touches a balance;
 * numbers only exist at the JSON edge, converted through their decimal text.
 */

/** Largest amount of a single deposit or withdrawal: 1,000,000,000,000.00. */
export const MAX_TRANSACTION_CENTS = 100_000_000_000_000n;
/** Largest balance a wallet may hold: 9,999,999,999,999.99 (exactly representable as a JSON number). */
export const MAX_BALANCE_CENTS = 999_999_999_999_999n;

/** Why an amount was refused, phrased for the client. */
export const AMOUNT_INVALID = "Must be a positive amount with at most 2 decimal places.";
export const AMOUNT_TOO_LARGE = "Must be at most 1000000000000.";

const DECIMAL = /^(\d+)(?:\.(\d+))?$/;
/** Digits of the whole part of the largest amount (1000000000000); more can only be too large. */
const MAX_WHOLE_DIGITS = 13;

/**
 * Parse a request amount into cents: a JSON number (taken by its shortest decimal text) or a decimal string of
 * digits with an optional fraction. No sign, spaces, exponent or hex; at most 2 decimals by value.
 */
export function parseAmount(input: unknown): { cents: bigint } | { error: string } {
  let text: string;
  if (typeof input === "number") {
    if (!Number.isFinite(input)) return { error: AMOUNT_INVALID };
    text = String(input); // shortest round-trip text: 100.5 -> "100.5", 1e21 -> "1e+21" (refused below)
  } else if (typeof input === "string") {
    text = input;
  } else {
    return { error: AMOUNT_INVALID };
  }
  const match = DECIMAL.exec(text);
  if (!match) return { error: AMOUNT_INVALID };
  const [, digits, fraction = ""] = match;
  const significantFraction = withoutTrailingZeros(fraction);
  if (significantFraction.length > 2) return { error: AMOUNT_INVALID };
  // Judged by length before BigInt (whose cost grows with the square of it): leading zeros are no value.
  const whole = digits.replace(/^0+/, "");
  if (whole.length > MAX_WHOLE_DIGITS) return { error: AMOUNT_TOO_LARGE };
  const cents = BigInt(whole) * 100n + BigInt(significantFraction.padEnd(2, "0"));
  if (cents <= 0n) return { error: AMOUNT_INVALID };
  if (cents > MAX_TRANSACTION_CENTS) return { error: AMOUNT_TOO_LARGE };
  return { cents };
}

/**
 * `text` without its trailing zeros. Not `replace(/0+$/, "")`: on "000…01" the regex engine tries every start
 * and every length (a 1 MiB amount ran for minutes).
 */
function withoutTrailingZeros(text: string): string {
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) === 0x30) end--;
  return text.slice(0, end);
}

/** Decimal text of an amount in cents: 12345n -> "123.45", 500n -> "5". */
export function centsToDecimal(cents: bigint): string {
  const sign = cents < 0n ? "-" : "";
  const abs = cents < 0n ? -cents : cents;
  const whole = abs / 100n;
  const fraction = (abs % 100n).toString().padStart(2, "0").replace(/0+$/, "");
  return fraction ? `${sign}${whole}.${fraction}` : `${sign}${whole}`;
}

/**
 * The JSON number for an amount in cents. Parsing the exact decimal text yields the double whose shortest
 * text is that same decimal (every value up to MAX_BALANCE_CENTS has at most 15 significant digits), so the
 * serialized JSON carries the exact amount.
 */
export function centsToNumber(cents: bigint): number {
  return Number(centsToDecimal(cents));
}
