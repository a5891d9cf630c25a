/**
 * A PRIVATE redis-server for tests that stop Redis: a free port, no persistence, run in the foreground as our
 * own child and only ever stopped by that child's pid. The machine's Redis is never touched.
 */
import { waitUntil } from "./topic.ts";

export interface PrivateRedis {
  /** `redis://127.0.0.1:<port>/0` */
  url: string;
  /** The running server's pid, or null while stopped. */
  readonly pid: number | null;
  /** Start (again) on the same port and wait until it answers PING. */
  start(): Promise<void>;
  /** SIGTERM by pid and wait for the exit. */
  stop(): Promise<void>;
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

async function answersPing(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await conn.write(new TextEncoder().encode("PING\r\n"));
      const buffer = new Uint8Array(16);
      const n = await conn.read(buffer);
      return n !== null && new TextDecoder().decode(buffer.subarray(0, n)).startsWith("+PONG");
    } finally {
      conn.close();
    }
  } catch {
    return false;
  }
}

/** Start a private redis-server; call `stop()` in `after()`. */
export async function startPrivateRedis(): Promise<PrivateRedis> {
  const port = freePort();
  let child: Deno.ChildProcess | null = null;

  async function start() {
    if (child) return;
    const spawned = new Deno.Command("redis-server", {
      args: ["--bind", "127.0.0.1", "--port", String(port), "--save", "", "--appendonly", "no"],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    child = spawned;
    await waitUntil(() => answersPing(port), {
      timeoutMs: 15_000,
      message: `private redis-server on port ${port} answers PING`,
    });
  }

  async function stop() {
    const running = child;
    if (!running) return;
    child = null;
    running.kill("SIGTERM");
    await running.status;
  }

  await start();
  return {
    url: `redis://127.0.0.1:${port}/0`,
    get pid() {
      return child?.pid ?? null;
    },
    start,
    stop,
  };
}
