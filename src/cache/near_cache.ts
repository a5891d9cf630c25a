/**
 * A near cache: the Redis entries this process read or wrote lately, kept in memory and kept right by Redis
 * itself (server-assisted client-side caching, `CLIENT TRACKING ON REDIRECT <id> NOLOOP`). Redis remembers
 * which keys the data connection read and, when one changes, expires or is deleted, sends its name on
 * `__redis__:invalidate` to a second connection subscribed here; the entry is dropped. A cached read then
 * costs a Map lookup instead of a Redis round trip, and is as fresh as Redis within the time an invalidation
 * takes to arrive (well under a millisecond here).
 *
 * This process's own writes are not reported back (NOLOOP): the writer keeps what Redis stored (`writing` /
 * `wrote`). Without it, every write came back as an invalidation of the entry it had just written, and the
 * next reader waited for a read to get it back; the refresh-ahead confirms every wallet read steadily every
 * 1.5-2.7 s, and that round of work was 10-25 % of the API's CPU under a cached-GET load over 1,000 wallets.
 * A key's tracking ends with its first invalidation, so a write through the data connection must leave the key
 * read again by that connection (the balance cache's script reads it last), or `forget` it.
 *
 * Never staler than Redis allows:
 * - Every entry also carries its own deadline (the Redis entry's expiry), checked on each lookup.
 * - A read's or a write's answer is kept only if no invalidation of that key arrived while it was in flight
 *   (an invalidation can overtake the answer, since it travels on the other connection), and a write's only if
 *   Redis stored it.
 * - While either connection is down or tracking is not (yet) on, nothing is served or kept, and everything
 *   kept is dropped: invalidations sent meanwhile may have been lost.
 */
import type { Redis } from "ioredis";

const INVALIDATION_CHANNEL = "__redis__:invalidate";

export interface NearCacheStats {
  hits: number;
  misses: number;
  invalidations: number;
  size: number;
  active: boolean;
}

export class NearCache<V> {
  readonly #entries = new Map<string, { value: V; expiresAt: number }>();
  /** Keys with a read in flight, and the ticket of that read; an invalidation removes the key. */
  readonly #reading = new Map<string, number>();
  #ticket = 0;
  #active = false;
  /** Bumped on every (de)activation, so a slow activation that was overtaken does not switch on. */
  #generation = 0;
  /** Client id of the subscriber connection, once it is subscribed (null while it is down). */
  #subscriberId: number | null = null;
  #hits = 0;
  #misses = 0;
  #invalidations = 0;

  /**
   * @param data the connection the cached reads go through (tracking is switched on for it)
   * @param subscriber a connection of its own, only for invalidations (made with `autoResubscribe: false`)
   */
  constructor(
    private readonly data: Redis,
    private readonly subscriber: Redis,
    private readonly options: { maxEntries: number; onError?: (error: unknown) => void },
  ) {
    subscriber.on("messageBuffer", (channel: Buffer, keys: Buffer[] | Buffer | null) => {
      if (channel.toString() !== INVALIDATION_CHANNEL) return;
      if (keys === null) return this.#clear(); // FLUSHDB / FLUSHALL: everything goes
      for (const key of Array.isArray(keys) ? keys : [keys]) {
        this.#invalidations++;
        this.#invalidate(key.toString());
      }
    });
    subscriber.on("close", () => this.#subscriberId = null); // a new connection must subscribe again
    for (const connection of [data, subscriber]) {
      connection.on("close", () => this.#deactivate());
      connection.on("ready", () => void this.#activate());
    }
    if (data.status === "ready" && subscriber.status === "ready") void this.#activate();
  }

  /** The kept value of `key`, or undefined (then read Redis through `read`). */
  get(key: string): V | undefined {
    const entry = this.#active ? this.#entries.get(key) : undefined;
    if (entry && entry.expiresAt > Date.now()) {
      this.#hits++;
      return entry.value;
    }
    if (entry) this.#entries.delete(key);
    this.#misses++;
    return undefined;
  }

  /**
   * Read `key` from Redis with `load`, and keep the value until `expiresAt` (ms since epoch) unless Redis
   * says it changed. `load` must send its command at once, on the data connection.
   */
  async read<T extends V | null>(
    key: string,
    load: () => Promise<T>,
    expiresAt: (value: NonNullable<T>) => number,
  ): Promise<T> {
    if (!this.#active) return await load();
    const ticket = ++this.#ticket;
    this.#reading.set(key, ticket);
    let value: T | undefined;
    try {
      value = await load();
    } finally {
      // Kept only if no invalidation (and no deactivation) came while the answer was on its way.
      const untouched = this.#reading.get(key) === ticket;
      if (untouched) this.#reading.delete(key);
      if (untouched && this.#active && value !== undefined && value !== null) {
        this.#keep(key, value, expiresAt(value as NonNullable<T>));
      }
    }
    return value;
  }

  /**
   * Before this process writes `key` through the data connection: a ticket for `wrote`. Readers are served
   * the kept entry, if any, until the write's answer arrives.
   */
  writing(key: string): number {
    const ticket = ++this.#ticket;
    this.#reading.set(key, ticket);
    return ticket;
  }

  /**
   * The answer to the write of `ticket`: `stored` is what Redis now holds for `key` (until `expiresAt`), or
   * null when the write stored nothing, deleted the key or failed. Kept only if nothing else touched the key
   * meanwhile; otherwise the kept entry is dropped, and the next read asks Redis.
   */
  wrote(key: string, ticket: number, stored: V | null, expiresAt: number): void {
    const untouched = this.#reading.get(key) === ticket;
    if (untouched) this.#reading.delete(key);
    if (untouched && this.#active && stored !== null) this.#keep(key, stored, expiresAt);
    else this.#entries.delete(key);
  }

  /** Forget `key` now (this process deleted it, or does not know what Redis holds for it). */
  forget(key: string): void {
    this.#invalidate(key);
  }

  stats(): NearCacheStats {
    return {
      hits: this.#hits,
      misses: this.#misses,
      invalidations: this.#invalidations,
      size: this.#entries.size,
      active: this.#active,
    };
  }

  #keep(key: string, value: V, expiresAt: number) {
    if (expiresAt <= Date.now()) return;
    this.#entries.delete(key); // re-inserted last: the Map's order is the eviction order
    if (this.#entries.size >= this.options.maxEntries) {
      this.#entries.delete(this.#entries.keys().next().value!);
    }
    this.#entries.set(key, { value, expiresAt });
  }

  #invalidate(key: string) {
    this.#entries.delete(key);
    this.#reading.delete(key);
  }

  #clear() {
    this.#entries.clear();
    this.#reading.clear();
  }

  #deactivate() {
    this.#generation++;
    this.#active = false;
    this.#clear();
  }

  /** Once both connections are ready: subscribe, then switch tracking on for the data connection. */
  async #activate() {
    this.#deactivate();
    const generation = this.#generation;
    if (this.data.status !== "ready" || this.subscriber.status !== "ready") return;
    try {
      if (this.#subscriberId === null) {
        const id = Number(await this.subscriber.client("ID"));
        await this.subscriber.subscribe(INVALIDATION_CHANNEL);
        this.#subscriberId = id;
      }
      if (generation !== this.#generation) return;
      // Off first: tracking may still point at a subscriber connection that is gone.
      await this.data.call("CLIENT", "TRACKING", "OFF");
      await this.data.call("CLIENT", "TRACKING", "ON", "REDIRECT", String(this.#subscriberId), "NOLOOP");
      if (generation !== this.#generation) return;
      this.#active = true;
    } catch (error) {
      this.options.onError?.(error);
    }
  }
}
