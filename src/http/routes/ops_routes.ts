/**
 * The operators' endpoints, served by every process whatever its roles: GET /health (liveness: the process
 * is up, nothing else is checked), GET /ready (every dependency this process's roles need answers), and
 * GET /metrics (Prometheus text). They are not part of the client API, so they stay out of /openapi.json,
 * like /health always was (the contract lists it among the endpoints that are not the API).
 */
import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { TypedResponse } from "hono";
import { DEPENDENCIES, isReady, type ReadinessReport } from "../../observability/readiness.ts";
import { errorBody, successBody } from "../jsend.ts";
import { validationHook } from "../validation_hook.ts";
import { json } from "./responses.ts";

/** What the ops endpoints read: the process's readiness and metrics (both threads, when there are two). */
export interface OpsEndpoints {
  readiness(): Promise<ReadinessReport>;
  /** The Prometheus text exposition of the whole process. */
  metricsText(): Promise<string>;
}

/** Prometheus text exposition format 0.0.4. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const checkSchema = z.object({
  status: z.enum(["up", "down"]),
  duration_ms: z.number().openapi({ description: "How long the check took (it is cut off after a timeout)" }),
});
const checksSchema = z.object({
  postgres: checkSchema.optional(),
  redis: checkSchema.optional(),
  kafka: checkSchema.optional(),
}).openapi({
  description: "Each dependency this process's roles need (api: postgres, redis; relay: postgres, kafka; " +
    "consumer: kafka, redis)",
});

const readyBodySchema = z.object({
  status: z.literal("success"),
  data: z.object({ checks: checksSchema }),
}).openapi({
  example: {
    status: "success",
    data: {
      checks: { postgres: { status: "up", duration_ms: 0.9 }, redis: { status: "up", duration_ms: 0.4 } },
    },
  },
});
const notReadyBodySchema = z.object({
  status: z.literal("error"),
  message: z.string(),
  data: z.object({ checks: checksSchema }),
}).openapi({
  example: {
    status: "error",
    message: "Not ready: redis is down",
    data: {
      checks: {
        postgres: { status: "up", duration_ms: 0.9 },
        redis: { status: "down", duration_ms: 1000.2 },
      },
    },
  },
});

const healthRoute = createRoute({
  method: "get",
  path: "/health",
  summary: "Liveness: 200 while the process is up (checks no dependency)",
  responses: { 200: json(z.object({ status: z.literal("ok") }), "The process is up") },
});

const readyRoute = createRoute({
  method: "get",
  path: "/ready",
  summary: "Readiness: 200 when every dependency this process needs answers, else 503",
  responses: {
    200: json(readyBodySchema, "Every dependency answered"),
    503: json(notReadyBodySchema, "A dependency did not answer in time"),
  },
});

const metricsRoute = createRoute({
  method: "get",
  path: "/metrics",
  summary: "Prometheus metrics of this process (text exposition format)",
  responses: {
    200: {
      description: "Every metric of this process; docs/metrics.md says what each means",
      content: { [METRICS_CONTENT_TYPE]: { schema: z.string() } },
    },
  },
});

type Checks = z.infer<typeof checksSchema>;

function presentChecks(report: ReadinessReport): Checks {
  const checks: Checks = {};
  for (const dependency of DEPENDENCIES) {
    const result = report[dependency];
    if (result) checks[dependency] = { status: result.status, duration_ms: result.durationMs };
  }
  return checks;
}

/** /health, /ready and /metrics. */
export function opsRoutes(ops: OpsEndpoints) {
  return new OpenAPIHono({ defaultHook: validationHook })
    .openapi(healthRoute, (c) => c.json({ status: "ok" as const }, 200))
    .openapi(readyRoute, async (c) => {
      const report = await ops.readiness();
      const checks = presentChecks(report);
      if (isReady(report)) return c.json(successBody({ checks }), 200);
      const down = DEPENDENCIES.filter((dependency) => report[dependency]?.status === "down");
      const message = `Not ready: ${down.join(", ")} ${down.length > 1 ? "are" : "is"} down`;
      return c.json({ ...errorBody(message), data: { checks } }, 503);
    })
    .openapi(metricsRoute, async (c) => {
      // c.text would set its own text/plain; the type Prometheus expects goes with the body.
      const response = c.body(await ops.metricsText(), 200, { "Content-Type": METRICS_CONTENT_TYPE });
      return response as unknown as TypedResponse<string, 200, "text">;
    });
}
