import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parse } from "yaml";

// compose.yaml cannot run here (no Docker engine): check its shape offline instead.
const path = new URL("../compose.yaml", import.meta.url);
const text = Deno.readTextFileSync(path);

interface Service {
  image?: string;
  healthcheck?: { test?: unknown };
  depends_on?: Record<string, { condition?: string }>;
  environment?: Record<string, string>;
  ports?: string[];
}

const compose = parse(text) as { services: Record<string, Service> };

describe("compose.yaml", () => {
  it("defines postgres, redis, kafka and app, each with a healthcheck", () => {
    assert.deepEqual(Object.keys(compose.services).sort(), ["app", "kafka", "postgres", "redis"]);
    for (const [name, service] of Object.entries(compose.services)) {
      assert.ok(service.healthcheck?.test, `${name} has a healthcheck`);
      assert.ok(service.image, `${name} has an image`);
    }
  });

  it("starts the app only once the three services are healthy", () => {
    const dependsOn = compose.services.app.depends_on ?? {};
    for (const name of ["postgres", "redis", "kafka"]) {
      assert.equal(dependsOn[name]?.condition, "service_healthy", `app waits for ${name}`);
    }
  });

  it("gives the app its configuration and publishes port 8089", () => {
    const env = compose.services.app.environment ?? {};
    for (const key of ["DATABASE_URL", "REDIS_URL", "KAFKA_BROKERS", "KAFKA_TOPIC", "JWT_SECRET"]) {
      assert.ok(env[key], `app environment has ${key}`);
    }
    assert.ok(env.JWT_SECRET.length >= 32);
    assert.ok(compose.services.app.ports?.some((p) => String(p).endsWith("8089")));
  });

  it("passes docker-compose config validation when docker-compose is installed", async (t) => {
    let result: Deno.CommandOutput;
    try {
      result = await new Deno.Command("docker-compose", {
        args: ["-f", path.pathname, "config", "-q"],
        stdout: "piped",
        stderr: "piped",
      }).output();
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return t.skip("docker-compose is not installed");
      throw error;
    }
    assert.equal(result.code, 0, new TextDecoder().decode(result.stderr));
  });
});
