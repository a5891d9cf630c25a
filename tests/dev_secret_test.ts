/**
 * `deno task dev` on a machine with no configuration: a random JWT secret made once in the local state folder,
 * kept across runs, readable by its owner only, and never used when JWT_SECRET is set.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { jwtVerify } from "jose";
import { devSecret } from "../src/ops/dev_secret.ts";
import { parseConfig } from "../src/config.ts";

let dir: string;
before(async () => {
  dir = await Deno.makeTempDir({ prefix: "mw-dev-secret-" });
});
after(async () => {
  await Deno.remove(dir, { recursive: true });
});

describe("devSecret", () => {
  it("makes a random secret once, owner-only, that the configuration accepts, and keeps it", async () => {
    const home = `${dir}/fresh/state`; // not there yet: made on the way
    const first = await devSecret({}, home);
    assert.equal(first.created, true);
    assert.equal(first.path, `${home}/jwt_secret`);
    assert.equal((await Deno.readTextFile(first.path!)).trim(), first.secret);
    assert.equal((await Deno.stat(first.path!)).mode! & 0o777, 0o600);
    assert.equal(parseConfig({ JWT_SECRET: first.secret }).JWT_SECRET, first.secret); // development
    const again = await devSecret({ JWT_SECRET: "" }, home); // empty counts as unset
    assert.deepEqual(again, { ...first, created: false });
    const elsewhere = await devSecret({}, `${dir}/other`);
    assert.notEqual(elsewhere.secret, first.secret);
  });

  it("uses JWT_SECRET when it is set, and writes nothing", async () => {
    const home = `${dir}/configured`;
    const secret = "configured-secret-configured-secret-0123456789";
    assert.deepEqual(await devSecret({ JWT_SECRET: secret }, home), { secret, path: null, created: false });
    await assert.rejects(Deno.stat(home), Deno.errors.NotFound);
  });

  it("replaces a file that holds no usable secret", async () => {
    const home = `${dir}/broken`;
    await Deno.mkdir(home);
    await Deno.writeTextFile(`${home}/jwt_secret`, "short\n");
    const made = await devSecret({}, home);
    assert.equal(made.created, true);
    assert.ok(made.secret.length >= 32);
    assert.equal((await Deno.readTextFile(`${home}/jwt_secret`)).trim(), made.secret);
  });

  it("gives two runs starting at once the same secret", async () => {
    const home = `${dir}/race`;
    const results = await Promise.all([devSecret({}, home), devSecret({}, home), devSecret({}, home)]);
    assert.equal(new Set(results.map((r) => r.secret)).size, 1);
    assert.equal(results.filter((r) => r.created).length, 1);
  });
});

describe("deno task dev without JWT_SECRET", () => {
  it("serves the API with the secret it made in MINI_WALLET_HOME, and says so", async () => {
    const home = `${dir}/dev-home`;
    const port = 18900 + Math.floor(Math.random() * 90);
    const env = Deno.env.toObject();
    delete env.JWT_SECRET;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "src/ops/dev.ts"],
      cwd: new URL("..", import.meta.url).pathname,
      env: { ...env, APP_ENV: "development", MINI_WALLET_HOME: home, ROLES: "api", PORT: String(port) },
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const lines: string[] = [];
    const reading = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of child.stdout) lines.push(...decoder.decode(chunk).split("\n"));
    })();
    try {
      let init: Response | undefined;
      for (let attempt = 0; attempt < 600 && !init; attempt++) {
        init = await fetch(`http://127.0.0.1:${port}/api/v1/init`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ customer_xid: `dev-secret-${crypto.randomUUID()}` }),
        }).catch(() => undefined);
        if (!init) await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.ok(init, `dev did not serve on ${port}: ${lines.join("\n")}`);
      assert.equal(init.status, 201);
      const { data } = await init.json();
      const secret = (await Deno.readTextFile(`${home}/jwt_secret`)).trim();
      const { payload } = await jwtVerify(data.token, new TextEncoder().encode(secret));
      assert.equal(typeof payload.wid, "string");
      const said = lines.find((line) => line.startsWith("dev: JWT_SECRET is not set"));
      assert.ok(said, lines.join("\n"));
      assert.ok(said.includes(`${home}/jwt_secret`) && said.includes("made now"), said);
      assert.ok(!lines.join("\n").includes(secret), "the secret itself is never printed");
    } finally {
      child.kill("SIGTERM");
      await child.status;
      await reading;
    }
  });
});
