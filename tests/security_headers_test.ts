/**
 * Security defaults of every answer: `nosniff` everywhere, `no-store` on the API (tokens, balances, histories),
 * a Content-Security-Policy that forbids framing on Swagger UI, 404 messages that do not repeat the request,
 * and 405 with `Allow` on every known path, the docs files included.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { call, createHarness, enabledWallet, type Harness } from "./support/harness.ts";

let h: Harness;
before(() => {
  h = createHarness();
});
after(async () => {
  await h.close();
});

/** Every path the app knows, with the methods it answers there. */
const KNOWN: Array<[string, string[]]> = [
  ["/health", ["GET"]],
  ["/openapi.json", ["GET"]],
  ["/swagger", ["GET"]],
  ["/swagger/", ["GET"]],
  ["/swagger/index.html", ["GET"]],
  ["/swagger/init.js", ["GET"]],
  ["/swagger/swagger-ui.css", ["GET"]],
  ["/swagger/swagger-ui-bundle.js", ["GET"]],
  ["/swagger/favicon-32x32.png", ["GET"]],
  ["/api/v1/init", ["POST"]],
  ["/api/v1/wallet", ["GET", "PATCH", "POST"]],
  ["/api/v1/wallet/transactions", ["GET"]],
  ["/api/v1/wallet/deposits", ["POST"]],
  ["/api/v1/wallet/withdrawals", ["POST"]],
];
const METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "FOO"];

describe("security headers", () => {
  it("X-Content-Type-Options: nosniff on every answer: success, fail of each kind, docs", async () => {
    const { token } = await enabledWallet(h.app);
    const answers = [
      await h.app.request("/health"),
      await h.app.request("/openapi.json"),
      await h.app.request("/swagger"),
      await h.app.request("/swagger/swagger-ui.css"),
      await h.app.request("/nope"),
      await h.app.request("/api/v1/wallet", { method: "DELETE" }),
      await h.app.request("/api/v1/wallet"),
      await h.app.request("/api/v1/wallet", { headers: { authorization: `Token ${token}` } }),
      await h.app.request("/api/v1/init", {
        method: "POST",
        body: "x",
        headers: { "content-type": "text/plain" },
      }),
      await h.app.request("/api/v1/init", {
        method: "POST",
        body: "{",
        headers: { "content-type": "application/json" },
      }),
      await h.app.request("/api/v1/init", {
        method: "POST",
        body: "x".repeat(1_100_000),
        headers: { "content-type": "application/json" },
      }),
    ];
    for (const res of answers) {
      assert.equal(res.headers.get("x-content-type-options"), "nosniff", `${res.url} ${res.status}`);
      await res.body?.cancel();
    }
    assert.deepEqual(answers.map((r) => r.status), [200, 200, 200, 200, 404, 405, 401, 200, 415, 400, 413]);
  });

  it("Cache-Control: no-store on the token, balance and history answers, and on the API's refusals", async () => {
    const init = await call(h.app, "POST", "/api/v1/init", { body: { customer_xid: crypto.randomUUID() } });
    assert.equal(init.status, 201);
    assert.equal(init.headers.get("cache-control"), "no-store");
    const { token } = await enabledWallet(h.app);
    for (
      const path of ["/api/v1/wallet", "/api/v1/wallet/transactions", "/api/v1/wallet/transactions?limit=1"]
    ) {
      const res = await call(h.app, "GET", path, { token });
      assert.equal(res.status, 200, path);
      assert.equal(res.headers.get("cache-control"), "no-store", path);
      // the same for a cached answer (the second read of a wallet is served from the near cache)
      const again = await call(h.app, "GET", path, { token });
      assert.equal(again.headers.get("cache-control"), "no-store", path);
    }
    for (
      const res of [
        await call(h.app, "POST", "/api/v1/wallet/deposits", {
          token,
          body: { amount: 1, reference_id: "r" },
        }),
        await call(h.app, "GET", "/api/v1/wallet"),
        await call(h.app, "GET", "/api/v1/nope"),
        await call(h.app, "PUT", "/api/v1/wallet"),
      ]
    ) {
      assert.equal(res.headers.get("cache-control"), "no-store", String(res.status));
    }
  });

  it("Swagger UI: a Content-Security-Policy of the service's own files only, and no framing", async () => {
    for (
      const path of ["/swagger", "/swagger/init.js", "/swagger/swagger-ui-bundle.js", "/swagger/index.html"]
    ) {
      const res = await h.app.request(path);
      await res.body?.cancel();
      const csp = res.headers.get("content-security-policy") ?? "";
      const directives = new Map(
        csp.split(";").map((d) => d.trim().split(/\s+/)).map(([name, ...values]) => [name, values]),
      );
      assert.deepEqual(directives.get("frame-ancestors"), ["'none'"], `${path}: ${csp}`);
      assert.deepEqual(directives.get("default-src"), ["'none'"], path);
      assert.deepEqual(directives.get("script-src"), ["'self'"], path);
      assert.deepEqual(directives.get("connect-src"), ["'self'"], path);
      assert.equal(res.headers.get("x-frame-options"), "DENY", path);
    }
  });
});

describe("404 and 405", () => {
  it("404 messages do not repeat the request's path, query or method", async () => {
    const marker = "<script>alert(1)</script>";
    for (
      const [method, path] of [
        ["GET", `/${encodeURIComponent(marker)}`],
        ["POST", `/api/v1/${marker}?q=${marker}`],
        ["GET", "/api/v1/wallet/evil-path-text"],
        ["DELETE", "/swagger/evil-path-text.js"],
      ]
    ) {
      const res = await call(h.app, method, path);
      assert.equal(res.status, 404, path);
      assert.equal(res.body.status, "fail");
      const text = JSON.stringify(res.body);
      for (const echo of ["script", "alert", "evil", "path-text", method]) {
        assert.ok(!text.includes(echo), `${path}: ${text}`);
      }
    }
  });

  it("every known path answers other methods with 405, Allow and a JSend fail; no message repeats the method", async () => {
    for (const [path, allowed] of KNOWN) {
      for (const method of METHODS.filter((m) => !allowed.includes(m))) {
        const res = await call(h.app, method, path);
        assert.equal(res.status, 405, `${method} ${path}`);
        assert.deepEqual(Object.keys(res.body), ["status", "data"], `${method} ${path}`);
        assert.equal(res.body.status, "fail");
        assert.ok(!res.body.data.error.includes(method), `${method} ${path}: ${res.body.data.error}`);
        const allow = (res.headers.get("allow") ?? "").split(",").map((m) => m.trim()).sort();
        assert.deepEqual(allow, allowed, `${method} ${path}`);
      }
    }
  });

  it("every known path answers its own methods (the list above is the app's)", async () => {
    for (const [path, allowed] of KNOWN) {
      for (const method of allowed) {
        const res = await h.app.request(path, { method });
        await res.body?.cancel();
        assert.ok(res.status !== 404 && res.status !== 405, `${method} ${path}: ${res.status}`);
      }
    }
  });
});
