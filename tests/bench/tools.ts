/**
 * The instruments of the benchmark: wrk and pgbench runs parsed into one result shape, processes started and
 * stopped by pid, RSS sampling from /proc, and a CPU split per command from `top`.
 */

/** One measured load run, whatever produced it. Latencies in milliseconds. */
export interface LoadResult extends Stolen {
  tool: string;
  /** The command line that produced it (for the report). */
  command: string;
  seconds: number;
  ok: number;
  errors: number;
  /** Throughput in successful operations per second. */
  rate: number;
  p50: number | null;
  p99: number | null;
  max: number | null;
  mean: number | null;
  notes?: string;
}

export function round(value: number | null, digits = 2): number | null {
  if (value === null || !Number.isFinite(value)) return null;
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/** The p-th percentile (0..100) of sorted values, nearest rank. */
export function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Run a command to completion; returns exit code and both outputs. */
export async function run(
  cmd: string,
  args: string[],
  options: { env?: Record<string, string>; cwd?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(cmd, { args, stdin: "null", ...options }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

/** A child process we started: its pid, the tail of its output, and a stop by pid. */
export class Child {
  readonly #process: Deno.ChildProcess;
  readonly #tail: string[] = [];
  readonly status: Promise<Deno.CommandStatus>;
  exited = false;

  constructor(readonly name: string, cmd: string, args: string[], options: Deno.CommandOptions = {}) {
    this.#process = new Deno.Command(cmd, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      ...options,
    })
      .spawn();
    this.#collect(this.#process.stdout);
    this.#collect(this.#process.stderr);
    this.status = this.#process.status.then((s) => {
      this.exited = true;
      return s;
    });
  }

  get pid(): number {
    return this.#process.pid;
  }

  async #collect(stream: ReadableStream<Uint8Array>) {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      for (const line of decoder.decode(chunk, { stream: true }).split("\n")) {
        if (!line) continue;
        this.#tail.push(line);
        if (this.#tail.length > 40) this.#tail.shift();
      }
    }
  }

  tail(lines = 15): string {
    return this.#tail.slice(-lines).join("\n");
  }

  /** Send a signal now (SIGKILL: a crash); a process already gone is ignored. */
  kill(signal: Deno.Signal): void {
    try {
      this.#process.kill(signal);
    } catch { /* gone */ }
  }

  /** SIGTERM, then SIGKILL after `timeoutMs`. */
  async stop(timeoutMs = 15_000): Promise<void> {
    if (this.exited) return;
    try {
      this.#process.kill("SIGTERM");
    } catch {
      return;
    }
    const timer = setTimeout(() => {
      try {
        this.#process.kill("SIGKILL");
      } catch { /* gone */ }
    }, timeoutMs);
    await this.status;
    clearTimeout(timer);
  }
}

/** Wait until `url` answers 200, or throw with the child's output. */
export async function waitForHttp(url: string, child: Child, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exited) throw new Error(`${child.name} exited during start:\n${child.tail()}`);
    try {
      const res = await fetch(url);
      await res.body?.cancel();
      if (res.ok) return;
    } catch { /* not yet */ }
    await sleep(100);
  }
  throw new Error(`${child.name} did not answer ${url} within ${timeoutMs / 1000}s:\n${child.tail()}`);
}

/** Run wrk with a Lua script that prints a BENCH_JSON line from done(). */
export async function wrk(
  label: string,
  opts: {
    url: string;
    script: string;
    threads: number;
    connections: number;
    seconds: number;
    env: Record<string, string>;
  },
): Promise<LoadResult> {
  const args = [
    `-t${opts.threads}`,
    `-c${opts.connections}`,
    `-d${opts.seconds}s`,
    "--timeout",
    "10s",
    "-s",
    opts.script,
    opts.url,
  ];
  const out = await run("wrk", args, { env: opts.env });
  const line = out.stdout.split("\n").find((l) => l.startsWith("BENCH_JSON "));
  if (out.code !== 0 || !line) {
    throw new Error(`wrk failed (${out.code}):\n${out.stdout}\n${out.stderr}`);
  }
  const r = JSON.parse(line.slice("BENCH_JSON ".length));
  const seconds = r.duration_us / 1e6;
  const e = r.errors;
  const errors = e.connect + e.read + e.write + e.status + e.timeout;
  const ok = Math.max(0, r.requests - e.status);
  return {
    label,
    tool: "wrk",
    command: `wrk ${args.map((a) => a.replace(/^.*\/tests\/bench\//, "tests/bench/")).join(" ")}`,
    seconds,
    ok,
    errors,
    rate: ok / seconds,
    p50: r.latency_us.p50 / 1000,
    p99: r.latency_us.p99 / 1000,
    max: r.latency_us.max / 1000,
    mean: r.latency_us.mean / 1000,
    notes: errors > 0 ? `errors: ${JSON.stringify(e)}` : undefined,
  };
}

