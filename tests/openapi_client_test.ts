/**
 * The OpenAPI document as a client author meets it: Redocly's recommended lint passes with no error and no
 * warning, and a client generated from /openapi.json (openapi-typescript + openapi-fetch) type-checks and
 * drives init, enable, deposit, withdraw, view, history and disable against a live server.
 *
 * The tools are the npm packages pinned in deno.json (`deno install` caches them; no network is needed once it
 * has run). They run as `deno run` subprocesses with the project's configuration and lock file.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { type LiveServer, startLiveServer } from "./support/live_server.ts";

const root = new URL("..", import.meta.url).pathname;
const configPath = `${root}deno.json`;
const imports = JSON.parse(Deno.readTextFileSync(configPath)).imports as Record<string, string>;

/** `npm:name@version` of a tool pinned in deno.json. */
function pinned(name: string): string {
  const specifier = imports[name];
  assert.match(specifier ?? "", /^npm:.+@\d+\.\d+\.\d+$/, `${name} is pinned in deno.json`);
  return specifier;
}

/** Run deno with the project's configuration; exit code and output. */
async function deno(args: string[], env: Record<string, string> = {}) {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: root,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
}

/** Redocly's verdict on a document file, from its JSON report. */
async function redoclyLint(file: string) {
  const run = await deno(
    ["run", "-A", pinned("@redocly/cli"), "lint", "--extends=recommended", "--format=json", file],
    // No usage data sent, no update check: the lint works offline.
    { REDOCLY_TELEMETRY: "off", REDOCLY_SUPPRESS_UPDATE_NOTICE: "true" },
  );
  const report = JSON.parse(run.stdout.slice(run.stdout.indexOf("{")));
  return { code: run.code, report, stderr: run.stderr };
}

// The driver is written next to the generated schema.d.ts at run time (so `deno task check`, which cannot see
// that file, leaves it alone); `deno check` type-checks it there. Its `@ts-expect-error` lines must each be
// errors: types too loose to catch a wrong call would make them unused, and the check fail.
const DRIVER = String.raw`// deno-lint-ignore-file
/** One wallet's life through the generated client: prints one JSON line of what came back. */
import type { operations, paths } from "./schema.d.ts";
import createClient from "openapi-fetch";

const client = createClient<paths>({ baseUrl: Deno.args[0] });

/** Fails the run with what came back. */
function expect(condition: boolean, what: string, got: unknown): asserts condition {
  if (!condition) throw new Error(what + ": " + JSON.stringify(got));
}

// The operation ids name the operations of the generated types.
type InitAnswer = operations["initAccount"]["responses"][201]["content"]["application/json"];
type Deposited = operations["deposit"]["responses"][201]["content"]["application/json"]["data"]["deposit"];

/** Never called: each line must fail to type-check, or the generated types would be too loose to catch bugs. */
function _typesAreStrict(token: string) {
  // @ts-expect-error an unknown path
  client.GET("/api/v1/nope");
  // @ts-expect-error init's body is required
  client.POST("/api/v1/init", {});
  // @ts-expect-error a deposit needs its reference_id
  client.POST("/api/v1/wallet/deposits", { body: { amount: 1 }, headers: { Authorization: token } });
  // @ts-expect-error GET /api/v1/wallet has no body
  client.GET("/api/v1/wallet", { body: { amount: 1 } });
  // @ts-expect-error a balance is a number
  const _balance: string = ({} as operations["viewWallet"]["responses"][200]["content"]["application/json"])
    .data.wallet.balance;
}

const customer = "client-" + crypto.randomUUID();
const init = await client.POST("/api/v1/init", { body: { customer_xid: customer } });
expect(init.response.status === 201 && init.data !== undefined, "init", init.error);
const initAnswer: InitAnswer = init.data;
const headers = { Authorization: "Token " + initAnswer.data.token };

const enable = await client.POST("/api/v1/wallet", { headers });
expect(enable.response.status === 201 && enable.data !== undefined, "enable", enable.error);
const walletId = enable.data.data.wallet.id;

const deposit = await client.POST("/api/v1/wallet/deposits", {
  headers,
  body: { amount: "100.50", reference_id: crypto.randomUUID() },
});
expect(deposit.response.status === 201 && deposit.data !== undefined, "deposit", deposit.error);
const deposited: Deposited = deposit.data.data.deposit;

const withdraw = await client.POST("/api/v1/wallet/withdrawals", {
  headers,
  body: { amount: 40, reference_id: crypto.randomUUID() },
});
expect(withdraw.response.status === 201 && withdraw.data !== undefined, "withdraw", withdraw.error);

// The balance may lag the writes by up to 5 s (the contract): ask again until it shows them.
let balance: number | undefined;
for (let attempt = 0; attempt < 100 && balance !== 60.5; attempt++) {
  if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 100));
  const view = await client.GET("/api/v1/wallet", { headers });
  expect(view.response.status === 200 && view.data !== undefined, "view", view.error);
  expect(view.data.data.wallet.id === walletId, "view: the same wallet", view.data);
  balance = view.data.data.wallet.balance;
}

const history = await client.GET("/api/v1/wallet/transactions", { headers, params: { query: { limit: "10" } } });
expect(history.response.status === 200 && history.data !== undefined, "history", history.error);

const disable = await client.PATCH("/api/v1/wallet", { headers, body: { is_disabled: true } });
expect(disable.response.status === 200 && disable.data !== undefined, "disable", disable.error);

const refused = await client.GET("/api/v1/wallet", { headers });
expect(refused.response.status === 404 && refused.error !== undefined, "view after disable", refused.data);

console.log(JSON.stringify({
  customer,
  walletId,
  deposited: { amount: deposited.amount, by: deposited.deposited_by },
  withdrawn: withdraw.data.data.withdrawal.amount,
  balance,
  history: history.data.data.transactions.map((t) => [t.type, t.status, t.amount]),
  nextCursor: history.data.data.next_cursor,
  disabled: disable.data.data.wallet.status,
  afterDisable: refused.error,
}));
`;

