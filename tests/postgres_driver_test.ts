/**
 * The patched postgres.js (vendor/postgres) under PostgreSQL backend terminations: the process survives,
 * every operation settles (succeeds or rejects catchably), and the pool works afterwards. The load runs in a
 * process of its own (tests/support/pg_kill_load.ts): the defect ended the process it happened in.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";

/** Codes a query may reject with when its backend is terminated (the connection's, or PostgreSQL's). */
const CONNECTION_LOST = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "ECONNRESET",
  "EPIPE",
  "57P01", // admin_shutdown: terminating connection due to administrator command
  "HTTP_ERROR", // a deposit answered with a JSend error (503, see below) instead of 201
]);

describe("postgres.js with backends terminated under load", () => {
  it("survives, settles every operation, and works after the storm", async () => {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "tests/support/pg_kill_load.ts"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(output.stdout);
    const stderr = new TextDecoder().decode(output.stderr);
    const line = stdout.split("\n").find((l) => l.startsWith("summary "));
    assert.equal(output.code, 0, `load process exited ${output.code}\n${stdout}\n${stderr.slice(-3000)}`);
    assert.ok(line, `no summary line\n${stdout}\n${stderr.slice(-3000)}`);
    const summary = JSON.parse(line.slice("summary ".length));

    // A reserved connection whose backend was terminated rejects its next query with a connection error.
    assert.ok(CONNECTION_LOST.has(summary.reservedAfterKill), `reserved: ${summary.reservedAfterKill}`);
    // The storm hit work in flight, and nothing failed but with a connection error.
    assert.ok(summary.terminated > 0, "no backend was terminated");
    assert.ok(summary.ok > 0, "nothing succeeded during the storm");
    assert.ok(summary.failed > 0, "the storm interrupted nothing");
    for (const code of Object.keys(summary.errorCodes)) {
      assert.ok(CONNECTION_LOST.has(code), `unexpected error ${code}: ${JSON.stringify(summary.errorCodes)}`);
    }
    // A backend ended under a deposit is a transient fault: 503 (retry with the same reference_id), never 500.
    for (const status of Object.keys(summary.depositStatuses)) {
      assert.ok(["201", "503"].includes(status), `deposit answered ${status}`);
    }
    // Afterwards: all four connections answer, so do queries and the service; the books balance.
    assert.deepEqual(summary.after, { distinctConnections: 4, queries: 20, deposits: 4 });
    assert.equal(summary.booksBalanced, true);
  });
});
