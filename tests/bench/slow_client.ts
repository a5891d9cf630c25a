/**
 * What a slow or idle client can do to an HTTP server: the measurements behind docs/reverse_proxy.md.
 *
 *   deno run -A tests/bench/slow_client.ts [--url http://127.0.0.1:8089] [--minutes 10] [--every 5]
 *
 * Three probes, each on its own connection (plain HTTP, or TLS for an https:// URL):
 * - trickle: sends `GET /health` and then one byte of a header every `--every` seconds, never finishing the
 *   request head; reports when the server closed the connection, or that it was still open at the end.
 * - idle: sends one complete request, reads the answer, then sends nothing; reports when the server closed.
 * - expect: sends a POST head with `Expect: 100-continue` and no token, and reports what came back first
 *   (a server that runs its checks first answers 401 without inviting the 1 MB body).
 * Nothing here asserts: it prints numbers. It only ever connects to the URL given (use a local one).
 */
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    url: { type: "string", default: "http://127.0.0.1:8089" },
    minutes: { type: "string", default: "10" },
    every: { type: "string", default: "5" },
    probes: { type: "string", default: "trickle,idle,expect" },
    insecure: { type: "boolean", default: false }, // trust a self-signed certificate (tls internal)
  },
});
const url = new URL(values.url!);
const limitMs = Number(values.minutes) * 60_000;
const everyMs = Number(values.every) * 1000;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

async function connect(): Promise<Deno.Conn> {
  const hostname = url.hostname.replace(/^\[|\]$/g, "");
  if (url.protocol === "https:") {
    const port = Number(url.port || 443);
    const caCerts = values.insecure ? await localCaCerts() : undefined;
    return await Deno.connectTls({ hostname, port, caCerts });
  }
  return await Deno.connect({ hostname, port: Number(url.port || 80) });
}

/** With --insecure: the CA certificate in $CADDY_ROOT_CA (Caddy's `tls internal` root). */
async function localCaCerts(): Promise<string[] | undefined> {
  const path = Deno.env.get("CADDY_ROOT_CA");
  return path ? [await Deno.readTextFile(path)] : undefined;
}

/** Resolves when the server closes the connection (or resets it): how, and when (ms since the epoch). */
function watchClose(
  conn: Deno.Conn,
): { closed: Promise<{ how: string; at: number }>; received: () => string } {
  let text = "";
  const closed = (async () => {
    const buffer = new Uint8Array(16 * 1024);
    try {
      while (true) {
        const n = await conn.read(buffer);
        if (n === null) return { how: "closed", at: Date.now() };
        text += decoder.decode(buffer.subarray(0, n));
      }
    } catch (error) {
      return { how: `reset (${(error as Error).name})`, at: Date.now() };
    }
  })();
  return { closed, received: () => text };
}

const seconds = (ms: number) => (ms / 1000).toFixed(1);
const firstLine = (text: string) => text.split("\r\n")[0] || "(nothing)";

async function trickle(): Promise<string> {
  const conn = await connect();
  const started = Date.now();
  const watch = watchClose(conn);
  let sent = 0;
  let outcome: { how: string; at: number } | null = null;
  watch.closed.then((closed) => outcome ??= closed);
  try {
    await conn.write(encoder.encode(`GET /health HTTP/1.1\r\nHost: ${url.host}\r\nX-Slow: `));
    while (outcome === null && Date.now() - started < limitMs) {
      await new Promise((resolve) => setTimeout(resolve, everyMs));
      if (outcome !== null) break;
      await conn.write(encoder.encode("a"));
      sent++;
    }
  } catch (error) {
    outcome ??= { how: `write failed (${(error as Error).name})`, at: Date.now() };
  }
  const ended = outcome as { how: string; at: number } | null;
  try {
    conn.close();
  } catch { /* already closed */ }
  return ended === null
    ? `trickle: still open after ${seconds(Date.now() - started)} s (${sent} header bytes sent, one every ${
      seconds(everyMs)
    } s); the probe gave up`
    : `trickle: ${ended.how} by the server after ${
      seconds(ended.at - started)
    } s (${sent} header bytes sent); it answered: ${firstLine(watch.received())}`;
}

async function idle(): Promise<string> {
  const conn = await connect();
  const watch = watchClose(conn);
  await conn.write(encoder.encode(`GET /health HTTP/1.1\r\nHost: ${url.host}\r\n\r\n`));
  while (!watch.received().includes("\r\n\r\n")) await new Promise((resolve) => setTimeout(resolve, 10));
  const answered = Date.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    watch.closed,
    new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), limitMs)),
  ]);
  clearTimeout(timer);
  try {
    conn.close();
  } catch { /* already closed */ }
  return outcome === null
    ? `idle: still open ${seconds(Date.now() - answered)} s after the answer (${
      firstLine(watch.received())
    }); the probe gave up`
    : `idle: ${outcome.how} by the server ${seconds(outcome.at - answered)} s after the answer`;
}

async function expect(): Promise<string> {
  const conn = await connect();
  const watch = watchClose(conn);
  const started = Date.now();
  await conn.write(encoder.encode(
    `POST /api/v1/wallet/deposits HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/json\r\n` +
      `Content-Length: 1000000\r\nExpect: 100-continue\r\n\r\n`,
  ));
  while (!watch.received().includes("\r\n\r\n") && Date.now() - started < 10_000) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  try {
    conn.close();
  } catch { /* already closed */ }
  return `expect: first answer after ${seconds(Date.now() - started)} s: ${firstLine(watch.received())}`;
}

const probes: Record<string, () => Promise<string>> = { trickle, idle, expect };
console.log(`slow_client: ${url.origin}, giving up after ${values.minutes} min`);
const results = await Promise.all(
  values.probes!.split(",").map((name) => probes[name]().then((line) => (console.log(line), line))),
);
if (results.length === 0) console.log("no probe ran");
