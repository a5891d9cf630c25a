/**
 * RequestDeadline: an unsealed request is answered at its deadline and can never be sealed after that; a
 * sealed one waits for its work; unsealing after the deadline answers it then. Order only, no timings.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { RequestDeadline } from "../src/wallet/request_deadline.ts";
import { RequestTimeoutError } from "../src/wallet/wallet_errors.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A promise and the function that resolves it. */
function pending<T>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => resolve = r);
  return { promise, resolve };
}

describe("RequestDeadline", () => {
  it("answers an unsealed request at the deadline, and refuses to seal it afterwards", async () => {
    const deadline = new RequestDeadline(5);
    const work = pending<string>();
    let expiredCallbacks = 0;
    deadline.onExpire(() => expiredCallbacks++);
    await assert.rejects(deadline.guard(work.promise), RequestTimeoutError);
    assert.equal(deadline.expired, true);
    assert.equal(expiredCallbacks, 1);
    assert.equal(deadline.seal(), false);
    work.resolve("late"); // ignored: the answer was given
  });

  it("lets a sealed request outlive its deadline: the answer is the work's outcome", async () => {
    const deadline = new RequestDeadline(5);
    const work = pending<string>();
    const answer = deadline.guard(work.promise);
    assert.equal(deadline.seal(), true);
    await sleep(30);
    assert.equal(deadline.expired, false);
    work.resolve("committed");
    assert.equal(await answer, "committed");
  });

  it("answers at once when unsealed after its deadline (its write certainly did not commit)", async () => {
    const deadline = new RequestDeadline(5);
    const work = pending<string>();
    const answer = deadline.guard(work.promise);
    deadline.seal();
    await sleep(30);
    deadline.unseal();
    await assert.rejects(answer, RequestTimeoutError);
    assert.equal(deadline.seal(), false);
  });

  it("resolves with the work when it ends first", async () => {
    const deadline = new RequestDeadline(10_000);
    assert.equal(await deadline.guard(Promise.resolve(7)), 7);
  });
});
