/**
 * Every error path renders JSend: wallet refusals map to the contract's statuses and messages, HTTP errors
 * to fails, and anything unexpected to a 500 error that says nothing of internals.
 */
import type { Context, ErrorHandler, Hono, NotFoundHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { WalletRefusal } from "../wallet/wallet_errors.ts";
import { WalletRefusedError, WriteNotAppliedError } from "../wallet/wallet_errors.ts";
import type { Logger } from "../log.ts";
import { isTransientDbError } from "../db/transient_errors.ts";
import { errorBody, fail, type FailError } from "./jsend.ts";

/** The contract's answer to each refusal of the wallet rules. */
export const REFUSAL_RESPONSES: Record<WalletRefusal, { status: ContentfulStatusCode; error: FailError }> = {
  wallet_disabled: { status: 404, error: "Wallet disabled" },
  already_enabled: { status: 400, error: "Already enabled" },
  already_disabled: { status: 400, error: "Already disabled" },
  insufficient_balance: { status: 400, error: "Insufficient balance" },
  balance_limit_exceeded: { status: 400, error: "Balance limit exceeded" },
  reference_conflict: { status: 409, error: { reference_id: ["Reference ID has already been used."] } },
  // A valid signature for a wallet that does not exist (e.g. a database reset): the token is no good here.
  wallet_not_found: { status: 401, error: "Invalid or expired token." },
};

/** What a 503 tells the client: busy or out of time, nothing changed, try again. */
export const NOT_APPLIED_MESSAGE = "Service busy: the request was not applied; retry it";
/**
 * What a 503 tells the client when a dependency failed under the request (PostgreSQL unreachable, its
 * connection lost, a timeout). For a write whose statement may have reached PostgreSQL, its outcome is not
 * known here: a retry with the same reference_id is answered with the committed transaction, or does it.
 */
export const UNAVAILABLE_MESSAGE = "Service temporarily unavailable; retry the request";
/** The Retry-After of a 503 (seconds). */
export const RETRY_AFTER_SECONDS = 1;

/** `app.onError`: the single place thrown errors become responses. */
export function errorHandler(log: Logger): ErrorHandler {
  return function errorHandler(error: Error, c: Context): Response {
    if (error instanceof WalletRefusedError) {
      const { status, error: message } = REFUSAL_RESPONSES[error.refusal];
      return fail(c, status, message);
    }
    if (error instanceof WriteNotAppliedError) {
      // Nothing of the request was (or will be) committed, so a retry, with the same reference_id, is safe.
      c.header("Retry-After", String(RETRY_AFTER_SECONDS));
      return c.json(errorBody(NOT_APPLIED_MESSAGE), 503);
    }
    if (isTransientDbError(error)) {
      // A fault of the moment, not of the request (see transient_errors.ts): logged without a stack.
      log.warn("request failed: database unavailable", { method: c.req.method, path: c.req.path, error });
      c.header("Retry-After", String(RETRY_AFTER_SECONDS));
      return c.json(errorBody(UNAVAILABLE_MESSAGE), 503);
    }
    if (error instanceof HTTPException && error.status < 500) {
      return fail(c, error.status as ContentfulStatusCode, error.message || "Bad request");
    }
    log.error("request failed", {
      requestId: c.get("requestId"),
      method: c.req.method,
      path: c.req.path,
      error,
      stack: error.stack,
    });
    return c.json(errorBody("Internal server error"), 500);
  };
}

/** The methods registered for exactly this path (every route is static). */
function allowedMethods(app: Hono<never>, path: string): string[] {
  return [...new Set(app.routes.filter((r) => r.method !== "ALL" && r.path === path).map((r) => r.method))];
}

/**
 * `app.notFound`: 405 with `Allow` when the path exists under other methods, else 404. Neither message repeats
 * the request (a client shown its own input could be shown a forged message).
 */
export function notFoundHandler(app: Hono<never>): NotFoundHandler {
  return function notFound(c: Context): Response {
    const allowed = allowedMethods(app, c.req.path);
    if (allowed.length > 0) {
      c.header("Allow", allowed.join(", "));
      return fail(c, 405, `Method not allowed on this path; use ${allowed.join(", ")}.`);
    }
    return fail(c, 404, "Not found: no such path; see /openapi.json for the API.");
  };
}