/**
 * One result from the slices of an interleaved run (the same load in turns with its baseline's): counts and
 * time add up; p50 is the slices' mean and p99 and max their largest, as latencies of separate runs cannot be
 * merged exactly (the same rule for wrk and pgbench).
 */
export function combineSlices(slices: LoadResult[]): LoadResult {
  if (slices.length === 1) return slices[0];
  const seconds = slices.reduce((s, r) => s + r.seconds, 0);
  const ok = slices.reduce((s, r) => s + r.ok, 0);
  const values = (key: "p50" | "p99" | "max" | "mean") =>
    slices.map((r) => r[key]).filter((v): v is number => v !== null);
  const p50s = values("p50");
  const notes = slices.flatMap((r) => r.notes ? [r.notes] : []);
  return {
    label: slices[0].label.replace(/ \[\d+\/\d+[^\]]*\]$/, ""),
    tool: slices[0].tool,
    command: `${slices[0].command} (${slices.length} slices of ${
      Math.round(slices[0].seconds)
    } s, interleaved)`,
    seconds,
    ok,
    errors: slices.reduce((s, r) => s + r.errors, 0),
    rate: ok / seconds,
    p50: p50s.length ? p50s.reduce((a, b) => a + b, 0) / p50s.length : null,
    p99: values("p99").length ? Math.max(...values("p99")) : null,
    max: values("max").length ? Math.max(...values("max")) : null,
    mean: slices.every((r) => r.mean !== null) ? slices.reduce((s, r) => s + r.mean! * r.ok, 0) / ok : null,
    notes: notes.length ? notes.join("; ") : undefined,
  };
}

/** What `takeTurns` measured: each load's counted slices, and the tries it did not count. */
export interface Turns<T> {
  slices: T[][];
  /** Slices of the tries not counted: a try of the same round lost less of the machine to the hypervisor. */
  discarded: T[];
}

/** A measured run that knows how much of the machine the hypervisor took during it. */
export interface Stolen {
  label: string;
  /** Share of the machine's CPU time the hypervisor took during the run (%), when it was measured. */
  stealPercent?: number;
}

/**
 * Run each load in turn, `rounds` times (labels get " [round/rounds]"). A round during one of whose slices the
 * hypervisor took more than `redoAbovePercent` of the machine's CPU is measured again (label
 * " [round/rounds, try n]"), at most `maxRedos` times in all: such a slice measured the neighbours, and its
 * partner slices ran on another machine. Of a round's tries, the one whose worst slice lost the least counts
 * (the latest, on a tie); the others are returned as discarded.
 */
export async function takeTurns<T extends Stolen>(
  loads: Array<(slice: string) => Promise<T>>,
  options: { rounds: number; redoAbovePercent: number; maxRedos: number; onRedo?: (why: string) => void },
): Promise<Turns<T>> {
  const slices: T[][] = loads.map(() => []);
  const discarded: T[] = [];
  const worstSteal = (results: T[]) => Math.max(...results.map((r) => r.stealPercent ?? 0));
  let redos = 0;
  for (let round = 1; round <= options.rounds; round++) {
    const tries: T[][] = [];
    for (let attempt = 0;; attempt++) {
      const tag = options.rounds > 1 || attempt > 0
        ? ` [${round}/${options.rounds}${attempt ? `, try ${attempt + 1}` : ""}]`
        : "";
      const results: T[] = [];
      for (const load of loads) results.push(await load(tag));
      tries.push(results);
      const stolen = results.filter((r) => (r.stealPercent ?? 0) > options.redoAbovePercent);
      if (stolen.length === 0 || redos >= options.maxRedos) break;
      redos++;
      options.onRedo?.(
        `round ${round} measured again: the hypervisor took ${
          stolen.map((r) => `${r.stealPercent!.toFixed(1)} % during "${r.label}"`).join(", ")
        } (over ${options.redoAbovePercent} %)`,
      );
    }
    const counted = tries.reduce((best, t) => worstSteal(t) <= worstSteal(best) ? t : best);
    counted.forEach((r, i) => slices[i].push(r));
    for (const t of tries) if (t !== counted) discarded.push(...t);
  }
  return { slices, discarded };
}

