/**
 * `deno task chaos`: the service under load while its roles are killed and its dependencies fail, then the
 * invariants checked. Exits 1 when any is violated.
 *
 *   deno run -A tests/chaos/chaos.ts [--fault-seconds N] [--report <path>]
 *
 * Everything it breaks is its own: a private PostgreSQL cluster, a private Redis and a private Kafka broker
 * (temporary folders, free ports), and four service processes (two API, one relay, one consumer), each
 * signalled only by the pid it spawned. The machine's own servers are not touched.
 *
 * Clients deposit and withdraw on a set of wallets through both APIs, retrying a 503 or a lost connection
 * with the same reference_id (the contract says that is safe), while faults run one after the other. After
 * the last one everything is healed and the pipeline drains. Checked:
 * - no process exited that the run did not kill; every request was answered within the bound (+1 s);
 * - money: every balance equals its ledger, none negative, every acknowledged deposit or withdrawal is in
 *   the ledger exactly once, and nothing whose last answer was a refusal (503) was committed;
 * - events: every wallet's versions 1..N reached Kafka in order (repeats allowed, gaps not), the outbox is
 *   empty, and the consumer group has read the whole topic.
 */
import { join } from "node:path";
import postgres from "postgres";
import { migrateUp } from "../../src/db/migrate.ts";
import { hideKafkajsTimeoutWarning } from "../../outbox/kafka.ts";
import { ensureServices } from "../../src/ops/services.ts";
import { parseConfig } from "../../src/config.ts";
import { startPrivateBroker } from "../support/kafka_broker.ts";
import { freePort, startPrivatePostgres, startPrivateRedis } from "../support/private_servers.ts";
import { assertOrderedVersions, collectTopic, committedOffsetTotal } from "../support/topic.ts";
import { Child, percentile, sleep, waitForHttp } from "../bench/tools.ts";

hideKafkajsTimeoutWarning();

