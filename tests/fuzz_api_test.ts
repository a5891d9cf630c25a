/**
 * Property-based fuzzing of the whole HTTP API (fast-check): seeded sequences of random and malformed
 * requests over every endpoint and method (bodies in all three encodings and raw bytes, media types with
 * parameters, unicode and control characters, numbers in every notation, duplicate fields, arrays for
 * scalars, random headers and tokens), each checked against the contract model of support/contract_model.ts:
 * the status it gives, a JSend body, and the writes (wallets, transactions, events, balances) it allows.
 * Refused requests must write nothing.
 *
 * `FUZZ_SEED=<n>` replays a run; the seed is printed either way, and on a failure fast-check prints the
 * shrunk counterexample. `FUZZ_RUNS` (default 25 sequences of 200 requests) scales it; `FUZZ_TIME_LIMIT_S`
 * (default 300) bounds the whole property, shrinking included.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { SignJWT } from "jose";
import { createHarness, type Harness } from "./support/harness.ts";
import {
  contractAmount,
  type Expectation,
  fieldProblems,
  type FieldValue,
  type ModelWallet,
  moneyRequest,
  noWrites,
  NumText,
} from "./support/contract_model.ts";

/** Every customer_xid the fuzz makes starts with it, so its wallets can be counted. */
const PREFIX = `fz${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
/** Every customer_xid an init was answered for, across sequences (they share the database). */
const knownXids = new Set<string>();
const SEED = Deno.env.get("FUZZ_SEED") ? Number(Deno.env.get("FUZZ_SEED")) : Date.now() % 2_147_483_647;
const RUNS = Number(Deno.env.get("FUZZ_RUNS") ?? 25);
const REQUESTS_PER_RUN = 200;
const TIME_LIMIT_MS = Number(Deno.env.get("FUZZ_TIME_LIMIT_S") ?? 300) * 1000;
/** The wallets each sequence starts with: fresh, enabled, never enabled, disabled, enabled and nearly full. */
const WALLETS = 4;

let h: Harness;
before(() => {
  h = createHarness({ poolSize: 4 });
});
after(async () => {
  await h.close();
});

// ---- Request descriptions ----

type Operation = "init" | "enable" | "view" | "transactions" | "deposit" | "withdrawal" | "disable";
const OPERATIONS: Record<Operation, { method: string; path: string; body: boolean; auth: boolean }> = {
  init: { method: "POST", path: "/api/v1/init", body: true, auth: false },
  enable: { method: "POST", path: "/api/v1/wallet", body: false, auth: true },
  view: { method: "GET", path: "/api/v1/wallet", body: false, auth: true },
  transactions: { method: "GET", path: "/api/v1/wallet/transactions", body: false, auth: true },
  deposit: { method: "POST", path: "/api/v1/wallet/deposits", body: true, auth: true },
  withdrawal: { method: "POST", path: "/api/v1/wallet/withdrawals", body: true, auth: true },
  disable: { method: "PATCH", path: "/api/v1/wallet", body: true, auth: true },
};
const KNOWN_PATHS: Record<string, string[]> = {
  "/api/v1/init": ["POST"],
  "/api/v1/wallet": ["GET", "PATCH", "POST"],
  "/api/v1/wallet/transactions": ["GET"],
  "/api/v1/wallet/deposits": ["POST"],
  "/api/v1/wallet/withdrawals": ["POST"],
  "/health": ["GET"],
  "/openapi.json": ["GET"],
  "/swagger": ["GET"],
  "/swagger/index.html": ["GET"],
  "/swagger/init.js": ["GET"],
  "/swagger/swagger-ui.css": ["GET"],
};
const METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "FOO"];

type Encoding = "json" | "urlencoded" | "multipart";
type Corruption = "none" | "truncate" | "deep" | "wide" | "syntax" | "notObject";
type Auth =
  | { kind: "valid"; wallet: number; scheme: string }
  | { kind: "unknownWallet" }
  | { kind: "none" }
  | { kind: "bad"; header: string }
  | { kind: "forged"; wallet: number; how: "tampered" | "otherKey" | "none" };
type Body =
  | { kind: "none"; contentType: string | null }
  | { kind: "raw"; bytes: Uint8Array; contentType: string | null; accepted: boolean }
  | {
    kind: "fields";
    encoding: Encoding;
    fields: Array<[string, FieldValue]>;
    params: string;
    accepted: boolean;
    unsupported: string;
    corruption: Corruption;
    cut: number;
  };
type Request =
  | {
    kind: "operation";
    operation: Operation;
    auth: Auth;
    body: Body;
    query: string;
    headers: [string, string][];
  }
  | { kind: "wrongMethod"; path: string; method: string }
  | { kind: "unknownPath"; path: string; method: string }
  | { kind: "docs"; path: string };

// ---- Arbitraries ----

/** Any UTF-16 code unit, lone surrogates, NUL and control characters included. */
const anyChar = fc.integer({ min: 0, max: 0xffff }).map((u) => String.fromCharCode(u));
const text = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.string({ unit: anyChar, maxLength: 12 }),
  fc.string({ unit: "grapheme", maxLength: 8 }),
  fc.constantFrom(
    "",
    " ",
    "\t",
    "\n",
    "\u0000",
    "\u00a0",
    "\ud800",
    "a\udc00b",
    "null",
    "true",
    "😀".repeat(64),
  ),
  fc.string({ minLength: 60, maxLength: 70 }),
);
const decimal = fc.tuple(
  fc.bigInt({ min: 1n, max: 100_000_000_000_000n }),
  fc.nat(3),
  fc.nat(3),
).map(([cents, lead, trail]) => {
  const whole = "0".repeat(lead) + (cents / 100n).toString();
  const fraction = (cents % 100n).toString().padStart(2, "0") + "0".repeat(trail);
  return trail === 0 && cents % 100n === 0n ? whole : `${whole}.${fraction}`;
});
const notations = fc.constantFrom(
  "1e2",
  "1E+2",
  "1e-2",
  "-1",
  "-0",
  "+1",
  " 1",
  "1 ",
  "0x10",
  "1_000",
  "１",
  "1,5",
  ".5",
  "5.",
  "Infinity",
  "NaN",
  "0",
  "0.00",
  "0.001",
  "1.001",
  "1000000000000.01",
  "999999999999.999999",
  "1.0000000000000000001",
  "0.1000000000000000055511151231257827",
  "9".repeat(40),
);
const amountText = fc.oneof({ weight: 4, arbitrary: decimal }, notations, text);
/** A JSON number literal where the text is one, else the text as a JSON string. */
const amountValue: fc.Arbitrary<FieldValue> = fc.tuple(amountText, fc.boolean()).map(([t, asNumber]) =>
  asNumber && /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$/.test(t) ? new NumText(t) : t
);
const referenceValue = fc.oneof({ weight: 3, arbitrary: fc.constantFrom("r1", "r2", "r3") }, text);
const disabledValue: fc.Arbitrary<FieldValue> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom<FieldValue>(true, "true", "TRUE", "True") },
  fc.constantFrom<FieldValue>(false, "false", "yes", "1", new NumText("1"), " true", "true "),
  text,
);
/** Scalars wrapped the ways a sloppy client does: arrays, objects, null, booleans. */
function sloppy(value: fc.Arbitrary<FieldValue>): fc.Arbitrary<FieldValue> {
  return fc.oneof(
    { weight: 6, arbitrary: value },
    value.map((v) => [v]),
    value.map((v) => ({ value: v })),
    fc.constantFrom<FieldValue>(null, true, false, [], {}),
  );
}

function fieldsFor(operation: Operation): fc.Arbitrary<Array<[string, FieldValue]>> {
  const xid = fc.oneof(
    { weight: 3, arbitrary: fc.nat(WALLETS + 2).map((i) => `${PREFIX}-${i}`) },
    fc.string({ unit: "grapheme", maxLength: 30 }).map((s) => `${PREFIX}-${s}`),
    text,
  );
  const named: Array<[string, fc.Arbitrary<FieldValue>]> = operation === "init"
    ? [["customer_xid", xid]]
    : operation === "disable"
    ? [["is_disabled", disabledValue]]
    : [["amount", amountValue], ["reference_id", referenceValue]];
  const one = fc.oneof(
    {
      weight: 4,
      arbitrary: fc.constantFrom(...named).chain(([name, value]) => sloppy(value).map((v) => [name, v])),
    },
    fc.tuple(fc.oneof(text, fc.constantFrom("amount[]", "Amount", "__proto__", "constructor")), sloppy(text)),
  ) as fc.Arbitrary<[string, FieldValue]>;
  // each named field most of the time, in random order, sometimes twice, plus random ones
  return fc.tuple(
    fc.tuple(...named.map(([name, value]) => fc.option(sloppy(value).map((v) => [name, v]), { freq: 6 }))),
    fc.array(one, { maxLength: 3 }),
  ).map(([main, extra]) => [...(main.filter((f) => f !== null) as Array<[string, FieldValue]>), ...extra])
    .chain((fields) => fc.shuffledSubarray(fields, { minLength: fields.length, maxLength: fields.length }));
}

const params = fc.array(
  fc.tuple(
    fc.constantFrom("", " ", "\t"),
    fc.constantFrom("charset=utf-8", 'charset="UTF-8"', "x-a=1", 'q="a;b"', "", "Charset=utf-8"),
    fc.constantFrom("", " ", "\t"),
  ),
  { maxLength: 3 },
).map((list) => list.map(([before, param, after]) => `${before};${after}${param}`).join(""));
const unsupportedTypes = fc.constantFrom(
  "text/plain",
  "application/xml",
  "application/jsonx",
  "text/json",
  "multipart/mixed; boundary=x",
  "application/json x",
  "application/json; charset",
  "application /json",
  "form-data",
  "",
);
const randomType = fc.oneof(
  unsupportedTypes,
  fc.constantFrom("application/json", "application/x-www-form-urlencoded", "multipart/form-data; boundary=b"),
);

function bodyFor(operation: Operation): fc.Arbitrary<Body> {
  return fc.oneof(
    {
      weight: 8,
      arbitrary: fc.record({
        kind: fc.constant("fields" as const),
        encoding: fc.constantFrom<Encoding>("json", "urlencoded", "multipart"),
        fields: fieldsFor(operation),
        params,
        accepted: fc.oneof({ weight: 9, arbitrary: fc.constant(true) }, fc.constant(false)),
        unsupported: unsupportedTypes,
        corruption: fc.oneof(
          { weight: 10, arbitrary: fc.constant<Corruption>("none") },
          fc.constantFrom<Corruption>("truncate", "deep", "wide", "syntax", "notObject"),
        ),
        cut: fc.double({ min: 0, max: 1, noNaN: true }),
      }),
    },
    fc.record({ kind: fc.constant("none" as const), contentType: fc.option(randomType) }),
    fc.record({
      kind: fc.constant("raw" as const),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }),
      contentType: fc.option(randomType),
      accepted: fc.constant(false),
    }),
  );
}

const authArb: fc.Arbitrary<Auth> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      kind: fc.constant("valid" as const),
      wallet: fc.nat(WALLETS - 1),
      scheme: fc.constantFrom("Token ", "Bearer ", "token ", "BEARER  ", "Token   "),
    }),
  },
  fc.constant<Auth>({ kind: "unknownWallet" }),
  fc.constant<Auth>({ kind: "none" }),
  fc.record({
    kind: fc.constant("bad" as const),
    header: fc.oneof(
      fc.string({
        unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
        maxLength: 40,
      }),
      fc.constantFrom("Token", "Basic dXNlcjpwYXNz", "Token a b", "Bearer", "Token eyJ.e30.x"),
    ),
  }),
  fc.record({
    kind: fc.constant("forged" as const),
    wallet: fc.nat(WALLETS - 1),
    how: fc.constantFrom("tampered" as const, "otherKey" as const, "none" as const),
  }),
);

const queryArb = fc.oneof(
  { weight: 4, arbitrary: fc.constant("") },
  fc.integer({ min: 1, max: 1000 }).map((n) => `?limit=${n}`),
  fc.constantFrom(
    "?limit=0",
    "?limit=1001",
    "?limit=abc",
    "?limit=1.5",
    "?limit=",
    "?cursor=1",
    "?limit=2&limit=3",
  ),
  fc.constantFrom("?limit=10&cursor=1", "?limit=10&cursor=abc", "?limit=10&cursor=0", "?x=1"),
);
const headerArb = fc.array(
  fc.tuple(
    fc.stringMatching(/^x-[a-z0-9-]{1,12}$/),
    fc.string({
      unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
      maxLength: 30,
    }),
  ),
  { maxLength: 3 },
);

function requestArb(): fc.Arbitrary<Request> {
  const operation = fc.constantFrom(...Object.keys(OPERATIONS) as Operation[]).chain((op) =>
    fc.record({
      kind: fc.constant("operation" as const),
      operation: fc.constant(op),
      auth: authArb,
      body: bodyFor(op),
      query: op === "transactions" ? queryArb : fc.constant(""),
      headers: headerArb,
    })
  );
  const wrongMethod = fc.constantFrom(...Object.keys(KNOWN_PATHS)).chain((path) =>
    fc.record({
      kind: fc.constant("wrongMethod" as const),
      path: fc.constant(path),
      method: fc.constantFrom(...METHODS.filter((m) => !KNOWN_PATHS[path].includes(m))),
    })
  );
  const unknownPath = fc.record({
    kind: fc.constant("unknownPath" as const),
    path: fc.oneof(
      fc.array(fc.stringMatching(/^[a-z0-9._~-]{0,8}$/), { minLength: 1, maxLength: 4 }).map((s) =>
        `/${s.join("/")}`
      ),
      fc.constantFrom("/api/v1/wallet/", "/api/v1", "/API/v1/init", "/api/v1/wallets", "/swagger/nothing.js"),
    ).filter((path) =>
      !(path in KNOWN_PATHS) && path !== "/swagger/" && !path.startsWith("/swagger/favicon")
    ),
    method: fc.constantFrom(...METHODS),
  });
  const docs = fc.record({
    kind: fc.constant("docs" as const),
    path: fc.constantFrom("/health", "/openapi.json"),
  });
  return fc.oneof({ weight: 12, arbitrary: operation }, wrongMethod, unknownPath, docs);
}

// ---- Encoding a request ----

function jsonText(value: FieldValue): string {
  if (value instanceof NumText) return value.text;
  if (Array.isArray(value)) return `[${value.map(jsonText).join(",")}]`;
  if (value !== null && typeof value === "object") {
    return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}:${jsonText(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/** Form values are strings: a non-string becomes its JSON text, an array one field per element. */
function formPairs(fields: Array<[string, FieldValue]>): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  for (const [name, value] of fields) {
    if (Array.isArray(value)) {
      for (const v of value) pairs.push([name, typeof v === "string" ? v : jsonText(v)]);
    } else pairs.push([name, typeof value === "string" ? value : jsonText(value)]);
  }
  return pairs;
}

const ESSENCE: Record<Encoding, string> = {
  json: "application/json",
  urlencoded: "application/x-www-form-urlencoded",
  multipart: "multipart/form-data",
};

/** JSON alone can nest or be something other than an object: for forms those corruptions are none. */
function corruptionOf(body: Body & { kind: "fields" }): Corruption {
  return body.encoding !== "json" && (body.corruption === "deep" || body.corruption === "notObject")
    ? "none"
    : body.corruption;
}

/** Bytes and Content-Type of a body description. */
async function encodeBody(
  body: Body,
): Promise<{ bytes: Uint8Array<ArrayBuffer> | null; type: string | null }> {
  if (body.kind === "none") return { bytes: null, type: body.contentType };
  if (body.kind === "raw") return { bytes: new Uint8Array(body.bytes), type: body.contentType };
  const encoder = new TextEncoder();
  let bytes: Uint8Array<ArrayBuffer>;
  let type = ESSENCE[body.encoding] + body.params;
  const corruption = corruptionOf(body);
  const extra = corruption === "wide"
    ? Array.from({ length: 120 }, (_, i) => [`w${i}`, "1"] as [string, string])
    : [];
  if (body.encoding === "json") {
    const members = body.fields.map(([k, v]) => `${JSON.stringify(k)}:${jsonText(v)}`);
    members.push(...extra.map(([k, v]) => `${JSON.stringify(k)}:${v}`));
    if (corruption === "deep") members.push(`"deep":${"[".repeat(12)}${"]".repeat(12)}`);
    let json = `{${members.join(",")}}`;
    if (corruption === "notObject") json = `[${json}]`;
    if (corruption === "syntax" || corruption === "truncate") {
      json = json.slice(0, Math.max(1, Math.floor(body.cut * (json.length - 1)))); // a proper prefix of an object
    }
    bytes = encoder.encode(json);
  } else if (body.encoding === "urlencoded") {
    const pairs = [...formPairs(body.fields), ...extra];
    bytes = encoder.encode(new URLSearchParams(pairs).toString());
    if (corruption === "syntax" || corruption === "truncate") {
      bytes = new Uint8Array([...bytes, 0x26, 0xff]); // a byte that is not UTF-8
    }
  } else {
    const form = new FormData();
    for (const [name, value] of [...formPairs(body.fields), ...extra]) form.append(name, value);
    const response = new Response(form);
    bytes = new Uint8Array(await response.arrayBuffer());
    const boundary = /boundary=(.+)$/.exec(response.headers.get("content-type")!)![1];
    type += `; boundary=${corruption === "syntax" ? "other" : `"${boundary}"`}`;
    if (corruption === "truncate") {
      const end = new TextDecoder().decode(bytes).lastIndexOf(`--${boundary}--`) + boundary.length + 4;
      bytes = bytes.slice(0, Math.max(1, Math.floor(body.cut * (end - 1))));
    }
  }
  return { bytes, type: body.accepted ? type : body.unsupported };
}

// ---- The model's expectation ----

/** The fields as the contract reads them: JSON's last duplicate wins; a form field sent twice is a list. */
function sentFields(body: Body & { kind: "fields" }): Record<string, FieldValue | undefined> {
  const fields: Record<string, FieldValue | undefined> = Object.create(null);
  if (body.encoding === "json") {
    for (const [name, value] of body.fields) fields[name] = value;
    return fields;
  }
  const counts = new Map<string, number>();
  for (const [name, value] of formPairs(body.fields)) {
    counts.set(name, (counts.get(name) ?? 0) + 1);
    // forms carry Unicode scalar values only (a lone surrogate arrives as U+FFFD), and multipart/form-data
    // ends lines with CRLF
    const sent = value.toWellFormed();
    fields[name] = counts.get(name)! > 1
      ? []
      : body.encoding === "multipart"
      ? sent.replace(/\r\n|\r|\n/g, "\r\n")
      : sent;
  }
  return fields;
}

interface RunState {
  wallets: ModelWallet[];
}

function expect(request: Request, state: RunState): Expectation {
  if (request.kind === "wrongMethod") return noWrites(405, "message");
  if (request.kind === "unknownPath") return noWrites(404, "message");
  if (request.kind === "docs") return noWrites(200);
  const { operation, auth, body } = request;
  const spec = OPERATIONS[operation];
  if (spec.auth && (auth.kind === "none" || auth.kind === "bad" || auth.kind === "forged")) {
    return noWrites(401, "message");
  }
  let fields: Record<string, FieldValue | undefined> = {};
  if (spec.body) {
    if (body.kind === "raw") return noWrites(isAcceptedType(body.contentType) ? 400 : 415);
    if (body.kind === "fields") {
      const corruption = corruptionOf(body);
      // the one body that encodes to nothing: no fields, which is a missing body
      const empty = body.encoding === "urlencoded" && formPairs(body.fields).length === 0 &&
        corruption === "none";
      if (!empty) {
        if (!body.accepted) return noWrites(415, "message");
        if (corruption !== "none") return noWrites(400, "message");
        fields = sentFields(body);
      }
    }
    const problems = fieldProblems(operation, fields);
    if (problems.length > 0) return noWrites(400, problems);
  }
  if (operation === "transactions" && !validQuery(request.query)) return noWrites(400);
  if (operation === "init") {
    const xid = fields.customer_xid as string;
    const counted = !knownXids.has(xid) && xid.startsWith(PREFIX); // only the fuzz's own wallets are counted
    knownXids.add(xid);
    return { status: 201, writes: { wallets: counted ? 1 : 0, transactions: 0, outbox: 0, balance: 0n } };
  }
  if (auth.kind === "unknownWallet") return noWrites(401, "message");
  if (auth.kind !== "valid") throw new Error("unreachable");
  const wallet = state.wallets[auth.wallet];
  switch (operation) {
    case "enable":
      if (wallet.enabled) return noWrites(400, "message");
      wallet.enabled = true;
      return { status: 201, writes: { wallets: 0, transactions: 0, outbox: 1, balance: 0n } };
    case "disable":
      if (!wallet.enabled) return noWrites(400, "message");
      wallet.enabled = false;
      return { status: 200, writes: { wallets: 0, transactions: 0, outbox: 1, balance: 0n } };
    case "view":
    case "transactions":
      return noWrites(wallet.enabled ? 200 : 404);
    case "deposit":
    case "withdrawal":
      return moneyRequest(wallet, operation, contractAmount(fields.amount)!, fields.reference_id as string);
  }
}

function isAcceptedType(type: string | null): boolean {
  return type !== null &&
    ["application/json", "application/x-www-form-urlencoded", "multipart/form-data; boundary=b"].includes(
      type,
    );
}

function validQuery(query: string): boolean {
  const params = new URLSearchParams(query);
  const limits = params.getAll("limit");
  const cursors = params.getAll("cursor");
  if (limits.length > 1 || cursors.length > 1) return false;
  if (limits.length === 0) return cursors.length === 0;
  const limit = limits[0];
  if (!/^[0-9]{1,4}$/.test(limit) || Number(limit) < 1 || Number(limit) > 1000) return false;
  return cursors.length === 0 || /^[1-9][0-9]{0,18}$/.test(cursors[0]);
}

// ---- Running a sequence ----

interface Fixture {
  ids: string[];
  tokens: string[];
  unknownWalletToken: string;
  forged: Record<"tampered" | "otherKey" | "none", string[]>;
  state: RunState;
}

async function send(
  method: string,
  path: string,
  init: { headers?: Record<string, string>; body?: BodyInit },
) {
  const response = await h.app.request(path, { method, ...init });
  const raw = await response.text();
  let body: unknown = raw;
  try {
    body = JSON.parse(raw);
  } catch { /* not JSON: the checks below report it */ }
  return {
    status: response.status,
    body: body as Record<string, unknown>,
    type: response.headers.get("content-type"),
  };
}

/**
 * Fresh wallets for one sequence: enabled and empty, never enabled, disabled, enabled and nearly full. Made
 * with concurrent requests where they do not depend on each other (the deposits share one group commit).
 */
async function fixture(): Promise<Fixture> {
  const prefix = `${PREFIX}-${crypto.randomUUID().slice(0, 8)}`;
  const json = { "content-type": "application/json" };
  const tokens = await Promise.all(Array.from({ length: WALLETS }, async (_, i) => {
    const init = await send("POST", "/api/v1/init", {
      headers: json,
      body: JSON.stringify({ customer_xid: `${prefix}-${i}` }),
    });
    return (init.body.data as { token: string }).token;
  }));
  const auth = (i: number) => ({ ...json, authorization: `Token ${tokens[i]}` });
  await Promise.all([0, 2, 3].map((i) => send("POST", "/api/v1/wallet", { headers: auth(i) })));
  const ids = await Promise.all(tokens.map(async (token) => (await h.tokens.verify(token))!.walletId));
  await Promise.all([
    send("PATCH", "/api/v1/wallet", { headers: auth(2), body: '{"is_disabled":true}' }),
    ...Array.from({ length: 9 }, (_, d) =>
      send("POST", "/api/v1/wallet/deposits", {
        headers: auth(3),
        body: JSON.stringify({ amount: "1000000000000", reference_id: `fill-${d}` }),
      })),
  ]);
  const wallets: ModelWallet[] = [0, 1, 2, 3].map((i) => ({
    enabled: i === 0 || i === 3,
    balance: i === 3 ? 900_000_000_000_000n : 0n,
    references: new Map(),
  }));
  const otherKey = new TextEncoder().encode("another-secret-that-is-long-enough-0000000");
  const forged = { tampered: [] as string[], otherKey: [] as string[], none: [] as string[] };
  for (const token of tokens) {
    const [header, payload, signature] = token.split(".");
    forged.tampered.push(
      `${header}.${payload}.${signature.slice(0, -3)}${signature.endsWith("AAA") ? "BBB" : "AAA"}`,
    );
    const claims = JSON.parse(atob(payload.replaceAll("-", "+").replaceAll("_", "/")));
    forged.otherKey.push(await new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).sign(otherKey));
    const none = btoa(JSON.stringify({ alg: "none", typ: "JWT" })).replaceAll("=", "");
    forged.none.push(`${none}.${payload}.`);
  }
  const unknownWalletToken = await h.tokens.issue({
    customerXid: `${prefix}-ghost`,
    walletId: crypto.randomUUID(),
  });
  for (let i = 0; i < WALLETS; i++) knownXids.add(`${prefix}-${i}`);
  return { ids, tokens, unknownWalletToken, forged, state: { wallets } };
}

async function counts(f: Fixture) {
  const [row] = await h.sql<{ wallets: number; transactions: number; outbox: number; balance: string }[]>`
    SELECT (SELECT count(*)::int FROM wallets WHERE customer_xid LIKE ${PREFIX + "%"}) AS wallets,
           (SELECT count(*)::int FROM wallet_transactions WHERE wallet_id = ANY(${f.ids}::uuid[])) AS transactions,
           (SELECT count(*)::int FROM outbox WHERE wallet_id = ANY(${f.ids}::uuid[]))
             + (SELECT count(*)::int FROM outbox_sent WHERE wallet_id = ANY(${f.ids}::uuid[])) AS outbox,
           (SELECT coalesce(sum(balance), 0)::text FROM wallets WHERE id = ANY(${f.ids}::uuid[])) AS balance`;
  return { ...row, balance: BigInt(row.balance) };
}

function authHeader(auth: Auth, f: Fixture): string | undefined {
  switch (auth.kind) {
    case "valid":
      return `${auth.scheme}${f.tokens[auth.wallet]}`;
    case "unknownWallet":
      return `Token ${f.unknownWalletToken}`;
    case "none":
      return undefined;
    case "bad":
      return auth.header;
    case "forged":
      return `Bearer ${f.forged[auth.how][auth.wallet]}`;
  }
}

/** Send one described request; its method, path and the init of app.request. */
async function build(request: Request, f: Fixture): Promise<[string, string, RequestInit]> {
  if (request.kind !== "operation") {
    return [request.kind === "docs" ? "GET" : request.method, request.path, {}];
  }
  const spec = OPERATIONS[request.operation];
  const headers = new Headers(request.headers);
  const authorization = authHeader(request.auth, f);
  if (authorization !== undefined) headers.set("authorization", authorization);
  const { bytes, type } = await encodeBody(request.body);
  if (type !== null) headers.set("content-type", type);
  const init: RequestInit = { headers };
  if (spec.method !== "GET" && bytes !== null) init.body = bytes;
  return [spec.method, spec.path + request.query, init];
}

const stats = { requests: 0, statuses: new Map<number, number>(), requestMs: 0, checkMs: 0, fixtureMs: 0 };

function checkJSend(
  status: number,
  body: Record<string, unknown>,
  expected: Expectation,
  where: string,
): void {
  assert.ok(status < 500, `${where}: ${status} ${JSON.stringify(body)}`);
  if (status >= 400) {
    assert.deepEqual(Object.keys(body), ["status", "data"], where);
    assert.equal(body.status, "fail", where);
    const error = (body.data as { error: unknown }).error;
    if (typeof error === "string") {
      assert.ok(error.length > 0, where);
      if (Array.isArray(expected.errorFields)) assert.fail(`${where}: expected field errors, got "${error}"`);
    } else {
      assert.ok(error !== null && typeof error === "object", where);
      for (const messages of Object.values(error as Record<string, unknown>)) {
        assert.ok(
          Array.isArray(messages) && messages.every((m) => typeof m === "string" && m.length > 0),
          where,
        );
      }
      if (expected.errorFields === "message") {
        assert.fail(`${where}: expected a message, got ${JSON.stringify(error)}`);
      }
      if (Array.isArray(expected.errorFields)) {
        assert.deepEqual(Object.keys(error as object).sort(), [...expected.errorFields].sort(), where);
      }
    }
  } else if (status !== 301) {
    assert.ok(body.status === "success" || body.status === "ok", `${where}: ${JSON.stringify(body)}`);
  }
}

function hasWrites({ writes }: Expectation): boolean {
  return writes.wallets !== 0 || writes.transactions !== 0 || writes.outbox !== 0 || writes.balance !== 0n;
}

/**
 * Run one sequence. The tables are counted around every request that may write, and around every run of
 * requests that may not (before the next writer, and at the end): each refusal is then proven to write nothing
 * at about a third of the cost of counting after every request.
 */
async function runSequence(requests: Request[]): Promise<void> {
  const started = performance.now();
  const f = await fixture();
  stats.fixtureMs += performance.now() - started;
  let last = await counts(f);
  let pending = noWrites(0).writes;
  let unchecked = "";
  const check = async () => {
    const checked = performance.now();
    const now = await counts(f);
    stats.checkMs += performance.now() - checked;
    const delta = {
      wallets: now.wallets - last.wallets,
      transactions: now.transactions - last.transactions,
      outbox: now.outbox - last.outbox,
      balance: now.balance - last.balance,
    };
    assert.deepEqual(delta, pending, `writes of ${unchecked}`);
    last = now;
    pending = noWrites(0).writes;
    unchecked = "";
  };
  for (const [i, request] of requests.entries()) {
    const [method, path, init] = await build(request, f);
    const expected = expect(request, f.state);
    const writes = hasWrites(expected);
    if (writes && unchecked) await check();
    const sent = performance.now();
    const res = await send(method, path, init as { headers?: Record<string, string>; body?: BodyInit });
    stats.requestMs += performance.now() - sent;
    stats.requests++;
    stats.statuses.set(res.status, (stats.statuses.get(res.status) ?? 0) + 1);
    const where = `request ${i} ${method} ${path} ${JSON.stringify(request)}`;
    assert.equal(res.status, expected.status, `${where}: ${JSON.stringify(res.body)}`);
    if (request.kind !== "docs") {
      assert.match(res.type ?? "", /^application\/json/, where);
      checkJSend(res.status, res.body, expected, where);
    }
    pending = {
      wallets: pending.wallets + expected.writes.wallets,
      transactions: pending.transactions + expected.writes.transactions,
      outbox: pending.outbox + expected.writes.outbox,
      balance: pending.balance + expected.writes.balance,
    };
    unchecked += `${unchecked ? ", " : ""}${where} (${res.status})`;
    if (writes) await check();
  }
  if (unchecked) await check();
}

describe("fuzzing the HTTP API against the contract model", () => {
  it(`${RUNS} seeded sequences of ${REQUESTS_PER_RUN} requests: statuses, JSend bodies and writes as the contract says`, async () => {
    console.log(`fuzz seed: ${SEED} (replay with FUZZ_SEED=${SEED})`);
    const started = performance.now();
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.array(requestArb(), { minLength: REQUESTS_PER_RUN, maxLength: REQUESTS_PER_RUN }),
          runSequence,
        ),
        {
          seed: SEED,
          numRuns: RUNS,
          // Shrinking replays whole sequences from fresh wallets: bounded, it still ends with the smallest
          // counterexample found so far. A run cut short before a failure is caught by the count below.
          interruptAfterTimeLimit: TIME_LIMIT_MS,
        },
      );
    } finally {
      const statuses = [...stats.statuses].sort(([a], [b]) => a - b).map(([s, n]) => `${s}: ${n}`).join(", ");
      console.log(
        `fuzz seed ${SEED}: ${stats.requests} requests in ${
          ((performance.now() - started) / 1000).toFixed(1)
        } s ` +
          `(${statuses}); requests ${(stats.requestMs / 1000).toFixed(1)} s, write checks ` +
          `${(stats.checkMs / 1000).toFixed(1)} s, fixtures ${(stats.fixtureMs / 1000).toFixed(1)} s`,
      );
    }
    assert.ok(stats.requests >= RUNS * REQUESTS_PER_RUN, `only ${stats.requests} requests ran`);
  });
});
