/**
 * JSend bodies, the only response shape of the API: `success` with data, `fail` for client mistakes (4xx),
 * `error` for our own faults (5xx, never with internals).
 */
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";

/** A fail body's `error`: a message, or field name -> messages. */
export type FailError = string | Record<string, string[]>;

export function successBody<T>(data: T) {
  return { status: "success" as const, data };
}

export function failBody(error: FailError) {
  return { status: "fail" as const, data: { error } };
}

export function errorBody(message: string) {
  return { status: "error" as const, message };
}

/** Respond with a JSend fail. */
export function fail(c: Context, status: ContentfulStatusCode, error: FailError): Response {
  return c.json(failBody(error), status);
}
