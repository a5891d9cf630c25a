/**
 * Per request: the request id round trip (a sane X-Request-Id is echoed, anything else replaced by a fresh
 * UUID), one JSON log line with route, method, status and duration and nothing secret, and the HTTP and wallet
 * metrics of /metrics moving with the traffic, labelled by route pattern, never by raw path. In-process, on the
 * test database and Redis.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createApp } from "../src/app.ts";
import type { Logger } from "../src/log.ts";
import { ServiceMetrics } from "../src/observability/metrics.ts";
import { WalletService } from "../src/wallet/wallet_service.ts";
import { call, createHarness, type Harness, newCustomerXid } from "./support/harness.ts";
import { metricValue, parseMetrics } from "./support/prometheus.ts";

interface Line {
  level: string;
  message: string;
  fields: Record<string, unknown>;
}

/** A logger that keeps what it was given. */
function capturingLogger(lines: Line[]): Logger {
  const write = (level: string) => (message: string, fields: Record<string, unknown> = {}) =>
    void lines.push({ level, message, fields });
  const logger: Logger = {
    debug: write("debug"),
    info: write("info"),
    warn: write("warn"),
    error: write("error"),
    child: () => logger,
  };
  return logger;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe("request telemetry", () => {
  let harness: Harness;
  let app: ReturnType<typeof createApp>;
  let metrics: ServiceMetrics;
  const lines: Line[] = [];

  before(() => {
    harness = createHarness();
    metrics = new ServiceMetrics();
    const log = capturingLogger(lines);
    const wallets = new WalletService({ sql: harness.sql, log, cache: harness.cache, metrics });
    app = createApp({ wallets, tokens: harness.tokens, log, metrics });
  });
  after(() => harness.close());

  const requestLines = () => lines.filter((l) => l.message === "request");

  it("echoes a sane X-Request-Id and replaces anything else with a fresh UUID", async () => {
    const sane = ["abc-123", "A".repeat(128), "trace_id=42", "x"];
    for (const id of sane) {
      const response = await call(app, "GET", "/health", { headers: { "X-Request-Id": id } });
      assert.equal(response.headers.get("x-request-id"), id, `kept: ${id}`);
    }
    const insane = ["A".repeat(129), "has space", "semi;colon", "new\\nline", "<script>", "über", "a/b"];
    const given = new Set<string>();
    for (const id of insane) {
      const response = await call(app, "GET", "/health", { headers: { "X-Request-Id": id } });
      const returned = response.headers.get("x-request-id")!;
      assert.match(returned, UUID, `replaced: ${JSON.stringify(id)} -> ${returned}`);
      given.add(returned);
    }
    const missing = await call(app, "GET", "/health");
    assert.match(missing.headers.get("x-request-id")!, UUID);
    given.add(missing.headers.get("x-request-id")!);
    assert.equal(given.size, insane.length + 1, "every made id is new");
    // On error paths too (JSend 404 and 401).
    const notFound = await call(app, "GET", "/nowhere", { headers: { "X-Request-Id": "lost-1" } });
    assert.equal(notFound.status, 404);
    assert.equal(notFound.headers.get("x-request-id"), "lost-1");
    const unauthorized = await call(app, "GET", "/api/v1/wallet", {
      headers: { "X-Request-Id": "no-token" },
    });
    assert.equal(unauthorized.status, 401);
    assert.equal(unauthorized.headers.get("x-request-id"), "no-token");
  });

  it("logs one line per request with its id, route pattern, method, status and duration, and no secret", async () => {
    lines.length = 0;
    const init = await call(app, "POST", "/api/v1/init", {
      body: { customer_xid: newCustomerXid() },
      headers: { "X-Request-Id": "init-1" },
    });
    const token = init.body.data.token as string;
    await call(app, "POST", "/api/v1/wallet", { token, headers: { "X-Request-Id": "enable-1" } });
    await call(app, "POST", "/api/v1/wallet/deposits", {
      token,
      body: { amount: 4321.98, reference_id: "telemetry-ref" },
      headers: { "X-Request-Id": "deposit-1" },
    });
    await call(app, "GET", "/api/v1/wallet/transactions?limit=5", { token });
    await call(app, "GET", "/health");

    const logged = requestLines();
    assert.deepEqual(
      logged.map((
        l,
      ) => [l.level, l.fields.requestId ?? "", l.fields.method, l.fields.route, l.fields.status]),
      [
        ["info", "init-1", "POST", "/api/v1/init", 201],
        ["info", "enable-1", "POST", "/api/v1/wallet", 201],
        ["info", "deposit-1", "POST", "/api/v1/wallet/deposits", 201],
        ["info", logged[3].fields.requestId, "GET", "/api/v1/wallet/transactions", 200],
        ["debug", logged[4].fields.requestId, "GET", "/health", 200], // probes at debug
      ],
    );
    for (const line of logged) {
      assert.equal(typeof line.fields.durationMs, "number");
      assert.ok((line.fields.durationMs as number) >= 0);
    }
    assert.equal(logged[3].fields.path, "/api/v1/wallet/transactions", "the path without its query string");
    const text = JSON.stringify(logged);
    for (const secret of [token, "4321.98", "telemetry-ref", "Token "]) {
      assert.ok(!text.includes(secret), `the request log carries ${secret}`);
    }
  });

  it("counts requests by route pattern, method and status, and wallet operations by kind and result", async () => {
    const before = parseMetrics(await metrics.text());
    const init = await call(app, "POST", "/api/v1/init", { body: { customer_xid: newCustomerXid() } });
    const token = init.body.data.token as string;
    await call(app, "POST", "/api/v1/wallet", { token });
    await call(app, "POST", "/api/v1/wallet", { token }); // already enabled: 400
    for (const [i, amount] of [10, 20, 30].entries()) {
      await call(app, "POST", "/api/v1/wallet/deposits", { token, body: { amount, reference_id: `d${i}` } });
    }
    await call(app, "POST", "/api/v1/wallet/deposits", { token, body: { amount: 10, reference_id: "d0" } });
    await call(app, "POST", "/api/v1/wallet/withdrawals", {
      token,
      body: { amount: 1000, reference_id: "w" },
    });
    for (let i = 0; i < 3; i++) await call(app, "GET", `/api/v1/wallet/${crypto.randomUUID()}`);
    const response = await app.request("/metrics");
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    const text = await response.text();
    const afterward = parseMetrics(text);

    const moved = (name: string, labels: Record<string, string>) =>
      metricValue(afterward, name, labels) - metricValue(before, name, labels);
    const requests = "mini_wallet_http_request_duration_seconds_count";
    assert.equal(moved(requests, { route: "/api/v1/wallet/deposits", method: "POST", status: "201" }), 4);
    assert.equal(moved(requests, { route: "/api/v1/wallet", method: "POST", status: "201" }), 1);
    assert.equal(moved(requests, { route: "/api/v1/wallet", method: "POST", status: "400" }), 1);
    assert.equal(moved(requests, { route: "/api/v1/wallet/withdrawals", method: "POST", status: "400" }), 1);
    assert.equal(moved(requests, { route: "unmatched", method: "GET", status: "404" }), 3);
    assert.ok(!text.includes("/api/v1/wallet/0") && !/route="\/api\/v1\/wallet\/[0-9a-f]{8}-/.test(text));

    const operations = "mini_wallet_wallet_operations_total";
    assert.equal(moved(operations, { kind: "init", result: "success" }), 1);
    assert.equal(moved(operations, { kind: "enable", result: "success" }), 1);
    assert.equal(moved(operations, { kind: "enable", result: "already_enabled" }), 1);
    assert.equal(moved(operations, { kind: "deposit", result: "success" }), 3);
    assert.equal(moved(operations, { kind: "deposit", result: "replayed" }), 1);
    assert.equal(moved(operations, { kind: "withdrawal", result: "insufficient_balance" }), 1);

    // Each money request went through a write batch (run one after the other here: one request each).
    assert.equal(moved("mini_wallet_write_batch_size_count", {}), 5);
    assert.equal(moved("mini_wallet_write_batch_size_sum", {}), 5);
    assert.equal(moved("mini_wallet_write_batch_duration_seconds_count", {}), 5);
  });
});
