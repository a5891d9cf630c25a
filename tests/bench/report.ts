/** Renders the results of one bench run as docs/benchmarks.md. */
import type { CpuProfile, LoadResult } from "./tools.ts";
import { type FreshnessResult, MAX_POLL_MS } from "./freshness.ts";
import type { ProfileSummary } from "./cpu_profile.ts";

export interface DrainResult {
  backlog: number;
  /** Rows per second from the first published row to an empty outbox. */
  relayRate: number | null;
  relayTotalSeconds: number;
  relayCpuSeconds: number | null;
  events: number;
  /** Events per second between the first and the last offset commit of the group. */
  consumerRate: number | null;
  consumerTotalSeconds: number;
}

export interface BenchReport {
  smoke: boolean;
  runId: string;
  date: string;
  durationSeconds: number;
  machine: { cores: number; cpu: string; ramGb: number; kernel: string };
  versions: Record<string, string>;
  settings: {
    connections: number;
    /** Clients of the few-clients spread run. */
    fewConnections: number;
    threads: number;
    seconds: number;
    /** Slices each ratio's runs were cut into, taking turns with their baseline's. */
    rounds: number;
    warmup: number;
    wallets: number;
    backlog: number;
    freshRate: number;
  };
  cached: LoadResult;
  bare: LoadResult;
  spread: LoadResult;
  spreadPlain: LoadResult;
  spreadProject: LoadResult;
  /** Scenario 2 with few clients (a small deployment), against pgbench with as many. */
  spreadFew: LoadResult;
  spreadFewPlain: LoadResult;
  spreadFewProject: LoadResult;
  hot: LoadResult;
  hotPlain: LoadResult;
  hotProject: LoadResult;
  freshness: FreshnessResult;
  drain: DrainResult;
  rss: Array<
    { name: string; maxRssMb: number; hwmMb: number; byPhase: Array<{ phase: string; mb: number }> }
  >;
  profiles: CpuProfile[];
  serviceCpu: Array<{ label: string; cores: number }>;
  /** Share of the machine's CPU time the hypervisor took during each measured run (/proc/stat steal). */
  steal: Array<{ label: string; percent: number; /** false for a try not counted */ counted: boolean }>;
  /** A round or the freshness run was measured again, at most `maxPerScenario` times, above this steal (%). */
  redo: { abovePercent: number; maxPerScenario: number };
  cpuProfiles: ProfileSummary[];
  roleCost: RoleCost;
}

/** The spread load on the roles in separate processes: CPU each spends per deposit. */
export interface RoleCost {
  load: LoadResult;
  roles: Array<{ role: string; cores: number; usPerDeposit: number | null }>;
}

const n0 = (
  v: number | null | undefined,
) => (v === null || v === undefined ? "–" : Math.round(v).toLocaleString("en-US"));
const n2 = (v: number | null | undefined) => (v === null || v === undefined ? "–" : v.toFixed(2));
const n1 = (v: number) => v.toFixed(1);
const ratio = (a: number | null, b: number | null) => (a === null || b === null || b === 0 ? null : a / b);
const x = (v: number | null) => (v === null ? "–" : `${v.toFixed(2)}x`);

interface Target {
  scenario: string;
  ours: string;
  baseline: string;
  ratio: string;
  target: string;
  /** null: reported, no target set. */
  met: boolean | null;
  miss?: string;
}

