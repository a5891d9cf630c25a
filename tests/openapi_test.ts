/**
 * GET /openapi.json describes the contract: the seven operations, their success and failure statuses with
 * JSend bodies, the three request media types, the token security schemes and the contract's messages.
 * Real responses of one wallet's life are checked against the documented schemas too. Also GET /health.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { call, createHarness, enabledWallet, type Harness, newCustomerXid } from "./support/harness.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

const MEDIA_TYPES = ["multipart/form-data", "application/x-www-form-urlencoded", "application/json"];

/**
 * The seven operations: path, method, operationId (the name a generated client gives it), success status,
 * whether it needs a token, whether it has a body.
 */
const OPERATIONS = [
  { path: "/api/v1/init", method: "post", id: "initAccount", success: "201", auth: false, body: true },
  { path: "/api/v1/wallet", method: "post", id: "enableWallet", success: "201", auth: true, body: false },
  { path: "/api/v1/wallet", method: "get", id: "viewWallet", success: "200", auth: true, body: false },
  {
    path: "/api/v1/wallet/transactions",
    method: "get",
    id: "listTransactions",
    success: "200",
    auth: true,
    body: false,
  },
  { path: "/api/v1/wallet/deposits", method: "post", id: "deposit", success: "201", auth: true, body: true },
  {
    path: "/api/v1/wallet/withdrawals",
    method: "post",
    id: "withdraw",
    success: "201",
    auth: true,
    body: true,
  },
  { path: "/api/v1/wallet", method: "patch", id: "disableWallet", success: "200", auth: true, body: true },
];

/** Failure statuses each operation must document, from the contract. */
const FAILURES: Record<string, string[]> = {
  "post /api/v1/init": ["400", "500"],
  "post /api/v1/wallet": ["400", "401", "500"],
  "get /api/v1/wallet": ["401", "404", "500"],
  "get /api/v1/wallet/transactions": ["400", "401", "404", "500"],
  "post /api/v1/wallet/deposits": ["400", "401", "404", "409", "500"],
  "post /api/v1/wallet/withdrawals": ["400", "401", "404", "409", "500"],
  "patch /api/v1/wallet": ["400", "401", "500"],
};

/** Follow a local `$ref` (`#/components/...`). */
function deref(doc: Json, schema: Json): Json {
  let current = schema;
  for (let depth = 0; current && typeof current.$ref === "string"; depth++) {
    assert.ok(depth < 20, "a $ref cycle");
    assert.ok(current.$ref.startsWith("#/"), `only local $refs are expected: ${current.$ref}`);
    current = current.$ref.slice(2).split("/").reduce((node: Json, key: string) => node?.[key], doc);
    assert.ok(current, `dangling $ref ${schema.$ref}`);
  }
  return current;
}

/**
 * Problems of `value` against `schema`: the subset of JSON Schema the document uses ($ref, type, enum,
 * properties, required, additionalProperties, items, anyOf/oneOf, nullable types, format uuid/date-time).
 */
