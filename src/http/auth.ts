/**
 * Token authentication: `Authorization: Token <jwt>` (the original clients) or `Bearer <jwt>` (a widely used
 * client collection). Anything missing, malformed, forged or expired gets a 401 JSend fail.
 */
import { createMiddleware } from "hono/factory";
import type { TokenService, TokenSubject } from "../auth/tokens.ts";
import { fail } from "./jsend.ts";

export type AuthEnv = { Variables: { subject: TokenSubject } };

// RFC 9110 section 11.4: `auth-scheme 1*SP token68`, the scheme in any case. A JWT is a token68; anything
// else after the scheme (a tab, a second word, a quote) makes the header malformed.
const AUTHORIZATION = /^(?:Token|Bearer) +([A-Za-z0-9\-._~+/]+=*)$/i;

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
