/**
 * A smoke run of the benchmark (`tests/bench/bench.ts --smoke`: every scenario for about a second) writing to a
 * temporary report. Checks that the bench runs end to end and reports every scenario with numbers; it asserts
 * nothing about speed.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Kafka, logLevel } from "kafkajs";
import { hideKafkajsTimeoutWarning } from "../outbox/kafka.ts";

hideKafkajsTimeoutWarning(); // the admin client below lists the run's topics

describe("bench smoke run", () => {
  it("runs every scenario and writes a report with numbers", async () => {
    const dir = await Deno.makeTempDir({ prefix: "bench-smoke-" });
    const report = `${dir}/benchmarks.md`;
    try {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "tests/bench/bench.ts", "--smoke", "--report", report],
        stdin: "null",
      }).output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, `bench --smoke failed:\n${text.slice(-3000)}`);
      const md = await Deno.readTextFile(report);
      // The run leaves none of its Kafka topics behind.
      const runId = /, run (\S+),/.exec(text)?.[1];
      assert.ok(runId, "the bench names its run");
      const admin = new Kafka({ brokers: ["127.0.0.1:9092"], logLevel: logLevel.NOTHING }).admin();
      await admin.connect();
      try {
        const left = (await admin.listTopics()).filter((t) => t.startsWith(`wallet.bench.${runId}`));
        assert.deepEqual(left, [], "the run's topics were deleted");
      } finally {
        await admin.disconnect();
      }
      for (
        const heading of [
          "## Summary",
          "## Machine and versions",
          "## 1. Cached reads",
          "## 2. Deposits spread",
          "### 32 clients",
          "### 8 clients",
          "## 3. Deposits on one hot wallet",
          "## 4. Freshness",
          "## 5. Relay drain and consumer apply rate",
          "## 6. Peak memory (RSS)",
          "## Profile",
        ]
      ) {
        assert.ok(md.includes(heading), `report lacks "${heading}"`);
      }
      const summary = md.split("## Summary")[1].split("## Machine")[0];
      const rows = summary.split("\n").filter((l) => /^\| \d\. /.test(l));
      assert.equal(rows.length, 9, "one summary row per scenario figure");
      for (const row of rows) {
        const cells = row.split("|").map((c) => c.trim());
        assert.match(cells[2], /\d/, `no figure in: ${row}`);
        assert.match(cells[4], /^\d+\.\d+x$/, `no ratio in: ${row}`);
        const reported = cells[5] === "none (reported)";
        assert.match(cells[6], reported ? /^–$/ : /^(yes|\*\*no\*\*)$/, `no verdict in: ${row}`);
      }
      assert.match(summary, /CPU stolen by the hypervisor: \d+\.\d % to \d+\.\d %/);
      // --smoke measures every round again (its threshold is below any steal): both tries are listed with their
      // steal, and exactly one of them counts.
      const tries = [
        ...md.matchAll(
          /^\| 2\. spread deposits \(service\)(?: \[1\/1, try 2\])? +\| +[\d.]+ \| +\d+\.\d \| (.+?) +\|$/gm,
        ),
      ]
        .map((m) => m[1]);
      assert.deepEqual(
        tries.sort(),
        ["no: another try lost less", "yes"],
        "no CPU stolen during a run, or no redo",
      );
      assert.match(summary, /\d+\s+runs\s+are\s+not\s+counted/);
      // The report is run through `deno fmt`, which pads table cells.
      for (const tool of ["wrk", "pgbench"]) {
        assert.match(md, new RegExp(`\\| ${tool} +\\|`), `no ${tool} rows`);
      }
      for (const role of ["api", "relay", "consumer"]) {
        assert.match(
          md,
          new RegExp(`\\| ${role} +\\| +[\\d,]+ \\|`),
          `no CPU per deposit for the ${role} role`,
        );
      }
      // One "what limits it" per scenario, and a report a reader can take in.
      assert.equal([...md.matchAll(/^\*\*What limits it\.\*\* \S/gm)].length, 6);
      const lines = md.split("\n").length;
      assert.ok(lines <= 300, `the report has ${lines} lines, more than 300`);
      assert.match(md, /deno: \d+\.\d+\.\d+/);
      assert.match(md, /`deno task bench`/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});