/** Render the report of one run. */
export function writeReport(r: BenchReport): string {
  const service = r.rss.find((e) => e.name.startsWith("service"));
  const serviceRss = service ? Math.max(service.maxRssMb, service.hwmMb) : null;
  const cachedRatio = ratio(r.cached.rate, r.bare.rate);
  const spreadRatio = ratio(r.spread.rate, r.spreadPlain.rate);
  const fewRatio = ratio(r.spreadFew.rate, r.spreadFewPlain.rate);
  const hotRatio = ratio(r.hot.rate, r.hotPlain.rate);
  const f = r.freshness;
  const s = r.settings;

  const targets: Target[] = [
    {
      scenario: "1. cached `GET /api/v1/wallet` throughput",
      ours: `${n0(r.cached.rate)} req/s`,
      baseline: `bare Hono ${n0(r.bare.rate)} req/s`,
      ratio: x(cachedRatio),
      target: ">= 0.45x",
      met: (cachedRatio ?? 0) >= 0.45,
      miss: `${x(cachedRatio)} of bare Hono, short of 0.45x by ${x(0.45 - (cachedRatio ?? 0))}`,
    },
    {
      scenario: "1. cached `GET /api/v1/wallet` p99",
      ours: `${n2(r.cached.p99)} ms`,
      baseline: `bare Hono ${n2(r.bare.p99)} ms`,
      ratio: x(ratio(r.cached.p99, r.bare.p99)),
      target: "< 10 ms",
      met: (r.cached.p99 ?? Infinity) < 10,
      miss: `p99 ${n2(r.cached.p99)} ms, ${n2((r.cached.p99 ?? 0) - 10)} ms over`,
    },
    {
      scenario: `2. deposits over ${n0(s.wallets)} wallets, ${s.connections} clients`,
      ours: `${n0(r.spread.rate)} /s`,
      baseline: `pgbench plain ${n0(r.spreadPlain.rate)} tps (project SQL ${n0(r.spreadProject.rate)} tps)`,
      ratio: x(spreadRatio),
      target: ">= 1.0x plain",
      met: (spreadRatio ?? 0) >= 1,
      miss: `${x(spreadRatio)} of plain-SQL pgbench, short by ${x(1 - (spreadRatio ?? 0))}`,
    },
    {
      scenario: `2. deposits over ${n0(s.wallets)} wallets, ${s.fewConnections} clients`,
      ours: `${n0(r.spreadFew.rate)} /s`,
      baseline: `pgbench plain ${n0(r.spreadFewPlain.rate)} tps (project SQL ${
        n0(r.spreadFewProject.rate)
      } tps)`,
      ratio: x(fewRatio),
      target: "none (reported)",
      met: null,
    },
    {
      scenario: `3. hot wallet, ${s.connections} clients`,
      ours: `${n0(r.hot.rate)} /s`,
      baseline: `pgbench plain ${n0(r.hotPlain.rate)} tps (project SQL ${n0(r.hotProject.rate)} tps)`,
      ratio: x(hotRatio),
      target: ">= 2x plain",
      met: (hotRatio ?? 0) >= 2,
      miss: `${x(hotRatio)} of plain-SQL pgbench on one row, short of 2x by ${x(2 - (hotRatio ?? 0))}`,
    },
    {
      scenario: "3. hot wallet p99",
      ours: `${n2(r.hot.p99)} ms`,
      baseline: `pgbench plain ${n2(r.hotPlain.p99)} ms`,
      ratio: x(ratio(r.hot.p99, r.hotPlain.p99)),
      target: "< 50 ms",
      met: (r.hot.p99 ?? Infinity) < 50,
      miss: `p99 ${n2(r.hot.p99)} ms, ${n2((r.hot.p99 ?? 0) - 50)} ms over`,
    },
    {
      scenario: `4. freshness p99 at ${s.freshRate} writes/s`,
      ours: `${n2(f.delayP99)} ms`,
      baseline: `contract: 5,000 ms`,
      ratio: x(ratio(f.delayP99, 5000)),
      target: "< 100 ms",
      met: (f.delayP99 ?? Infinity) < 100 && f.unresolved === 0,
      miss: `p99 ${n2(f.delayP99)} ms (${f.unresolved} never seen), ${n2((f.delayP99 ?? 0) - 100)} ms over`,
    },
    {
      scenario: `5. relay drain of ${n0(r.drain.backlog)} rows`,
      ours: `${n0(r.drain.relayRate)} events/s`,
      baseline: "target 10,000 events/s",
      ratio: x(ratio(r.drain.relayRate, 10_000)),
      target: ">= 10,000/s",
      met: (r.drain.relayRate ?? 0) >= 10_000,
      miss: `${n0(r.drain.relayRate)} events/s, ${x(ratio(r.drain.relayRate, 10_000))} of the target`,
    },
    {
      scenario: "6. service peak RSS under load",
      ours: `${n0(serviceRss)} MB`,
      baseline: "target 200 MB",
      ratio: x(ratio(serviceRss, 200)),
      target: "< 200 MB",
      met: (serviceRss ?? Infinity) < 200,
      miss: `${n0(serviceRss)} MB, ${n0((serviceRss ?? 0) - 200)} MB over`,
    },
  ];

  const row = (res: LoadResult, what: string) =>
    `| ${what} | ${res.tool} | ${n0(res.rate)} | ${n2(res.p50)} | ${n2(res.p99)} | ${n2(res.max)} | ${
      n0(res.ok)
    } | ${n0(res.errors)} |`;
  const loadTable = (rows: Array<[LoadResult, string]>) => [
    "| run | tool | throughput (/s) | p50 ms | p99 ms | max ms | ok | errors |",
    "|---|---|--:|--:|--:|--:|--:|--:|",
    ...rows.map(([res, what]) => row(res, what)),
    "",
    "Commands:",
    "",
    ...rows.map(([res]) => `- \`${res.command}\``),
    "",
  ];
  const limits = (text: string) => [`**What limits it.** ${text}`, ""];
  const verdict = (t: Target) => t.met === null ? "–" : t.met ? "yes" : "**no**";
  const missed = targets.filter((t) => t.met === false);

  return [
    "# Benchmarks",
    "",
    `Generated by \`deno task bench\` (\`deno run -A tests/bench/bench.ts\`) on ${r.date}` +
    `${r.smoke ? " — **smoke run (tiny durations): these numbers mean nothing**" : ""}; the whole run took ` +
    `${
      n0(r.durationSeconds)
    } s. Every figure and its baseline come from this same run on this machine, with ` +
    "PostgreSQL, Redis, Kafka, the service and the load generator all co-located. Run the command again to " +
    "reproduce; the file is written by it, not by hand.",
    "",
    "## Summary",
    "",
    "| scenario | ours | baseline | ratio | target | met? |",
    "|---|--:|---|--:|---|---|",
    ...targets.map((t) =>
      `| ${t.scenario} | ${t.ours} | ${t.baseline} | ${t.ratio} | ${t.target} | ${verdict(t)} |`
    ),
    "",
    ...stealSummary(r),
    ...(missed.length > 0
      ? ["Targets missed, by how much:", "", ...missed.map((t) => `- **${t.scenario}**: ${t.miss}.`), ""]
      : []),
    "## Machine and versions",
    "",
    `- Machine: ${r.machine.cores} cores (${r.machine.cpu}), ${r.machine.ramGb} GB RAM, ${r.machine.kernel}`,
    ...Object.entries(r.versions).map(([k, v]) => `- ${k}: ${v}`),
    `- Load: ${s.connections} connections (${s.fewConnections} in the few-clients run), ${s.threads} wrk ` +
    `threads / pgbench jobs, ${s.seconds} s per measured run (in ${s.rounds} slices of ${
      Math.max(1, Math.round(s.seconds / s.rounds))
    } s, each after a ${s.warmup} s warm-up); ${s.wallets} wallets.`,
    "- Service under test: `deno run -A src/main.ts` as its own process with its default settings, " +
    "LOG_LEVEL=warn, its own database (dropped and migrated each run), Kafka topic `wallet.bench.<run>` " +
    "(6 partitions), consumer group and Redis db.",
    "",
    "## Method",
    "",
    "- **Load: `wrk`** (Debian package, installed when missing), a small C program that leaves the 2 cores to " +
    "the service; Lua scripts (`tests/bench/*.lua`) rotate over the wallets' tokens and give each deposit a " +
    "unique `reference_id`, sent form-urlencoded. Responses >= 400 count as errors. The steady-rate freshness " +
    "scenario uses an open-loop generator of its own (`tests/bench/freshness.ts`).",
    "- **Baselines from the same run.** Scenario 1: `tests/bench/bare_hono.ts`, Hono on `Deno.serve` answering " +
    "a JSON of the same shape with no auth, cache or database. Scenarios 2 and 3: pgbench (`-M prepared`, as " +
    "many clients as wrk) on a database of its own with the same schema and wallets, while the service idles; " +
    "`pgbench_plain.sql` is the textbook transaction (SELECT ... FOR UPDATE, UPDATE, two INSERTs), " +
    "`pgbench_project.sql` the single statement the service's write path sends for one deposit.",
    "- **Runs take turns.** The machine is virtual and its speed moves by the minute, so each ratio's runs are " +
    "cut into slices that alternate with their baseline's; a figure adds its slices up (p50: mean; p99, max: " +
    `largest). A round during which the hypervisor took more than ${r.redo.abovePercent} % of the CPU ` +
    `(\`/proc/stat\` steal) is measured again, at most ${r.redo.maxPerScenario} times, and the least stolen try ` +
    "counts. Every measured run starts after a `CHECKPOINT`.",
    "",
    "## 1. Cached reads: `GET /api/v1/wallet` vs bare Hono",
    "",
    ...loadTable([[r.cached, "service, GET /api/v1/wallet (tokens of all wallets in turn)"], [
      r.bare,
      "bare Hono on Deno",
    ]]),
    ...limits(
      "The API's CPU per request, about twice bare Hono's: the token check (HS256), the near-cache lookup, " +
        "routing, and loopback TCP in the kernel (profile below). An entry expires 3 s after it was confirmed " +
        "current, so steadily read wallets are confirmed again from PostgreSQL in the background.",
    ),
    `## 2. Deposits spread over ${n0(s.wallets)} wallets`,
    "",
    `### ${s.connections} clients`,
    "",
    ...loadTable([
      [r.spread, "service, POST /api/v1/wallet/deposits"],
      [r.spreadPlain, "pgbench, plain SQL"],
      [r.spreadProject, "pgbench, the project's SQL"],
    ]),
    `### ${s.fewConnections} clients`,
    "",
    ...loadTable([
      [r.spreadFew, "service, POST /api/v1/wallet/deposits"],
      [r.spreadFewPlain, "pgbench, plain SQL"],
      [r.spreadFewProject, "pgbench, the project's SQL"],
    ]),
    `Ratios to plain-SQL pgbench: ${x(spreadRatio)} with ${s.connections} clients, ${x(fewRatio)} with ` +
    `${s.fewConnections}. The service's figures include its relay and consumer running at the same time.`,
    "",
    ...limits(
      "With many clients, the service's CPU per deposit (HTTP, validation, batching: the role table below); " +
        "group commit makes one transaction of everything that arrived while the previous batch was in flight, " +
        "so PostgreSQL is not the limit. With few clients a batch holds at most one deposit per client, and each " +
        "client waits for a whole batch round trip and its commit flush: the rate is bound by that latency, " +
        "as pgbench's is by its own.",
    ),
    `## 3. Deposits on one hot wallet, ${s.connections} concurrent clients`,
    "",
    ...loadTable([
      [r.hot, "service, one wallet"],
      [r.hotPlain, "pgbench, plain SQL, one row"],
      [r.hotProject, "pgbench, the project's SQL, one row"],
    ]),
    ...limits(
      "The row lock. pgbench holds it for a whole transaction per deposit; the service groups the wallet's " +
        "waiting deposits into one transaction that holds it for one round trip (the state it committed last " +
        "is known), so the rate is batches per second times batch size. The p99 is a deposit that arrived just " +
        "after a batch left and waits for it and its own.",
    ),
    `## 4. Freshness: deposit 201 to the balance shown by GET, at ${n0(f.targetRate)} writes/s`,
    "",
    "| measure | value |",
    "|---|--:|",
    `| deposits sent (open loop, ${f.seconds} s) / achieved 201/s | ${n0(f.sent)} / ${
      n0(f.answered201 / f.seconds)
    } |`,
    `| deposit errors / sends > 10 ms late | ${n0(f.depositErrors)} / ${n0(f.late)} |`,
    `| deposit latency p50 / p99 / max (ms) | ${n2(f.depositP50)} / ${n2(f.depositP99)} / ${
      n2(f.depositMax)
    } |`,
    `| **visibility delay p50 / p99 / max (ms)** | ${n2(f.delayP50)} / **${n2(f.delayP99)}** / ${
      n2(f.delayMax)
    } |`,
    `| delays measured (every ${n0(f.sampleEvery)}th deposit) / never seen | ${n0(f.delays)} / ${
      n0(f.unresolved)
    } |`,
    `| GET polls (errors) | ${n0(f.polls)} (${n0(f.pollErrors)}) |`,
    "",
    `The delay runs from the 201 to the first GET that shows the new balance; GET polls every ${f.pollMs} ms at ` +
    `first, backing off to ${MAX_POLL_MS} ms, so each delay is an upper bound within one poll interval.`,
    "",
    ...limits(
      "The pipeline's stages in series: the relay's pause between cycles under load (5-40 ms, growing with " +
        "the load, so that each cycle sends more rows at once), Kafka's produce and the consumer's fetch, and " +
        "the consumer's compare-and-set into Redis, after which the near caches are told by Redis.",
    ),
    `## 5. Relay drain and consumer apply rate (${n0(r.drain.backlog)}-row backlog)`,
    "",
    "| measure | value |",
    "|---|--:|",
    `| relay drain rate (first row published to empty outbox) | **${n0(r.drain.relayRate)} events/s** |`,
    `| relay wall time incl. start / CPU | ${n2(r.drain.relayTotalSeconds)} s / ${
      n2(r.drain.relayCpuSeconds)
    } s |`,
    `| consumer apply rate (first to last offset commit) | **${n0(r.drain.consumerRate)} events/s** |`,
    `| consumer wall time incl. start and group join (${n0(r.drain.events)} events) | ${
      n2(r.drain.consumerTotalSeconds)
    } s |`,
    "",
    "The backlog is written with SQL while no relay runs; a relay-only process (`ROLES=relay`) drains it to a " +
    "fresh topic, then a consumer-only process (`ROLES=consumer`, fresh group) applies it to Redis. The relay is " +
    "timed by polling the unsent count, the consumer by its group's committed offsets (about one commit a second).",
    "",
    ...limits(
      "The relay is CPU-bound in kafkajs's record encoding on Deno's `Buffer`: kafkajs 2.2.4 builds every " +
        "record and header with new zero-filled encoders and writes each varint through `Buffer.from`, about " +
        "three quarters of the relay's profile. The consumer: decoding, and one Lua compare-and-set per batch.",
    ),
    "## 6. Peak memory (RSS)",
    "",
    "| process | peak RSS sampled (MB) | VmHWM (MB) |",
    "|---|--:|--:|",
    ...r.rss.map((e) => `| ${e.name} | ${n0(e.maxRssMb)} | ${n0(e.hwmMb)} |`),
    "",
    `The service's peak by scenario: ${servicePeaks(service?.byPhase ?? [])}.`,
    "",
    ...limits(
      "Two V8 heaps, the API's and the pipeline thread's, each bounded by `deno task start`'s flags (160 MB old " +
        "generation, 4 MB semi-spaces, 16 MB initial old generation), plus Deno's own memory.",
    ),
    "## Profile: where the CPU goes",
    "",
    "Service process CPU during each measured run (cores, from /proc/<pid>/stat), and the share of the " +
    "machine's CPU the hypervisor took meanwhile:",
    "",
    "| run | service CPU (cores of 2) | CPU stolen (%) | counted |",
    "|---|--:|--:|---|",
    ...r.serviceCpu.map((c) => {
      const stolen = r.steal.find((st) => st.label === c.label);
      return `| ${c.label} | ${n2(c.cores)} | ${stolen ? n1(stolen.percent) : "–"} | ${
        stolen?.counted === false ? "no: another try lost less" : "yes"
      } |`;
    }),
    "",
    ...roleCostSection(r),
    ...topSection(r),
    "### V8 CPU profile of the service",
    "",
    "Taken through the service's inspector (Profiler domain, 200 µs sampling) during extra wrk runs after the " +
    "measured ones. Self time, idle excluded; the top functions.",
    "",
    ...r.cpuProfiles.flatMap((p) => [
      `**${p.label}** (${n2(p.seconds)} s, ${n0(p.samples)} samples). By package: ${
        p.packages.slice(0, 6).map((k) => `${k.name} ${k.percent}%`).join(", ")
      }`,
      "",
      "| self % | function | where |",
      "|--:|---|---|",
      ...p.functions.slice(0, 8).map((fn) =>
        `| ${fn.percent} | \`${fn.name.replace(/\|/g, "/")}\` | ${fn.where} |`
      ),
      "",
    ]),
  ].join("\n");
}

