/**
 * Scale-out as deployed: four OS processes of `src/main.ts` side by side on one database and one topic, two
 * with ROLES=api, one with ROLES=relay, one with ROLES=consumer. Deposits and withdrawals go through both APIs
 * at once, on the same wallets. Afterwards every balance is exact (the sum of its ledger, and what the answers
 * said), every committed change is on the topic exactly once, each wallet's versions strictly increasing, the
 * consumer process has the balances in Redis, and each process's /metrics counts what that process ran.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { BalanceCache, createRedis } from "../src/cache/balance_cache.ts";
import { createSql } from "../src/db/client.ts";
import { centsToDecimal } from "../src/wallet/money.ts";
import { hideKafkajsTimeoutWarning } from "../outbox/kafka.ts";
import { config, newCustomerXid } from "./support/harness.ts";
import { metricValue, scrape } from "./support/prometheus.ts";
import { assertOrderedVersions, collectTopic, createTestTopic, waitUntil } from "./support/topic.ts";
import { freePort } from "./support/private_servers.ts";

hideKafkajsTimeoutWarning();

const WALLETS = 6;
const OPERATIONS_PER_WALLET = 16;

interface ServiceProcess {
  name: string;
  baseUrl: string;
  child: Deno.ChildProcess;
  log: string[];
  reading: Promise<void>;
}

/** `deno run -A src/main.ts` with these roles on a port of its own; its log lines are kept. */
function spawnService(name: string, env: Record<string, string>): ServiceProcess {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "src/main.ts"],
    cwd: new URL("..", import.meta.url).pathname,
    env: { ...Deno.env.toObject(), ...env, PORT: String(port), HOST: "127.0.0.1", LOG_LEVEL: "warn" },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const log: string[] = [];
  const reading = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stderr) log.push(...decoder.decode(chunk).split("\n").filter(Boolean));
  })();
  return { name, baseUrl: `http://127.0.0.1:${port}`, child, log, reading };
}

async function ready(service: ServiceProcess): Promise<boolean> {
  try {
    const response = await fetch(`${service.baseUrl}/ready`);
    await response.body?.cancel();
    return response.status === 200;
  } catch {
    return false; // not listening yet
  }
}

async function post(
  baseUrl: string,
  path: string,
  token: string | null,
  fields: Record<string, string>,
  // deno-lint-ignore no-explicit-any -- JSend bodies; the test asserts on their fields
): Promise<{ status: number; body: any }> {
  const response = await fetch(`${baseUrl}${path}`, {
    method: "POST",
    headers: token ? { authorization: `Token ${token}` } : {},
    body: new URLSearchParams(fields),
  });
  return { status: response.status, body: await response.json() };
}

