/**
 * Measurement (not a test): deposit latency to other wallets while one wallet's row is held by another
 * session, over real HTTP. Phase 1: no lock; phase 2: wallet X locked for LOCK_MS. Prints p50/p99/max of each
 * phase, and what happened to the deposits to X meanwhile.
 *
 *   DATABASE_URL=postgres://.../mini_wallet_test_<name> REDIS_URL=redis://127.0.0.1:6379/<db> \
 *     deno run -A tests/bench/locked_wallet.ts
 *
 * Needs a migrated database (e.g. the test database after `deno task test`). Options: LOCK_MS (10000),
 * CLIENTS (16), WALLETS (200), REQUEST_TIMEOUT_MS (the service's deadline, default 10000).
 */
import { createHarness, enabledWallet } from "../support/harness.ts";
import { createSql } from "../../src/db/client.ts";
import { config } from "../support/harness.ts";

const LOCK_MS = Number(Deno.env.get("LOCK_MS") ?? 10_000);
const CLIENTS = Number(Deno.env.get("CLIENTS") ?? 16);
const WALLETS = Number(Deno.env.get("WALLETS") ?? 200);
const TIMEOUT_MS = Number(Deno.env.get("REQUEST_TIMEOUT_MS") ?? 10_000);

const harness = createHarness({ poolSize: 20, requestTimeoutMs: TIMEOUT_MS });
const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, harness.app.fetch);
const base = `http://127.0.0.1:${server.addr.port}`;
// Another application's session: without the service's connection bounds (its idle-in-transaction timeout
// would end the session holding the row).
const locker = createSql(config.DATABASE_URL, {
  max: 1,
  timeouts: { statementMs: 0, lockMs: 0, idleInTransactionMs: 0 },
});

async function deposit(token: string): Promise<{ status: number; ms: number }> {
  const started = performance.now();
  const response = await fetch(`${base}/api/v1/wallet/deposits`, {
    method: "POST",
    headers: { authorization: `Token ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ amount: 1, reference_id: crypto.randomUUID() }),
  });
  await response.body?.cancel();
  return { status: response.status, ms: performance.now() - started };
}

/** CLIENTS loops depositing to random wallets of `tokens` for `ms`; returns every latency. */
async function load(
  tokens: string[],
  ms: number,
): Promise<{ latencies: number[]; statuses: Map<number, number> }> {
  const until = performance.now() + ms;
  const latencies: number[] = [];
  const statuses = new Map<number, number>();
  await Promise.all(Array.from({ length: CLIENTS }, async () => {
    while (performance.now() < until) {
      const { status, ms } = await deposit(tokens[Math.floor(Math.random() * tokens.length)]);
      latencies.push(ms);
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
    }
  }));
  return { latencies, statuses };
}

function summary(name: string, { latencies, statuses }: Awaited<ReturnType<typeof load>>) {
  const sorted = [...latencies].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))].toFixed(1);
  console.log(
    `${name}: ${sorted.length} deposits, p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${
      sorted.at(-1)!.toFixed(1)
    } ms, statuses ${JSON.stringify(Object.fromEntries(statuses))}`,
  );
}

try {
  const wallets = [];
  for (let i = 0; i < WALLETS + 1; i++) wallets.push(await enabledWallet(harness.app));
  const [x, ...others] = wallets;
  const tokens = others.map((w) => w.token);
  await load(tokens, 2_000); // warm-up
  summary("no lock", await load(tokens, LOCK_MS));

  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  let locked!: () => void;
  const isLocked = new Promise<void>((resolve) => locked = resolve);
  const holder = locker.begin(async (tx) => {
    await tx`SELECT id FROM wallets WHERE id = ${x.walletId} FOR UPDATE`;
    locked();
    await released;
  });
  await isLocked;
  const lockedAt = performance.now();
  // Deposits to X throughout the lock: each waits apart, then completes after release or gets 503.
  const xResults: Array<{ status: number; ms: number }> = [];
  const xLoop = (async () => {
    while (performance.now() - lockedAt < LOCK_MS) {
      xResults.push(await deposit(x.token));
    }
  })();
  const during = await load(tokens, LOCK_MS);
  release();
  await holder;
  await xLoop;
  summary(`X locked ${LOCK_MS} ms, other wallets`, during);
  console.log(
    `deposits to X meanwhile: ${
      xResults.map((r) => `${r.status} after ${r.ms.toFixed(0)} ms`).join(", ")
    }; write stats ${JSON.stringify(harness.wallets.writeStats())}`,
  );
} finally {
  await server.shutdown();
  await locker.end({ timeout: 5 });
  await harness.close();
}
