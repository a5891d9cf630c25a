import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  ConfigError,
  parseConfig,
  parseToolConfig,
  PUBLIC_JWT_SECRETS,
  TEST_JWT_SECRET,
} from "../src/config.ts";
import { defaultMaxStreams } from "../src/http/history_stream.ts";

/** A secret of the shape an operator would generate (never a fixed one: the test must not publish a secret). */
const SECRET = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(48))));

/** The problems parseConfig reports for this environment plus a valid secret, unless the env names its own. */
function problemsOf(env: Record<string, string | undefined>): string[] {
  try {
    parseConfig({ JWT_SECRET: SECRET, ...env });
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${error}`);
    return error.problems;
  }
  assert.fail(`expected ${JSON.stringify(env)} to be rejected`);
}

/** Assert exactly one problem, about `field`. */
function assertOneProblem(env: Record<string, string | undefined>, field: string): void {
  const problems = problemsOf(env);
  assert.equal(problems.length, 1, problems.join("; "));
  assert.match(problems[0], new RegExp(`^${field}: `));
}

describe("parseConfig", () => {
  it("fills every default but JWT_SECRET from an environment that sets only it", () => {
    const config = parseConfig({ JWT_SECRET: SECRET });
    assert.equal(config.APP_ENV, "development");
    assert.equal(config.PORT, 8089);
    assert.equal(config.HOST, "0.0.0.0");
    assert.equal(config.DATABASE_URL, "postgres://postgres@127.0.0.1:5432/mini_wallet");
    assert.equal(config.REDIS_URL, "redis://127.0.0.1:6379/0");
    assert.deepEqual(config.KAFKA_BROKERS, ["127.0.0.1:9092"]);
    assert.equal(config.KAFKA_TOPIC, "wallet.created-transaction");
    assert.equal(config.KAFKA_TOPIC_PARTITIONS, 6);
    assert.equal(config.JWT_SECRET, SECRET);
    assert.equal(config.LOG_LEVEL, "info");
    assert.deepEqual(config.ROLES, ["api", "relay", "consumer"]);
    assert.equal(config.WRITE_KNOWN_WALLETS, 10_000);
    assert.equal(config.DB_STATEMENT_TIMEOUT_MS, 5000);
    assert.equal(config.DB_LOCK_TIMEOUT_MS, 2000);
    assert.equal(config.DB_IDLE_IN_TRANSACTION_TIMEOUT_MS, 10_000);
  });

  it("treats empty strings as unset", () => {
    assert.equal(parseConfig({ PORT: "", LOG_LEVEL: "", JWT_SECRET: SECRET }).PORT, 8089);
  });

  it("parses given values", () => {
    const config = parseConfig({
      PORT: "9000",
      KAFKA_BROKERS: "a:1, b:2",
      ROLES: "relay,relay,api",
      APP_ENV: "production",
      JWT_SECRET: SECRET,
    });
    assert.equal(config.PORT, 9000);
    assert.deepEqual(config.KAFKA_BROKERS, ["a:1", "b:2"]);
    assert.deepEqual(config.ROLES, ["relay", "api"]);
  });

  it("rejects a non-numeric PORT", () => assertOneProblem({ PORT: "http" }, "PORT"));
  it("rejects an out-of-range PORT", () => assertOneProblem({ PORT: "70000" }, "PORT"));
  it("rejects a DATABASE_URL that is not postgres://", () =>
    assertOneProblem({ DATABASE_URL: "mysql://x@y/z" }, "DATABASE_URL"));
  it("rejects a REDIS_URL that is not redis://", () =>
    assertOneProblem({ REDIS_URL: "localhost:6379" }, "REDIS_URL"));
  it("rejects KAFKA_BROKERS without ports", () =>
    assertOneProblem({ KAFKA_BROKERS: "a:1,b" }, "KAFKA_BROKERS"));
  it("rejects an invalid topic name", () => assertOneProblem({ KAFKA_TOPIC: "bad topic!" }, "KAFKA_TOPIC"));
  it("rejects an unknown role", () => assertOneProblem({ ROLES: "api,admin" }, "ROLES"));
  it("rejects a short JWT secret", () => assertOneProblem({ JWT_SECRET: "short" }, "JWT_SECRET"));
  it("rejects an unknown LOG_LEVEL", () => assertOneProblem({ LOG_LEVEL: "verbose" }, "LOG_LEVEL"));
  it("rejects a negative WRITE_KNOWN_WALLETS", () =>
    assertOneProblem({ WRITE_KNOWN_WALLETS: "-1" }, "WRITE_KNOWN_WALLETS"));
  it("takes WRITE_KNOWN_WALLETS=0 (every batch locks first)", () =>
    assert.equal(parseConfig({ WRITE_KNOWN_WALLETS: "0", JWT_SECRET: SECRET }).WRITE_KNOWN_WALLETS, 0));
  it("takes the connection bounds, 0 leaving one to PostgreSQL", () => {
    const config = parseConfig({
      JWT_SECRET: SECRET,
      DB_STATEMENT_TIMEOUT_MS: "8000",
      DB_LOCK_TIMEOUT_MS: "0",
      DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: "30000",
    });
    assert.deepEqual(
      [config.DB_STATEMENT_TIMEOUT_MS, config.DB_LOCK_TIMEOUT_MS, config.DB_IDLE_IN_TRANSACTION_TIMEOUT_MS],
      [8000, 0, 30_000],
    );
  });
  it("rejects a negative or fractional connection bound", () => {
    assertOneProblem({ DB_STATEMENT_TIMEOUT_MS: "-1" }, "DB_STATEMENT_TIMEOUT_MS");
    assertOneProblem({ DB_LOCK_TIMEOUT_MS: "1.5" }, "DB_LOCK_TIMEOUT_MS");
    assertOneProblem({ DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: "soon" }, "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS");
  });
  it("rejects HISTORY_STREAMS_MAX not below DATABASE_POOL_SIZE (each stream holds a connection)", () =>
    assertOneProblem({ HISTORY_STREAMS_MAX: "5", DATABASE_POOL_SIZE: "5" }, "HISTORY_STREAMS_MAX"));
  it("leaves HISTORY_STREAMS_MAX unset to a default that fits the pool", () => {
    assert.equal(parseConfig({ DATABASE_POOL_SIZE: "2", JWT_SECRET: SECRET }).HISTORY_STREAMS_MAX, undefined);
    assert.deepEqual([1, 2, 3, 5, 20].map(defaultMaxStreams), [1, 1, 2, 4, 4]);
  });
  it("lists every bad field at once", () => {
    const problems = problemsOf({ PORT: "x", REDIS_URL: "nope", LOG_LEVEL: "loud", ROLES: "boss" });
    const fields = problems.map((p) => p.split(":")[0]).sort();
    assert.deepEqual(fields, ["LOG_LEVEL", "PORT", "REDIS_URL", "ROLES"]);
  });
});

describe("JWT_SECRET: no usable default anywhere", () => {
  for (const appEnv of ["development", "test", "production"]) {
    it(`is required with APP_ENV=${appEnv}: missing or empty, with how to generate one`, () => {
      for (const env of [{ APP_ENV: appEnv }, { APP_ENV: appEnv, JWT_SECRET: "" }]) {
        const problems = problemsOf({ JWT_SECRET: undefined, ...env });
        assert.equal(problems.length, 1, problems.join("; "));
        assert.match(problems[0], /^JWT_SECRET: JWT_SECRET is required: generate one with `openssl rand/);
      }
    });

    it(`refuses every secret published in the repository with APP_ENV=${appEnv}`, () => {
      for (const secret of PUBLIC_JWT_SECRETS) {
        assertOneProblem({ APP_ENV: appEnv, JWT_SECRET: secret }, "JWT_SECRET");
      }
    });
  }

  it("takes the test suite's secret only with APP_ENV=test", () => {
    assert.equal(parseConfig({ APP_ENV: "test", JWT_SECRET: TEST_JWT_SECRET }).JWT_SECRET, TEST_JWT_SECRET);
    assertOneProblem({ APP_ENV: "development", JWT_SECRET: TEST_JWT_SECRET }, "JWT_SECRET");
    assertOneProblem({ APP_ENV: "production", JWT_SECRET: TEST_JWT_SECRET }, "JWT_SECRET");
    assertOneProblem({ JWT_SECRET: TEST_JWT_SECRET }, "JWT_SECRET"); // APP_ENV defaults to development
  });

  it("refuses a placeholder of few distinct characters, and a short one", () => {
    assertOneProblem({ JWT_SECRET: "x".repeat(40) }, "JWT_SECRET");
    assertOneProblem({ JWT_SECRET: "abcd".repeat(10) }, "JWT_SECRET");
    assertOneProblem({ JWT_SECRET: SECRET.slice(0, 31) }, "JWT_SECRET");
    assert.equal(parseConfig({ JWT_SECRET: SECRET.slice(0, 32) }).JWT_SECRET, SECRET.slice(0, 32));
  });

  it("is not needed by the tools that start no API (migrate, services, topics)", () => {
    const config = parseToolConfig({ DATABASE_URL: "postgres://u@h:1/db" });
    assert.equal(config.DATABASE_URL, "postgres://u@h:1/db");
    assert.equal("JWT_SECRET" in config, false);
  });

  it(".env.example is not a working configuration: its JWT_SECRET is empty, and nothing else is wrong", () => {
    const text = Deno.readTextFileSync(new URL("../.env.example", import.meta.url));
    const env = Object.fromEntries(
      text.split("\n").filter((line) => /^[A-Z_]+=/.test(line)).map((line) => {
        const at = line.indexOf("=");
        return [line.slice(0, at), line.slice(at + 1)];
      }),
    );
    assert.equal(env.JWT_SECRET, "");
    const problems = problemsOf({ ...env, JWT_SECRET: "" });
    assert.equal(problems.length, 1, problems.join("; "));
    assert.match(problems[0], /^JWT_SECRET: JWT_SECRET is required/);
    assert.equal(parseConfig({ ...env, JWT_SECRET: SECRET }).APP_ENV, "development");
  });
});

