/** POST /api/v1/init: create (or find) the customer's account and wallet, and issue a token. */
import { createRoute, OpenAPIHono } from "@hono/zod-openapi";
import type { TokenService } from "../../auth/tokens.ts";
import type { WalletService } from "../../wallet/wallet_service.ts";
import { successBody } from "../jsend.ts";
import { bodyGuard, documentedBodyRoute, formBody } from "../request_body.ts";
import { initBodySchema, successSchema, tokenDataSchema } from "../schemas.ts";
import { validationHook } from "../validation_hook.ts";
import { initExample } from "./examples.ts";
import { commonFailures, fieldErrors, json } from "./responses.ts";

const initRoute = createRoute({
  method: "post",
  path: "/api/v1/init",
  operationId: "initAccount",
  security: [], // no token: this is where tokens come from
  tags: ["Account"],
  summary: "Initialize my account for wallet",
  description:
    "Creates the account and its wallet (disabled) and returns a token. Calling it again for the same " +
    "customer_xid returns a fresh token for the same account and wallet.",
  middleware: [bodyGuard(initBodySchema)] as const,
  request: { body: formBody(initBodySchema, "The customer's id") },
  responses: {
    201: json(
      successSchema(tokenDataSchema),
      "Account ready; use the token as `Authorization: Token <token>`",
      initExample,
    ),
    ...fieldErrors("customer_xid"),
    ...commonFailures,
  },
});

export function initRoutes(deps: { wallets: WalletService; tokens: TokenService }) {
  const app = new OpenAPIHono({ defaultHook: validationHook });
  return app.openapi(documentedBodyRoute(app.openAPIRegistry, initRoute), async (c) => {
    const { customer_xid } = c.get("body");
    const wallet = await deps.wallets.initAccount(customer_xid);
    const token = await deps.tokens.issue({ customerXid: wallet.customerXid, walletId: wallet.id });
    return c.json(successBody({ token }), 201);
  });
}
