/** Unit tests of src/wallet/money.ts: parsing request amounts and turning cents into JSON numbers. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  AMOUNT_INVALID,
  AMOUNT_TOO_LARGE,
  centsToDecimal,
  centsToNumber,
  MAX_BALANCE_CENTS,
  MAX_TRANSACTION_CENTS,
  parseAmount,
} from "../src/wallet/money.ts";

function cents(input: unknown): bigint {
  const parsed = parseAmount(input);
  if ("error" in parsed) assert.fail(`expected ${JSON.stringify(input)} to parse, got ${parsed.error}`);
  return parsed.cents;
}

describe("parseAmount", () => {
  it("accepts decimal strings of digits with an optional fraction", () => {
    assert.equal(cents("100"), 10000n);
    assert.equal(cents("100.5"), 10050n);
    assert.equal(cents("0100.50"), 10050n);
    assert.equal(cents("1.500"), 150n);
    assert.equal(cents("1.50"), 150n);
    assert.equal(cents("1.5"), 150n);
    assert.equal(cents("0.01"), 1n);
    assert.equal(cents("0.010000"), 1n);
  });

  it("accepts JSON numbers by value", () => {
    assert.equal(cents(100), 10000n);
    assert.equal(cents(100.5), 10050n);
    assert.equal(cents(0.1), 10n);
    assert.equal(cents(1e3), 100000n);
    assert.equal(cents(1.1), 110n);
  });

  it("accepts the per-transaction maximum and refuses a cent more", () => {
    assert.equal(cents("1000000000000"), MAX_TRANSACTION_CENTS);
    assert.equal(cents(1000000000000), MAX_TRANSACTION_CENTS);
    assert.equal(cents("1000000000000.00"), MAX_TRANSACTION_CENTS);
    assert.deepEqual(parseAmount("1000000000000.01"), { error: AMOUNT_TOO_LARGE });
    assert.deepEqual(parseAmount(1000000000000.01), { error: AMOUNT_TOO_LARGE });
    assert.deepEqual(parseAmount("99999999999999999999999"), { error: AMOUNT_TOO_LARGE });
  });

  it("judges very long digit strings by their length and value, leading and trailing zeros included", () => {
    const zeros = "0".repeat(1024 * 1024);
    assert.equal(cents(`${zeros}1`), 100n);
    assert.equal(cents(`${zeros}1000000000000.${zeros}`), MAX_TRANSACTION_CENTS);
    assert.equal(cents(`0.01${zeros}`), 1n);
    assert.deepEqual(parseAmount("9".repeat(1024 * 1024)), { error: AMOUNT_TOO_LARGE });
    // a trailing-zero regex would backtrack for minutes on these
    assert.deepEqual(parseAmount(`1.${zeros}1`), { error: AMOUNT_INVALID });
    assert.deepEqual(parseAmount(`1.${zeros}x`), { error: AMOUNT_INVALID });
    assert.deepEqual(parseAmount("10000000000000"), { error: AMOUNT_TOO_LARGE });
  });

  it("refuses zero, signs, spaces, exponents, hex, blanks and words", () => {
    for (
      const input of [
        "0",
        "0.00",
        "0.001",
        "-1",
        "+1",
        " 1",
        "1 ",
        "1e3",
        "1E3",
        "0x10",
        "",
        " ",
        "abc",
        ".5",
        "1.001",
        "1,5",
        "١٢",
        "Infinity",
        "NaN",
        "1.2.3",
      ]
    ) {
      assert.deepEqual(parseAmount(input), { error: AMOUNT_INVALID }, JSON.stringify(input));
    }
  });

  it("refuses JSON numbers that are not positive amounts of at most 2 decimals", () => {
    for (const input of [0, -1, -0, 1.001, 0.1 + 0.2, 1e-7, 1e21, NaN, Infinity, -Infinity]) {
      const parsed = parseAmount(input);
      assert.ok("error" in parsed, String(input));
    }
  });

  it("refuses non-numbers and non-strings", () => {
    for (const input of [true, false, null, undefined, {}, { amount: 1 }, [1], 10n]) {
      assert.deepEqual(parseAmount(input), { error: AMOUNT_INVALID }, String(input));
    }
  });
});

describe("centsToDecimal", () => {
  it("writes the shortest exact decimal", () => {
    assert.equal(centsToDecimal(0n), "0");
    assert.equal(centsToDecimal(1n), "0.01");
    assert.equal(centsToDecimal(10n), "0.1");
    assert.equal(centsToDecimal(500n), "5");
    assert.equal(centsToDecimal(12345n), "123.45");
    assert.equal(centsToDecimal(12340n), "123.4");
    assert.equal(centsToDecimal(-150n), "-1.5");
    assert.equal(centsToDecimal(-1n), "-0.01");
    assert.equal(centsToDecimal(MAX_BALANCE_CENTS), "9999999999999.99");
  });

  it("round-trips through parseAmount", () => {
    for (const value of [1n, 10n, 99n, 100n, 101n, 12345n, 100_000_000_000_000n]) {
      assert.equal(cents(centsToDecimal(value)), value);
    }
  });
});

describe("centsToNumber", () => {
  it("gives JSON numbers whose text is the exact amount", () => {
    assert.equal(centsToNumber(0n), 0);
    assert.equal(centsToNumber(30n), 0.3);
    assert.equal(JSON.stringify(centsToNumber(30n)), "0.3");
    assert.equal(JSON.stringify(centsToNumber(10050n)), "100.5");
    assert.equal(JSON.stringify(centsToNumber(MAX_TRANSACTION_CENTS)), "1000000000000");
  });

  it("carries the largest balance 9999999999999.99 exactly through JSON", () => {
    const text = JSON.stringify({ balance: centsToNumber(MAX_BALANCE_CENTS) });
    assert.equal(text, '{"balance":9999999999999.99}');
    assert.equal(String(JSON.parse(text).balance), centsToDecimal(MAX_BALANCE_CENTS));
  });

  it("round-trips every cent value near the top and a spread of values below", () => {
    const values: bigint[] = [];
    for (let i = 0n; i < 500n; i++) values.push(MAX_BALANCE_CENTS - i, i + 1n, 123456789n * i + 7n);
    for (const value of values) {
      const back = JSON.parse(JSON.stringify(centsToNumber(value)));
      assert.equal(centsToDecimal(value), String(back), `${value}`);
    }
  });
});
