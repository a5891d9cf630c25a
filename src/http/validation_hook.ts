/**
 * The one place validation failures become responses: zod issues turn into the contract's field errors
 * (`{"customer_xid":["Missing data for required field."]}`), never zod's raw output.
 */
import type { Context } from "hono";
import type { z } from "@hono/zod-openapi";
import { fail, type FailError } from "./jsend.ts";

/** Field name -> messages, or a message when the body as a whole is wrong (not an object). */
export function issuesToFailError(issues: readonly z.core.$ZodIssue[]): FailError {
  const fields: Record<string, string[]> = {};
  for (const issue of issues) {
    if (issue.path.length === 0) return "Request body must be an object of fields.";
    const field = String(issue.path[0]);
    const messages = fields[field] ??= [];
    if (!messages.includes(issue.message)) messages.push(issue.message);
  }
  return fields;
}

/** The `defaultHook` of the app: a 400 JSend fail listing every bad field. */
export function validationHook(
  result: { success: true } | { success: false; error: z.ZodError },
  c: Context,
): Response | undefined {
  if (!result.success) return fail(c, 400, issuesToFailError(result.error.issues));
}
