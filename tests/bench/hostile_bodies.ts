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
      `amount=1&reference_id=r-1&${"a=123456&".slice(0, 8).repeat(pairs)}`,
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
  const results: Array<{ name: string; status: number; median: number; p90: number }> = [];
  for (const { name, type, body } of list) {
    const times: number[] = [];
    let status = 0;
    for (let i = 0; i < rounds + 3; i++) {
      const started = performance.now();
      const response = await harness.app.request("/api/v1/wallet/deposits", {
        method: "POST",
        headers: { authorization: `Token ${token}`, "content-type": type },
        body,
      });
      await response.arrayBuffer();
      const elapsed = performance.now() - started;
      status = response.status;
      if (i >= 3) times.push(elapsed); // the first rounds warm the JIT up
    }
    times.sort((a, b) => a - b);
    results.push({ name, status, median: quantile(times, 0.5), p90: quantile(times, 0.9) });
  }
  const plain = results.find((r) => r.name === "plain 1 MiB JSON")!.median;
  console.log(`rounds: ${rounds}; ratio = median / median of the plain 1 MiB JSON body`);
  for (const r of results) {
    console.log(
      `${r.name.padEnd(34)} status ${r.status}  median ${r.median.toFixed(2).padStart(7)} ms  ` +
        `p90 ${r.p90.toFixed(2).padStart(7)} ms  ratio ${(r.median / plain).toFixed(2)}`,
    );
  }
} finally {
  await harness.close();
}