function validate(doc: Json, schemaIn: Json, value: unknown, at = "$"): string[] {
  const schema = deref(doc, schemaIn);
  if (!schema || Object.keys(schema).length === 0) return [];
  const alternatives = schema.anyOf ?? schema.oneOf;
  if (alternatives) {
    const fits = alternatives.some((alt: Json) => validate(doc, alt, value, at).length === 0);
    if (!fits) return [`${at}: ${JSON.stringify(value)} fits none of the alternatives`];
  }
  const problems: string[] = [];
  if (schema.enum && !schema.enum.some((v: unknown) => v === value)) {
    problems.push(`${at}: ${JSON.stringify(value)} not in ${JSON.stringify(schema.enum)}`);
  }
  const types: string[] = schema.type === undefined ? [] : [schema.type].flat();
  if (schema.nullable) types.push("null");
  const typeOf = (v: unknown) =>
    v === null
      ? "null"
      : Array.isArray(v)
      ? "array"
      : typeof v === "number"
      ? (Number.isInteger(v) ? "integer" : "number")
      : typeof v;
  if (types.length > 0) {
    const actual = typeOf(value);
    const ok = types.includes(actual) || (actual === "integer" && types.includes("number"));
    if (!ok) return [`${at}: expected ${types.join("|")}, got ${actual} (${JSON.stringify(value)})`];
  }
  if (typeof value === "string" && schema.format === "uuid" && !/^[0-9a-f-]{36}$/i.test(value)) {
    problems.push(`${at}: not a uuid: ${value}`);
  }
  if (
    typeof value === "string" && schema.format === "date-time" &&
    !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(value)
  ) problems.push(`${at}: not a date-time: ${value}`);
  if (value && typeof value === "object" && !Array.isArray(value)) {
    const object = value as Record<string, unknown>;
    for (const key of schema.required ?? []) {
      if (!(key in object)) problems.push(`${at}: missing ${key}`);
    }
    for (const [key, child] of Object.entries(object)) {
      const sub = schema.properties?.[key] ??
        (typeof schema.additionalProperties === "object" ? schema.additionalProperties : undefined);
      if (sub) problems.push(...validate(doc, sub, child, `${at}.${key}`));
    }
  }
  if (Array.isArray(value) && schema.items) {
    value.forEach((item, i) => problems.push(...validate(doc, schema.items, item, `${at}[${i}]`)));
  }
  return problems;
}

/** The JSON schema of a documented response. */
function responseSchema(doc: Json, path: string, method: string, status: string): Json {
  const response = deref(doc, doc.paths[path][method].responses[status]);
  assert.ok(response, `${method} ${path} does not document ${status}`);
  const schema = response.content?.["application/json"]?.schema;
  assert.ok(schema, `${method} ${path} ${status} has no application/json schema`);
  return deref(doc, schema);
}

/** Every example found anywhere in the document (`example` values and `examples.*.value`). */
function allExamples(node: Json, found: unknown[] = []): unknown[] {
  if (Array.isArray(node)) node.forEach((n) => allExamples(n, found));
  else if (node && typeof node === "object") {
    for (const [key, value] of Object.entries(node)) {
      if (key === "example") found.push(value);
      else if (key === "examples" && value && typeof value === "object" && !Array.isArray(value)) {
        for (const entry of Object.values(value as Record<string, Json>)) {
          found.push(entry && typeof entry === "object" && "value" in entry ? entry.value : entry);
        }
        allExamples(value, found);
      } else allExamples(value, found);
    }
  }
  return found;
}