let server: LiveServer;
let dir: string;
let documentFile: string;
before(async () => {
  server = startLiveServer();
  dir = await Deno.makeTempDir({ prefix: "mw-openapi-client-" });
  const response = await fetch(`${server.baseUrl}/openapi.json`);
  assert.equal(response.status, 200);
  documentFile = `${dir}/openapi.json`;
  await Deno.writeTextFile(documentFile, await response.text());
});
after(async () => {
  await server?.close();
  if (dir) await Deno.remove(dir, { recursive: true });
});

describe("Redocly lint (recommended rules)", () => {
  it("passes /openapi.json with no error and no warning", async () => {
    const { code, report, stderr } = await redoclyLint(documentFile);
    assert.deepEqual(report.totals, { errors: 0, warnings: 0, ignored: 0 }, JSON.stringify(report.problems));
    assert.equal(code, 0, stderr);
  });

  it("would catch a document without operation ids, servers and the init security (the check can fail)", async () => {
    const document = JSON.parse(await Deno.readTextFile(documentFile));
    delete document.servers;
    delete document.paths["/api/v1/init"].post.security;
    for (const item of Object.values<Record<string, { operationId?: string }>>(document.paths)) {
      for (const operation of Object.values(item)) delete operation.operationId;
    }
    const broken = `${dir}/broken.json`;
    await Deno.writeTextFile(broken, JSON.stringify(document));
    const { code, report } = await redoclyLint(broken);
    assert.notEqual(code, 0);
    const rules = new Set(report.problems.map((p: { ruleId: string }) => p.ruleId));
    for (const rule of ["no-empty-servers", "security-defined", "operation-operationId"]) {
      assert.ok(rules.has(rule), `${rule} in ${[...rules].join(", ")}`);
    }
  });
});

describe("a client generated from /openapi.json (openapi-typescript + openapi-fetch)", () => {
  it("type-checks and drives init, enable, deposit, withdraw, view, history and disable", async () => {
    const schema = `${dir}/schema.d.ts`;
    const generated = await deno(["run", "-A", pinned("openapi-typescript"), documentFile, "-o", schema]);
    assert.equal(generated.code, 0, generated.stderr);
    const types = await Deno.readTextFile(schema);
    for (
      const id of ["initAccount", "enableWallet", "viewWallet", "listTransactions", "deposit", "withdraw"]
    ) {
      assert.match(types, new RegExp(`\\b${id}: \\{`), `operations has ${id}`);
    }
    assert.match(types, /disableWallet: \{/);
    pinned("openapi-fetch");
    const driver = `${dir}/driver.ts`;
    await Deno.writeTextFile(driver, DRIVER);

    const checked = await deno(["check", "--config", configPath, driver]);
    assert.equal(checked.code, 0, checked.stderr);

    const ran = await deno([
      "run",
      "--config",
      configPath,
      `--allow-net=127.0.0.1:${server.port}`,
      driver,
      server.baseUrl,
    ]);
    assert.equal(ran.code, 0, ran.stderr);
    const result = JSON.parse(ran.stdout.trim().split("\n").at(-1)!);
    assert.match(result.walletId, /^[0-9a-f-]{36}$/);
    assert.deepEqual(result.deposited, { amount: 100.5, by: result.customer });
    assert.equal(result.withdrawn, 40);
    assert.equal(result.balance, 60.5);
    assert.deepEqual(result.history, [["deposit", "success", 100.5], ["withdrawal", "success", 40]]);
    assert.equal(result.nextCursor, null);
    assert.equal(result.disabled, "disabled");
    assert.deepEqual(result.afterDisable, { status: "fail", data: { error: "Wallet disabled" } });
  });

  it("would fail the type check on a call the API does not have (the check can fail)", async () => {
    const wrong = `${dir}/wrong.ts`;
    await Deno.writeTextFile(
      wrong,
      'import createClient from "openapi-fetch";\nimport type { paths } from "./schema.d.ts";\n' +
        'const client = createClient<paths>({ baseUrl: "http://127.0.0.1:1" });\n' +
        'await client.POST("/api/v1/wallet/deposits", { body: { amount: 1 } });\n',
    );
    const checked = await deno(["check", "--config", configPath, wrong]);
    assert.notEqual(checked.code, 0);
    assert.match(checked.stderr, /reference_id/);
  });
});