describe("loadConfig", () => {
  it("exits with code 78 and lists the bad fields", async () => {
    const configUrl = new URL("../src/config.ts", import.meta.url).href;
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["eval", `import { loadConfig } from "${configUrl}"; loadConfig();`],
      env: { PORT: "abc", KAFKA_BROKERS: "nohost" },
      stdout: "null",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(stderr);
    assert.equal(code, 78, text);
    assert.match(text, /PORT/);
    assert.match(text, /KAFKA_BROKERS/);
  });
});

describe("deno task start", () => {
  const root = new URL("..", import.meta.url).pathname;
  /** Run `deno task start` with only this environment (and what deno itself needs): exit code and stderr. */
  async function start(env: Record<string, string>) {
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["task", "--quiet", "start"],
      cwd: root,
      clearEnv: true,
      env: { PATH: Deno.env.get("PATH") ?? "", HOME: Deno.env.get("HOME") ?? "/tmp", ...env },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
    return { code, stderr: new TextDecoder().decode(stderr) };
  }

  for (const appEnv of ["development", "test", "production"]) {
    it(`refuses to run with APP_ENV=${appEnv} and no secret, an empty one or the published example`, async () => {
      const runs = await Promise.all([
        start({ APP_ENV: appEnv }),
        start({ APP_ENV: appEnv, JWT_SECRET: "" }),
        start({ APP_ENV: appEnv, JWT_SECRET: PUBLIC_JWT_SECRETS[0] }),
      ]);
      for (const [i, run] of runs.entries()) {
        assert.equal(run.code, 78, `run ${i}: ${run.stderr}`);
        assert.match(run.stderr, /^\s*- JWT_SECRET: /m, `run ${i}`);
        assert.doesNotMatch(run.stderr, /listening/);
      }
    });
  }
});
