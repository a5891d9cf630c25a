/**
 * A V8 CPU profile of the service taken through its inspector (the service runs with
 * `--inspect=127.0.0.1:<port>`): Chrome DevTools Protocol over a WebSocket, Profiler.start / Profiler.stop,
 * then self time summed per function and per package.
 */

export interface ProfileSummary {
  label: string;
  seconds: number;
  samples: number;
  functions: Array<{ name: string; where: string; percent: number }>;
  packages: Array<{ name: string; percent: number }>;
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

/** Where code comes from: an npm package, a project file, a Deno internal, or a V8 pseudo-node. */
export function packageOf(url: string, functionName: string): string {
  if (!url) return functionName.startsWith("(") ? functionName : "(native)";
  const npm = /\/npm\/registry\.npmjs\.org\/((?:@[^/]+\/)?[^/]+)\//.exec(url) ??
    /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (npm) return `npm:${npm[1]}`;
  if (url.startsWith("ext:") || url.startsWith("node:")) return `deno ${url.split("/")[0]}`;
  const local = /\/(src|outbox)\/(.*)$/.exec(url);
  if (local) return `${local[1]}/${local[2]}`;
  return url.replace(/^.*\//, "");
}

/** Connect to the inspector, profile for the duration of `work`, and summarise. */
export async function profileDuring(
  label: string,
  inspectorPort: number,
  work: () => Promise<unknown>,
): Promise<ProfileSummary> {
  const list = await (await fetch(`http://127.0.0.1:${inspectorPort}/json/list`)).json();
  const ws = new WebSocket(list[0].webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  let nextId = 1;
  const waiting = new Map<number, (result: unknown) => void>();
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.id && waiting.has(message.id)) {
      waiting.get(message.id)!(message.result ?? message.error);
      waiting.delete(message.id);
    }
  };
  const call = (method: string, params: Record<string, unknown> = {}) =>
    new Promise<unknown>((resolve) => {
      const id = nextId++;
      waiting.set(id, resolve);
      ws.send(JSON.stringify({ id, method, params }));
    });
  try {
    await call("Profiler.enable");
    await call("Profiler.setSamplingInterval", { interval: 200 });
    await call("Profiler.start");
    const t0 = performance.now();
    await work();
    const seconds = (performance.now() - t0) / 1000;
    const { profile } = await call("Profiler.stop") as {
      profile: { nodes: ProfileNode[]; samples: number[] };
    };
    await call("Profiler.disable");
    return summarise(label, seconds, profile.nodes, profile.samples);
  } finally {
    ws.close();
  }
}

function summarise(label: string, seconds: number, nodes: ProfileNode[], samples: number[]): ProfileSummary {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const fn = new Map<string, { name: string; where: string; count: number }>();
  const pkg = new Map<string, number>();
  let counted = 0;
  for (const id of samples) {
    const node = byId.get(id);
    if (!node) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === "(idle)") continue;
    counted++;
    const name = functionName || "(anonymous)";
    const p = packageOf(url, name);
    const where = url ? `${p}:${lineNumber + 1}` : p;
    const key = `${name}@${where}`;
    const entry = fn.get(key) ?? { name, where, count: 0 };
    entry.count++;
    fn.set(key, entry);
    pkg.set(p, (pkg.get(p) ?? 0) + 1);
  }
  const pct = (n: number) => Math.round((n / Math.max(1, counted)) * 1000) / 10;
  return {
    label,
    seconds,
    samples: counted,
    functions: [...fn.values()].sort((a, b) => b.count - a.count).slice(0, 15)
      .map((f) => ({ name: f.name, where: f.where, percent: pct(f.count) })),
    packages: [...pkg].sort((a, b) => b[1] - a[1]).slice(0, 10).map(([name, n]) => ({
      name,
      percent: pct(n),
    })),
  };
}
