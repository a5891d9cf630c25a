/**
 * The API's own documentation: /openapi.json generated from the route schemas, and Swagger UI at /swagger
 * with every asset served from the `swagger-ui-dist` package by this service (no CDN: works offline).
 */
import { Hono } from "hono";
import type { OpenAPIHono } from "@hono/zod-openapi";
import getAbsoluteFSPath from "swagger-ui-dist/absolute-path.js";
import { swaggerHeaders } from "../security_headers.ts";

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

/** /openapi.json, /swagger and each file of Swagger UI, every one a static route of its own. */
export function docsRoutes(api: OpenAPIHono<never>) {
  const document = openApiDocument(api);
  const assetDir = getAbsoluteFSPath();
  // Static routes only (no `/swagger/:asset`): every docs path is then known to the router, so a wrong method
  // on any of them gets 405 with Allow, and an unknown file 404. A parameter with static siblings would make
  // Hono's RegExpRouter refuse the app and route every API request through the slower TrieRouter.
  const docs = new Hono()
    .get("/openapi.json", (c) => c.json(document))
    .get("/swagger", swaggerHeaders, (c) => c.html(INDEX_HTML))
    .get("/swagger/", swaggerHeaders, (c) => c.redirect("/swagger", 301))
    .get("/swagger/index.html", swaggerHeaders, (c) => c.redirect("/swagger", 301))
    .get("/swagger/init.js", swaggerHeaders, (c) => {
      return c.body(INIT_JS, 200, { "content-type": "text/javascript; charset=utf-8" });
    });
  for (const [name, type] of Object.entries(ASSETS)) {
    let bytes: Uint8Array<ArrayBuffer> | undefined;
    docs.get(`/swagger/${name}`, swaggerHeaders, async (c) => {
      bytes ??= await Deno.readFile(`${assetDir}/${name}`);
      return c.body(bytes, 200, { "content-type": type, "cache-control": "public, max-age=86400" });
    });
  }
  return docs;
}
