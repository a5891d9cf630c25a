/**
 * A smoke run of the benchmark (`tests/bench/bench.ts --smoke`: every scenario for about a second) writing to a
 * temporary report. Checks that the bench runs end to end and reports every scenario with numbers; it asserts
 * nothing about speed.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Kafka, logLevel } from "kafkajs";
import { hideKafkajsTimeoutWarning } from "../outbox/kafka.ts";
import { closingSections, keptAnalysis } from "./bench/report.ts";

hideKafkajsTimeoutWarning(); // the admin client below lists the run's topics

describe("bench smoke run", () => {
  it("runs every scenario and writes a report with numbers", async () => {
    const dir = await Deno.makeTempDir({ prefix: "bench-smoke-" });
    const report = `${dir}/benchmarks.md`;
    // The lead's analysis in an earlier report is kept.
    const analysis = `Lead's analysis ${crypto.randomUUID()}.`;
    await Deno.writeTextFile(report, `# Benchmarks\n\n## What limits it\n\n${analysis}\n`);
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
      assert.equal(rows.length, 8, "one summary row per target");
      for (const row of rows) {
        const cells = row.split("|").map((c) => c.trim());
        assert.match(cells[2], /\d/, `no figure in: ${row}`);
        assert.match(cells[4], /^\d+\.\d+x$/, `no ratio in: ${row}`);
        assert.match(cells[6], /^(yes|\*\*no\*\*)$/, `no verdict in: ${row}`);
      }
      assert.match(summary, /CPU stolen by the hypervisor: \d+\.\d % to \d+\.\d %/);
      // --smoke measures every round again (its threshold is below any steal): both tries are listed with their
      // steal, and exactly one of them counts.
      const tries = [
        ...md.matchAll(
          /^\| 2\. spread deposits \(service\)(?: \[1\/1, try 2\])? +\| +\d+\.\d \| (.+?) +\|$/gm,
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
      assert.ok(md.includes(`## What limits it\n\n${analysis}`), "the lead's analysis was dropped");
      assert.match(md, /deno: \d+\.\d+\.\d+/);
      assert.match(md, /`deno task bench`/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});

describe("bench report's closing sections", () => {
  const analysis = "What limits it, by the lead.";
  it("keep the lead's analysis when every target was met, and ask for none", () => {
    const text = closingSections([], analysis).join("\n");
    assert.equal(keptAnalysis(text), analysis);
    assert.ok(!text.includes("Targets missed"));
    assert.equal(closingSections([], null).length, 0);
  });
  it("list the misses, then keep the analysis, or ask for one", () => {
    const kept = closingSections(["3. hot wallet p99: 9 ms over"], analysis).join("\n");
    assert.match(kept, /## Targets missed: by how much\n\n- 3\. hot wallet p99: 9 ms over\./);
    assert.equal(keptAnalysis(kept), analysis);
    const asked = closingSections(["3. hot wallet p99: 9 ms over"], null).join("\n");
    assert.match(asked, /PLACEHOLDER/);
    assert.equal(keptAnalysis(asked), null, "a placeholder is never kept as the analysis");
  });
});
