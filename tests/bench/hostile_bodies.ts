/**
 * What a hostile 1 MiB request body costs the API compared with a plain one: each body is sent in-process
 * (`app.request`) to POST /api/v1/wallet/deposits with the token of a wallet that was never enabled, so a body
 * that passes every check ends at the wallet state (404) and nothing is written. Prints the median and the
 * 90th percentile of each, and the ratio of the median to the plain 1 MiB body's.
 *
 * Run against a migrated database and a Redis of your own (the test ones after `deno task test`):
 *   APP_ENV=test JWT_SECRET=test-secret-for-mini-wallet-tests-000000 \
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/mini_wallet_test_x REDIS_URL=redis://127.0.0.1:6379/6 \
 *   deno run -A tests/bench/hostile_bodies.ts [rounds]
 */
import { cpuUsage } from "node:process";
import { createHarness, initCustomer } from "../support/harness.ts";

const MIB = 1024 * 1024;
const rounds = Number(Deno.args[0] ?? 30);

interface Body {
  name: string;
  type: string;
  body: Uint8Array<ArrayBuffer>;
}

function text(name: string, type: string, value: string): Body {
  const body = new TextEncoder().encode(value);
  if (body.byteLength > MIB) throw new Error(`${name} is ${body.byteLength} bytes, over 1 MiB`);
  return { name, type, body };
}

function bodies(): Body[] {
  const plainPad = MIB - 400;
  const depth = 500_000;
  const pairs = Math.floor((MIB - 40) / 8);
  const parts: string[] = [];
  const boundary = "b0undary";
  for (let i = 0; i < 10_000; i++) {
    parts.push(`--${boundary}\r\nContent-Disposition: form-data; name="f${i}"\r\n\r\nvalue${i}\r\n`);
  }
  const multipart = parts.join("") + `--${boundary}--\r\n`;
  const digits = MIB - 100;
  return [
    text("small plain JSON", "application/json", '{"amount":"10.50","reference_id":"r-1"}'),
    text(
      "plain 1 MiB JSON",
      "application/json",
      `{"amount":"10.50","reference_id":"r-1","padding":"${"p".repeat(plainPad)}"}`,
    ),
    text(
      "plain 1 MiB urlencoded",
      "application/x-www-form-urlencoded",
      `amount=10.50&reference_id=r-1&padding=${"p".repeat(plainPad)}`,
    ),
    text(
      "plain 1 MiB multipart",
      `multipart/form-data; boundary=${boundary}`,
      `--${boundary}\r\nContent-Disposition: form-data; name="amount"\r\n\r\n10.50\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="reference_id"\r\n\r\nr-1\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="padding"\r\n\r\n${"p".repeat(plainPad)}\r\n` +
        `--${boundary}--\r\n`,
    ),
    text(
      "JSON nested 500,000 deep",
      "application/json",
      `{"amount":${"[".repeat(depth)}${"]".repeat(depth)},"reference_id":"r-1"}`,
    ),
    text(
      `urlencoded ${pairs} pairs`,
      "application/x-www-form-urlencoded",
      `amount=1&reference_id=r-1&${"a=12345&".repeat(pairs)}`,
    ),
    text("multipart 10,000 parts", `multipart/form-data; boundary=${boundary}`, multipart),
    text(
      "1 MiB digit string amount",
      "application/json",
      `{"amount":"${"9".repeat(digits)}","reference_id":"r"}`,
    ),
    text(
      "1 MiB digit JSON number amount",
      "application/json",
      `{"amount":${"9".repeat(digits)},"reference_id":"r"}`,
    ),
    text(
      "1 MiB leading zeros amount",
      "application/x-www-form-urlencoded",
      `reference_id=r&amount=${"0".repeat(digits)}1`,
    ),
    text(
      "1 MiB reference_id",
      "application/json",
      `{"amount":"1","reference_id":"${"r".repeat(digits)}"}`,
    ),
  ];
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

const harness = createHarness();
try {
  const { token } = await initCustomer(harness.app);
  const list = bodies();
  const wall = list.map(() => [] as number[]);
  const cpu = list.map(() => [] as number[]);
  const statuses = list.map(() => 0);
  // Round-robin over the bodies, so a noisy neighbour slows them all alike; the first rounds warm the JIT up.
  for (let round = 0; round < rounds + 3; round++) {
    for (const [i, { type, body }] of list.entries()) {
      const cpuBefore = cpuUsage();
      const started = performance.now();
      const response = await harness.app.request("/api/v1/wallet/deposits", {
        method: "POST",
        headers: { authorization: `Token ${token}`, "content-type": type },
        body,
      });
      await response.arrayBuffer();
      const elapsed = performance.now() - started;
      const used = cpuUsage(cpuBefore);
      statuses[i] = response.status;
      if (round >= 3) {
        wall[i].push(elapsed);
        cpu[i].push((used.user + used.system) / 1000);
      }
    }
  }
  const median = (values: number[]) => quantile([...values].sort((a, b) => a - b), 0.5);
  const medians = cpu.map(median);
  const plainOf = (type: string) =>
    medians[
      list.findIndex((b) => b.name.startsWith("plain 1 MiB") && b.type.split(";")[0] === type.split(";")[0])
    ];
  const plainJson = plainOf("application/json");
  console.log(
    `rounds: ${rounds}; process CPU and wall time per request (medians); ratios: CPU / the plain 1 MiB JSON ` +
      `body's, and / the plain 1 MiB body's of the same media type`,
  );
  for (const [i, { name, type }] of list.entries()) {
    console.log(
      `${name.padEnd(34)} ${statuses[i]}  cpu ${medians[i].toFixed(2).padStart(6)} ms  ` +
        `wall ${median(wall[i]).toFixed(2).padStart(7)} ms  ratio ${(medians[i] / plainJson).toFixed(2)}  ` +
        `same type ${(medians[i] / plainOf(type)).toFixed(2)}`,
    );
  }
} finally {
  await harness.close();
}
