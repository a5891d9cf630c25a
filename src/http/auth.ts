/**
 * Token authentication: `Authorization: Token <jwt>` (the original clients) or `Bearer <jwt>` (a widely used
 * client collection). Anything missing, malformed, forged or expired gets a 401 JSend fail.
 */
import { createMiddleware } from "hono/factory";
import type { TokenService, TokenSubject } from "../auth/tokens.ts";
import { fail } from "./jsend.ts";

export type AuthEnv = { Variables: { subject: TokenSubject } };

const AUTHORIZATION = /^(?:Token|Bearer)\s+(\S+)\s*$/i;

/** Require a valid token and expose its subject as `c.get("subject")` (`c.var` would copy every variable). */
export function requireToken(tokens: TokenService) {
  return createMiddleware<AuthEnv>(async function requireToken(c, next) {
    const header = c.req.header("authorization");
    if (!header) {
      return fail(c, 401, "Missing Authorization header: send 'Token <token>' from POST /api/v1/init.");
    }
    const match = AUTHORIZATION.exec(header);
    if (!match) {
      return fail(c, 401, "Malformed Authorization header: expected 'Token <token>' or 'Bearer <token>'.");
    }
    const subject = await tokens.verify(match[1]);
    if (!subject) return fail(c, 401, "Invalid or expired token.");
    c.set("subject", subject);
    await next();
  });
}
