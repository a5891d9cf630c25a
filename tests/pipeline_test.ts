/**
 * The outbox pipeline end to end on real PostgreSQL, Redis and Kafka: every committed change produces its
 * event (and a rolled-back one none), late commits are not skipped, two relays keep each wallet's order,
 * the cache is fresh soon after a write, and the pipeline metrics move.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { hideKafkajsTimeoutWarning } from "../outbox/kafka.ts";
import { PipelineMetrics } from "../outbox/metrics.ts";
import { lockWallet, writeWalletChange } from "../src/db/wallet_repository.ts";
import { decideMoneyRequests } from "../src/wallet/wallet_rules.ts";
import { call, config, enabledWallet } from "./support/harness.ts";
import { createPipeline, dbBalance, type Pipeline } from "./support/pipeline.ts";
import {
  assertOrderedVersions,
  collectTopic,
  createTestTopic,
  type TopicCollector,
  waitUntil,
} from "./support/topic.ts";

hideKafkajsTimeoutWarning();

const brokers = config.KAFKA_BROKERS;

/** A topic, a pipeline and a collector for one test; `cleanup` stops them all. */
async function setUp(label: string) {
  const topic = await createTestTopic(brokers, { label, partitions: 6 });
  const pipeline = createPipeline({ topic });
  const collector = await collectTopic(brokers, topic);
  return {
    topic,
    pipeline,
    collector,
    async cleanup() {
      await collector.stop();
      await pipeline.close();
    },
  };
}

function distinctEvents(collector: TopicCollector, walletId: string) {
  const byVersion = new Map(collector.eventsOf(walletId).map((e) => [e.version, e]));
  return [...byVersion.values()].sort((a, b) => a.version - b.version);
}

async function deposit(
  pipeline: Pipeline,
  token: string,
  amount: number,
  referenceId: string = crypto.randomUUID(),
) {
  const response = await call(pipeline.app, "POST", "/api/v1/wallet/deposits", {
    token,
    body: { amount, reference_id: referenceId },
  });
  assert.equal(response.status, 201, JSON.stringify(response.body));
  return response;
}

