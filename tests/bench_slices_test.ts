/** The bench's interleaved runs: slices of one load add up to one figure (tests/bench/tools.ts). */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { combineSlices, type LoadResult } from "./bench/tools.ts";

function slice(round: number, fields: Partial<LoadResult>): LoadResult {
  return {
    label: `2. spread deposits (service) [${round}/2]`,
    tool: "wrk",
    command: "wrk -d10s",
    seconds: 10,
    ok: 0,
    errors: 0,
    rate: 0,
    p50: null,
    p99: null,
    max: null,
    mean: null,
    ...fields,
  };
}

describe("combineSlices", () => {
  it("adds counts and time, averages p50, keeps the largest p99 and max", () => {
    const combined = combineSlices([
      slice(1, { ok: 20_000, errors: 1, seconds: 10, p50: 10, p99: 30, max: 80, mean: 12 }),
      slice(2, { ok: 30_000, errors: 2, seconds: 5, p50: 14, p99: 25, max: 90, mean: 8 }),
    ]);
    assert.equal(combined.label, "2. spread deposits (service)");
    assert.equal(combined.ok, 50_000);
    assert.equal(combined.errors, 3);
    assert.equal(combined.seconds, 15);
    assert.equal(combined.rate, 50_000 / 15, "deposits over the slices' whole time, not a mean of rates");
    assert.equal(combined.p50, 12);
    assert.equal(combined.p99, 30);
    assert.equal(combined.max, 90);
    assert.equal(combined.mean, (12 * 20_000 + 8 * 30_000) / 50_000, "weighted by each slice's count");
    assert.match(combined.command, /2 slices of 10 s, interleaved/);
  });

  it("leaves a single run as it is", () => {
    const only = slice(1, { ok: 5, seconds: 1, rate: 5 });
    assert.equal(combineSlices([only]), only);
  });
});
