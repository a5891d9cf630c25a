/**
 * The whole history of a 1,000,000-transaction wallet, served by a real server process (the command of
 * `deno task start`, V8 flags included, with ROLES=api) and read to the end by a client over HTTP: every row
 * arrives, in order, and the server's peak RSS (VmHWM) stays under 250 MB. The throughput is printed, not
 * asserted (a timing, on a shared machine). Then a client that goes away mid-stream: the server's cursor
 * ends, although its stall bound is set out of reach, so only the cancel can have ended it.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHarness, enabledWallet, type Harness } from "./support/harness.ts";
import { seedHistory } from "./support/history.ts";
import { freePort } from "./support/private_servers.ts";

const ROWS = 1_000_000;
const RSS_LIMIT_KB = 250 * 1024;

let h: Harness;
let server: { child: Deno.ChildProcess; port: number; log: string[] } | null = null;
let wallet: { token: string; walletId: string };

/** `deno task start`'s command (deno.json), so the server runs with the deployment's V8 flags. */
async function startCommand(): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  const words = (config.tasks.start as string).split(/\s+/);
  assert.equal(words[0], "deno");
  assert.ok(words.some((w) => w.startsWith("--v8-flags=")), "start sets V8 flags");
  return words.slice(1);
}

/** Start the API process and resolve once it listens. Its log lines are kept (and its stderr drained). */
async function startServer(): Promise<{ child: Deno.ChildProcess; port: number; log: string[] }> {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: await startCommand(),
    cwd: new URL("..", import.meta.url),
    env: {
      ROLES: "api",
      HOST: "127.0.0.1",
      PORT: String(port),
      LOG_LEVEL: "info",
      // Out of reach: a stream ended in this test was ended by its cancel, not by the stall bound.
      HISTORY_STREAM_STALL_MS: "600000",
    },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const log: string[] = [];
  const listening = Promise.withResolvers<void>();
  (async () => {
    let buffered = "";
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) {
      buffered += text;
      const lines = buffered.split("\n");
      buffered = lines.pop()!;
      for (const line of lines) {
        if (log.length < 1000) log.push(line);
        if (line.includes('"message":"listening"')) listening.resolve();
      }
    }
    listening.reject(new Error(`the server exited before listening:\n${log.join("\n")}`));
  })();
  await listening.promise;
  return { child, port, log };
}

/** The server process's peak resident set size so far, in kB (Linux). */
async function peakRssKb(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const match = /^VmHWM:\s+(\d+) kB$/m.exec(status);
  assert.ok(match, "VmHWM in /proc/<pid>/status");
  return Number(match[1]);
}

/** CPU time (user + system) the process has used, in seconds (Linux; clock ticks of 100 Hz). */
async function cpuSeconds(pid: number): Promise<number> {
  // The fields after the command name, which is in parentheses and may contain spaces.
  const fields = (await Deno.readTextFile(`/proc/${pid}/stat`)).split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Server backends running the history cursor now (a suspended cursor stays `active` between batches). */
async function runningCursors(): Promise<number> {
  const [row] = await h.sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active'
      AND query LIKE '%FROM wallet_transactions WHERE wallet_id = $1 ORDER BY seq%'`;
  return row.n;
}

async function eventually(condition: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`never happened: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

before(async () => {
  h = createHarness();
  wallet = await enabledWallet(h.app);
  const seeding = performance.now();
  const [started] = await Promise.all([startServer(), seedHistory(h.sql, wallet.walletId, ROWS)]);
  server = started;
  console.log(`seeded ${ROWS} transactions in ${((performance.now() - seeding) / 1000).toFixed(1)} s`);
});

after(async () => {
  if (server) {
    server.child.kill("SIGTERM");
    await server.child.status;
  }
  await h.close();
});

describe("the whole history of a 1,000,000-transaction wallet", () => {
  it("is streamed to the end, in order, while the server stays under 250 MB RSS", async () => {
    const { port, child } = server!;
    const cpuBefore = await cpuSeconds(child.pid);
    const startedAt = performance.now();
    const response = await fetch(`http://127.0.0.1:${port}/api/v1/wallet/transactions`, {
      headers: { authorization: `Token ${wallet.token}` },
    });
    assert.equal(response.status, 200);
    // Count the rows as they arrive, checking each is the next one: the body is never held whole.
    const decoder = new TextDecoder();
    const reference = /"reference_id":"seed-(\d{9})"/g;
    let rows = 0;
    let bytes = 0;
    let carry = "";
    let start = "";
    let end = "";
    for await (const chunk of response.body!) {
      bytes += chunk.length;
      const piece = decoder.decode(chunk, { stream: true });
      if (start.length < 64) start = (start + piece).slice(0, 64);
      end = (end + piece).slice(-16);
      const text = carry + piece;
      let consumed = 0;
      for (const match of text.matchAll(reference)) {
        rows++;
        if (Number(match[1]) !== rows) assert.fail(`row ${rows} has reference seed-${match[1]}`);
        consumed = match.index + match[0].length;
      }
      // A match cut by the chunk's end lies in its last 64 characters; counted ones are never kept.
      carry = text.slice(Math.max(consumed, text.length - 64));
    }
    const seconds = (performance.now() - startedAt) / 1000;
    const cpu = (await cpuSeconds(child.pid)) - cpuBefore;
    const peakKb = await peakRssKb(child.pid);
    console.log(
      `read ${rows} rows (${(bytes / 1e6).toFixed(0)} MB) in ${seconds.toFixed(1)} s: ` +
        `${Math.round(rows / seconds)} rows/s; server CPU ${cpu.toFixed(1)} s; ` +
        `server peak RSS ${(peakKb / 1024).toFixed(0)} MB`,
    );
    assert.equal(rows, ROWS);
    assert.ok(start.startsWith('{"status":"success","data":{"transactions":[{"id":"'), start);
    assert.ok(end.endsWith('"}]}}'), end);
    assert.ok(peakKb < RSS_LIMIT_KB, `server peak RSS ${peakKb} kB, limit ${RSS_LIMIT_KB} kB`);
  });

  it("ends the server's cursor when the client goes away mid-stream", async () => {
    const { port } = server!;
    const abort = new AbortController();
    const response = await fetch(`http://127.0.0.1:${port}/api/v1/wallet/transactions`, {
      headers: { authorization: `Token ${wallet.token}` },
      signal: abort.signal,
    });
    const body = response.body!.getReader();
    for (let received = 0; received < 1_000_000;) received += (await body.read()).value?.length ?? 0;
    // The client takes no more: the server fills the socket and waits, its cursor suspended (still active).
    await eventually(async () => (await runningCursors()) === 1, "the server's cursor is open");
    abort.abort();
    await body.cancel().catch(() => {});
    await eventually(async () => (await runningCursors()) === 0, "the server's cursor ends after the cancel");
    const log = server!.log.join("\n");
    assert.match(log, /"message":"whole history: the client went away"/);
  });
});
