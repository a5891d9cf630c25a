/**
 * Scenario 4, an open-loop generator: deposits at a fixed rate (wrk cannot hold a constant rate, and wrk2 is
 * not packaged in Debian), and after each 201 a poll of GET /api/v1/wallet until the balance includes it.
 *
 * One deposit goes to each wallet in turn, so a wallet sees one deposit every `wallets / rate` seconds and
 * its deposits do not overlap. The expected balance after the k-th answered deposit of a wallet is its
 * starting balance plus k * 1.00. The delay is measured from the 201 arriving to the GET response that
 * shows the new balance, so it is an upper bound that includes up to one poll interval (5 ms at first,
 * growing to 10 ms for deposits that take longer to show, so the figure is within 10 ms of the truth).
 *
 * Only every `sampleEvery`-th deposit is followed by polls: polling all 500/s would itself be a read load of
 * thousands of GETs per second (and a CPU-hungry generator) on the same 2 cores, measuring the overload
 * instead of the pipeline. Every deposit still counts towards the write rate.
 */
import { percentile } from "./tools.ts";

/** The longest pause between two polls of one deposit. */
export const MAX_POLL_MS = 10;

export interface FreshnessResult {
  targetRate: number;
  seconds: number;
  sent: number;
  answered201: number;
  depositErrors: number;
  /** Deposits sent more than 10 ms behind their schedule (the generator could not keep up). */
  late: number;
  depositP50: number | null;
  depositP99: number | null;
  depositMax: number | null;
  delays: number;
  delayP50: number | null;
  delayP99: number | null;
  delayMax: number | null;
  unresolved: number;
  pollErrors: number;
  polls: number;
  pollMs: number;
  sampleEvery: number;
}

export async function runFreshness(opts: {
  baseUrl: string;
  /** tokens[i] is the token of wallet i; startCents[i] its balance in cents before the run. */
  tokens: string[];
  startCents: number[];
  rate: number;
  seconds: number;
  pollMs: number;
  runId: string;
  /** Follow every n-th deposit with polls (1 = all). */
  sampleEvery?: number;
}): Promise<FreshnessResult> {
  const sampleEvery = opts.sampleEvery ?? 10;
  const { baseUrl, tokens, rate, seconds, pollMs } = opts;
  const wallets = tokens.length;
  const answered = new Array<number>(wallets).fill(0);
  const pending: Array<Array<{ expected: number; at: number }>> = Array.from({ length: wallets }, () => []);
  const polling = new Array<boolean>(wallets).fill(false);
  const depositLatencies: number[] = [];
  const delays: number[] = [];
  let depositErrors = 0;
  let pollErrors = 0;
  let polls = 0;
  let late = 0;
  const inFlight = new Set<Promise<void>>();

  async function poll(w: number) {
    polling[w] = true;
    let attempt = 0;
    try {
      while (pending[w].length > 0) {
        let cents: number | null = null;
        try {
          const res = await fetch(`${baseUrl}/api/v1/wallet`, {
            headers: { Authorization: `Token ${tokens[w]}` },
          });
          const body = await res.json();
          polls++;
          if (res.status === 200) cents = Math.round(Number(body.data.wallet.balance) * 100);
          else pollErrors++;
        } catch {
          pollErrors++;
        }
        const now = performance.now();
        if (cents !== null) {
          const left = pending[w].filter((p) => {
            if (p.expected > cents!) return true;
            delays.push(now - p.at);
            return false;
          });
          pending[w] = left;
        }
        // Poll often at first, then a little less (every MAX_POLL_MS): a coarser poll would add its own interval
        // to the delay measured (at 50 ms a 70 ms delay read as 104 ms), a finer one would load the service.
        const wait = Math.min(pollMs * 1.5 ** attempt++, MAX_POLL_MS);
        if (pending[w].length > 0) await new Promise((r) => setTimeout(r, wait));
      }
    } finally {
      polling[w] = false;
    }
  }

  async function deposit(i: number) {
    const w = i % wallets;
    const started = performance.now();
    try {
      const res = await fetch(`${baseUrl}/api/v1/wallet/deposits`, {
        method: "POST",
        headers: {
          Authorization: `Token ${tokens[w]}`,
          "Content-Type": "application/x-www-form-urlencoded",
        },
        body: `amount=1&reference_id=${opts.runId}-fresh-${i}`,
      });
      await res.body?.cancel();
      const at = performance.now();
      if (res.status !== 201) {
        depositErrors++;
        return;
      }
      depositLatencies.push(at - started);
      answered[w]++;
      if (i % sampleEvery !== 0) return;
      pending[w].push({ expected: opts.startCents[w] + answered[w] * 100, at });
      if (!polling[w]) await poll(w);
    } catch {
      depositErrors++;
    }
  }

  const interval = 1000 / rate;
  const t0 = performance.now();
  let sent = 0;
  while (true) {
    const now = performance.now();
    if (now - t0 >= seconds * 1000) break;
    const due = Math.floor((now - t0) / interval) + 1;
    while (sent < due) {
      if (now - (t0 + sent * interval) > 10) late++;
      const p = deposit(sent++);
      inFlight.add(p);
      p.finally(() => inFlight.delete(p));
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  // Let the last deposits and their polls finish (bounded).
  const deadline = Date.now() + 15_000;
  while (inFlight.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const unresolved = pending.reduce((n, p) => n + p.length, 0);
  for (const p of pending) p.length = 0; // stops any poller still running

  depositLatencies.sort((a, b) => a - b);
  delays.sort((a, b) => a - b);
  return {
    targetRate: rate,
    seconds,
    sent,
    answered201: depositLatencies.length,
    depositErrors,
    late,
    depositP50: percentile(depositLatencies, 50),
    depositP99: percentile(depositLatencies, 99),
    depositMax: depositLatencies.at(-1) ?? null,
    delays: delays.length,
    delayP50: percentile(delays, 50),
    delayP99: percentile(delays, 99),
    delayMax: delays.at(-1) ?? null,
    unresolved,
    pollErrors,
    polls,
    pollMs,
    sampleEvery,
  };
}