const args = Deno.args;
const option = (name: string, fallback: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const FAULT_SECONDS = Number(option("--fault-seconds", "6"));
const root = join(new URL(".", import.meta.url).pathname, "..", "..");
const reportPath = option("--report", join(root, "docs", "chaos.md"));
/** The service's request bound (REQUEST_TIMEOUT_MS); an answer later than this + 1 s is a violation. */
const BOUND_MS = 10_000;
const WALLETS = 40;
const WRITERS = 12;
const READERS = 2;
const TOPIC = "wallet.created-transaction";
const GROUP = "mini-wallet-balance-cache";
const JWT_SECRET = crypto.randomUUID() + crypto.randomUUID();

const violations: string[] = [];
/** True until the load stops; a role that dies before then is restarted. */
let running = true;
const log = (line: string) => console.log(`[chaos ${new Date().toISOString().slice(11, 19)}] ${line}`);

// ---------------------------------------------------------------------------------------------------------
// Private dependencies (the events topic and its dead-letter topic made as `deno task dev` makes them) and the
// four service processes.

log("starting private PostgreSQL, Redis and Kafka");
const [pg, redis, kafka] = await Promise.all([
  startPrivatePostgres(),
  startPrivateRedis(),
  startPrivateBroker(),
]);
const DATABASE_URL = pg.url("mini_wallet_chaos");
const baseConfig = parseConfig({
  DATABASE_URL,
  REDIS_URL: redis.url,
  KAFKA_BROKERS: kafka.brokers.join(","),
  JWT_SECRET,
});
await ensureServices(baseConfig, { log: () => {} });
await migrateUp(DATABASE_URL, { log: () => {} });
const admin = postgres(DATABASE_URL, { max: 2, onnotice: () => {} });

interface Role {
  name: string;
  env: Record<string, string>;
  port?: number;
  child: Child;
  /** Set while the run itself has killed it, so its exit is expected. */
  killedOnPurpose: boolean;
}

function serviceEnv(extra: Record<string, string>): Record<string, string> {
  return {
    PATH: Deno.env.get("PATH") ?? "",
    HOME: Deno.env.get("HOME") ?? "/tmp",
    APP_ENV: "production",
    DATABASE_URL,
    REDIS_URL: redis.url,
    KAFKA_BROKERS: kafka.brokers.join(","),
    KAFKA_TOPIC: TOPIC,
    KAFKA_CONSUMER_GROUP: GROUP,
    JWT_SECRET,
    REQUEST_TIMEOUT_MS: String(BOUND_MS),
    LOG_LEVEL: "warn",
    KAFKAJS_NO_PARTITIONER_WARNING: "1",
    ...extra,
  };
}

function spawnRole(role: Omit<Role, "child" | "killedOnPurpose">): Role {
  const v8 = "--v8-flags=--max-old-space-size=160,--max-semi-space-size=4,--initial-old-space-size=16";
  const child = new Child(role.name, Deno.execPath(), ["run", "-A", v8, "src/main.ts"], {
    cwd: root,
    env: serviceEnv(role.env),
    clearEnv: true,
  });
  const started: Role = { ...role, child, killedOnPurpose: false };
  child.status.then((status) => {
    if (started.killedOnPurpose) return;
    const cause = child.tail(12).split("\n").find((line) => /error/i.test(line)) ?? "";
    violations.push(`${role.name} (pid ${child.pid}) exited on its own (code ${status.code}): ${cause}`);
    log(`VIOLATION: ${role.name} exited on its own (code ${status.code}); restarting it`);
    // As a supervisor would, so that the later faults still find a service to break.
    if (running) void restartRole(role.name);
  });
  return started;
}

const apiPorts = [freePort(), freePort()];
const roles: Role[] = [
  ...apiPorts.map((port, i) =>
    spawnRole({ name: `api-${i + 1}`, port, env: { ROLES: "api", PORT: String(port) } })
  ),
  // Every process serves /health, /ready and /metrics on its PORT: each gets its own.
  spawnRole({ name: "relay", env: { ROLES: "relay", PORT: String(freePort()) } }),
  spawnRole({ name: "consumer", env: { ROLES: "consumer", PORT: String(freePort()) } }),
];
for (const role of roles.filter((r) => r.port)) {
  await waitForHttp(`http://127.0.0.1:${role.port}/health`, role.child, 60_000);
}
log(`service up: ${roles.map((r) => `${r.name} pid ${r.child.pid}`).join(", ")}`);

async function killRole(name: string): Promise<void> {
  const index = roles.findIndex((r) => r.name === name);
  const role = roles[index];
  role.killedOnPurpose = true;
  role.child.kill("SIGKILL");
  await role.child.status;
}

async function restartRole(name: string): Promise<void> {
  const index = roles.findIndex((r) => r.name === name);
  const { child: _, killedOnPurpose: __, ...spec } = roles[index];
  roles[index] = spawnRole(spec);
  if (spec.port) await waitForHttp(`http://127.0.0.1:${spec.port}/health`, roles[index].child, 60_000);
}

// ---------------------------------------------------------------------------------------------------------
// Wallets and the load.

interface Wallet {
  id: string;
  token: string;
}

async function api(
  path: string,
  init: { method: string; token?: string; body?: Record<string, string> },
  port = apiPorts[0],
): Promise<{ status: number; body: Record<string, unknown> | null; ms: number; error?: string }> {
  const started = performance.now();
  try {
    const response = await fetch(`http://127.0.0.1:${port}${path}`, {
      method: init.method,
      headers: {
        ...(init.token ? { authorization: `Token ${init.token}` } : {}),
        ...(init.body ? { "content-type": "application/json" } : {}),
      },
      body: init.body ? JSON.stringify(init.body) : undefined,
      signal: AbortSignal.timeout(BOUND_MS + 5_000),
    });
    const text = await response.text();
    let body: Record<string, unknown> | null = null;
    try {
      body = JSON.parse(text);
    } catch { /* checked below */ }
    return { status: response.status, body, ms: performance.now() - started };
  } catch (error) {
    return { status: 0, body: null, ms: performance.now() - started, error: (error as Error).name };
  }
}

const wallets: Wallet[] = [];
for (let i = 0; i < WALLETS; i++) {
  const init = await api("/api/v1/init", {
    method: "POST",
    body: { customer_xid: `chaos-${crypto.randomUUID()}` },
  });
  const token = (init.body?.data as { token: string }).token;
  const enable = await api("/api/v1/wallet", { method: "POST", token });
  wallets.push({ id: (enable.body?.data as { wallet: { id: string } }).wallet.id, token });
}
log(`${WALLETS} wallets enabled`);

interface Sample {
  phase: string;
  kind: "write" | "read";
  status: number;
  ms: number;
  walletIndex: number;
}
/** Each reference's last answer: what the client was told. */
const lastAnswer = new Map<string, { walletId: string; status: number; type: string; amount: bigint }>();
const samples: Sample[] = [];
let phase = "warm-up";

function checkAnswer(path: string, result: Awaited<ReturnType<typeof api>>) {
  if (result.status === 0) {
    if (result.error === "TimeoutError") violations.push(`${path}: no answer within ${BOUND_MS + 5000} ms`);
    return;
  }
  const status = result.body?.status;
  const jsend = (status === "success" || status === "fail" || status === "error") &&
    (status !== "error" || typeof result.body?.message === "string");
  if (!jsend) violations.push(`${path}: ${result.status} is not JSend: ${JSON.stringify(result.body)}`);
  if (
    result.status >= 500 &&
    /\b(at |Error:|SELECT|INSERT|postgres|redis|kafka)/i.test(String(result.body?.message))
  ) {
    violations.push(`${path}: ${result.status} leaks internals: ${result.body?.message}`);
  }
  if (result.ms > BOUND_MS + 1000) {
    violations.push(`${path}: answered ${result.status} after ${Math.round(result.ms)} ms`);
  }
}

async function writer(seed: number) {
  let n = seed;
  while (running) {
    const walletIndex = (n = (n * 1103515245 + 12345) % 2147483648) % WALLETS;
    const wallet = wallets[walletIndex];
    const deposit = n % 10 < 7;
    const amount = BigInt(1 + (n % 5000));
    const reference = crypto.randomUUID();
    const path = deposit ? "/api/v1/wallet/deposits" : "/api/v1/wallet/withdrawals";
    const body = {
      amount: `${amount / 100n}.${String(amount % 100n).padStart(2, "0")}`,
      reference_id: reference,
    };
    // Retry a refusal on our side or a lost connection with the same reference, on the other API.
    for (let attempt = 0; running || attempt === 0; attempt++) {
      const port = apiPorts[(seed + attempt) % apiPorts.length];
      const result = await api(path, { method: "POST", token: wallet.token, body }, port);
      checkAnswer(path, result);
      samples.push({ phase, kind: "write", status: result.status, ms: result.ms, walletIndex });
      if (result.status !== 0) {
        lastAnswer.set(reference, {
          walletId: wallet.id,
          status: result.status,
          type: deposit ? "deposit" : "withdrawal",
          amount,
        });
      }
      if (result.status !== 0 && result.status !== 503) break;
      await sleep(200 + attempt * 100);
      if (attempt >= 30) break;
    }
  }
}

async function reader(seed: number) {
  let i = seed;
  while (running) {
    const walletIndex = i++ % WALLETS;
    const result = await api(
      "/api/v1/wallet",
      { method: "GET", token: wallets[walletIndex].token },
      apiPorts[i % 2],
    );
    checkAnswer("GET /api/v1/wallet", result);
    samples.push({ phase, kind: "read", status: result.status, ms: result.ms, walletIndex });
    await sleep(20);
  }
}

const load = [
  ...Array.from({ length: WRITERS }, (_, i) => writer(i + 1)),
  ...Array.from({ length: READERS }, (_, i) => reader(i)),
];

// ---------------------------------------------------------------------------------------------------------
// The faults, one after the other, each followed by a settling pause.

interface Fault {
  name: string;
  run(): Promise<void>;
}

async function terminateBackends() {
  await admin`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name NOT LIKE 'chaos%'`;
}

const faults: Fault[] = [
  ...["api-1", "relay", "consumer"].map((role) => ({
    name: `kill -9 ${role}, restart`,
    run: async () => {
      await killRole(role);
      await sleep(FAULT_SECONDS * 1000);
      await restartRole(role);
    },
  })),
  {
    name: "pg_terminate_backend on every service connection, 5 times",
    run: async () => {
      for (let i = 0; i < 5; i++) {
        await terminateBackends();
        await sleep((FAULT_SECONDS * 1000) / 5);
      }
    },
  },
  {
    name: "one wallet's row locked by another session for 10 s",
    run: async () => {
      await admin.begin(async (tx) => {
        await tx`SELECT 1 FROM wallets WHERE id = ${wallets[0].id} FOR UPDATE`;
        await sleep(10_000);
      });
    },
  },
  {
    name: "PostgreSQL crashed (immediate stop), restarted",
    run: async () => {
      await pg.stop({ kill: true });
      await sleep(FAULT_SECONDS * 1000);
      await pg.start();
    },
  },
  {
    name: "Redis hung (SIGSTOP), resumed",
    run: async () => {
      redis.freeze();
      await sleep(FAULT_SECONDS * 1000);
      redis.thaw();
    },
  },
  {
    name: "Redis killed, restarted empty",
    run: async () => {
      await redis.stop({ kill: true });
      await sleep(FAULT_SECONDS * 1000);
      await redis.start();
    },
  },
  {
    name: "Kafka stopped, restarted",
    run: async () => {
      await kafka.stop();
      await sleep(FAULT_SECONDS * 1000);
      await kafka.start();
    },
  },
];

const SETTLE_MS = 5000;
await sleep(SETTLE_MS);
const phaseNames = ["warm-up"];
for (const fault of faults) {
  phase = fault.name;
  phaseNames.push(phase);
  log(`fault: ${fault.name}`);
  await fault.run();
  phase = `after: ${fault.name}`;
  phaseNames.push(phase);
  await sleep(SETTLE_MS);
}
running = false;
await Promise.all(load);
log(`load stopped: ${samples.length} requests`);

// ---------------------------------------------------------------------------------------------------------
// Drain, then check.

const drained = await waitUntilTrue(async () => {
  const [{ unsent }] = await admin`SELECT count(*)::int AS unsent FROM outbox WHERE sent_at IS NULL`;
  return unsent === 0;
}, 120_000);
if (!drained) violations.push("the outbox did not drain within 120 s after the faults");

const [{ dead }] = await admin`SELECT count(*)::int AS dead FROM outbox_dead_letter`;
if (dead > 0) violations.push(`${dead} events were dead-lettered`);

// Money: balance == ledger, never negative.
const ledger = await admin<{ id: string; balance: string; version: string; sum: string }[]>`
  SELECT w.id, w.balance, w.version,
         COALESCE(sum(CASE WHEN t.status <> 'success' THEN 0 WHEN t.type = 'deposit' THEN t.amount ELSE -t.amount END), 0) AS sum
  FROM wallets w LEFT JOIN wallet_transactions t ON t.wallet_id = w.id GROUP BY w.id`;
for (const row of ledger) {
  if (BigInt(row.balance) !== BigInt(row.sum)) {
    violations.push(`wallet ${row.id}: balance ${row.balance} != ledger ${row.sum}`);
  }
  if (BigInt(row.balance) < 0n) violations.push(`wallet ${row.id}: negative balance ${row.balance}`);
}

// Every answered reference: a success is in the ledger once, with its amount; a 503 left nothing behind.
const rows = await admin<
  { wallet_id: string; reference_id: string; type: string; status: string; amount: string }[]
>`
  SELECT wallet_id, reference_id, type, status, amount FROM wallet_transactions`;
const byReference = new Map(rows.map((r) => [`${r.wallet_id}/${r.reference_id}`, r]));
let acknowledged = 0;
let refusedThenNothing = 0;
for (const [reference, answer] of lastAnswer) {
  const row = byReference.get(`${answer.walletId}/${reference}`);
  if (answer.status === 201) {
    acknowledged++;
    if (
      !row || row.status !== "success" || BigInt(row.amount) !== answer.amount || row.type !== answer.type
    ) {
      violations.push(
        `reference ${reference}: answered 201 but the ledger has ${JSON.stringify(row ?? null)}`,
      );
    }
  } else if (answer.status === 503) {
    if (row) {
      violations.push(`reference ${reference}: last answer 503, yet committed later: ${JSON.stringify(row)}`);
    } else refusedThenNothing++;
  }
}

// Events: versions 1..N of every wallet in order on the topic; the consumer read all of it.
const collector = await collectTopic(kafka.brokers, TOPIC);
const versions = new Map(ledger.map((r) => [r.id, Number(r.version)]));
const complete = await waitUntilTrue(
  () =>
    [...versions].every(([id, version]) =>
      new Set(collector.eventsOf(id).map((e) => e.version)).size >= version
    ),
  60_000,
);
for (const [id, version] of versions) {
  try {
    assertOrderedVersions(id, collector.eventsOf(id), version);
  } catch (error) {
    violations.push((error as Error).message);
  }
}
if (!complete) violations.push("not every committed change reached Kafka within 60 s of draining");
const eventCount = collector.messages.length;
await collector.stop();
const consumed = await waitUntilTrue(
  async () => (await committedOffsetTotal(kafka.brokers, GROUP, TOPIC)) >= eventCount,
  60_000,
);
if (!consumed) violations.push("the consumer group did not catch up with the topic within 60 s");

// ---------------------------------------------------------------------------------------------------------
// Report.

function summary(selected: Sample[]) {
  const answered = selected.filter((s) => s.status !== 0);
  const sorted = answered.map((s) => s.ms).sort((a, b) => a - b);
  const count = (predicate: (s: Sample) => boolean) => selected.filter(predicate).length;
  return {
    requests: selected.length,
    ok: count((s) => s.status >= 200 && s.status < 300),
    refused4xx: count((s) => s.status >= 400 && s.status < 500),
    unavailable503: count((s) => s.status === 503),
    other5xx: count((s) => s.status >= 500 && s.status !== 503),
    noAnswer: count((s) => s.status === 0),
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted.at(-1) ?? null,
  };
}
const ms = (v: number | null) => (v === null ? "-" : `${Math.round(v)}`);
const tableRows = phaseNames.map((name) => {
  const s = summary(samples.filter((x) => x.phase === name));
  return `| ${name} | ${s.requests} | ${s.ok} | ${s.refused4xx} | ${s.unavailable503} | ${s.other5xx} | ` +
    `${s.noAnswer} | ${ms(s.p50)} | ${ms(s.p99)} | ${ms(s.max)} |`;
});
const lockPhase = faults.find((f) => f.name.startsWith("one wallet's row locked"))!.name;
const otherWallets = summary(
  samples.filter((s) => s.phase === lockPhase && s.kind === "write" && s.walletIndex !== 0),
);

/** Requests slower than 2 s, by phase, kind and status: where a bound was nearly reached. */
const slow = new Map<string, number>();
for (const sample of samples.filter((x) => x.ms > 2000)) {
  const key = `${sample.phase}: ${sample.kind} ${sample.status}`;
  slow.set(key, (slow.get(key) ?? 0) + 1);
}

const report = [
  "# Chaos run",
  "",
  "`deno task chaos` runs the service as four processes (two API, one relay, one consumer) on a private",
  "PostgreSQL, Redis and Kafka, drives deposits, withdrawals and balance reads through both APIs, and breaks one",
  `thing at a time (${FAULT_SECONDS} s each, ${
    SETTLE_MS / 1000
  } s to settle after). Clients retry a 503 or a lost`,
  "connection with the same `reference_id`. Then it heals everything, lets the pipeline drain, and checks the",
  "invariants. It exits 1 on any violation.",
  "",
  `Result: **${violations.length === 0 ? "every invariant held" : `${violations.length} violations`}**. ` +
  `${acknowledged} deposits and withdrawals acknowledged, ${refusedThenNothing} refused with 503 and never ` +
  `committed, ${eventCount} events on the topic.`,
  "",
  "| phase | requests | 2xx | 4xx | 503 | other 5xx | no answer | p50 ms | p99 ms | max ms |",
  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ...tableRows,
  "",
  `While one wallet's row was locked for 10 s, writes to the other wallets: p50 ${
    ms(otherWallets.p50)
  } ms, ` +
  `p99 ${ms(otherWallets.p99)} ms, max ${ms(otherWallets.max)} ms (${otherWallets.requests} requests).`,
  "",
  "No answer means the connection was lost (the API process was killed): the client retried on the other one.",
  "",
  "Requests slower than 2 s (phase: kind status, count):",
  "",
  ...(slow.size ? [...slow].map(([key, count]) => `- ${key}: ${count}`) : ["- none"]),
  "",
  "## Checked",
  "",
  "- no process exited except those the run killed; every request answered within the bound " +
  `(${BOUND_MS / 1000} s + 1 s), as JSend, with no internals in a 5xx;`,
  "- every balance equals the sum of its ledger and is not negative; every deposit or withdrawal answered",
  "  201 is in the ledger once, with its amount; none whose last answer was 503 was committed;",
  "- the outbox drained, nothing was dead-lettered, every wallet's versions 1..N are on the topic in order,",
  "  and the consumer group read the whole topic.",
  ...(violations.length
    ? ["", "## Violations", "", ...violations.slice(0, 50).map((v) => `- ${v.split("\n")[0]}`)]
    : []),
  "",
].join("\n");

console.log(report);
if (violations.length) { for (const v of violations) console.error(`VIOLATION: ${v}`); }
await Deno.writeTextFile(reportPath, report);
await new Deno.Command(Deno.execPath(), { args: ["fmt", "--quiet", reportPath], stdout: "null" }).output();

for (const role of roles) {
  role.killedOnPurpose = true;
  await role.child.stop();
}
await admin.end({ timeout: 5 });
await Promise.all([pg.dispose(), redis.dispose(), kafka.dispose()]);
Deno.exit(violations.length === 0 ? 0 : 1);

async function waitUntilTrue(check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      if (await check()) return true;
    } catch { /* not yet */ }
    await sleep(500);
  }
  return false;
}
