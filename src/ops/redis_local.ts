/**
 * Local Redis: use the server at REDIS_URL, or start a throw-away `redis-server` (no persistence) whose pid
 * we record, so `services down` stops only the one we started.
 */
import {
  aptInstall,
  commandExists,
  connectWithTimeout,
  elapsed,
  isPidAlive,
  isPortOpen,
  type Log,
  processCommandLine,
  readPidFile,
  removeFile,
  runCommand,
  stateDir,
  waitFor,
} from "./local_process.ts";

/** The pid file of a redis-server we started. */
export function redisPidFile(home = stateDir()): string {
  return `${home}/redis.pid`;
}

/** The pid of the redis-server we started, if still alive (a stale pid file is removed). */
export function runningRedisPid(home = stateDir()): number | undefined {
  const pidFile = redisPidFile(home);
  const pid = readPidFile(pidFile);
  if (pid === undefined) return undefined;
  if (!isPidAlive(pid) || !processCommandLine(pid).includes("redis-server")) {
    removeFile(pidFile);
    return undefined;
  }
  return pid;
}

/** Make sure Redis at `redisUrl` answers PING; start our own server when nothing listens. */
export async function ensureRedis(redisUrl: string, log: Log): Promise<{ started: boolean }> {
  const start = performance.now();
  const url = new URL(redisUrl);
  const host = url.hostname || "127.0.0.1";
  const port = Number(url.port || 6379);
  if (await isPortOpen(host, port)) {
    const reply = await ping(host, port);
    // NOAUTH still proves it is Redis; the app authenticates with the URL's password.
    if (!reply.startsWith("+PONG") && !reply.startsWith("-NOAUTH")) {
      throw new Error(`Port ${port} on ${host} is taken by something that is not Redis`);
    }
    log(`redis: using ${host}:${port} (${elapsed(start)})`);
    return { started: false };
  }
  if (!["127.0.0.1", "localhost", "::1"].includes(host)) {
    throw new Error(`No Redis answers at ${host}:${port}, and ${host} is not this machine`);
  }
  if (!commandExists("redis-server")) await aptInstall(["redis-server"], log);
  log(`redis: starting redis-server on port ${port}...`);
  Deno.mkdirSync(stateDir(), { recursive: true });
  const pidFile = redisPidFile();
  removeFile(pidFile);
  const result = await runCommand("redis-server", [
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "--port",
    String(port),
    "--save",
    "",
    "--appendonly",
    "no",
    "--pidfile",
    pidFile,
    "--logfile",
    `${stateDir()}/redis.log`,
  ]);
  if (result.code !== 0) throw new Error(`Cannot start redis-server:\n${result.output.trim()}`);
  const ready = await waitFor(async () => (await ping("127.0.0.1", port)).startsWith("+PONG"), {
    timeoutMs: 10_000,
  });
  if (!ready) {
    throw new Error(`redis-server did not answer PING on port ${port} (log: ${stateDir()}/redis.log)`);
  }
  log(`redis: ready in ${elapsed(start)}`);
  return { started: true };
}

/** Send an inline PING and return the first reply line ("" when nothing came back). */
async function ping(host: string, port: number): Promise<string> {
  const conn = await connectWithTimeout(host, port, 1000);
  if (!conn) return "";
  const timer = setTimeout(() => conn.close(), 2000);
  try {
    await conn.write(new TextEncoder().encode("PING\r\n"));
    const buffer = new Uint8Array(64);
    const n = await conn.read(buffer);
    return n ? new TextDecoder().decode(buffer.subarray(0, n)) : "";
  } catch {
    return "";
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Already closed by the timer.
    }
  }
}
