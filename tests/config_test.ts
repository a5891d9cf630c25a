import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { ConfigError, EXAMPLE_JWT_SECRET, parseConfig } from "../src/config.ts";

/** The problems parseConfig reports for this environment (fails the test if it parses). */
function problemsOf(env: Record<string, string>): string[] {
  try {
    parseConfig(env);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${error}`);
    return error.problems;
  }
  assert.fail(`expected ${JSON.stringify(env)} to be rejected`);
}

/** Assert exactly one problem, about `field`. */
function assertOneProblem(env: Record<string, string>, field: string): void {
  const problems = problemsOf(env);
  assert.equal(problems.length, 1, problems.join("; "));
  assert.match(problems[0], new RegExp(`^${field}: `));
}

describe("parseConfig", () => {
  it("fills every default from an empty environment", () => {
    const config = parseConfig({});
    assert.equal(config.APP_ENV, "development");
    assert.equal(config.PORT, 8089);
    assert.equal(config.HOST, "0.0.0.0");
    assert.equal(config.DATABASE_URL, "postgres://postgres@127.0.0.1:5432/mini_wallet");
    assert.equal(config.REDIS_URL, "redis://127.0.0.1:6379/0");
    assert.deepEqual(config.KAFKA_BROKERS, ["127.0.0.1:9092"]);
    assert.equal(config.KAFKA_TOPIC, "wallet.created-transaction");
    assert.equal(config.KAFKA_TOPIC_PARTITIONS, 6);
    assert.equal(config.JWT_SECRET, EXAMPLE_JWT_SECRET);
    assert.equal(config.LOG_LEVEL, "info");
    assert.deepEqual(config.ROLES, ["api", "relay", "consumer"]);
    assert.equal(config.WRITE_KNOWN_WALLETS, 10_000);
  });

  it("treats empty strings as unset", () => {
    assert.equal(parseConfig({ PORT: "", LOG_LEVEL: "" }).PORT, 8089);
  });

  it("parses given values", () => {
    const config = parseConfig({
      PORT: "9000",
      KAFKA_BROKERS: "a:1, b:2",
      ROLES: "relay,relay,api",
      APP_ENV: "production",
      JWT_SECRET: "x".repeat(40),
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
    assert.equal(parseConfig({ WRITE_KNOWN_WALLETS: "0" }).WRITE_KNOWN_WALLETS, 0));
  it("refuses the example secret in production", () =>
    assertOneProblem({ APP_ENV: "production" }, "JWT_SECRET"));

  it("lists every bad field at once", () => {
    const problems = problemsOf({ PORT: "x", REDIS_URL: "nope", LOG_LEVEL: "loud", ROLES: "boss" });
    const fields = problems.map((p) => p.split(":")[0]).sort();
    assert.deepEqual(fields, ["LOG_LEVEL", "PORT", "REDIS_URL", "ROLES"]);
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