/** The service's peak RSS per scenario of its own (baselines and tries folded in), as one line. */
function servicePeaks(byPhase: Array<{ phase: string; mb: number }>): string {
  const peaks = new Map<string, number>();
  for (const { phase, mb } of byPhase) {
    if (/pgbench|bare Hono/.test(phase)) continue;
    const name = phase.replace(/ \[.*\]$/, "");
    peaks.set(name, Math.max(peaks.get(name) ?? 0, mb));
  }
  return [...peaks].map(([name, mb]) => `${name} ${n0(mb)} MB`).join(", ");
}

/** `top` during each counted run, when it was sampled. */
function topSection(r: BenchReport): string[] {
  const counted = r.profiles.filter((p) => r.steal.find((st) => st.label === p.label)?.counted !== false);
  if (counted.length === 0) return [];
  return [
    "`top` in the middle of each counted run (2 s sample; %CPU summed per command, 100% = one core):",
    "",
    "| run | top commands by %CPU |",
    "|---|---|",
    ...counted.map((p) =>
      `| ${p.label} | ${p.byCommand.slice(0, 5).map((c) => `${c.command} ${c.cpu}%`).join(", ")} |`
    ),
    "",
  ];
}

/** One line: how much CPU the hypervisor took over the counted runs, and how many were measured again. */
function stealSummary(r: BenchReport): string[] {
  const counted = r.steal.filter((s) => s.counted);
  if (counted.length === 0) return [];
  const shares = counted.map((s) => s.percent);
  const again = r.steal.length - counted.length;
  return [
    `CPU stolen by the hypervisor: ${n1(Math.min(...shares))} % to ${n1(Math.max(...shares))} % of the ` +
    "machine's CPU time, by counted run." +
    (again > 0
      ? ` ${again} runs are not counted: the hypervisor took more than ${r.redo.abovePercent} % of the machine ` +
        "during them or a run of their round, and a try measured again lost less."
      : ""),
    "",
  ];
}

