/**
 * The three backing services for local work and tests: Postgres, Redis, Kafka (plus our topics).
 *
 * `ensureServices` is idempotent: what already answers is reused. `stopServices` stops only the processes
 * we started (recorded in pid files in the state dir), never the machine's own Postgres or Redis.
 */
import type { Config } from "../config.ts";
import { ensureTopics } from "../../outbox/kafka_admin.ts";
import { elapsed, isPortOpen, type Log, removeFile, stateDir, stopPid } from "./local_process.ts";
import { ensurePostgres } from "./postgres_local.ts";
import { ensureRedis, redisPidFile, runningRedisPid } from "./redis_local.ts";
import { ensureKafka, kafkaPaths, parseBroker, runningKafkaPid } from "./kafka_local.ts";

/** The suffix of the dead-letter topic that sits next to the events topic. */
export const DLQ_SUFFIX = ".dlq";

/** The config fields the services need. */
export type ServicesConfig = Pick<
  Config,
  | "DATABASE_URL"
  | "REDIS_URL"
  | "KAFKA_BROKERS"
  | "KAFKA_TOPIC"
  | "KAFKA_TOPIC_PARTITIONS"
  | "KAFKA_CLIENT_ID"
>;

/** Which services this call had to start. */
export interface EnsureResult {
  started: { postgres: boolean; redis: boolean; kafka: boolean };
  seconds: number;
}

/** Make Postgres, Redis and Kafka (with the events and dead-letter topics) ready, in that order. */
export async function ensureServices(
  config: ServicesConfig,
  { log = (line: string) => console.log(line) }: { log?: Log } = {},
): Promise<EnsureResult> {
  const start = performance.now();
  const postgres = await ensurePostgres(config.DATABASE_URL, log);
  const redis = await ensureRedis(config.REDIS_URL, log);
  const kafka = await ensureKafka(config.KAFKA_BROKERS, log);
  const topicsStart = performance.now();
  const topics = await ensureTopics({
    brokers: config.KAFKA_BROKERS,
    clientId: config.KAFKA_CLIENT_ID,
    topics: [
      { topic: config.KAFKA_TOPIC, partitions: config.KAFKA_TOPIC_PARTITIONS },
      { topic: config.KAFKA_TOPIC + DLQ_SUFFIX, partitions: 1, keyed: false },
    ],
  });
  for (const t of topics) {
    log(`kafka: topic ${t.topic} ${t.created ? "created" : "ok"} (${t.partitions} partitions)`);
  }
  log(`kafka: topics ready in ${elapsed(topicsStart)}`);
  const seconds = (performance.now() - start) / 1000;
  log(`services ready in ${seconds.toFixed(1)}s`);
  return { started: { postgres: postgres.started, redis: redis.started, kafka: kafka.started }, seconds };
}

/** Stop the Kafka broker and redis-server we started (by pid: SIGTERM, then SIGKILL after a timeout). */
export async function stopServices(
  { log = (line: string) => console.log(line) }: { log?: Log } = {},
): Promise<void> {
  const kafkaPid = runningKafkaPid();
  if (kafkaPid === undefined) {
    log("kafka: not started by us, nothing to stop");
  } else {
    log(`kafka: stopping broker (pid ${kafkaPid})...`);
    // A clean broker shutdown takes a few seconds; give it time before SIGKILL.
    await stopPid(kafkaPid, { timeoutMs: 30_000 });
    removeFile(kafkaPaths().pidFile);
    log("kafka: stopped");
  }
  const redisPid = runningRedisPid();
  if (redisPid === undefined) {
    log("redis: not started by us, nothing to stop");
  } else {
    log(`redis: stopping redis-server (pid ${redisPid})...`);
    await stopPid(redisPid, { timeoutMs: 10_000 });
    removeFile(redisPidFile());
    log("redis: stopped");
  }
  log("postgres: left running (it belongs to the machine)");
}

/** One line per service: reachable or not, and whether we started it. */
export async function servicesStatus(config: ServicesConfig): Promise<string[]> {
  const pg = new URL(config.DATABASE_URL);
  const rd = new URL(config.REDIS_URL);
  const kafka = parseBroker(config.KAFKA_BROKERS[0]);
  const kafkaPid = runningKafkaPid();
  const redisPid = runningRedisPid();
  const up = (open: boolean) => (open ? "up" : "down");
  const pgPort = Number(pg.port || 5432);
  const rdPort = Number(rd.port || 6379);
  return [
    `postgres ${pg.hostname}:${pgPort} ${up(await isPortOpen(pg.hostname, pgPort))} (machine service)`,
    `redis    ${rd.hostname}:${rdPort} ${up(await isPortOpen(rd.hostname, rdPort))}` +
    (redisPid ? ` (started by us, pid ${redisPid})` : " (not started by us)"),
    `kafka    ${kafka.host}:${kafka.port} ${up(await isPortOpen(kafka.host, kafka.port))}` +
    (kafkaPid ? ` (started by us, pid ${kafkaPid}, log ${kafkaPaths().log})` : " (not started by us)"),
    `state dir ${stateDir()}`,
  ];
}
