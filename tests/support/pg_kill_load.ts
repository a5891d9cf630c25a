/**
 * PostgreSQL backends terminated under load, in a process of its own: `deno run -A tests/support/pg_kill_load.ts`.
 *
 * A driver error thrown where no caller can catch it (postgres.js 3.4.9's `nextWrite` on a closed socket)
 * ends the process, so tests/postgres_driver_test.ts watches this one from outside. It runs the real
 * service's write path (deposits through the app) and the pool's other ways in (queries, reserved
 * connections, pipelinedTransaction, sql.begin) on a pool of 4 connections, while another connection
 * terminates that pool's backends again and again. Prints one line `summary <json>` and exits 0 when every
 * operation settled and the pool works afterwards; exits 3 when an operation was still pending long after the
 * storm (a wedged connection).
 */
import { call, config, createHarness, enabledWallet } from "./harness.ts";
import { createSql, pipelinedTransaction, type Sql } from "../../src/db/client.ts";

const KILL_ROUNDS = Number(Deno.env.get("PG_KILL_ROUNDS") ?? 25);
const KILL_EVERY_MS = 100;
const POOL_SIZE = 4;
/** Not a timing assertion: a bound on "pending forever", far above anything a live connection takes. */
const WEDGED_AFTER_MS = 60_000;

const applicationName = `mw-kill-${Deno.pid}`;
const harness = createHarness({ poolSize: POOL_SIZE, applicationName });
const admin = createSql(config.DATABASE_URL, { max: 1, applicationName: `${applicationName}-admin` });

const summary = {
  reservedAfterKill: "",
  terminated: 0,
  ok: 0,
  failed: 0,
  errorCodes: {} as Record<string, number>,
  depositStatuses: {} as Record<string, number>,
  after: { distinctConnections: 0, queries: 0, deposits: 0 },
  booksBalanced: false,
};

function codeOf(error: unknown): string {
  if (!(error instanceof Error)) return `not-an-error:${typeof error}`;
  return String((error as { code?: unknown }).code ?? error.name);
}

function count(map: Record<string, number>, key: string) {
  map[key] = (map[key] ?? 0) + 1;
}

/** Run `phase`; if it has not settled after WEDGED_AFTER_MS, report the wedge and exit 3. */
async function phase<T>(name: string, body: () => Promise<T>): Promise<T> {
  const watchdog = setTimeout(() => {
    console.log(`summary ${JSON.stringify({ ...summary, wedged: name })}`);
    Deno.exit(3);
  }, WEDGED_AFTER_MS);
  try {
    return await body();
  } finally {
    clearTimeout(watchdog);
  }
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Our pool's backends in this database, terminated; how many. */
async function terminateBackends(sql: Sql): Promise<number> {
  const [{ n }] = await sql<{ n: number }[]>`
    SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
    WHERE application_name = ${applicationName} AND datname = current_database()`;
  return n;
}

// Wallets for the service's write path, made before any backend is killed.
const wallets = await phase("setup", () => Promise.all([1, 2, 3, 4].map(() => enabledWallet(harness.app))));

// 1. A reserved connection whose backend is terminated: its next query must reject, catchably. On 3.4.9 it
// was written from a timer to the closed socket (null) and the TypeError ended the process.
await phase("reserved", async () => {
  const tx = await harness.sql.reserve();
  try {
    const [{ pid }] = await tx<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
    await admin`SELECT pg_terminate_backend(${pid})`;
    while ((await admin`SELECT 1 FROM pg_stat_activity WHERE pid = ${pid}`).length > 0) await pause(20);
    await pause(200); // let the close reach this process before the next query
    summary.reservedAfterKill = await tx`SELECT 1`.then(() => "answered", codeOf);
  } finally {
    tx.release();
  }
});

// 2. The storm: every way into the pool, concurrently, while its backends are terminated every 100 ms.
let storming = true;
async function loop(op: () => Promise<unknown>) {
  while (storming) {
    try {
      await op();
      summary.ok++;
    } catch (error) {
      summary.failed++;
      count(summary.errorCodes, codeOf(error));
    }
  }
}
let depositNo = 0;
const operations = [
  () => harness.sql`SELECT pg_sleep(0.001), 1 AS one`,
  () =>
    pipelinedTransaction(
      harness.sql,
      (tx) => tx`SELECT pg_backend_pid() AS pid`,
      (_, tx) => ({ result: null, statements: [tx`SELECT pg_sleep(0.001)`] }),
    ),
  () => harness.sql.begin((tx) => [tx`SELECT 1`, tx`SELECT pg_sleep(0.001)`]),
  async () => {
    const reserved = await harness.sql.reserve();
    try {
      await reserved`SELECT pg_sleep(0.001)`;
    } finally {
      reserved.release();
    }
  },
  ...wallets.map((wallet) => async () => {
    const response = await call(harness.app, "POST", "/api/v1/wallet/deposits", {
      token: wallet.token,
      body: { amount: 1, reference_id: `kill-${Deno.pid}-${depositNo++}` },
    });
    count(summary.depositStatuses, String(response.status));
    if (response.status !== 201) throw Object.assign(new Error("deposit not made"), { code: "HTTP_ERROR" });
  }),
];
await phase("storm", async () => {
  const loops = [...operations, ...operations].map(loop);
  for (let round = 0; round < KILL_ROUNDS; round++) {
    await pause(KILL_EVERY_MS);
    summary.terminated += await terminateBackends(admin);
  }
  storming = false;
  await Promise.all(loops);
});

// 3. After the storm: every connection of the pool answers, and so does the service.
await pause(300); // the last terminations reach the pool
await phase("after", async () => {
  const reserved = await Promise.all(Array.from({ length: POOL_SIZE }, () => harness.sql.reserve()));
  const pids = await Promise.all(reserved.map(async (r) => (await r`SELECT pg_backend_pid() AS pid`)[0].pid));
  reserved.forEach((r) => r.release());
  summary.after.distinctConnections = new Set(pids).size;
  const queries = await Promise.all(Array.from({ length: 20 }, () => harness.sql`SELECT 1 AS one`));
  summary.after.queries = queries.length;
  for (const wallet of wallets) {
    const response = await call(harness.app, "POST", "/api/v1/wallet/deposits", {
      token: wallet.token,
      body: { amount: 1, reference_id: `after-${Deno.pid}-${wallet.walletId}` },
    });
    if (response.status === 201) summary.after.deposits++;
  }
  const books = await admin<{ balanced: boolean }[]>`
    SELECT bool_and(w.balance = COALESCE((
      SELECT sum(CASE t.type WHEN 'deposit' THEN t.amount ELSE -t.amount END) FROM wallet_transactions t
      WHERE t.wallet_id = w.id AND t.status = 'success'), 0)) AS balanced
    FROM wallets w WHERE w.id = ANY(${wallets.map((w) => w.walletId)}::uuid[])`;
  summary.booksBalanced = books[0].balanced;
});

console.log(`summary ${JSON.stringify(summary)}`);
await harness.close();
await admin.end({ timeout: 5 });
Deno.exit(0);