/** Service CPU per deposit: all roles in one process (scenario 2), and each role in its own process. */
function roleCostSection(r: BenchReport): string[] {
  const spreadCpu = r.serviceCpu.find((c) => c.label.startsWith("2. spread deposits (service)"));
  const together = spreadCpu && r.spread.rate > 0 ? (spreadCpu.cores / r.spread.rate) * 1e6 : null;
  const apart = r.roleCost.roles.reduce((sum, role) => sum + (role.usPerDeposit ?? 0), 0);
  return [
    "CPU per deposit, by role: scenario 2's load again, with the API, the relay and the consumer each in a " +
    "process of its own (`ROLES=api`, `ROLES=relay`, `ROLES=consumer`); CPU from /proc/<pid>/stat divided by " +
    `the deposits answered (${n0(r.roleCost.load.rate)}/s in this run):`,
    "",
    "| process | CPU per deposit (µs) | cores |",
    "|---|--:|--:|",
    ...r.roleCost.roles.map((role) => `| ${role.role} | ${n0(role.usPerDeposit)} | ${n2(role.cores)} |`),
    `| the three together | ${n0(apart)} | |`,
    `| all roles in one process (scenario 2) | ${n0(together)} | ${n2(spreadCpu?.cores)} |`,
    "",
  ];
}