describe("GET /openapi.json", () => {
  let harness: Harness;
  let doc: Json;

  before(async () => {
    harness = createHarness();
    const response = await harness.app.request("/openapi.json");
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
    doc = await response.json();
  });

  after(async () => {
    await harness?.close();
  });

  it("is an OpenAPI 3.x document", () => {
    assert.match(doc.openapi, /^3\.\d+\.\d+$/);
    assert.equal(typeof doc.info?.title, "string");
    assert.equal(typeof doc.info?.version, "string");
    assert.equal(typeof doc.paths, "object");
    for (const [path, item] of Object.entries<Json>(doc.paths)) {
      assert.ok(path.startsWith("/"), path);
      for (const [method, operation] of Object.entries<Json>(item)) {
        assert.ok(
          ["get", "post", "put", "patch", "delete", "head", "options", "trace"].includes(method),
          method,
        );
        assert.ok(Object.keys(operation.responses ?? {}).length > 0, `${method} ${path} has no responses`);
      }
    }
  });

  it("has exactly the seven operations of the contract", () => {
    const documented = Object.entries<Json>(doc.paths).flatMap(([path, item]) =>
      Object.keys(item).map((method) => `${method} ${path}`)
    ).sort();
    assert.deepEqual(documented, OPERATIONS.map((op) => `${op.method} ${op.path}`).sort());
    for (const op of OPERATIONS) assert.equal(typeof doc.paths[op.path][op.method].summary, "string");
  });

  it("documents each success status with a JSend success body", () => {
    for (const op of OPERATIONS) {
      const successes = Object.keys(doc.paths[op.path][op.method].responses).filter((s) => s.startsWith("2"));
      assert.deepEqual(successes, [op.success], `${op.method} ${op.path}`);
      const schema = responseSchema(doc, op.path, op.method, op.success);
      assert.deepEqual(deref(doc, schema.properties.status).enum, ["success"], `${op.method} ${op.path}`);
      assert.ok(schema.required?.includes("status") && schema.required?.includes("data"));
      assert.equal(deref(doc, schema.properties.data).type, "object");
    }
  });

  it("documents the failure statuses with JSend fail (4xx) and error (5xx) bodies", () => {
    for (const op of OPERATIONS) {
      const key = `${op.method} ${op.path}`;
      const statuses = Object.keys(doc.paths[op.path][op.method].responses);
      for (const status of FAILURES[key]) assert.ok(statuses.includes(status), `${key} lacks ${status}`);
      for (const status of statuses.filter((s) => /^[45]/.test(s))) {
        const schema = responseSchema(doc, op.path, op.method, status);
        const where = `${key} ${status}`;
        assert.equal(schema.type, "object", where);
        if (status.startsWith("4")) {
          assert.deepEqual(deref(doc, schema.properties.status).enum, ["fail"], where);
          assert.ok(schema.required?.includes("data"), where);
          const data = deref(doc, schema.properties.data);
          assert.ok(data.required?.includes("error"), where);
          // Every 4xx example is itself a valid body of the documented schema.
          if (schema.example !== undefined) {
            assert.deepEqual(validate(doc, schema, schema.example), [], where);
          }
        } else {
          assert.deepEqual(deref(doc, schema.properties.status).enum, ["error"], where);
          assert.ok(schema.required?.includes("message"), where);
        }
      }
    }
  });

  it("accepts multipart/form-data, x-www-form-urlencoded and JSON bodies where there is a body", () => {
    for (const op of OPERATIONS.filter((o) => o.body)) {
      const body = deref(doc, doc.paths[op.path][op.method].requestBody);
      assert.ok(body, `${op.method} ${op.path} has no requestBody`);
      assert.deepEqual(Object.keys(body.content).sort(), [...MEDIA_TYPES].sort(), `${op.method} ${op.path}`);
      const schemas = MEDIA_TYPES.map((type) => deref(doc, body.content[type].schema));
      assert.ok(
        schemas.every((s) => s.type === "object" && s.required?.length > 0),
        `${op.method} ${op.path}`,
      );
    }
    const fields = (path: string, method: string) =>
      deref(doc, deref(doc, doc.paths[path][method].requestBody).content["multipart/form-data"].schema)
        .required.sort();
    assert.deepEqual(fields("/api/v1/init", "post"), ["customer_xid"]);
    assert.deepEqual(fields("/api/v1/wallet/deposits", "post"), ["amount", "reference_id"]);
    assert.deepEqual(fields("/api/v1/wallet/withdrawals", "post"), ["amount", "reference_id"]);
    assert.deepEqual(fields("/api/v1/wallet", "patch"), ["is_disabled"]);
  });

  it("declares the token security schemes and uses them on every authenticated operation", () => {
    const schemes = doc.components?.securitySchemes ?? {};
    assert.ok(Object.keys(schemes).length > 0, "no securitySchemes");
    const token = Object.entries<Json>(schemes).filter(([, s]) =>
      s.type === "apiKey" && s.in === "header" && s.name.toLowerCase() === "authorization"
    );
    const bearer = Object.entries<Json>(schemes).filter(([, s]) =>
      s.type === "http" && s.scheme.toLowerCase() === "bearer"
    );
    assert.equal(token.length, 1, "an apiKey scheme for `Authorization: Token <token>`");
    assert.equal(bearer.length, 1, "an http bearer scheme");
    for (const op of OPERATIONS) {
      const security: Json[] | undefined = doc.paths[op.path][op.method].security ?? doc.security;
      const names = (security ?? []).flatMap((requirement) => Object.keys(requirement));
      for (const name of names) assert.ok(name in schemes, `${op.method} ${op.path} uses unknown ${name}`);
      if (op.auth) {
        assert.ok(names.includes(token[0][0]) && names.includes(bearer[0][0]), `${op.method} ${op.path}`);
        // Either scheme alone is enough: separate requirement objects, not one that demands both.
        assert.ok(security!.every((requirement) => Object.keys(requirement).length === 1));
      } else {
        assert.deepEqual(names, [], `${op.method} ${op.path} needs no token`);
      }
    }
  });

  it("names every operation for a generated client, with an example answer that fits its schema", () => {
    for (const op of OPERATIONS) {
      const operation = doc.paths[op.path][op.method];
      assert.equal(operation.operationId, op.id, `${op.method} ${op.path}`);
      const media = deref(doc, operation.responses[op.success]).content["application/json"];
      assert.ok(media.example, `${op.id} has an example answer`);
      assert.deepEqual(validate(doc, media.schema, media.example), [], op.id);
    }
  });

  it("requires the bodies it declares, and no token on init (security: [])", () => {
    for (const op of OPERATIONS.filter((o) => o.body)) {
      assert.equal(deref(doc, doc.paths[op.path][op.method].requestBody).required, true, op.id);
    }
    assert.deepEqual(doc.paths["/api/v1/init"].post.security, []);
  });

  it("names its server (relative: the one that serves it) and its licence", () => {
    assert.deepEqual(doc.servers, [{ url: "/", description: "This server" }]);
    assert.equal(typeof doc.info.license?.name, "string");
    assert.ok(doc.info.license.identifier || doc.info.license.url, "a licence identifier or url");
  });

  it("shows the contract's messages in its examples", () => {
    const text = JSON.stringify(allExamples(doc));
    for (
      const message of [
        "Wallet disabled",
        "Insufficient balance",
        "Reference ID has already been used.",
        "Missing data for required field.",
        "Already enabled",
        "Already disabled",
      ]
    ) assert.ok(text.includes(JSON.stringify(message).slice(1, -1)), `no example shows "${message}"`);
  });

  it("describes the real responses: a wallet's life fits the documented schemas", async () => {
    const check = (path: string, method: string, response: { status: number; body: unknown }) => {
      const schema = responseSchema(doc, path, method, String(response.status));
      assert.deepEqual(validate(doc, schema, response.body), [], `${method} ${path} ${response.status}`);
    };
    // The checker itself catches wrong bodies.
    const enableSchema = responseSchema(doc, "/api/v1/wallet", "post", "201");
    assert.notDeepEqual(validate(doc, enableSchema, { status: "success", data: {} }), []);
    const wrong = validate(doc, enableSchema, {
      status: "success",
      data: { wallet: { id: "x", owned_by: "a", status: "on", enabled_at: "now", balance: "0" } },
    });
    assert.equal(wrong.length, 4, wrong.join("; ")); // id, status, enabled_at, balance
    const app = harness.app;
    check("/api/v1/init", "post", await call(app, "POST", "/api/v1/init", { body: {} }));
    const unauth = await call(app, "GET", "/api/v1/wallet");
    assert.equal(unauth.status, 401);
    check("/api/v1/wallet", "get", unauth);

    const init = await call(app, "POST", "/api/v1/init", { body: { customer_xid: newCustomerXid() } });
    assert.equal(init.status, 201);
    check("/api/v1/init", "post", init);
    const token = init.body.data.token;
    const disabledView = await call(app, "GET", "/api/v1/wallet", { token });
    assert.equal(disabledView.status, 404);
    check("/api/v1/wallet", "get", disabledView);
    const enable = await call(app, "POST", "/api/v1/wallet", { token });
    assert.equal(enable.status, 201);
    check("/api/v1/wallet", "post", enable);
    check("/api/v1/wallet", "post", await call(app, "POST", "/api/v1/wallet", { token }));

    const ref = crypto.randomUUID();
    const deposit = await call(app, "POST", "/api/v1/wallet/deposits", {
      token,
      body: { amount: "100.50", reference_id: ref },
    });
    assert.equal(deposit.status, 201);
    check("/api/v1/wallet/deposits", "post", deposit);
    const reused = await call(app, "POST", "/api/v1/wallet/withdrawals", {
      token,
      body: { amount: "1", reference_id: ref },
    });
    assert.equal(reused.status, 409);
    check("/api/v1/wallet/withdrawals", "post", reused);
    const withdrawal = await call(app, "POST", "/api/v1/wallet/withdrawals", {
      token,
      body: { amount: 50, reference_id: crypto.randomUUID() },
    });
    assert.equal(withdrawal.status, 201);
    check("/api/v1/wallet/withdrawals", "post", withdrawal);
    const refused = await call(app, "POST", "/api/v1/wallet/withdrawals", {
      token,
      body: { amount: 1000, reference_id: crypto.randomUUID() },
    });
    assert.equal(refused.status, 400);
    check("/api/v1/wallet/withdrawals", "post", refused);
    const view = await call(app, "GET", "/api/v1/wallet", { token });
    assert.equal(view.status, 200);
    check("/api/v1/wallet", "get", view);
    const transactions = await call(app, "GET", "/api/v1/wallet/transactions", { token });
    assert.equal(transactions.status, 200);
    assert.equal(transactions.body.data.transactions.length, 3);
    check("/api/v1/wallet/transactions", "get", transactions);
    const page = await call(app, "GET", "/api/v1/wallet/transactions?limit=1", { token });
    assert.equal(page.status, 200);
    check("/api/v1/wallet/transactions", "get", page);
    const disable = await call(app, "PATCH", "/api/v1/wallet", { token, body: { is_disabled: true } });
    assert.equal(disable.status, 200);
    check("/api/v1/wallet", "patch", disable);
    check("/api/v1/wallet", "patch", await call(app, "PATCH", "/api/v1/wallet", { token, body: {} }));

    const other = await enabledWallet(app);
    const again = await call(app, "PATCH", "/api/v1/wallet", {
      token: other.token,
      body: { is_disabled: "TRUE" },
    });
    assert.equal(again.status, 200);
    check("/api/v1/wallet", "patch", again);
  });
});

