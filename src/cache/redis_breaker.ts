/**
 * A circuit breaker in front of one Redis connection: after `failures` commands in a row failed (an error, a
 * refused write, or no answer within the command timeout), Redis is skipped at once (`allows()` is false) and
 * readers go straight to PostgreSQL. While open, a background PING every `openMs` probes it; the first PING
 * answered closes the breaker. No request ever waits for a probe: a hung Redis costs the requests in flight
 * when it hung one command timeout, and later requests nothing.
 *
 * Hand-written rather than a library's (opossum and the like): those probe with a real request in the
 * half-open state, and that request would pay the command timeout each time Redis is still hung.
 *
 * Opening also replaces a connection that still looks ready: a connection that stopped answering may be
 * half-open for good (the peer gone without a reset), and ioredis would never notice on its own. The near
 * cache drops everything on that close and switches on again only once tracking is re-established.
 */
import type { Redis } from "ioredis";

/** What the breaker did so far; counters only grow. */
export interface BreakerStats {
  state: "closed" | "open";
  /** Times it opened, and closed again after a probe answered. */
  opened: number;
  closed: number;
  /** Commands that failed (each counts, open or not), and commands skipped because it was open. */
  failures: number;
  skipped: number;
}

/**
 * Replace a connection that stopped answering: its socket is destroyed now and ioredis reconnects in the
 * background. Not `disconnect(true)`: that ends the socket gracefully, and a hung peer never answers the FIN,
 * so the connection would linger (ioredis destroys it only after `disconnectTimeout`, 2 s).
 */
export function replaceConnection(redis: Redis): void {
  if (redis.status === "ready") redis.stream?.destroy();
}

/** Thrown instead of sending a command while the breaker is open. */
export class RedisUnavailableError extends Error {
  constructor() {
    super("Redis is skipped: its circuit breaker is open after repeated failures");
    this.name = "RedisUnavailableError";
  }
}

export interface RedisBreakerOptions {
  /** Failed commands in a row that open the breaker. Default 3. */
  failures?: number;
  /** Pause between probes while open (ms). Default 1000. */
  openMs?: number;
  onOpen?: (error: unknown) => void;
  onClose?: () => void;
}

export class RedisBreaker {
  readonly #failuresToOpen: number;
  readonly #openMs: number;
  #inARow = 0;
  #open = false;
  #probe: ReturnType<typeof setTimeout> | null = null;
  #stopped = false;
  readonly #stats = { opened: 0, closed: 0, failures: 0, skipped: 0 };

  constructor(private readonly redis: Redis, private readonly options: RedisBreakerOptions = {}) {
    this.#failuresToOpen = options.failures ?? 3;
    this.#openMs = options.openMs ?? 1000;
  }

  /** Whether commands may be sent now (the breaker is closed). */
  allows(): boolean {
    return !this.#open;
  }

  /** Run `command` unless the breaker is open (then reject at once with RedisUnavailableError); record its outcome. */
  run<T>(command: () => Promise<T>): Promise<T> {
    if (this.#open) {
      this.#stats.skipped++;
      return Promise.reject(new RedisUnavailableError());
    }
    return command().then((result) => {
      this.#inARow = 0;
      return result;
    }, (error) => {
      this.#failed(error);
      throw error;
    });
  }

  stats(): BreakerStats {
    return { state: this.#open ? "open" : "closed", ...this.#stats };
  }

  /** Stop probing (the connection is being closed). */
  stop(): void {
    this.#stopped = true;
    if (this.#probe) clearTimeout(this.#probe);
    this.#probe = null;
  }

  #failed(error: unknown) {
    this.#stats.failures++;
    if (this.#open || ++this.#inARow < this.#failuresToOpen) return;
    this.#open = true;
    this.#stats.opened++;
    this.options.onOpen?.(error);
    replaceConnection(this.redis);
    this.#scheduleProbe();
  }

  #scheduleProbe() {
    if (this.#stopped) return;
    this.#probe = setTimeout(async () => {
      this.#probe = null;
      try {
        // Fails at once while the connection is not ready (no offline queue), else within the command timeout.
        await this.redis.ping();
      } catch {
        this.#scheduleProbe();
        return;
      }
      if (this.#stopped) return;
      this.#open = false;
      this.#inARow = 0;
      this.#stats.closed++;
      this.options.onClose?.();
    }, this.#openMs);
  }
}
