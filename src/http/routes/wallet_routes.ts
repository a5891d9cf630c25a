/** The wallet endpoints: enable, view, transactions, deposits, withdrawals, disable. All need a token. */
import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { TypedResponse } from "hono";
import type { TokenService } from "../../auth/tokens.ts";
import { parseAmount } from "../../wallet/money.ts";
import type { WalletService, WalletView } from "../../wallet/wallet_service.ts";
import { type AuthEnv, requireToken } from "../auth.ts";
import type { HistoryStreams } from "../history_stream.ts";
import { successBody } from "../jsend.ts";
import {
  presentDeposit,
  presentDisabledWallet,
  presentEnabledView,
  presentEnabledWallet,
  presentTransaction,
  presentWithdrawal,
} from "../presenters.ts";
import { bodyGuard, documentedBodyRoute, formBody } from "../request_body.ts";
import {
  amountText,
  depositSchema,
  disableBodySchema,
  disabledWalletSchema,
  enabledWalletSchema,
  failSchema,
  moneyBodySchema,
  successSchema,
  transactionSchema,
  transactionsQuerySchema,
  withdrawalSchema,
} from "../schemas.ts";
import { validationHook } from "../validation_hook.ts";
import {
  depositExample,
  disableExample,
  enableExample,
  transactionsExample,
  viewExample,
  withdrawalExample,
} from "./examples.ts";
import {
  commonFailures,
  fieldErrors,
  json,
  tokenSecurity,
  unauthorized,
  walletDisabled,
} from "./responses.ts";

const conflict = {
  409: json(
    failSchema({ reference_id: ["Reference ID has already been used."] }),
    "reference_id used for another request",
  ),
};

/** GET /api/v1/wallet's 200 body. */
const viewResponseSchema = successSchema(z.object({ wallet: enabledWalletSchema }));
type ViewResponse = z.infer<typeof viewResponseSchema>;

/** GET /api/v1/wallet/transactions's 200 body. */
const transactionsResponseSchema = successSchema(z.object({
  transactions: z.array(transactionSchema),
  next_cursor: z.string().nullable().optional(),
}));
type TransactionsResponse = z.infer<typeof transactionsResponseSchema>;

function walletRoutesDefinitions(auth: ReturnType<typeof requireToken>) {
  const enable = createRoute({
    method: "post",
    path: "/api/v1/wallet",
    operationId: "enableWallet",
    tags: ["Wallet"],
    summary: "Enable my wallet",
    security: tokenSecurity,
    middleware: [auth] as const,
    responses: {
      201: json(successSchema(z.object({ wallet: enabledWalletSchema })), "Wallet enabled", enableExample),
      400: json(failSchema("Already enabled"), "The wallet is already enabled"),
      ...unauthorized,
      500: commonFailures[500],
      503: commonFailures[503],
    },
  });

  const view = createRoute({
    method: "get",
    path: "/api/v1/wallet",
    operationId: "viewWallet",
    tags: ["Wallet"],
    summary: "View my wallet balance",
    description:
      "Read from the cache: after a deposit or withdrawal the balance may lag by at most 5 seconds.",
    security: tokenSecurity,
    middleware: [auth] as const,
    responses: {
      200: json(viewResponseSchema, "The wallet and its balance", viewExample),
      ...unauthorized,
      ...walletDisabled,
      500: commonFailures[500],
      503: commonFailures[503],
    },
  });

  const transactions = createRoute({
    method: "get",
    path: "/api/v1/wallet/transactions",
    operationId: "listTransactions",
    tags: ["Wallet"],
    summary: "View my wallet transactions",
    description:
      "Oldest first. With `limit`, pages of at most that many and a `next_cursor` (null on the last).",
    security: tokenSecurity,
    middleware: [auth] as const,
    request: { query: transactionsQuerySchema },
    responses: {
      200: json(transactionsResponseSchema, "The wallet's transactions", transactionsExample),
      ...fieldErrors("limit"),
      ...unauthorized,
      ...walletDisabled,
      500: commonFailures[500],
      503: commonFailures[503],
    },
  });

  const deposit = createRoute({
    method: "post",
    path: "/api/v1/wallet/deposits",
    operationId: "deposit",
    tags: ["Wallet"],
    summary: "Add virtual money to my wallet",
    description: "reference_id is the idempotency key: an identical retry gets the first response again.",
    security: tokenSecurity,
    middleware: [auth, bodyGuard(moneyBodySchema)] as const,
    request: { body: formBody(moneyBodySchema, "Amount and the client's reference id") },
    responses: {
      201: json(successSchema(z.object({ deposit: depositSchema })), "Deposited", depositExample),
      ...fieldErrors("amount"),
      ...unauthorized,
      ...walletDisabled,
      ...conflict,
      ...commonFailures,
    },
  });

  const withdrawal = createRoute({
    method: "post",
    path: "/api/v1/wallet/withdrawals",
    operationId: "withdraw",
    tags: ["Wallet"],
    summary: "Use virtual money from my wallet",
    description:
      "Refused with `Insufficient balance` (recorded as a failed transaction) when the amount is more " +
      "than the balance. reference_id is the idempotency key.",
    security: tokenSecurity,
    middleware: [auth, bodyGuard(moneyBodySchema)] as const,
    request: { body: formBody(moneyBodySchema, "Amount and the client's reference id") },
    responses: {
      201: json(successSchema(z.object({ withdrawal: withdrawalSchema })), "Withdrawn", withdrawalExample),
      400: json(failSchema("Insufficient balance"), "Insufficient balance, or missing/invalid fields"),
      ...unauthorized,
      ...walletDisabled,
      ...conflict,
      ...commonFailures,
    },
  });

  const disable = createRoute({
    method: "patch",
    path: "/api/v1/wallet",
    operationId: "disableWallet",
    tags: ["Wallet"],
    summary: "Disable my wallet",
    security: tokenSecurity,
    middleware: [auth, bodyGuard(disableBodySchema)] as const,
    request: { body: formBody(disableBodySchema, "is_disabled=true") },
    responses: {
      200: json(successSchema(z.object({ wallet: disabledWalletSchema })), "Wallet disabled", disableExample),
      400: json(failSchema("Already disabled"), "Not enabled, or missing/invalid is_disabled"),
      ...unauthorized,
      ...commonFailures,
    },
  });

  return { enable, view, transactions, deposit, withdrawal, disable };
}

