/**
 * The HTTP application: API routes, documentation and health, with JSend on every path (404, 405, 413, 415,
 * 400, 401 and 500 included).
 */
import { OpenAPIHono } from "@hono/zod-openapi";
import type { TokenService } from "./auth/tokens.ts";
import type { Logger } from "./log.ts";
import type { WalletService } from "./wallet/wallet_service.ts";
import { HistoryStreams } from "./http/history_stream.ts";
import { errorHandler, notFoundHandler } from "./http/errors.ts";
import { validationHook } from "./http/validation_hook.ts";
import { initRoutes } from "./http/routes/init_routes.ts";
import { walletRoutes } from "./http/routes/wallet_routes.ts";
import { docsRoutes } from "./http/routes/docs_routes.ts";
import { apiAnswerHeaders, everyAnswerHeaders } from "./http/security_headers.ts";

export interface AppDeps {
  wallets: WalletService;
  tokens: TokenService;
  log: Logger;
  /** Sends whole histories (GET /api/v1/wallet/transactions without limit); defaults when absent. */
  histories?: HistoryStreams;
}

/** Compose the whole HTTP application. */
export function createApp(deps: AppDeps) {
  const api = new OpenAPIHono({ defaultHook: validationHook })
    .route("/", initRoutes(deps))
    .route(
      "/",
      walletRoutes({ ...deps, histories: deps.histories ?? new HistoryStreams({ log: deps.log }) }),
    );

  const app = new OpenAPIHono({ defaultHook: validationHook });
  // Security headers (nosniff everywhere, no-store on the API): registered first, so they wrap every answer.
  app.use(everyAnswerHeaders);
  app.use("/api/*", apiAnswerHeaders);
  app.get("/health", (c) => c.json({ status: "ok" }));
  app.route("/", api);
  app.route("/", docsRoutes(api as unknown as OpenAPIHono<never>));
  app.onError(errorHandler(deps.log));
  app.notFound(notFoundHandler(app as never));
  return app;
}
