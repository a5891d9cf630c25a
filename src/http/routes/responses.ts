/** OpenAPI response declarations shared by the routes (JSend shapes with examples from the contract). */
import type { z } from "@hono/zod-openapi";
import { errorSchema, failSchema, MISSING } from "../schemas.ts";

/** An `application/json` response; `example` (checked against the schema's type) is shown in the document. */
export function json<T extends z.ZodType>(schema: T, description: string, example?: z.infer<T>) {
  return {
    description,
    content: { "application/json": example === undefined ? { schema } : { schema, example } },
  };
}

/** Fails every route can answer with, plus the 500 and 503 errors. */
export const commonFailures = {
  413: json(failSchema("Request body is too large: at most 1048576 bytes."), "Body over 1 MiB"),
  415: json(failSchema("Unsupported Content-Type: send multipart/form-data, ..."), "Unsupported media type"),
  500: json(errorSchema, "Fault on our side (no internals)"),
  503: json(
    errorSchema,
    "Busy or out of time: nothing was applied; retry after `Retry-After` seconds (same reference_id)",
  ),
};

export const unauthorized = {
  401: json(failSchema("Invalid or expired token."), "Missing, malformed, forged or expired token"),
};

export const walletDisabled = {
  404: json(failSchema("Wallet disabled"), "The wallet is not enabled"),
};

export function fieldErrors(field: string) {
  return { 400: json(failSchema({ [field]: [MISSING] }), "Missing or invalid fields, or a refused request") };
}

/** The token security requirement of authenticated routes (both schemes are accepted). */
export const tokenSecurity: Array<Record<string, string[]>> = [{ Token: [] }, { Bearer: [] }];
