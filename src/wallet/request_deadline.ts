/**
 * A request's deadline, and the one rule that keeps a 503 honest: a write is answered "not applied" only while
 * it is certain that nothing of it can commit.
 *
 * A write is unsealed until the statement that would commit it is about to be sent. At the deadline, an
 * unsealed request is answered at once (RequestTimeoutError) and stays expired: the code that would write it
 * asks `seal()` first, gets false, and leaves it out. A sealed request is not answered at its deadline: its
 * answer waits for the outcome of the commit it rode in (bounded by the connection's statement timeout). When
 * that outcome is known to be "nothing written" (a compare-and-set that did not match, a row that was
 * skipped), `unseal()` hands it back, and if its deadline has passed meanwhile it is answered then.
 *
 * JavaScript runs one callback at a time, so a check of `seal()` followed by sending the statement in the same
 * callback cannot be overtaken by the timer.
 */
import { RequestTimeoutError } from "./wallet_errors.ts";

export class RequestDeadline {
  /** When the request must be answered (ms since epoch). */
  readonly at: number;
  #sealed = false;
  #expired = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #onExpire: Array<() => void> = [];
  #reject: ((error: unknown) => void) | null = null;

  constructor(timeoutMs: number, now: number = Date.now()) {
    this.at = now + timeoutMs;
  }

  /** True once the request was answered with a timeout; it must never be written after that. */
  get expired(): boolean {
    return this.#expired;
  }

  get sealed(): boolean {
    return this.#sealed;
  }

  /** Milliseconds left (may be negative). */
  remaining(now: number = Date.now()): number {
    return this.at - now;
  }

  /**
   * Claim the request for a write about to be sent. False when it was already answered with a timeout:
   * leave it out of the write.
   */
  seal(): boolean {
    if (this.#expired) return false;
    this.#sealed = true;
    return true;
  }

  /** The write that carried it certainly did not commit it: the deadline applies again (now, if passed). */
  unseal(): void {
    this.#sealed = false;
    if (this.#reject && this.remaining() <= 0) this.#expire();
  }

  /** Called when the request expires unanswered (e.g. to take it out of a queue). */
  onExpire(callback: () => void): void {
    this.#onExpire.push(callback);
  }

  /**
   * The outcome of `work`, or a RequestTimeoutError at the deadline unless the request is sealed then (a
   * sealed request waits for `work`). Reads never seal, so they always end at the deadline.
   */
  guard<T>(work: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#reject = reject;
      const wait = Math.max(0, this.remaining());
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        if (!this.#sealed) this.#expire();
      }, wait);
      work.then(
        (value) => {
          this.#settle();
          resolve(value);
        },
        (error) => {
          this.#settle();
          reject(error);
        },
      );
    });
  }

  #expire(): void {
    if (this.#expired || !this.#reject) return;
    this.#expired = true;
    const reject = this.#reject;
    this.#settle();
    for (const callback of this.#onExpire) callback();
    this.#onExpire = [];
    reject(new RequestTimeoutError());
  }

  #settle(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#reject = null;
  }
}
