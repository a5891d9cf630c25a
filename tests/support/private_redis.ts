/**
 * A PRIVATE redis-server for tests that stop, hang or pause Redis: a free port, no persistence, run in the
 * foreground as our child, and only ever signalled by the pid we started. The machine's Redis is never
 * touched.
 */
import { waitUntil } from "./topic.ts";
import { Redis } from "ioredis";

export interface PrivateRedis {
  url: string;
  port: number;
  /** The running server's pid, or null while stopped. */
  readonly pid: number | null;
  /** Start (again) on the same port and wait until it answers PING. */
  start(): Promise<void>;
  /** SIGTERM by pid and wait for the exit. */
  stop(): Promise<void>;
  /** SIGSTOP by pid: the server keeps its connections but answers nothing (a hung Redis). */
  hang(): void;
  /** SIGCONT by pid. */
  resume(): void;
  /** Resume if hung, stop if running. */
  dispose(): Promise<void>;
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

async function answersPing(url: string): Promise<boolean> {
  const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  probe.on("error", () => {});
  try {
    await probe.connect();
    return (await probe.ping()) === "PONG";
  } catch {
    return false;
  } finally {
    probe.disconnect();
  }
}

/** Start a private redis-server; call `dispose()` in `after()`. */
export async function startPrivateRedis(): Promise<PrivateRedis> {
  const port = freePort();
  const url = `redis://127.0.0.1:${port}/0`;
  let child: Deno.ChildProcess | null = null;
  let hung = false;
  const server: PrivateRedis = {
    url,
    port,
    get pid() {
      return child?.pid ?? null;
    },
    async start() {
      if (child) return;
      child = new Deno.Command("redis-server", {
        args: ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout: "null",
        stderr: "null",
      }).spawn();
      await waitUntil(() => answersPing(url), { message: `private redis-server on port ${port} answers` });
    },
    async stop() {
      if (!child) return;
      const running = child;
      child = null;
      if (hung) server.resume();
      running.kill("SIGTERM");
      await running.status;
    },
    hang() {
      if (!child) throw new Error("The private redis-server is not running");
      Deno.kill(child.pid, "SIGSTOP");
      hung = true;
    },
    resume() {
      if (!child || !hung) return;
      Deno.kill(child.pid, "SIGCONT");
      hung = false;
    },
    async dispose() {
      await server.stop();
    },
  };
  await server.start();
  return server;
}
