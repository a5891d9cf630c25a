/**
 * The API's own documentation: /openapi.json generated from the route schemas, and Swagger UI at /swagger
 * with every asset served from the `swagger-ui-dist` package by this service (no CDN: works offline).
 */
import { Hono } from "hono";
import type { OpenAPIHono } from "@hono/zod-openapi";
import getAbsoluteFSPath from "swagger-ui-dist/absolute-path.js";

const ASSETS: Record<string, string> = {
  "swagger-ui.css": "text/css; charset=utf-8",
  "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
  "favicon-32x32.png": "image/png",
};

const INDEX_HTML = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Mini Wallet API</title>
  <link rel="stylesheet" href="/swagger/swagger-ui.css">
  <link rel="icon" type="image/png" href="/swagger/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/swagger/swagger-ui-bundle.js"></script>
  <script src="/swagger/init.js"></script>
</body>
</html>`;

const INIT_JS = `window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null, // never ask validator.swagger.io: the page must work offline
  persistAuthorization: true,
});`;

/** The OpenAPI document of `api`, with the token security schemes and server info. */
export function openApiDocument(api: OpenAPIHono<never>) {
  api.openAPIRegistry.registerComponent("securitySchemes", "Token", {
    type: "apiKey",
    in: "header",
    name: "Authorization",
    description: "`Token <token>` with the token from POST /api/v1/init.",
  });
  api.openAPIRegistry.registerComponent("securitySchemes", "Bearer", {
    type: "http",
    scheme: "bearer",
    bearerFormat: "JWT",
  });
  const document = api.getOpenAPI31Document({
    openapi: "3.1.0",
    info: {
      title: "Mini Wallet API",
      version: "1.0.0",
      description: "Wallets with exact balances, idempotent deposits and withdrawals, and JSend responses.",
      // An SPDX reference of our own: the project publishes no open-source licence. (`identifier` is OpenAPI
      // 3.1; the typings only know 3.0's fields.)
      license: { name: "Proprietary", identifier: "LicenseRef-Proprietary" } as { name: string },
    },
    // Relative: the server that serves this document (behind a proxy, its public address).
    servers: [{ url: "/", description: "This server" }],
  });
  return requireBodies(document);
}

/**
 * Every declared request body is required. The routes declare `required: false` because @hono/zod-openapi
 * validates a required body against each media type it lists, so a form body would fail the JSON validator;
 * `bodyGuard` answers a missing body with the missing fields itself. The document states the contract.
 */
function requireBodies<T extends { paths?: object }>(document: T): T {
  type Operation = { requestBody?: { required?: boolean } };
  for (const item of Object.values(document.paths ?? {}) as Record<string, Operation>[]) {
    for (const operation of Object.values(item)) {
      if (operation.requestBody) operation.requestBody.required = true;
    }
  }
  return document;
}

export function docsRoutes(api: OpenAPIHono<never>) {
  const document = openApiDocument(api);
  const assetCache = new Map<string, Uint8Array>();
  const assetDir = getAbsoluteFSPath();

  return new Hono()
    .get("/openapi.json", (c) => c.json(document))
    .get("/swagger", (c) => c.html(INDEX_HTML))
    .get("/swagger/", (c) => c.redirect("/swagger", 301))
    // One parameterised route for every file under /swagger/: static siblings of a parameter make Hono's
    // RegExpRouter refuse the app, and then every request of the API is routed by the slower TrieRouter
    // (measured: its `search` was 7.7 % of the cached GET's CPU).
    .get("/swagger/:asset", async (c) => {
      const name = c.req.param("asset");
      if (name === "index.html") return c.redirect("/swagger", 301);
      if (name === "init.js") {
        return c.body(INIT_JS, 200, { "content-type": "text/javascript; charset=utf-8" });
      }
      const type = ASSETS[name];
      if (!type) return c.notFound();
      let bytes = assetCache.get(name);
      if (!bytes) {
        bytes = await Deno.readFile(`${assetDir}/${name}`);
        assetCache.set(name, bytes);
      }
      return c.body(bytes as Uint8Array<ArrayBuffer>, 200, {
        "content-type": type,
        "cache-control": "public, max-age=86400",
      });
    });
}
