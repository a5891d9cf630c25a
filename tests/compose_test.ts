import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parse } from "yaml";

// compose.yaml cannot run here (no Docker engine): check its shape offline instead, and validate it (and the
// proxy's Caddyfile) with docker-compose and caddy when they are installed (`deno task test` installs them).
const path = new URL("../compose.yaml", import.meta.url);
const text = Deno.readTextFileSync(path);
const caddyfilePath = new URL("../deploy/Caddyfile", import.meta.url);

interface Service {
  image?: string;
  healthcheck?: { test?: unknown };
  depends_on?: Record<string, { condition?: string }>;
  environment?: Record<string, string>;
  ports?: string[];
  expose?: string[];
  volumes?: string[];
}

const compose = parse(text) as { services: Record<string, Service> };

/** Run a program with only PATH and HOME from our environment plus `env`; null when it is not installed. */
async function run(program: string, args: string[], env: Record<string, string> = {}) {
  try {
    const result = await new Deno.Command(program, {
      args,
      clearEnv: true, // the test runner's JWT_SECRET must not leak into the compose check
      env: { PATH: Deno.env.get("PATH") ?? "", HOME: Deno.env.get("HOME") ?? "/tmp", ...env },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const decoder = new TextDecoder();
    return { code: result.code, output: decoder.decode(result.stdout) + decoder.decode(result.stderr) };
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}

describe("compose.yaml", () => {
  it("defines postgres, redis, kafka, app and the proxy, each with a healthcheck", () => {
    assert.deepEqual(Object.keys(compose.services).sort(), ["app", "kafka", "postgres", "proxy", "redis"]);
    for (const [name, service] of Object.entries(compose.services)) {
      assert.ok(service.healthcheck?.test, `${name} has a healthcheck`);
      assert.ok(service.image, `${name} has an image`);
    }
  });

  it("starts the app only once the three services are healthy, and the proxy once the app is", () => {
    const dependsOn = compose.services.app.depends_on ?? {};
    for (const name of ["postgres", "redis", "kafka"]) {
      assert.equal(dependsOn[name]?.condition, "service_healthy", `app waits for ${name}`);
    }
    assert.equal(compose.services.proxy.depends_on?.app?.condition, "service_healthy");
  });

  it("gives the app its configuration, and the JWT secret only from the environment, required", () => {
    const env = compose.services.app.environment ?? {};
    for (const key of ["DATABASE_URL", "REDIS_URL", "KAFKA_BROKERS", "KAFKA_TOPIC", "JWT_SECRET"]) {
      assert.ok(env[key], `app environment has ${key}`);
    }
    // `${VAR:?message}`: compose stops with the message when JWT_SECRET is unset or empty.
    assert.match(env.JWT_SECRET, /^\$\{JWT_SECRET:\?[^}]+\}$/);
    assert.equal(env.APP_ENV, "production");
    assert.ok(!/change-me/.test(text), "no example secret anywhere in compose.yaml");
  });

  it("publishes the API only through the proxy, and the backing services only on loopback", () => {
    assert.equal(compose.services.app.ports, undefined, "the app publishes no port");
    assert.deepEqual(compose.services.app.expose, ["8089"]);
    const proxyPorts = compose.services.proxy.ports ?? [];
    assert.ok(proxyPorts.includes("443:443") && proxyPorts.includes("80:80"), proxyPorts.join(", "));
    for (const name of ["postgres", "redis", "kafka"]) {
      for (const port of compose.services[name].ports ?? []) assert.match(port, /^127\.0\.0\.1:/, name);
    }
  });

  it("runs Caddy with the committed Caddyfile, in front of the app", () => {
    const proxy = compose.services.proxy;
    assert.match(proxy.image ?? "", /^caddy:/);
    assert.ok(
      proxy.volumes?.includes("./deploy/Caddyfile:/etc/caddy/Caddyfile:ro"),
      proxy.volumes?.join(", "),
    );
    assert.equal(proxy.environment?.APP_UPSTREAM, "app:8089");
  });

  it("passes docker-compose config validation, and refuses to start without JWT_SECRET", async (t) => {
    const emptyEnvFile = await Deno.makeTempFile(); // ignore a developer's .env next to compose.yaml
    try {
      const args = ["-f", path.pathname, "--env-file", emptyEnvFile, "config", "-q"];
      const refused = await run("docker-compose", args);
      if (refused === null) return t.skip("docker-compose is not installed");
      assert.notEqual(refused.code, 0, refused.output);
      assert.match(refused.output, /JWT_SECRET is required/);
      const empty = await run("docker-compose", args, { JWT_SECRET: "" });
      assert.notEqual(empty!.code, 0, "an empty JWT_SECRET is refused too");
      const secret = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(48))));
      const ok = await run("docker-compose", args, { JWT_SECRET: secret });
      assert.equal(ok!.code, 0, ok!.output);
    } finally {
      await Deno.remove(emptyEnvFile);
    }
  });
});

describe("deploy/Caddyfile", () => {
  const caddyfile = Deno.readTextFileSync(caddyfilePath);

  it("bounds the request head, the whole request, the answer and idle connections, and the body size", () => {
    for (
      const setting of ["read_header 10s", "read_body 30s", "write 60s", "idle 60s", "max_header_size 16KB"]
    ) {
      assert.ok(caddyfile.includes(setting), `Caddyfile sets ${setting}`);
    }
    // Above the app's 1 MiB, so that normally the app's JSend 413 answers.
    assert.match(caddyfile, /request_body \{\s*max_size 2MiB\s*\}/);
    assert.match(caddyfile, /reverse_proxy \{\$APP_UPSTREAM:app:8089\}/);
    assert.match(caddyfile, /Strict-Transport-Security/);
  });

  it("is a valid Caddy configuration with TLS for its site and JSend for its own errors", async (t) => {
    const home = await Deno.makeTempDir({ prefix: "mw-caddy-" });
    try {
      const adapted = await run("caddy", [
        "adapt",
        "--config",
        caddyfilePath.pathname,
        "--adapter",
        "caddyfile",
      ], {
        HOME: home,
        XDG_DATA_HOME: `${home}/data`,
        XDG_CONFIG_HOME: `${home}/config`,
        SITE_ADDRESS: "wallet.example.org",
      });
      if (adapted === null) return t.skip("caddy is not installed");
      assert.equal(adapted.code, 0, adapted.output);
      const json = JSON.parse(adapted.output.slice(adapted.output.indexOf("{")));
      const server = Object.values<Record<string, unknown>>(json.apps.http.servers)[0];
      // Caddy's JSON counts durations in nanoseconds.
      assert.equal(server.read_header_timeout, 10e9);
      assert.equal(server.read_timeout, 30e9);
      assert.equal(server.idle_timeout, 60e9);
      assert.deepEqual(server.listen, [":443"]);
      assert.match(JSON.stringify(server.routes), /wallet\.example\.org/);
      assert.match(JSON.stringify(server.errors), /\\"status\\":\\"fail\\"/);
      const validated = await run(
        "caddy",
        ["validate", "--config", caddyfilePath.pathname, "--adapter", "caddyfile"],
        { HOME: home, XDG_DATA_HOME: `${home}/data`, XDG_CONFIG_HOME: `${home}/config` },
      );
      assert.equal(validated!.code, 0, validated!.output);
    } finally {
      await Deno.remove(home, { recursive: true });
    }
  });
});