/** Run pgbench with per-transaction logs; latencies come from the logs, throughput from its summary. */
export async function pgbench(
  label: string,
  opts: {
    script: string;
    database: string;
    clients: number;
    threads: number;
    seconds: number;
    wallets: number;
    logDir: string;
    log: boolean;
  },
): Promise<LoadResult> {
  const prefix = `${opts.logDir}/pgbench_${label.replace(/\W+/g, "_")}`;
  const args = [
    "-h",
    "127.0.0.1",
    "-U",
    "postgres",
    "-n",
    "-M",
    "prepared",
    "-D",
    `wallets=${opts.wallets}`,
    "-f",
    opts.script,
    "-c",
    String(opts.clients),
    "-j",
    String(opts.threads),
    "-T",
    String(opts.seconds),
    ...(opts.log ? ["-l", `--log-prefix=${prefix}`] : []),
    opts.database,
  ];
  const out = await run("pgbench", args);
  const text = out.stdout + out.stderr;
  const num = (re: RegExp) => {
    const m = re.exec(text);
    return m ? Number(m[1]) : null;
  };
  const processed = num(/number of transactions actually processed: (\d+)/);
  const failed = num(/number of failed transactions: (\d+)/) ?? 0;
  const tps = num(/tps = ([\d.]+)/);
  if (out.code !== 0 || processed === null || tps === null) {
    throw new Error(`pgbench failed (${out.code}):\n${text.slice(-2000)}`);
  }
  const latencies: number[] = [];
  if (opts.log) {
    for (const entry of Deno.readDirSync(opts.logDir)) {
      if (!entry.name.startsWith(prefix.slice(opts.logDir.length + 1))) continue;
      const path = `${opts.logDir}/${entry.name}`;
      for (const line of Deno.readTextFileSync(path).split("\n")) {
        const fields = line.split(" ");
        if (fields.length >= 3) latencies.push(Number(fields[2]) / 1000);
      }
      Deno.removeSync(path);
    }
  }
  latencies.sort((a, b) => a - b);
  const mean = latencies.length ? latencies.reduce((s, v) => s + v, 0) / latencies.length : null;
  return {
    label,
    tool: "pgbench",
    command: `pgbench ${
      args.filter((a) => !a.startsWith("--log-prefix")).map((a) =>
        a.replace(/^.*\/tests\/bench\//, "tests/bench/")
      )
        .join(" ")
    }`,
    seconds: opts.seconds,
    ok: processed,
    errors: failed + (out.code === 0 ? 0 : 1),
    rate: tps,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    max: latencies.length ? latencies[latencies.length - 1] : null,
    mean,
  };
}

/** Resident memory of a process, from /proc: current and high-water mark, in MB. */
export function readRss(pid: number): { rssMb: number; hwmMb: number } | null {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0);
    return { rssMb: kb("VmRSS") / 1024, hwmMb: kb("VmHWM") / 1024 };
  } catch {
    return null;
  }
}

/** CPU seconds (user + system) a process has used so far. */
export function cpuSeconds(pid: number): number | null {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return null;
  }
}

/**
 * The machine's CPU time so far, from the first line of /proc/stat (clock ticks, all cores): `steal` is the
 * time the hypervisor ran something else while this machine's CPUs had work.
 */
export function machineCpuTicks(): { steal: number; total: number } | null {
  try {
    const line = Deno.readTextFileSync("/proc/stat").split("\n")[0];
    // cpu user nice system idle iowait irq softirq steal guest guest_nice (guest time is inside user)
    const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number);
    return { steal: ticks[7] ?? 0, total: ticks.reduce((a, b) => a + b, 0) };
  } catch {
    return null;
  }
}

/** One `top` snapshot: machine CPU split and %CPU summed by command name (100% = one core). */
export interface CpuProfile {
  label: string;
  summary: string;
  byCommand: Array<{ command: string; cpu: number }>;
}

/** Take a 2-second `top` sample and sum %CPU per command. */
export async function topProfile(label: string): Promise<CpuProfile | null> {
  try {
    const out = await run("top", ["-b", "-n", "2", "-d", "2", "-w", "512"]);
    const frames = out.stdout.split(/^top - /m);
    const frame = frames[frames.length - 1];
    const lines = frame.split("\n");
    const summary = lines.find((l) => l.startsWith("%Cpu"))?.trim() ?? "";
    const header = lines.findIndex((l) => /PID\s+USER/.test(l));
    const sums = new Map<string, number>();
    for (const line of lines.slice(header + 1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 12) continue;
      const cpu = Number(cols[8]);
      const command = cols.slice(11).join(" ");
      if (!Number.isFinite(cpu) || cpu === 0) continue;
      const name = command.split(/[\s:/]/)[0];
      sums.set(name, (sums.get(name) ?? 0) + cpu);
    }
    const byCommand = [...sums].map(([command, cpu]) => ({ command, cpu: Math.round(cpu) }))
      .sort((a, b) => b.cpu - a.cpu).slice(0, 8);
    return { label, summary, byCommand };
  } catch {
    return null;
  }
}