describe("outbox pipeline", () => {
  it("publishes one event per committed change, with versions 1..N and the balance after each", async () => {
    const { pipeline, collector, cleanup } = await setUp("changes");
    try {
      pipeline.startRelay();
      const { token, walletId, xid } = await enabledWallet(pipeline.app);
      await deposit(pipeline, token, 100.5, "dep-1");
      const ok = await call(pipeline.app, "POST", "/api/v1/wallet/withdrawals", {
        token,
        body: { amount: 30, reference_id: "wd-ok" },
      });
      assert.equal(ok.status, 201);
      const refused = await call(pipeline.app, "POST", "/api/v1/wallet/withdrawals", {
        token,
        body: { amount: 500, reference_id: "wd-failed" },
      });
      assert.equal(refused.status, 400, JSON.stringify(refused.body));
      const disabled = await call(pipeline.app, "PATCH", "/api/v1/wallet", {
        token,
        body: { is_disabled: true },
      });
      assert.equal(disabled.status, 200);

      await waitUntil(() => distinctEvents(collector, walletId).length >= 5, {
        message: "5 events of the wallet on the topic",
        detail: () => distinctEvents(collector, walletId).map((e) => e.type),
      });
      const events = assertOrderedVersions(walletId, collector.eventsOf(walletId), 5);
      assert.deepEqual(
        events.map((e) => [e.version, e.type, e.balance, e.wallet_status]),
        [
          [1, "wallet.enabled", "0", "enabled"],
          [2, "deposit.succeeded", "100.5", "enabled"],
          [3, "withdrawal.succeeded", "70.5", "enabled"],
          [4, "withdrawal.failed", "70.5", "enabled"],
          [5, "wallet.disabled", "70.5", "disabled"],
        ],
      );
      for (const event of events) {
        assert.equal(event.wallet_id, walletId);
        assert.equal(event.customer_xid, xid);
        assert.equal(event.schema_version, 1);
        assert.notEqual(event.enabled_at, null);
      }
      assert.equal(events[0].transaction, null);
      assert.equal(events[4].transaction, null);
      assert.notEqual(events[4].disabled_at, null);
      assert.deepEqual(
        events.slice(1, 4).map((e) => [e.transaction?.type, e.transaction?.status, e.transaction?.amount]),
        [["deposit", "success", "100.5"], ["withdrawal", "success", "30"], ["withdrawal", "failed", "500"]],
      );
      assert.deepEqual(events.slice(1, 4).map((e) => e.transaction?.reference_id), [
        "dep-1",
        "wd-ok",
        "wd-failed",
      ]);
      // Key and headers as the relay sets them.
      const messages = collector.messages.filter((m) => m.event?.wallet_id === walletId);
      for (const message of messages) {
        assert.equal(message.key, walletId);
        assert.equal(message.headers["event-id"], message.event!.event_id);
        assert.equal(message.headers["wallet-version"], String(message.event!.version));
      }
      // Every row of the wallet is marked sent: the relay commits that right after Kafka's acknowledgement,
      // so on a loaded machine the collector can see the events first.
      await waitUntil(async () => {
        const [unsent] = await pipeline.sql<{ n: number }[]>`
          SELECT count(*)::int AS n FROM outbox WHERE wallet_id = ${walletId} AND sent_at IS NULL`;
        return unsent.n === 0;
      }, { message: "every row of the wallet marked sent" });
    } finally {
      await cleanup();
    }
  });

  it("writes no outbox row and publishes no event for a rolled-back change", async () => {
    const { pipeline, collector, cleanup } = await setUp("rollback");
    try {
      pipeline.startRelay();
      const { token, walletId } = await enabledWallet(pipeline.app);
      let rolledBackEventId = "";
      await assert.rejects(
        pipeline.sql.begin(async (tx) => {
          const locked = await lockWallet(tx, walletId);
          assert.ok(locked);
          const decision = decideMoneyRequests(
            locked,
            [{ type: "deposit", amount: 50_000n, referenceId: "rolled-back" }],
            new Map(),
            new Date(),
          );
          rolledBackEventId = decision.outbox[0].eventId;
          await writeWalletChange(tx, {
            wallet: decision.wallet,
            transactions: decision.newTransactions,
            outbox: decision.outbox,
          });
          const [inside] = await tx<{ n: number }[]>`
            SELECT count(*)::int AS n FROM outbox WHERE event_id = ${rolledBackEventId}`;
          assert.equal(inside.n, 1, "the row exists inside the transaction");
          throw new Error("roll back on purpose");
        }),
        /roll back on purpose/,
      );
      const [row] = await pipeline.sql<{ outbox: number; ledger: number }[]>`
        SELECT (SELECT count(*)::int FROM outbox WHERE event_id = ${rolledBackEventId})
            + (SELECT count(*)::int FROM outbox_sent WHERE event_id = ${rolledBackEventId}) AS outbox,
               (SELECT count(*)::int FROM wallet_transactions
                WHERE wallet_id = ${walletId} AND reference_id = 'rolled-back') AS ledger`;
      assert.deepEqual(row, { outbox: 0, ledger: 0 });

      // A later committed change takes version 2; once it arrived, the rolled-back one never can.
      await deposit(pipeline, token, 7, "committed");
      await waitUntil(() => distinctEvents(collector, walletId).length >= 2, {
        message: "version 2 on the topic",
      });
      const events = assertOrderedVersions(walletId, collector.eventsOf(walletId), 2);
      assert.equal(events[1].transaction?.reference_id, "committed");
      assert.equal(events[1].balance, "7");
      assert.ok(!collector.eventIds().has(rolledBackEventId), "the rolled-back event was published");
    } finally {
      await cleanup();
    }
  });

  it("publishes a row that commits after a row with a higher id was already published", async () => {
    const { pipeline, collector, cleanup } = await setUp("late-commit");
    try {
      const relay = pipeline.startRelay();
      const a = await enabledWallet(pipeline.app);
      const b = await enabledWallet(pipeline.app);
      await waitUntil(
        () =>
          distinctEvents(collector, a.walletId).length === 1 &&
          distinctEvents(collector, b.walletId).length === 1,
        { message: "enable events of A and B" },
      );

      let inserted!: (id: bigint) => void;
      const insertedId = new Promise<bigint>((resolve) => inserted = resolve);
      let commit!: () => void;
      const commitGate = new Promise<void>((resolve) => commit = resolve);
      let eventIdA = "";
      const writerA = pipeline.sql.begin(async (tx) => {
        const locked = await lockWallet(tx, a.walletId);
        assert.ok(locked);
        const decision = decideMoneyRequests(
          locked,
          [{ type: "deposit", amount: 1_000n, referenceId: "late" }],
          new Map(),
          new Date(),
        );
        eventIdA = decision.outbox[0].eventId;
        await writeWalletChange(tx, {
          wallet: decision.wallet,
          transactions: decision.newTransactions,
          outbox: decision.outbox,
        });
        const [row] = await tx<{ id: string }[]>`SELECT id FROM outbox WHERE event_id = ${eventIdA}`;
        inserted(BigInt(row.id));
        await commitGate; // hold the transaction open: the row's id is taken but not visible
      });
      const idA = await insertedId;

      // Writer B (another wallet) inserts after A and commits first.
      await deposit(pipeline, b.token, 3, "early");
      const [rowB] = await pipeline.sql<{ id: string; event_id: string }[]>`
        SELECT id, event_id FROM outbox WHERE wallet_id = ${b.walletId} AND wallet_version = 2
        UNION ALL -- the relay may already have moved it
        SELECT id, event_id FROM outbox_sent WHERE wallet_id = ${b.walletId} AND wallet_version = 2`;
      assert.ok(BigInt(rowB.id) > idA, "B's outbox row has the higher id");
      await waitUntil(() => collector.eventIds().has(rowB.event_id), { message: "B's event published" });
      await relay.drained(); // at least one more full cycle ran while A is still open
      assert.ok(!collector.eventIds().has(eventIdA));

      commit();
      await writerA;
      await waitUntil(() => collector.eventIds().has(eventIdA), {
        message: "A's late-committed event published",
      });
      const eventsA = assertOrderedVersions(a.walletId, collector.eventsOf(a.walletId), 2);
      assert.equal(eventsA[1].event_id, eventIdA);
      assert.equal(eventsA[1].balance, "10");
    } finally {
      await cleanup();
    }
  });

  it("keeps each wallet's events in version order with two relays on a busy load", async () => {
    const { pipeline, collector, cleanup } = await setUp("two-relays");
    try {
      const relays = [pipeline.startRelay({ batchSize: 100 }), pipeline.startRelay({ batchSize: 100 })];
      const walletCount = 20;
      const depositsPerWallet = 50;
      const wallets = await Promise.all(
        Array.from({ length: walletCount }, () => enabledWallet(pipeline.app)),
      );
      // Five concurrent lanes per wallet, every wallet at once: 100 requests in flight.
      await Promise.all(wallets.flatMap((wallet) =>
        Array.from({ length: 5 }, async (_, lane) => {
          for (let i = 0; i < depositsPerWallet / 5; i++) {
            await deposit(pipeline, wallet.token, 1 + lane, `lane-${lane}-${i}`);
          }
        })
      ));
      const expected = depositsPerWallet + 1; // enable + deposits
      await waitUntil(
        () => wallets.every((w) => distinctEvents(collector, w.walletId).length >= expected),
        {
          timeoutMs: 60_000,
          message: "every wallet's events on the topic",
          detail: () => wallets.map((w) => distinctEvents(collector, w.walletId).length),
        },
      );
      let total = 0;
      for (const wallet of wallets) {
        const events = assertOrderedVersions(wallet.walletId, collector.eventsOf(wallet.walletId), expected);
        const db = await dbBalance(pipeline.sql, wallet.walletId);
        assert.equal(db.version, expected);
        assert.equal(events.at(-1)!.balance, db.balance);
        total += events.length;
      }
      assert.equal(total, walletCount * expected);
      const walletIds = wallets.map((w) => w.walletId);
      const [counts] = await pipeline.sql<{ rows: number; unsent: number }[]>`
        SELECT (SELECT count(*) FROM outbox_sent WHERE wallet_id = ANY(${walletIds}::uuid[]))::int
            + (SELECT count(*) FROM outbox WHERE wallet_id = ANY(${walletIds}::uuid[]))::int AS rows,
          (SELECT count(*) FROM outbox WHERE wallet_id = ANY(${walletIds}::uuid[]))::int AS unsent`;
      assert.deepEqual(counts, { rows: walletCount * expected, unsent: 0 });
      const published = relays.reduce((sum, r) => sum + r.metrics.published, 0);
      assert.ok(published >= walletCount * expected, `published ${published}`);
      console.log(
        `two relays: published ${relays.map((r) => r.metrics.published).join(" + ")}, ` +
          `${collector.messages.length} messages on the topic`,
      );
    } finally {
      await cleanup();
    }
  });

  it("shows a deposit in GET /api/v1/wallet within the 5 s contract (freshness) and updates metrics", async () => {
    const { pipeline, cleanup } = await setUp("freshness");
    try {
      const metrics = new PipelineMetrics();
      metrics.unsent = -1; // proves the relay measured the backlog
      pipeline.startRelay({ metrics });
      pipeline.startConsumer({ metrics });
      const { token } = await enabledWallet(pipeline.app);
      let balance = 0;
      const shown = async () => {
        const view = await call(pipeline.app, "GET", "/api/v1/wallet", { token });
        assert.equal(view.status, 200);
        return view.body.data.wallet.balance as number;
      };
      // Warm-up: the consumer group joins and the cache catches up.
      await deposit(pipeline, token, 1, "warm-up");
      balance += 1;
      await waitUntil(async () => await shown() === balance, { message: "warm-up deposit visible" });

      const delays: number[] = [];
      for (let i = 0; i < 50; i++) {
        await deposit(pipeline, token, 2, `fresh-${i}`);
        const start = performance.now();
        balance += 2;
        await waitUntil(async () => await shown() === balance, {
          timeoutMs: 5000,
          intervalMs: 2,
          message: `deposit ${i} visible within 5 s`,
        });
        delays.push(performance.now() - start);
      }
      delays.sort((a, b) => a - b);
      const pct = (p: number) =>
        delays[Math.min(delays.length - 1, Math.ceil((p / 100) * delays.length) - 1)];
      console.log(
        `freshness (201 -> GET shows it) over ${delays.length} deposits: p50 ${pct(50).toFixed(1)} ms, ` +
          `p99 ${pct(99).toFixed(1)} ms, max ${delays.at(-1)!.toFixed(1)} ms`,
      );

      const snapshot = metrics.snapshot();
      console.log(`pipeline metrics: ${JSON.stringify(snapshot)}`);
      assert.ok(snapshot.published > 0, "published");
      assert.ok(snapshot.unsent >= 0, "unsent measured");
      assert.ok(snapshot.oldestUnsentAgeMs >= 0);
      assert.ok(snapshot.consumed > 0 && snapshot.cacheApplied > 0, "consumer counted");
      assert.ok(snapshot.eventToCacheMs.samples > 0, "event-to-cache samples");
      assert.ok(snapshot.eventToCacheMs.p50 !== null && snapshot.eventToCacheMs.p99 !== null);
      assert.ok(snapshot.publishRatePerSecond > 0);
    } finally {
      await cleanup();
    }
  });
});
