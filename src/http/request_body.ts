/**
 * Request bodies: multipart/form-data, x-www-form-urlencoded or JSON, at most 1 MiB.
 *
 * `bodyGuard` is the one place a body is checked, in the contract's order: 413 (too large, decided from
 * Content-Length before anything is read), 415 (a media type other than the three, with any parameters), 400
 * (unparsable, or over the shape limits, checked before the expensive parse), then the fields against the
 * route's schema (400 field errors; a missing body counts as missing fields). The valid fields are
 * `c.get("body")`. zod-openapi does none of this for our routes (`documentedBodyRoute`): its own media type
 * check refused parameters the contract accepts, with another message.
 */
import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import { bodyLimit } from "hono/body-limit";
import type { OpenAPIHono, RouteConfig, z } from "@hono/zod-openapi";
import { fail } from "./jsend.ts";
import { validationHook } from "./validation_hook.ts";
import { parseMediaType } from "./media_type.ts";
import { JsonBodyError, parseJsonBody } from "./json_fields.ts";
import { FormBodyError, parseMultipartForm, parseUrlencoded } from "./form_fields.ts";

export const MAX_BODY_BYTES = 1024 * 1024;
/** Deepest JSON nesting: the body object is level 1, an array in a field level 2. */
export const MAX_JSON_DEPTH = 8;
/** Most fields of a form body, and most comma-separated values of a JSON body. */
export const MAX_FIELDS = 100;

const JSON_TYPE = "application/json";
const URLENCODED_TYPE = "application/x-www-form-urlencoded";
const MULTIPART_TYPE = "multipart/form-data";
const ACCEPTED = [MULTIPART_TYPE, URLENCODED_TYPE, JSON_TYPE];
const UNSUPPORTED = `Unsupported Content-Type: send ${ACCEPTED.join(", ")}.`;
const utf8 = new TextDecoder("utf-8", { fatal: true }); // invalid UTF-8 is a broken body (400)

/** The `request.body` of a route: one schema under all three media types. */
export function formBody<T extends z.ZodType>(schema: T, description: string) {
  return {
    description,
    required: false,
    content: {
      [MULTIPART_TYPE]: { schema },
      [URLENCODED_TYPE]: { schema },
      [JSON_TYPE]: { schema },
    },
  } as const;
}

/**
 * Register `route` with its body in the OpenAPI document of `registry`, and return it without the body (and
 * hidden) for `OpenAPIHono.openapi`: there the body would add zod-openapi's own media type check and validators,
 * which run after `bodyGuard` and disagree with it.
 */
export function documentedBodyRoute<R extends RouteConfig>(
  registry: OpenAPIHono["openAPIRegistry"],
  route: R,
) {
  const { middleware: _middleware, hide: _hide, ...documented } = route;
  registry.registerPath(documented);
  const { body: _body, ...request } = route.request ?? {};
  return { ...route, request, hide: true as const };
}

const limit = bodyLimit({
  maxSize: MAX_BODY_BYTES,
  onError: (c) => fail(c, 413, `Request body is too large: at most ${MAX_BODY_BYTES} bytes.`),
});

/** The route middleware that checks the body against `schema` and sets `c.get("body")` to its fields. */
export function bodyGuard<S extends z.ZodType>(schema: S) {
  return createMiddleware<{ Variables: { body: z.output<S> } }>(async function bodyGuard(c, next) {
    let refusal: Response | undefined;
    const limited = await limit(c, async () => {
      const fields = await readFields(c);
      if (fields instanceof Response) {
        refusal = fields;
        return;
      }
      const result = schema.safeParse(fields);
      refusal = validationHook(result, c);
      if (refusal || !result.success) return;
      c.set("body", result.data);
      await next();
    });
    return limited ?? refusal;
  });
}

/** The body's fields as sent (`{}` for no body), or the response that refuses it. */
async function readFields(c: Context): Promise<unknown> {
  const body = c.req.header("content-length") === "0" || c.req.raw.body === null
    ? new Uint8Array(0)
    : new Uint8Array(await c.req.arrayBuffer());
  if (body.byteLength === 0) return {}; // no body counts as no fields, whatever its type
  const type = parseMediaType(c.req.header("content-type") ?? "");
  if (!type || !ACCEPTED.includes(type.essence)) return fail(c, 415, UNSUPPORTED);
  try {
    if (type.essence === JSON_TYPE) {
      return parseJsonBody(utf8.decode(body), { maxDepth: MAX_JSON_DEPTH, maxValues: MAX_FIELDS });
    }
    if (type.essence === URLENCODED_TYPE) return parseUrlencoded(body, { maxFields: MAX_FIELDS });
    return parseMultipartForm(body, type.params.get("boundary"), { maxFields: MAX_FIELDS });
  } catch (error) {
    if (error instanceof JsonBodyError || error instanceof FormBodyError) return fail(c, 400, error.message);
    if (error instanceof SyntaxError || error instanceof TypeError) {
      // JSON.parse's SyntaxError, or the UTF-8 decoder's TypeError
      return fail(c, 400, `Request body is not valid ${type.essence === JSON_TYPE ? "JSON" : "form data"}.`);
    }
    throw error;
  }
}
