/**
 * The relay and the consumer on the pipeline thread (src/pipeline_thread.ts): which roles go there, and the
 * process as deployed (`src/main.ts`, all roles) publishing and caching a deposit from that thread, then
 * stopping cleanly on SIGTERM.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parseConfig } from "../src/config.ts";
import { pipelineThreadRoles, startPipelineThread } from "../src/pipeline_thread.ts";
import { createLogger } from "../src/log.ts";
import { BalanceCache, createRedis } from "../src/cache/balance_cache.ts";
import { hideKafkajsTimeoutWarning } from "../outbox/kafka.ts";
import { config, newCustomerXid } from "./support/harness.ts";
import { metricValue, scrape } from "./support/prometheus.ts";
import { collectTopic, createTestTopic, waitUntil } from "./support/topic.ts";

hideKafkajsTimeoutWarning();

describe("pipeline thread", () => {
  it("takes the relay and the consumer off the API's thread, and only when the process runs the API", () => {
    const roles = (env: Record<string, string>) =>
      pipelineThreadRoles(parseConfig({ APP_ENV: "test", JWT_SECRET: config.JWT_SECRET, ...env }));
    assert.deepEqual(roles({}), ["relay", "consumer"]);
    assert.deepEqual(roles({ ROLES: "api,consumer" }), ["consumer"]);
    assert.equal(roles({ ROLES: "api" }), null, "nothing to move");
    assert.equal(roles({ ROLES: "relay,consumer" }), null, "no API to keep them away from");
    assert.equal(roles({ PIPELINE_THREAD: "main" }), null, "turned off");
    assert.throws(() => parseConfig({ PIPELINE_THREAD: "both" }), /PIPELINE_THREAD must be worker or main/);
  });

  it("reports a thread that fails to start its roles, so the process can end", async () => {
    const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (busy.addr as Deno.NetAddr).port;
    try {
      // The API role on a port already taken: its server cannot start, an uncaught error of the thread.
      const failure = await new Promise<unknown>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no failure reported within 15 s")), 15_000);
        startPipelineThread(
          { ...config, PORT: port, HOST: "127.0.0.1" },
          ["api"],
          createLogger("silent"),
          (e) => {
            clearTimeout(timer);
            resolve(e);
          },
        );
      });
      assert.match(String(failure), /AddrInUse|address already in use/i);
    } finally {
      busy.close();
    }
  });

  it("runs src/main.ts with every role: the thread's relay is woken by the API's commits, its consumer fills the cache, SIGTERM stops both", async () => {
    const topic = await createTestTopic(config.KAFKA_BROKERS, { label: "thread", partitions: 3 });
    const collector = await collectTopic(config.KAFKA_BROKERS, topic);
    const port = 18600 + Math.floor(Math.random() * 300);
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "src/main.ts"],
      cwd: new URL("..", import.meta.url).pathname,
      env: {
        ...Deno.env.toObject(),
        PORT: String(port),
        HOST: "127.0.0.1",
        KAFKA_TOPIC: topic,
        KAFKA_CONSUMER_GROUP: `mw-test-thread-${crypto.randomUUID()}`,
        // The relay's own sweep comes once a minute: an event within seconds was woken by the API's commit.
        RELAY_SWEEP_MS: "60000",
        LOG_LEVEL: "info",
      },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const logLines: string[] = [];
    const reading = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of child.stderr) {
        logLines.push(...decoder.decode(chunk).split("\n").filter(Boolean));
      }
    })();
    const redis = createRedis(config.REDIS_URL);
    const cache = new BalanceCache(redis, { freshnessMs: config.CACHE_FRESHNESS_MS });
    let exited = false;
    try {
      const started = () =>
        logLines.filter((l) => l.includes('"message":"started"')).map((l) => JSON.parse(l));
      // The main thread logs "started" after Deno.serve has bound its port: from here on the API listens.
      await waitUntil(() => started().length === 2, {
        message: "both threads started",
        detail: () => logLines,
      });
      const byThread = new Map(started().map((l) => [l.thread ?? "main", l.roles]));
      assert.deepEqual(byThread.get("main"), ["api"]);
      assert.deepEqual(byThread.get("pipeline"), ["relay", "consumer"]);

      const base = `http://127.0.0.1:${port}/api/v1`;
      const form = (fields: Record<string, string>) => new URLSearchParams(fields);
      const init = await (await fetch(`${base}/init`, {
        method: "POST",
        body: form({ customer_xid: newCustomerXid() }),
      })).json();
      const headers = { authorization: `Token ${init.data.token}` };
      const enabled = await (await fetch(`${base}/wallet`, { method: "POST", headers })).json();
      const walletId = enabled.data.wallet.id as string;
      const deposit = await fetch(`${base}/wallet/deposits`, {
        method: "POST",
        headers,
        body: form({ amount: "12.34", reference_id: crypto.randomUUID() }),
      });
      assert.equal(deposit.status, 201);
      await deposit.body?.cancel();

      await waitUntil(() => collector.eventsOf(walletId).some((e) => e.version === 2), {
        timeoutMs: 10_000,
        message: "the deposit's event on the topic, well before the relay's sweep",
        detail: () => ({ events: collector.eventsOf(walletId), log: logLines.slice(-8) }),
      });
      await waitUntil(async () => (await cache.get(walletId))?.version === 2, {
        timeoutMs: 10_000,
        message: "the consumer's cache entry of the deposit",
      });
      assert.equal((await cache.get(walletId))?.balance, "12.34");

      // One /ready and one /metrics for the process: the main thread's and the pipeline thread's together.
      const ready = await (await fetch(`http://127.0.0.1:${port}/ready`)).json();
      assert.deepEqual(Object.keys(ready.data.checks), ["postgres", "redis", "kafka"]);
      const samples = await scrape(`http://127.0.0.1:${port}`);
      const deposits = { route: "/api/v1/wallet/deposits", method: "POST", status: "201" };
      assert.equal(metricValue(samples, "mini_wallet_http_request_duration_seconds_count", deposits), 1);
      assert.ok(metricValue(samples, "mini_wallet_relay_published_total") >= 2, "the thread's relay");
      assert.ok(metricValue(samples, "mini_wallet_consumer_cache_updates_total", { result: "applied" }) >= 1);
      // Both threads' pools, added up (DATABASE_POOL_SIZE each).
      assert.equal(metricValue(samples, "mini_wallet_db_pool_size"), 2 * config.DATABASE_POOL_SIZE);
      assert.ok(metricValue(samples, "process_resident_memory_bytes") > 0, "process metrics once");

      child.kill("SIGTERM");
      const status = await child.status;
      exited = true;
      assert.equal(status.code, 0, logLines.slice(-10).join("\n"));
    } finally {
      if (!exited) {
        child.kill("SIGKILL");
        await child.status;
      }
      await reading;
      redis.disconnect();
      await collector.stop();
    }
  });
});
