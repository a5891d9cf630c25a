/**
 * Small process and socket helpers shared by the local service starters (Postgres, Redis, Kafka).
 *
 * They only ever touch processes by pid, and only pids that we recorded ourselves in the state dir.
 */
import process from "node:process";

/** A progress logger: one line per call. */
export type Log = (line: string) => void;

/** Where local service state lives (outside git): `MINI_WALLET_HOME` or `~/.cache/mini-wallet`. */
export function stateDir(): string {
  const home = Deno.env.get("HOME") ?? "/tmp";
  const custom = Deno.env.get("MINI_WALLET_HOME");
  // Env files loaded without a shell keep "~" literally.
  if (custom) return custom.startsWith("~/") ? `${home}${custom.slice(1)}` : custom;
  return `${home}/.cache/mini-wallet`;
}

/** True when something accepts TCP connections on host:port within the timeout. */
export async function isPortOpen(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  const conn = await connectWithTimeout(host, port, timeoutMs);
  if (!conn) return false;
  conn.close();
  return true;
}

/** Open a TCP connection, or return undefined when refused or too slow. */
export async function connectWithTimeout(
  host: string,
  port: number,
  timeoutMs: number,
): Promise<Deno.TcpConn | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const connecting = Deno.connect({ hostname: host, port });
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), timeoutMs);
  });
  try {
    const conn = await Promise.race([connecting, timeout]);
    // A connect that wins after the timeout must not leak its socket.
    if (!conn) connecting.then((c) => c.close(), () => {});
    return conn;
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

/** Poll `check` until it returns true or the timeout passes; returns whether it succeeded. */
export async function waitFor(
  check: () => Promise<boolean> | boolean,
  { timeoutMs, intervalMs = 200 }: { timeoutMs: number; intervalMs?: number },
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(intervalMs);
  }
}

/** Resolve after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** True when a process with this pid exists (signal 0 checks without sending anything). */
export function isPidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM means it exists but belongs to someone else.
    return (error as { code?: string }).code === "EPERM";
  }
}

/** The command line of a live process (from /proc), or "" when unknown. */
export function processCommandLine(pid: number): string {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " ").trim();
  } catch {
    return "";
  }
}

/** Read a pid file; undefined when missing or unreadable. */
export function readPidFile(path: string): number | undefined {
  try {
    const pid = Number.parseInt(Deno.readTextFileSync(path).trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Remove a file, ignoring a missing one. */
export function removeFile(path: string): void {
  try {
    Deno.removeSync(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

/** True when a file or folder exists. */
export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** The last `lines` lines of a text file, or "" when unreadable. */
export function tailFile(path: string, lines = 30): string {
  try {
    return tailText(Deno.readTextFileSync(path), lines);
  } catch {
    return "";
  }
}

/** The last `lines` lines of a text. */
export function tailText(text: string, lines = 30): string {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

/** Run a command to completion and capture its combined output. */
export async function runCommand(
  cmd: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<{ code: number; output: string }> {
  try {
    const result = await new Deno.Command(cmd, { args, ...options, stdin: "null" }).output();
    const decoder = new TextDecoder();
    return { code: result.code, output: decoder.decode(result.stdout) + decoder.decode(result.stderr) };
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { code: 127, output: `${cmd}: command not found` };
    throw error;
  }
}

/** True when an executable of this name is on PATH. */
export function commandExists(name: string): boolean {
  const path = Deno.env.get("PATH") ?? "/usr/local/bin:/usr/bin:/bin";
  return path.split(":").some((dir) => {
    try {
      return Deno.statSync(`${dir}/${name}`).isFile;
    } catch {
      return false;
    }
  });
}

/** Install Debian packages with apt-get (only called when the program is missing). */
export async function aptInstall(packages: string[], log: Log): Promise<void> {
  log(`installing ${packages.join(" ")} with apt-get...`);
  const sudo = Deno.uid() === 0 ? [] : ["sudo", "-n"];
  const [cmd, ...args] = [...sudo, "apt-get", "install", "-y", ...packages];
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  let result = await runCommand(cmd, args, { env });
  if (result.code !== 0) {
    // A fresh machine may have no package lists yet.
    const [ucmd, ...uargs] = [...sudo, "apt-get", "update"];
    await runCommand(ucmd, uargs, { env });
    result = await runCommand(cmd, args, { env });
  }
  if (result.code !== 0) {
    throw new Error(`Cannot install ${packages.join(" ")} with apt-get:\n${tailText(result.output, 15)}`);
  }
}

/** Stop a process by pid: SIGTERM, wait, then SIGKILL after the timeout. Returns false if it was gone. */
export async function stopPid(
  pid: number,
  { timeoutMs = 15_000 }: { timeoutMs?: number } = {},
): Promise<boolean> {
  if (!isPidAlive(pid)) return false;
  try {
    Deno.kill(pid, "SIGTERM");
  } catch {
    return false;
  }
  if (await waitFor(() => !isPidAlive(pid), { timeoutMs, intervalMs: 100 })) return true;
  try {
    Deno.kill(pid, "SIGKILL");
  } catch {
    // Exited between the check and the kill.
  }
  await waitFor(() => !isPidAlive(pid), { timeoutMs: 5000, intervalMs: 100 });
  return true;
}

/** Seconds since `start` (a `performance.now()` value) with one decimal, e.g. "4.2s". */
export function elapsed(start: number): string {
  return `${((performance.now() - start) / 1000).toFixed(1)}s`;
}
