/**
 * What this process last saw committed for each wallet it wrote: the state a write batch expects to find.
 *
 * It is a guess, never the truth: another process (or an operator) may have changed the wallet since. A
 * batch decided on a known state is written with a compare-and-set on the wallet's version, under the row
 * lock, in one statement; a wallet whose version moved is decided again on its locked row. So a stale entry
 * costs a round trip, never money.
 *
 * A wallet written by several processes in turn would pay that round trip on most batches, so a wallet
 * whose version moved is not kept for a while (`contendedMs`): its batches go straight to the locked path.
 */
import type { Wallet } from "./wallet_rules.ts";

export interface KnownWalletsOptions {
  /** Most wallets kept; 0 keeps none. */
  maxEntries: number;
  /** How long a wallet whose version moved under us is not kept (ms). */
  contendedMs?: number;
  /** ms since epoch; tests move it. */
  now?: () => number;
}

export class KnownWallets {
  /** Insertion order is recency: an entry is re-inserted on every update, and the oldest goes first. */
  readonly #wallets = new Map<string, Wallet>();
  /** Wallets another process wrote lately, and until when they are not kept. Bounded like #wallets. */
  readonly #contendedUntil = new Map<string, number>();
  readonly #maxEntries: number;
  readonly #contendedMs: number;
  readonly #now: () => number;

  constructor(options: KnownWalletsOptions) {
    this.#maxEntries = options.maxEntries;
    this.#contendedMs = options.contendedMs ?? 5_000;
    this.#now = options.now ?? Date.now;
  }

  get(walletId: string): Wallet | undefined {
    return this.#wallets.get(walletId);
  }

  /**
   * Record a committed state. Never goes back to an older version: a status change and a money batch of one
   * wallet can commit in either order and report in the other.
   */
  remember(wallet: Wallet): void {
    if (this.#maxEntries === 0) return;
    const contended = this.#contendedUntil.get(wallet.id);
    if (contended !== undefined) {
      if (contended > this.#now()) return;
      this.#contendedUntil.delete(wallet.id);
    }
    const known = this.#wallets.get(wallet.id);
    if (known && known.version > wallet.version) return;
    this.#wallets.delete(wallet.id);
    this.#wallets.set(wallet.id, wallet);
    if (this.#wallets.size > this.#maxEntries) {
      this.#wallets.delete(this.#wallets.keys().next().value!);
    }
  }

  /** Drop a wallet whose state is no longer known (a write of unknown outcome). */
  forget(walletId: string): void {
    this.#wallets.delete(walletId);
  }

  /** Drop a wallet another process changed, and keep it out for a while. */
  contended(walletId: string): void {
    this.#wallets.delete(walletId);
    if (this.#maxEntries === 0) return;
    this.#contendedUntil.delete(walletId);
    this.#contendedUntil.set(walletId, this.#now() + this.#contendedMs);
    if (this.#contendedUntil.size > this.#maxEntries) {
      this.#contendedUntil.delete(this.#contendedUntil.keys().next().value!);
    }
  }

  get size(): number {
    return this.#wallets.size;
  }
}