/**
 * The JSend body of GET /api/v1/wallet for a wallet view. A cached view is one object, shared by every reader
 * of the wallet until its entry is replaced (a change, or a refresh every 1.5-2.7 s), so its JSON is built once
 * per entry instead of once per request; views read from PostgreSQL are collected with their bodies.
 */
const viewBodies = new WeakMap<WalletView, string>();
function viewBody(view: WalletView): string {
  let text = viewBodies.get(view);
  if (text === undefined) {
    const body: ViewResponse = successBody({ wallet: presentEnabledView(view) }); // checked as c.json would
    text = JSON.stringify(body);
    viewBodies.set(view, text);
  }
  return text;
}

/** Cents from an amount that already passed validation. */
function validAmount(value: Parameters<typeof amountText>[0]): bigint {
  const parsed = parseAmount(amountText(value));
  if ("error" in parsed) throw new Error("unreachable: amount was validated");
  return parsed.cents;
}

export function walletRoutes(
  deps: { wallets: WalletService; tokens: TokenService; histories: HistoryStreams },
) {
  const routes = walletRoutesDefinitions(requireToken(deps.tokens));
  const { wallets, histories } = deps;
  const app = new OpenAPIHono<AuthEnv>({ defaultHook: validationHook });
  const registry = app.openAPIRegistry;
  return app
    .openapi(routes.enable, async (c) => {
      const wallet = await wallets.enable(c.get("subject").walletId);
      return c.json(successBody({ wallet: presentEnabledWallet(wallet) }), 201);
    })
    .openapi(routes.view, async (c) => {
      const view = await wallets.view(c.get("subject").walletId);
      // The same response c.json would give (its Content-Type too), from JSON built once per cached entry.
      const response = c.body(viewBody(view), 200, { "Content-Type": "application/json" });
      return response as unknown as TypedResponse<ViewResponse, 200, "json">;
    })
    .openapi(routes.transactions, async (c) => {
      const query = c.req.valid("query");
      const { walletId } = c.get("subject");
      if (query.limit === undefined) {
        // All of it, streamed from a cursor (history_stream.ts): the same JSON as c.json of the whole list, or
        // a 503 JSend error while too many are being sent.
        const response = await histories.respond(c, (cursor) => wallets.history(walletId, cursor), {
          walletId,
        });
        return response as unknown as TypedResponse<TransactionsResponse, 200, "json">;
      }
      const page = await wallets.transactions(walletId, {
        limit: Number(query.limit),
        after: query.cursor === undefined ? null : BigInt(query.cursor),
      });
      const transactions = page.transactions.map(presentTransaction);
      return c.json(successBody({ transactions, next_cursor: page.nextCursor?.toString() ?? null }), 200);
    })
    .openapi(documentedBodyRoute(registry, routes.deposit), async (c) => {
      const body = c.get("body");
      const { walletId, customerXid } = c.get("subject");
      const transaction = await wallets.deposit(walletId, validAmount(body.amount), body.reference_id);
      return c.json(successBody({ deposit: presentDeposit(transaction, customerXid) }), 201);
    })
    .openapi(documentedBodyRoute(registry, routes.withdrawal), async (c) => {
      const body = c.get("body");
      const { walletId, customerXid } = c.get("subject");
      const transaction = await wallets.withdraw(walletId, validAmount(body.amount), body.reference_id);
      return c.json(successBody({ withdrawal: presentWithdrawal(transaction, customerXid) }), 201);
    })
    .openapi(documentedBodyRoute(registry, routes.disable), async (c) => {
      const wallet = await wallets.disable(c.get("subject").walletId);
      return c.json(successBody({ wallet: presentDisabledWallet(wallet) }), 200);
    });
}
