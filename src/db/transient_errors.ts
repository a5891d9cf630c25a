/**
 * Which PostgreSQL failures are transient: the database was unreachable, the connection died, or the server
 * ended or bounded the statement (a crash, a restart, an administrator's pg_terminate_backend, a timeout).
 * The request was fine; the same request later can succeed, so it is answered 503 with Retry-After, not 500.
 * Anything else (a bad statement, a constraint the code should have prevented) stays a 500: a bug.
 */

/** postgres.js's own connection errors, and the socket errors it passes on. */
const CONNECTION_CODES = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_DESTROYED",
  "CONNECTION_ENDED",
  "CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
]);

/** SQLSTATEs (besides class 08, connection exception) that end or refuse the work, not the request's fault. */
const TRANSIENT_SQLSTATES = new Set([
  "57P01", // admin_shutdown: pg_terminate_backend, or a fast shutdown
  "57P02", // crash_shutdown: another backend crashed
  "57P03", // cannot_connect_now: the server is starting up or shutting down
  "53300", // too_many_connections
  "55P03", // lock_not_available: lock_timeout
  "57014", // query_canceled: statement_timeout
  "25P03", // idle_in_transaction_session_timeout
]);

/** True when `error` (or its cause) is a PostgreSQL failure that a later retry of the same request may not meet. */
export function isTransientDbError(error: unknown): boolean {
  for (let e = error, depth = 0; e && typeof e === "object" && depth < 4; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string") {
      if (CONNECTION_CODES.has(code) || TRANSIENT_SQLSTATES.has(code)) return true;
      if (/^08[0-9A-Z]{3}$/.test(code)) return true; // connection_exception and its subclasses
    }
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}
