/**
 * PRIVATE PostgreSQL and Redis servers for tests and the chaos run that stop, hang or kill a dependency: each
 * has its own temporary folder and free port, and is only ever signalled by the pid we spawned. The
 * machine's own servers are never touched.
 */
import { isPidAlive, isPortOpen, waitFor } from "../../src/ops/local_process.ts";

/** A free TCP port on 127.0.0.1 (the kernel's pick, released at once). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** A server process we spawned: start it again, stop it, freeze or thaw it, by its pid only. */
export interface PrivateServer {
  readonly port: number;
  /** The running server's pid, or null while stopped. */
  readonly pid: number | null;
  /** Start (again) on the same data and port, and wait until it answers. */
  start(): Promise<void>;
  /** Stop cleanly, or crash it (`kill`); waits for the exit. */
  stop(options?: { kill?: boolean }): Promise<void>;
  /** SIGSTOP: the process keeps its sockets open and answers nothing (a hung server). */
  freeze(): void;
  /** SIGCONT after freeze(). */
  thaw(): void;
  /** Stop and remove its folder. */
  dispose(): Promise<void>;
}

/** How to run, stop and check one kind of server. */
export interface Spawnable {
  command: string;
  args: string[];
  /** Signal for a clean stop. */
  stopSignal: Deno.Signal;
  /** Signal for a crash: one that lets the server start again on the same data. */
  crashSignal: Deno.Signal;
  ready(): Promise<boolean>;
  /** How long a start may take (default 30 s). */
  readyTimeoutMs?: number;
  name: string;
  log: string;
}

/** Run `spec` as our child on `port`; `dispose()` also removes `root`. */
export function supervise(port: number, root: string, spec: Spawnable): PrivateServer {
  let child: Deno.ChildProcess | null = null;
  async function stop({ kill = false } = {}) {
    const running = child;
    if (!running) return;
    child = null;
    try {
      running.kill("SIGCONT"); // a frozen process cannot act on SIGTERM
      running.kill(kill ? spec.crashSignal : spec.stopSignal);
    } catch { /* already gone */ }
    const timer = setTimeout(() => {
      try {
        running.kill("SIGKILL");
      } catch { /* already gone */ }
    }, 30_000);
    await running.status;
    clearTimeout(timer);
  }
  return {
    port,
    get pid() {
      return child?.pid ?? null;
    },
    async start() {
      if (child) return;
      const spawned = new Deno.Command(spec.command, { args: spec.args, stdout: "null", stderr: "null" })
        .spawn();
      child = spawned;
      const ready = await waitFor(async () => !isPidAlive(spawned.pid) || await spec.ready(), {
        timeoutMs: spec.readyTimeoutMs ?? 30_000,
        intervalMs: 100,
      });
      if (!ready || !isPidAlive(spawned.pid)) {
        await stop({ kill: true });
        throw new Error(`private ${spec.name} on port ${port} did not start; log: ${spec.log}`);
      }
    },
    stop,
    freeze() {
      child?.kill("SIGSTOP");
    },
    thaw() {
      child?.kill("SIGCONT");
    },
    async dispose() {
      await stop();
      await Deno.remove(root, { recursive: true }).catch(() => {});
    },
  };
}

/** The newest PostgreSQL binaries of the Debian packages. */
function postgresBin(): string {
  const versions = [...Deno.readDirSync("/usr/lib/postgresql")].map((e) => e.name)
    .sort((a, b) => Number(a) - Number(b));
  if (versions.length === 0) throw new Error("No PostgreSQL binaries under /usr/lib/postgresql");
  return `/usr/lib/postgresql/${versions.at(-1)}/bin`;
}

/**
 * Root may not run PostgreSQL: run its binaries as the `postgres` user. setpriv executes the program in its
 * own place, so the pid we hold is the postmaster's.
 */
function asPostgres(program: string, args: string[]): { command: string; args: string[] } {
  if (Deno.uid() !== 0) return { command: program, args };
  return {
    command: "setpriv",
    args: ["--reuid=postgres", "--regid=postgres", "--init-groups", "--", program, ...args],
  };
}

/** A private PostgreSQL cluster (trust auth, user postgres); `url(db)` names a database on it. */
export interface PrivatePostgres extends PrivateServer {
  url(database: string): string;
}

/** initdb in a temporary folder, then start a postmaster on a free port. */
export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const root = await Deno.makeTempDir({ prefix: "mini-wallet-pg-" });
  if (Deno.uid() === 0) await Deno.chown(root, postgresUid(), null);
  const bin = postgresBin();
  const data = `${root}/data`;
  const init = asPostgres(`${bin}/initdb`, ["-D", data, "-A", "trust", "-U", "postgres", "--no-sync"]);
  const out = await new Deno.Command(init.command, { args: init.args, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) throw new Error(`initdb failed: ${new TextDecoder().decode(out.stderr)}`);
  const port = freePort();
  const run = asPostgres(`${bin}/postgres`, [
    "-D",
    data,
    "-p",
    String(port),
    "-k",
    root,
    "-c",
    "listen_addresses=127.0.0.1",
    "-c",
    "max_connections=200",
    "-c",
    "fsync=on",
    "-c",
    `log_directory=${root}`,
    "-c",
    "logging_collector=on",
  ]);
  const server = supervise(port, root, {
    ...run,
    // SIGINT is PostgreSQL's "fast" shutdown: sessions are ended, nothing waits for clients.
    stopSignal: "SIGINT",
    // SIGQUIT is "immediate": no checkpoint, crash recovery at the next start. A SIGKILL would leave its
    // backends running, holding the shared memory that a new postmaster needs.
    crashSignal: "SIGQUIT",
    // The port opens before recovery ends ("the database system is starting up"): ask pg_isready.
    ready: async () =>
      (await new Deno.Command(`${bin}/pg_isready`, {
        args: ["-q", "-h", "127.0.0.1", "-p", String(port), "-t", "1"],
      }).output()).success,
    name: "PostgreSQL",
    log: root,
  });
  await server.start();
  return Object.assign(server, {
    url: (database: string) => `postgres://postgres@127.0.0.1:${port}/${database}`,
  });
}

function postgresUid(): number {
  const line = Deno.readTextFileSync("/etc/passwd").split("\n").find((l) => l.startsWith("postgres:"));
  if (!line) throw new Error("No postgres user on this machine");
  return Number(line.split(":")[2]);
}

/** A private redis-server without persistence; `url` names its database 0. */
export interface PrivateRedis extends PrivateServer {
  readonly url: string;
}

/** Start a redis-server on a free port (in the foreground, so the pid is the server's). */
export async function startPrivateRedis(): Promise<PrivateRedis> {
  const root = await Deno.makeTempDir({ prefix: "mini-wallet-redis-" });
  const port = freePort();
  const server = supervise(port, root, {
    command: "redis-server",
    args: [
      "--bind",
      "127.0.0.1",
      "--port",
      String(port),
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      root,
      "--logfile",
      `${root}/redis.log`,
    ],
    stopSignal: "SIGTERM",
    crashSignal: "SIGKILL",
    ready: () => isPortOpen("127.0.0.1", port, 500),
    name: "Redis",
    log: `${root}/redis.log`,
  });
  await server.start();
  return Object.assign(server, { url: `redis://127.0.0.1:${port}/0` });
}
