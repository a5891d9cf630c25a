/**
 * Request bodies: multipart/form-data, x-www-form-urlencoded or JSON, at most 1 MiB.
 *
 * `bodyGuard` runs before validation and answers, in the contract's order, 413 (too large, decided from
 * Content-Length before anything is read), 415 (unsupported media type), 400 (unparsable), and treats a
 * missing body as missing fields. It parses the body once; the validators reuse Hono's body cache.
 */
import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import { bodyLimit } from "hono/body-limit";
import type { z } from "@hono/zod-openapi";
import { fail } from "./jsend.ts";
import { validationHook } from "./validation_hook.ts";

export const MAX_BODY_BYTES = 1024 * 1024;
const JSON_TYPE = "application/json";
const FORM_TYPES = ["multipart/form-data", "application/x-www-form-urlencoded"];
const ACCEPTED = [...FORM_TYPES, JSON_TYPE];
const decoder = new TextDecoder("utf-8", { fatal: true }); // invalid UTF-8 is a broken body (400)

/** The media type without parameters, lower-cased. */
function mediaType(c: Context): string {
  return (c.req.header("content-type") ?? "").split(";")[0].trim().toLowerCase();
}

/** The `request.body` of a route: one schema under all three media types. */
export function formBody<T extends z.ZodType>(schema: T, description: string) {
  return {
    description,
    required: false,
    content: {
      "multipart/form-data": { schema },
      "application/x-www-form-urlencoded": { schema },
      [JSON_TYPE]: { schema },
    },
  } as const;
}

/** Whichever validated body this request carried. */
export function validBody<T>(c: Context, pick: { json: () => T; form: () => T }): T {
  return mediaType(c) === JSON_TYPE ? pick.json() : pick.form();
}

const limit = bodyLimit({
  maxSize: MAX_BODY_BYTES,
  onError: (c) => fail(c, 413, `Request body is too large: at most ${MAX_BODY_BYTES} bytes.`),
});

/** Size, type and syntax checks for a route whose body must match `schema`. */
export function bodyGuard(schema: z.ZodType) {
  return createMiddleware(async function bodyGuard(c, next) {
    let refusal: Response | undefined;
    const limited = await limit(c, async () => {
      refusal = await checkBody(c, schema);
      if (!refusal) await next();
    });
    return limited ?? refusal;
  });
}

async function checkBody(c: Context, schema: z.ZodType): Promise<Response | undefined> {
  const type = mediaType(c);
  const body = c.req.header("content-length") === "0" || c.req.raw.body === null
    ? new Uint8Array(0)
    : new Uint8Array(await c.req.arrayBuffer());
  if (body.byteLength === 0) {
    // No body counts as no fields: report each missing one.
    return validationHook(schema.safeParse({}) as never, c) ?? fail(c, 400, "Request body is empty.");
  }
  if (!ACCEPTED.includes(type)) {
    return fail(c, 415, `Unsupported Content-Type: send ${ACCEPTED.join(", ")}.`);
  }
  try {
    // Parsed here once and left in Hono's body cache, where the validators read it. JSON and urlencoded are
    // parsed directly (several times cheaper than going through Response.formData()).
    if (type === JSON_TYPE) {
      c.req.bodyCache.json = Promise.resolve(JSON.parse(decoder.decode(body)));
    } else if (type === "application/x-www-form-urlencoded") {
      const form = new FormData();
      for (const [key, value] of new URLSearchParams(decoder.decode(body))) form.append(key, value);
      // Hono keeps promises in its body cache (its type says otherwise).
      c.req.bodyCache.formData = Promise.resolve(form) as unknown as FormData;
    } else {
      await c.req.formData();
    }
  } catch {
    return fail(c, 400, `Request body is not valid ${type === JSON_TYPE ? "JSON" : "form data"}.`);
  }
}
