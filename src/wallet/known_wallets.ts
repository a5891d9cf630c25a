/**
 * What this process last saw committed for each wallet it wrote: the state a write batch expects to find.
 *
 * It is a guess, never the truth: another process (or an operator) may have changed the wallet since. A
 * batch decided on a known state is written with a compare-and-set on the wallet's version, under the row
 * lock, in one statement; a wallet whose version moved is decided again on its locked row. So a stale entry
 * costs a round trip, never money.
 */
import type { Wallet } from "./wallet_rules.ts";

export class KnownWallets {
  /** Insertion order is recency: an entry is re-inserted on every update, and the oldest goes first. */
  readonly #wallets = new Map<string, Wallet>();

  constructor(private readonly maxEntries: number) {}

  get(walletId: string): Wallet | undefined {
    return this.#wallets.get(walletId);
  }

  /**
   * Record a committed state. Never goes back to an older version: a status change and a money batch of one
   * wallet can commit in either order and report in the other.
   */
  remember(wallet: Wallet): void {
    if (this.maxEntries === 0) return;
    const known = this.#wallets.get(wallet.id);
    if (known && known.version > wallet.version) return;
    this.#wallets.delete(wallet.id);
    this.#wallets.set(wallet.id, wallet);
    if (this.#wallets.size > this.maxEntries) {
      this.#wallets.delete(this.#wallets.keys().next().value!);
    }
  }

  /** Drop a wallet whose state is no longer known (a write of unknown outcome, a version that moved). */
  forget(walletId: string): void {
    this.#wallets.delete(walletId);
  }

  get size(): number {
    return this.#wallets.size;
  }
}
