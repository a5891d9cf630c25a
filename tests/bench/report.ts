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
  met: boolean;
  miss?: string;
}

/** The lead's "What limits it" text from an earlier report, unless it is still the placeholder. */
export function keptAnalysis(previous: string | null): string | null {
  if (!previous) return null;
  const start = previous.indexOf(ANALYSIS_HEADING);
  if (start < 0) return null;
  const rest = previous.slice(start + ANALYSIS_HEADING.length);
  const end = rest.search(/^## /m);
  const text = (end < 0 ? rest : rest.slice(0, end)).trim();
  return text && !text.includes("PLACEHOLDER") ? text : null;
}

const ANALYSIS_HEADING = "## What limits it";

/** Render the report; `analysis` is the lead's text to keep in place of the placeholder. */
export function writeReport(r: BenchReport, analysis: string | null = null): string {
  const service = r.rss.find((e) => e.name.startsWith("service"));
  const serviceRss = service ? Math.max(service.maxRssMb, service.hwmMb) : null;
  const cachedRatio = ratio(r.cached.rate, r.bare.rate);
  const spreadRatio = ratio(r.spread.rate, r.spreadPlain.rate);
  const hotRatio = ratio(r.hot.rate, r.hotPlain.rate);
  const f = r.freshness;

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
      scenario: `2. deposits over ${n0(r.settings.wallets)} wallets`,
      ours: `${n0(r.spread.rate)} /s`,
      baseline: `pgbench plain ${n0(r.spreadPlain.rate)} tps (project SQL ${n0(r.spreadProject.rate)} tps)`,
      ratio: x(spreadRatio),
      target: ">= 1.0x plain",
      met: (spreadRatio ?? 0) >= 1,
      miss: `${x(spreadRatio)} of plain-SQL pgbench, short by ${x(1 - (spreadRatio ?? 0))}`,
    },
    {
      scenario: "3. hot wallet, 32 clients",
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
      scenario: `4. freshness p99 at ${r.settings.freshRate} writes/s`,
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
  const loadTable = (rows: Array<[LoadResult, string]>) =>
    [
      "| run | tool | throughput (/s) | p50 ms | p99 ms | max ms | ok | errors |",
      "|---|---|--:|--:|--:|--:|--:|--:|",
      ...rows.map(([res, what]) => row(res, what)),
      "",
      "Commands:",
      "",
      ...rows.map(([res]) => `- \`${res.command}\``),
    ].join("\n");

  const missed = targets.filter((t) => !t.met);
  const s = r.settings;
  const lines: string[] = [];
  lines.push(
    "# Benchmarks",
    "",
    `Generated by \`deno task bench\` (\`deno run -A tests/bench/bench.ts\`) on ${r.date}` +
      `${
        r.smoke ? " — **smoke run (tiny durations): these numbers mean nothing**" : ""
      }; the whole run took ` +
      `${
        n0(r.durationSeconds)
      } s. Every figure and its baseline come from this same run on this machine, with ` +
      "PostgreSQL, Redis, Kafka, the service and the load generator all co-located. Re-run the command to " +
      "reproduce; do not edit this file by hand.",
    "",
    "## Summary",
    "",
    "| scenario | ours | baseline | ratio | target | met? |",
    "|---|--:|---|--:|---|---|",
    ...targets.map((t) =>
      `| ${t.scenario} | ${t.ours} | ${t.baseline} | ${t.ratio} | ${t.target} | ${t.met ? "yes" : "**no**"} |`
    ),
    "",
    ...stealSummary(r),
    "## Machine and versions",
    "",
    `- Machine: ${r.machine.cores} cores (${r.machine.cpu}), ${r.machine.ramGb} GB RAM, ${r.machine.kernel}`,
    ...Object.entries(r.versions).map(([k, v]) => `- ${k}: ${v}`),
    `- Load: ${s.connections} connections, ${s.threads} wrk threads / pgbench jobs, ${s.seconds} s per measured run ` +
      `(in ${s.rounds} slices of ${
        Math.max(1, Math.round(s.seconds / s.rounds))
      } s, each after a ${s.warmup} s ` +
      `warm-up); ${s.wallets} wallets.`,
    "- Service under test: `deno run -A src/main.ts` as its own process with its default pool and batching " +
      "settings, LOG_LEVEL=warn, its own database (dropped and migrated each run), Kafka topic `wallet.bench.<run>` " +
      "(6 partitions), consumer group and Redis db.",
    "",
    "## Method",
    "",
    "- **Load generator: `wrk`** (Debian package; the bench installs it when missing). It is a small C program " +
      "whose own CPU use is low, which matters when it shares 2 cores with everything else; Lua scripts " +
      "(`tests/bench/*.lua`) rotate over the wallets' tokens and give every deposit a unique `reference_id` " +
      "(run id, thread id, per-thread counter), sent form-urlencoded like a form client. wrk counts responses " +
      "with status >= 400 as errors. It is closed-loop, so for the steady-rate freshness scenario the bench uses " +
      "its own open-loop generator (`tests/bench/freshness.ts`; wrk2 is not packaged in Debian).",
    "- **Every measured run starts after a `CHECKPOINT`** (before its warm-up), pgbench and service alike, so " +
      "that a checkpoint forced by the WAL of earlier runs does not land in one run and not another.",
    "- **Each ratio's runs take turns**: the baseline's and the service's runs are cut into slices that " +
      "alternate (bare Hono, the service; pgbench plain, pgbench project, the service), and each figure adds its " +
      "slices up (p50: their mean; p99 and max: their largest). The machine is virtual and its speed moves by the " +
      "minute (see the CPU stolen by the hypervisor below): a baseline measured minutes before its counterpart " +
      "compared two machines. A round during one of whose slices the hypervisor took more than " +
      `${r.redo.abovePercent} % of the machine's CPU is measured again (at most ${r.redo.maxPerScenario} times per ` +
      "scenario; the freshness run likewise), and the try whose worst slice lost the least counts: such a slice " +
      "measured the neighbours more than the code. The tries not counted are listed under Profile.",
    "- **pgbench baselines** run against a database of their own with the same schema and wallets, while the " +
      "service idles (its pipeline has caught up before each pgbench slice), with " +
      `\`-M prepared -c ${s.connections} -j ${s.threads}\`; latencies come from per-transaction logs (\`-l\`). ` +
      "`tests/bench/pgbench_plain.sql` is the plain transaction (SELECT ... FOR UPDATE, UPDATE balance, INSERT " +
      "transaction, INSERT outbox: one statement each); `tests/bench/pgbench_project.sql` is the SQL the " +
      "service's write path sends for one deposit on a wallet whose state it knows (`src/db/wallet_repository.ts`: " +
      "writeWalletChangesIfCurrent, one statement, its own transaction), after an unlocked SELECT that stands " +
      "in for the state the service keeps in memory. Its transactions that wrote nothing (another client moved " +
      "the version between the two) count as errors, and its rate is of deposits written. Their outbox rows stay " +
      "in their database, where no relay reads.",
    "- Scenario 1's baseline is `tests/bench/bare_hono.ts`: Hono on `Deno.serve`, answering a small JSON of the " +
      "same shape with no auth, cache or database, under the same wrk script and connections.",
    "",
    "## 1. Cached reads: `GET /api/v1/wallet` vs bare Hono",
    "",
    loadTable([[r.cached, "service, GET /api/v1/wallet (tokens of all wallets in turn)"], [
      r.bare,
      "bare Hono on Deno",
    ]]),
    "",
    `Ratio (throughput): ${
      x(cachedRatio)
    }. The cache entries expire 3 s after they were confirmed, so a share of ` +
      "these reads go to PostgreSQL and refill the cache, as in production.",
    "",
    `## 2. Deposits spread over ${n0(s.wallets)} wallets`,
    "",
    loadTable([
      [r.spread, "service, POST /api/v1/wallet/deposits"],
      [r.spreadPlain, "pgbench, plain SQL"],
      [r.spreadProject, "pgbench, the project's SQL"],
    ]),
    "",
    `Ratios: ${x(spreadRatio)} of plain-SQL pgbench, ${x(ratio(r.spread.rate, r.spreadProject.rate))} of ` +
      "project-SQL pgbench. The service's figure includes its relay and consumer running at the same time.",
    "",
    "## 3. Deposits on one hot wallet, 32 concurrent clients",
    "",
    loadTable([
      [r.hot, "service, one wallet"],
      [r.hotPlain, "pgbench, plain SQL, one row"],
      [r.hotProject, "pgbench, the project's SQL, one row"],
    ]),
    "",
    `Ratios: ${x(hotRatio)} of plain-SQL pgbench, ${
      x(ratio(r.hot.rate, r.hotProject.rate))
    } of project-SQL pgbench.`,
    "",
    `## 4. Freshness: deposit 201 to the balance shown by GET, at ${n0(f.targetRate)} writes/s`,
    "",
    "| measure | value |",
    "|---|--:|",
    `| deposits sent (open loop, ${f.seconds} s) | ${n0(f.sent)} |`,
    `| achieved rate (201/s) | ${n0(f.answered201 / f.seconds)} |`,
    `| deposit errors | ${n0(f.depositErrors)} |`,
    `| sends > 10 ms behind schedule | ${n0(f.late)} |`,
    `| deposit latency p50 / p99 / max (ms) | ${n2(f.depositP50)} / ${n2(f.depositP99)} / ${
      n2(f.depositMax)
    } |`,
    `| **visibility delay p50 / p99 / max (ms)** | ${n2(f.delayP50)} / **${n2(f.delayP99)}** / ${
      n2(f.delayMax)
    } |`,
    `| delays measured (every ${n0(f.sampleEvery)}th deposit is followed) | ${n0(f.delays)} |`,
    `| deposits never seen by GET (errors) | ${n0(f.unresolved)} |`,
    `| GET polls (errors) | ${n0(f.polls)} (${n0(f.pollErrors)}) |`,
    "",
    `The delay runs from the 201 arriving to the first GET response that shows the new balance; GET polls every ` +
      `${f.pollMs} ms at first, backing off to ${MAX_POLL_MS} ms, so each delay is an upper bound within one poll interval plus one GET round trip. Deposits go ` +
      "to each wallet in turn, so a wallet's deposits do not overlap. Only a sample of the deposits is followed " +
      "by polls, so the reads do not turn into a load of their own; every deposit counts towards the write rate.",
    "",
    `## 5. Relay drain and consumer apply rate (${n0(r.drain.backlog)}-row backlog)`,
    "",
    "| measure | value |",
    "|---|--:|",
    `| relay drain rate (first row published to empty outbox) | **${n0(r.drain.relayRate)} events/s** |`,
    `| relay wall time incl. process start and Kafka connect | ${n2(r.drain.relayTotalSeconds)} s |`,
    `| relay process CPU | ${n2(r.drain.relayCpuSeconds)} s |`,
    `| consumer apply rate (first to last offset commit) | **${n0(r.drain.consumerRate)} events/s** |`,
    `| consumer wall time incl. start and group join (${n0(r.drain.events)} events) | ${
      n2(r.drain.consumerTotalSeconds)
    } s |`,
    `| consumer rate over wall time | ${n0(r.drain.events / r.drain.consumerTotalSeconds)} events/s |`,
    "| errors | 0 (the bench fails on a stuck drain) |",
    "",
    "The backlog is written directly with SQL (valid `deposit.succeeded` events, 100 per wallet, interleaved) " +
      "while no relay runs; then a relay-only process (`ROLES=relay`) drains it to a fresh topic, and a " +
      "consumer-only process (`ROLES=consumer`, fresh group) applies it to Redis. The relay is measured by polling " +
      "the unsent count every 50 ms; the consumer by its group's committed offsets every 100 ms (kafkajs commits " +
      "about once a second, so short runs carry up to a second of error). Latency percentiles do not apply to a drain.",
    "",
    "## 6. Peak memory (RSS)",
    "",
    "| process | peak RSS sampled (MB) | VmHWM (MB) |",
    "|---|--:|--:|",
    ...r.rss.map((e) => `| ${e.name} | ${n0(e.maxRssMb)} | ${n0(e.hwmMb)} |`),
    "",
    "Peak RSS of the service by scenario (sampled every 200 ms from /proc/<pid>/status):",
    "",
    "| phase | MB |",
    "|---|--:|",
    ...(service?.byPhase ?? []).map((p) => `| ${p.phase} | ${n0(p.mb)} |`),
    "",
    "## Profile: where the CPU goes",
    "",
    ...stealSection(r),
    "Service process CPU during each measured run (cores, from /proc/<pid>/stat):",
    "",
    "| run | service CPU (cores of 2) |",
    "|---|--:|",
    ...r.serviceCpu.map((c) => `| ${c.label} | ${n2(c.cores)} |`),
    "",
    ...roleCostSection(r),
    "`top` in the middle of each measured run (2 s sample; %CPU summed per command, 100% = one core):",
    "",
    "| run | machine | top commands by %CPU |",
    "|---|---|---|",
    ...r.profiles.map((p) =>
      `| ${p.label} | ${p.summary.replace(/\|/g, "/")} | ${
        p.byCommand.map((c) => `${c.command} ${c.cpu}%`).join(", ")
      } |`
    ),
    "",
    "### V8 CPU profile of the service",
    "",
    "Taken through the service's inspector (`--inspect`, Profiler domain, 200 µs sampling) during extra wrk runs " +
      "after the measured ones, so the profiler does not touch the figures above. Self time, idle excluded.",
    "",
    ...r.cpuProfiles.flatMap((p) => [
      `**${p.label}** (${n2(p.seconds)} s, ${n0(p.samples)} samples)`,
      "",
      `By package: ${p.packages.map((k) => `${k.name} ${k.percent}%`).join(", ")}`,
      "",
      "| self % | function | where |",
      "|--:|---|---|",
      ...p.functions.map((fn) => `| ${fn.percent} | \`${fn.name.replace(/\|/g, "/")}\` | ${fn.where} |`),
      "",
    ]),
  );
  lines.push(...closingSections(missed.map((t) => `${t.scenario}: ${t.miss}`), analysis));
  return lines.join("\n");
}

/**
 * CPU time the hypervisor took from this (virtual) machine during each measured run. A ratio whose two runs
 * lost different shares of the machine compares two different machines, so the spread is stated.
 */
function stealSummary(r: BenchReport): string[] {
  const counted = r.steal.filter((s) => s.counted);
  if (counted.length === 0) return [];
  const shares = counted.map((s) => s.percent);
  const low = Math.min(...shares);
  const high = Math.max(...shares);
  const again = r.steal.length - counted.length;
  return [
    `CPU stolen by the hypervisor: ${n1(low)} % to ${n1(high)} % of the machine's CPU time, by counted run ` +
    "(per run under Profile)." +
    (high - low > 5
      ? " The runs did not get the same machine, so a ratio whose two runs differ here is partly the machine's."
      : "") +
    (again > 0
      ? ` ${again} runs are not counted: the hypervisor took more than ${r.redo.abovePercent} % of the machine ` +
        "during them or a run of their round, and a try measured again lost less."
      : ""),
    "",
  ];
}

function stealSection(r: BenchReport): string[] {
  if (r.steal.length === 0) return [];
  return [
    "CPU stolen by the hypervisor during each measured run (the `steal` share of the machine's CPU time, from " +
    `/proc/stat over the whole run). A round during one of whose runs it took more than ${r.redo.abovePercent} % ` +
    `was measured again, at most ${r.redo.maxPerScenario} times per scenario, and the try that lost the least ` +
    "counts; the others are marked not counted:",
    "",
    "| run | CPU stolen (%) | counted |",
    "|---|--:|---|",
    ...r.steal.map((s) =>
      `| ${s.label} | ${n1(s.percent)} | ${s.counted ? "yes" : "no: another try lost less"} |`
    ),
    "",
  ];
}

/**
 * The report's end: the targets this run missed, then the lead's analysis. The analysis stays whether or not
 * this run met every target (on a noisy machine the next run may not, and what limits each figure is worth
 * knowing either way); without one, a run that missed a target asks the lead for it.
 */
export function closingSections(misses: string[], analysis: string | null): string[] {
  const lines: string[] = [];
  if (misses.length > 0) {
    lines.push("## Targets missed: by how much", "", ...misses.map((miss) => `- ${miss}.`), "");
  }
  if (analysis) lines.push(ANALYSIS_HEADING, "", analysis, "");
  else if (misses.length > 0) {
    lines.push(
      ANALYSIS_HEADING,
      "",
      "> **PLACEHOLDER — for the lead to fill.** Explain, for each missed target above, what limits it, using the",
      "> profile tables (CPU split between postgres, deno and java per run; service CPU in cores) and the",
      "> baselines (pgbench shows what PostgreSQL alone does on this machine). This paragraph is written by the",
      "> bench until replaced: edit it here, and later runs of the bench keep your text (and drop this marker).",
      "",
    );
  }
  return lines;
}

/** Service CPU per deposit: all roles in one process (scenario 2), and each role in its own process. */
function roleCostSection(r: BenchReport): string[] {
  const spreadCpu = r.serviceCpu.find((c) => c.label.startsWith("2. spread"));
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