describe("scale-out", () => {
  it("two API processes, a relay process and a consumer process: exact balances, each change once and in order", async () => {
    const topic = await createTestTopic(config.KAFKA_BROKERS, { label: "scale", partitions: 6 });
    const collector = await collectTopic(config.KAFKA_BROKERS, topic);
    const shared = { KAFKA_TOPIC: topic, KAFKA_CONSUMER_GROUP: `mw-test-scale-${crypto.randomUUID()}` };
    const services = [
      spawnService("api-a", { ...shared, ROLES: "api" }),
      spawnService("api-b", { ...shared, ROLES: "api" }),
      spawnService("relay", { ...shared, ROLES: "relay" }),
      spawnService("consumer", { ...shared, ROLES: "consumer" }),
    ];
    const [apiA, apiB, relay, consumer] = services;
    const sql = createSql(config.DATABASE_URL, { max: 2 });
    const redis = createRedis(config.REDIS_URL);
    redis.on("error", () => {}); // a slow moment on the shared machine; the reads below retry
    const cache = new BalanceCache(redis, { freshnessMs: config.CACHE_FRESHNESS_MS });
    try {
      for (const service of services) {
        await waitUntil(() => ready(service), {
          timeoutMs: 60_000,
          intervalMs: 200,
          message: `${service.name} ready`,
          detail: () => service.log.slice(-5),
        });
      }

      // Wallets made through API A; both APIs accept its tokens (one JWT secret).
      const wallets: Array<{ token: string; id: string }> = [];
      for (let i = 0; i < WALLETS; i++) {
        const init = await post(apiA.baseUrl, "/api/v1/init", null, { customer_xid: newCustomerXid() });
        const enabled = await post(apiB.baseUrl, "/api/v1/wallet", init.body.data.token, {});
        assert.equal(enabled.status, 201, JSON.stringify(enabled.body));
        wallets.push({ token: init.body.data.token, id: enabled.body.data.wallet.id });
      }

      // Every wallet gets deposits and withdrawals through both APIs at once; amounts in cents.
      const expected = new Map(wallets.map((w) => [w.id, 0n]));
      const answered = { deposits: 0, withdrawals: 0, refused: 0 };
      await Promise.all(
        wallets.flatMap((wallet, w) =>
          Array.from({ length: OPERATIONS_PER_WALLET }, async (_, i) => {
            const api = (w + i) % 2 === 0 ? apiA : apiB;
            const withdrawal = i % 3 === 2;
            const cents = BigInt(100 + ((w * 37 + i * 53) % 900)) * (withdrawal ? 3n : 1n);
            const amount = `${cents / 100n}.${String(cents % 100n).padStart(2, "0")}`;
            const path = withdrawal ? "/api/v1/wallet/withdrawals" : "/api/v1/wallet/deposits";
            const answer = await post(api.baseUrl, path, wallet.token, {
              amount,
              reference_id: `scale-${w}-${i}`,
            });
            if (answer.status === 201) {
              expected.set(wallet.id, expected.get(wallet.id)! + (withdrawal ? -cents : cents));
              answered[withdrawal ? "withdrawals" : "deposits"]++;
            } else {
              assert.deepEqual([answer.status, answer.body.data?.error], [400, "Insufficient balance"]);
              answered.refused++;
            }
          })
        ),
      );
      assert.equal(
        answered.deposits + answered.withdrawals + answered.refused,
        WALLETS * OPERATIONS_PER_WALLET,
      );

      for (const wallet of wallets) {
        // Exact balances: PostgreSQL's, the ledger's sum, and what the answers said are one number.
        const [row] = await sql<{ balance: string; version: string; ledger: string; changes: number }[]>`
          SELECT w.balance, w.version,
            coalesce(sum(CASE WHEN t.status = 'success' AND t.type = 'deposit' THEN t.amount
                              WHEN t.status = 'success' THEN -t.amount END), 0) AS ledger,
            count(t.id)::int AS changes
          FROM wallets w LEFT JOIN wallet_transactions t ON t.wallet_id = w.id
          WHERE w.id = ${wallet.id} GROUP BY w.id`;
        assert.equal(BigInt(row.balance), expected.get(wallet.id), `balance of ${wallet.id}`);
        assert.equal(BigInt(row.ledger), BigInt(row.balance), `ledger sum of ${wallet.id}`);
        // One event per committed change: the enable, then every ledger row (refused withdrawals too).
        const version = Number(row.version);
        assert.equal(version, 1 + row.changes);

        await waitUntil(() => collector.eventsOf(wallet.id).length >= version, {
          message: `${version} events of ${wallet.id} on the topic`,
          detail: () => ({ seen: collector.eventsOf(wallet.id).length, relay: relay.log.slice(-5) }),
        });
        const events = collector.eventsOf(wallet.id);
        // Versions strictly increasing in the order a consumer reads them, each change exactly once.
        assert.deepEqual(events.map((e) => e.version), Array.from({ length: version }, (_, i) => i + 1));
        assertOrderedVersions(wallet.id, events, version);
        assert.equal(new Set(events.map((e) => e.event_id)).size, version, "one event id per change");
        const last = events[version - 1];
        assert.equal(last.balance, centsToDecimal(expected.get(wallet.id)!));

        // The consumer process brought the balance to Redis.
        await waitUntil(async () => (await cache.get(wallet.id))?.version === version, {
          message: `the consumer's cache entry of ${wallet.id} at version ${version}`,
          detail: () => consumer.log.slice(-5),
        });
      }

      // Each process exposes what it runs; the two APIs' counts add up to what was answered.
      const [a, b, r, c] = await Promise.all(services.map((s) => scrape(s.baseUrl)));
      const ops = "mini_wallet_wallet_operations_total";
      assert.equal(
        metricValue(a, ops, { kind: "deposit", result: "success" }) +
          metricValue(b, ops, { kind: "deposit", result: "success" }),
        answered.deposits,
      );
      assert.equal(
        metricValue(a, ops, { kind: "withdrawal", result: "insufficient_balance" }) +
          metricValue(b, ops, { kind: "withdrawal", result: "insufficient_balance" }),
        answered.refused,
      );
      const totalEvents = WALLETS + answered.deposits + answered.withdrawals + answered.refused;
      assert.ok(
        metricValue(r, "mini_wallet_relay_published_total") >= totalEvents,
        "the relay published them",
      );
      assert.ok(
        metricValue(c, "mini_wallet_consumer_messages_total") >= totalEvents,
        "the consumer read them",
      );
      assert.equal(metricValue(a, "mini_wallet_relay_published_total"), 0, "an API process runs no relay");
      assert.equal(metricValue(r, ops), 0, "the relay process answers no API request");
      assert.equal(metricValue(c, "mini_wallet_relay_published_total"), 0);

      for (const service of services) service.child.kill("SIGTERM");
      for (const service of services) {
        const status = await service.child.status;
        assert.equal(status.code, 0, `${service.name} stopped cleanly: ${service.log.slice(-5).join("\n")}`);
      }
    } finally {
      for (const service of services) {
        try {
          service.child.kill("SIGKILL");
        } catch { /* already exited */ }
        await service.child.status;
        await service.reading;
      }
      redis.disconnect();
      await sql.end({ timeout: 5 });
      await collector.stop();
    }
  });
});
