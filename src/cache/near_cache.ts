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
 * - An entry is served only under a lease: the last PING answered on the invalidation connection was sent less
 *   than `leaseMs` ago. Redis answers a PING after every invalidation it sent that connection before, so a
 *   change that Redis applied more than `leaseMs` before a lookup has been heard by then. A writer that
 *   waits `leaseMs` after Redis took its change before answering (WalletService does for status changes)
 *   is therefore never contradicted by a near cache of another process, however late its invalidation is
 *   read there. A hung or silently dead invalidation connection stops the lease within `leaseMs`: nothing is
 *   served, and a PING that failed replaces the connection.
 */
import type { Redis } from "ioredis";
import { replaceConnection } from "./redis_breaker.ts";

const INVALIDATION_CHANNEL = "__redis__:invalidate";

/** Pause before switching tracking on again after an attempt failed on connections that stayed up (ms). */
const ACTIVATION_RETRY_MS = 1000;

/** How long a PING answered on the invalidation connection lets entries be served (ms), unless told. */
export const DEFAULT_LEASE_MS = 100;

export interface NearCacheStats {
  hits: number;
  misses: number;
  invalidations: number;
  size: number;
  active: boolean;
  /** Lookups that found an entry but could not serve it: no PING answered within the lease. */
  leaseLapses: number;
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
  #stopped = false;
  #leaseLapses = 0;
  readonly #leaseMs: number;
  /** performance.now() at which the last answered PING on the subscriber was sent. */
  #leaseFrom = -Infinity;
  #pinging = false;
  readonly #heartbeat: ReturnType<typeof setInterval>;

  /**
   * @param data the connection the cached reads go through (tracking is switched on for it)
   * @param subscriber a connection of its own, only for invalidations (made with `autoResubscribe: false`)
   */
  constructor(
    private readonly data: Redis,
    private readonly subscriber: Redis,
    private readonly options: { maxEntries: number; leaseMs?: number; onError?: (error: unknown) => void },
  ) {
    this.#leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS;
    // Four PINGs a lease: one late answer does not stop serving.
    this.#heartbeat = setInterval(() => void this.#ping(), Math.max(1, Math.floor(this.#leaseMs / 4)));
    Deno.unrefTimer(this.#heartbeat);
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
      if (performance.now() - this.#leaseFrom >= this.#leaseMs) {
        this.#leaseLapses++; // kept: the connection may only be slow, and then nothing was lost
        this.#misses++;
        return undefined;
      }
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

  /** Stop retrying activation and serve nothing more (its connections are being closed). */
  stop(): void {
    this.#stopped = true;
    clearInterval(this.#heartbeat);
    this.#deactivate();
  }

  stats(): NearCacheStats {
    return {
      hits: this.#hits,
      misses: this.#misses,
      invalidations: this.#invalidations,
      size: this.#entries.size,
      active: this.#active,
      leaseLapses: this.#leaseLapses,
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

  /** Renew the lease: a PING on the subscriber, answered after every invalidation sent before it. */
  async #ping() {
    if (this.#pinging || !this.#active || this.subscriber.status !== "ready") return;
    this.#pinging = true;
    const sentAt = performance.now();
    const generation = this.#generation;
    try {
      await this.subscriber.ping();
      if (generation === this.#generation) this.#leaseFrom = Math.max(this.#leaseFrom, sentAt);
    } catch (error) {
      // No answer within the command timeout: the connection may be dead without a reset (invalidations lost
      // for good). Replace it; the near cache starts over once tracking is on again.
      if (generation === this.#generation && this.subscriber.status === "ready") {
        this.options.onError?.(error);
        replaceConnection(this.subscriber);
      }
    } finally {
      this.#pinging = false;
    }
  }

  #deactivate() {
    this.#generation++;
    this.#leaseFrom = -Infinity;
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
      // The first lease: nothing is served before the invalidation connection answered once.
      const sentAt = performance.now();
      await this.subscriber.ping();
      if (generation !== this.#generation) return;
      this.#leaseFrom = sentAt;
      this.#active = true;
    } catch (error) {
      this.options.onError?.(error);
      // Both connections may stay up while Redis did not answer (hung, or slow): try again later, unless a
      // reconnect (which activates anew) or a close came meanwhile.
      setTimeout(() => {
        if (generation === this.#generation && !this.#stopped) void this.#activate();
      }, ACTIVATION_RETRY_MS);
    }
  }
}
