/**
 * The bench's interleaved runs (tests/bench/tools.ts): slices of one load add up to one figure, and a round the
 * hypervisor took too much from is measured again.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { combineSlices, type LoadResult, takeTurns } from "./bench/tools.ts";

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

describe("takeTurns", () => {
  /** A load that returns the next steal share of `steals` for each slice, and records its labels. */
  function load(name: string, steals: number[], labels: string[]) {
    return (tag: string) => {
      const label = `${name}${tag}`;
      labels.push(label);
      return Promise.resolve({ ...slice(1, { ok: 1, seconds: 1 }), label, stealPercent: steals.shift() });
    };
  }

  it("takes turns, and measures a round again when one of its slices lost too much CPU", async () => {
    const labels: string[] = [];
    const redone: string[] = [];
    const turns = await takeTurns(
      [load("bare", [1, 2, 3], labels), load("service", [12, 4, 5], labels)],
      { rounds: 2, redoAbovePercent: 10, maxRedos: 2, onRedo: (why) => redone.push(why) },
    );
    assert.deepEqual(labels, [
      "bare [1/2]",
      "service [1/2]",
      "bare [1/2, try 2]",
      "service [1/2, try 2]",
      "bare [2/2]",
      "service [2/2]",
    ]);
    assert.deepEqual(turns.slices.map((s) => s.map((r) => r.label)), [
      ["bare [1/2, try 2]", "bare [2/2]"],
      ["service [1/2, try 2]", "service [2/2]"],
    ]);
    assert.deepEqual(turns.discarded.map((r) => r.label), ["bare [1/2]", "service [1/2]"]);
    assert.equal(redone.length, 1);
    assert.match(redone[0], /round 1 measured again: the hypervisor took 12\.0 % during "service \[1\/2\]"/);
    assert.equal(combineSlices(turns.slices[1]).label, "service", "a redone slice's tag is stripped too");
  });

  it("stops measuring again after maxRedos, and counts the try that lost the least", async () => {
    const labels: string[] = [];
    const turns = await takeTurns([load("service", [30, 15, 20, 25, 20], labels)], {
      rounds: 2,
      redoAbovePercent: 10,
      maxRedos: 3,
    });
    assert.deepEqual(labels, [
      "service [1/2]",
      "service [1/2, try 2]",
      "service [1/2, try 3]",
      "service [1/2, try 4]",
      "service [2/2]",
    ]);
    assert.deepEqual(turns.slices[0].map((r) => r.label), ["service [1/2, try 2]", "service [2/2]"]);
    assert.deepEqual(turns.discarded.map((r) => r.label), [
      "service [1/2]",
      "service [1/2, try 3]",
      "service [1/2, try 4]",
    ]);
  });
});