describe("GET /health, and the routing of every path", () => {
  let harness: Harness;
  before(() => {
    harness = createHarness();
  });
  after(async () => {
    await harness?.close();
  });

  it("answers 200 while the process is up", async () => {
    const response = await harness.app.request("/health");
    assert.equal(response.status, 200);
    await response.body?.cancel();
  });

  it("every route fits Hono's RegExpRouter, so no request is routed by the slower TrieRouter", async () => {
    const response = await harness.app.request("/health"); // the smart router settles on its first match
    await response.body?.cancel();
    // deno-lint-ignore no-explicit-any -- SmartRouter's activeRouter is not in Hono's public typings
    assert.equal((harness.app.router as any).activeRouter.name, "RegExpRouter");
  });

  it("serves the Swagger UI files, its init script, and redirects index.html", async () => {
    const init = await harness.app.request("/swagger/init.js");
    assert.equal(init.status, 200);
    assert.match(init.headers.get("content-type") ?? "", /^text\/javascript/);
    assert.match(await init.text(), /openapi\.json/);
    const css = await harness.app.request("/swagger/swagger-ui.css");
    assert.equal(css.status, 200);
    await css.body?.cancel();
    const index = await harness.app.request("/swagger/index.html");
    assert.equal(index.status, 301);
    assert.equal(index.headers.get("location"), "/swagger");
    const unknown = await harness.app.request("/swagger/nothing.js");
    assert.equal(unknown.status, 404);
    assert.equal((await unknown.json()).status, "fail");
  });
});
