/**
 * The HTTP application: API routes, documentation, and the operators' endpoints (/health, /ready, /metrics),
 * with JSend on every path (404, 405, 413, 415, 400, 401 and 500 included), and a request id, a log line and
 * metrics for every request.
 */
import { OpenAPIHono } from "@hono/zod-openapi";
import type { TokenService } from "./auth/tokens.ts";
import type { Logger } from "./log.ts";
import type { ServiceMetrics } from "./observability/metrics.ts";
import type { WalletService } from "./wallet/wallet_service.ts";
import { HistoryStreams } from "./http/history_stream.ts";
import { errorHandler, notFoundHandler } from "./http/errors.ts";
import { requestTelemetry } from "./http/request_telemetry.ts";
import { validationHook } from "./http/validation_hook.ts";
import { initRoutes } from "./http/routes/init_routes.ts";
import { walletRoutes } from "./http/routes/wallet_routes.ts";
import { docsRoutes } from "./http/routes/docs_routes.ts";
import { type OpsEndpoints, opsRoutes } from "./http/routes/ops_routes.ts";

export interface AppDeps {
  wallets: WalletService;
  tokens: TokenService;
  log: Logger;
  /** Sends whole histories (GET /api/v1/wallet/transactions without limit); defaults when absent. */
  histories?: HistoryStreams;
  /** This thread's metrics, updated per request; without them requests are only logged. */
  metrics?: ServiceMetrics;
  /** What /ready and /metrics report; by default no dependency is checked, and /metrics shows `metrics`. */
  ops?: OpsEndpoints;
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
  // Request id, security headers (nosniff everywhere, no-store on the API), log line and metrics: registered
  // first, so they wrap every answer.
  app.use("*", requestTelemetry({ log: deps.log, metrics: deps.metrics }));
  app.route("/", opsRoutes(deps.ops ?? localOps(deps.metrics)));
  app.route("/", api);
  app.route("/", docsRoutes(api as unknown as OpenAPIHono<never>));
  app.onError(errorHandler(deps.log));
  app.notFound(notFoundHandler(app as never));
  return app;
}

/**
 * The app of a process that runs no API (only the relay and/or the consumer): the operators' endpoints alone,
 * with the same request ids, logs, metrics and JSend 404/405/500.
 */
export function createOpsApp(deps: { log: Logger; metrics?: ServiceMetrics; ops: OpsEndpoints }) {
  const app = new OpenAPIHono({ defaultHook: validationHook });
  app.use("*", requestTelemetry({ log: deps.log, metrics: deps.metrics }));
  app.route("/", opsRoutes(deps.ops));
  app.onError(errorHandler(deps.log));
  app.notFound(notFoundHandler(app as never));
  return app;
}

function localOps(metrics?: ServiceMetrics): OpsEndpoints {
  return {
    readiness: () => Promise.resolve({}),
    metricsText: () => metrics ? metrics.text() : Promise.resolve(""),
  };
}
