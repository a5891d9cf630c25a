/**
 * `deno task test [deno test args]`: a fresh test database on real services, then `deno test -A tests/`.
 *
 * Every run drops and recreates the test database and migrates it, so results do not depend on an earlier
 * run. Extra arguments pass through: `deno task test tests/foo_test.ts` runs one file. Afterwards it deletes
 * the Kafka topics the run made (a full run makes about thirty).
 */
import { parseConfig, TEST_JWT_SECRET } from "../config.ts";
import { migrateUp } from "../db/migrate.ts";
import { databaseName, recreateDatabase } from "./postgres_local.ts";
import { hideKafkajsTimeoutWarning } from "../../outbox/kafka.ts";
import { deleteTopics } from "../../outbox/kafka_admin.ts";
import { ensureServices } from "./services.ts";
import { ensureTestTools } from "./test_tools.ts";

/** The environment every test process runs with. */
export function testEnv(
  env: Record<string, string | undefined> = Deno.env.toObject(),
): Record<string, string> {
  return {
    APP_ENV: "test",
    DATABASE_URL: env.TEST_DATABASE_URL || "postgres://postgres@127.0.0.1:5432/mini_wallet_test",
    // Overridable so that two checkouts can run their suites side by side without sharing state.
    REDIS_URL: env.TEST_REDIS_URL || "redis://127.0.0.1:6379/15",
    KAFKA_TOPIC: env.TEST_KAFKA_TOPIC || "wallet.created-transaction.test",
    LOG_LEVEL: "warn",
    JWT_SECRET: TEST_JWT_SECRET, // public, so accepted only with APP_ENV=test
    KAFKAJS_NO_PARTITIONER_WARNING: "1",
  };
}

/** Test topics are `mw-test.<run>.<label>.<random>`; <run> is the base-36 start time of the test run. */
export const TEST_TOPIC_PREFIX = "mw-test.";
const HOUR_MS = 3600_000;

export function testTopicName(run: string, label: string): string {
  return `${TEST_TOPIC_PREFIX}${run}.${label}.${crypto.randomUUID().slice(0, 8)}`;
}

/**
 * Whether `topic` goes after test run `run`: a test topic of that run, or of any run that did not start within
 * the last hour (left by a crashed run, or named before runs were tagged). A run going on side by side keeps
 * its topics.
 */
export function deletedAfterRun(topic: string, run: string, now: number): boolean {
  if (!topic.startsWith(TEST_TOPIC_PREFIX)) return false;
  const tag = topic.slice(TEST_TOPIC_PREFIX.length).split(".")[0];
  if (tag === run) return true;
  const started = /^[0-9a-z]{1,12}$/.test(tag) ? parseInt(tag, 36) : NaN;
  return !(Math.abs(now - started) < HOUR_MS);
}

/** The `deno test` arguments: the whole tests/ folder unless the caller named files or folders. */
export function denoTestArgs(extra: string[]): string[] {
  const namesTargets = extra.some((arg) => !arg.startsWith("-"));
  return ["test", "-A", ...extra, ...(namesTargets ? [] : ["tests/"])];
}

/** Prepare services and a fresh database, run deno test, and return its exit code. */
export async function runTests(extra: string[]): Promise<number> {
  const run = Date.now().toString(36);
  const env = { ...testEnv(), MW_TEST_RUN: run };
  for (const [key, value] of Object.entries(env)) Deno.env.set(key, value);
  const config = parseConfig(Deno.env.toObject());
  // Dropping a database is only safe when it is plainly a test database.
  if (!databaseName(config.DATABASE_URL).includes("test")) {
    console.error(
      `run_tests: refusing to recreate ${databaseName(config.DATABASE_URL)}: its name lacks "test"`,
    );
    return 78;
  }
  const log = (line: string) => console.log(line);
  try {
    await ensureTestTools(log);
    await ensureServices(config, { log });
    await recreateDatabase(config.DATABASE_URL);
    const applied = await migrateUp(config.DATABASE_URL, { log: () => {} });
    log(`test database ${databaseName(config.DATABASE_URL)} recreated, ${applied.length} migrations applied`);
  } catch (error) {
    console.error(`run_tests: cannot prepare the test services: ${(error as Error).message}`);
    return 1;
  }
  // Ctrl-C reaches deno test too (same process group); stay alive to report its exit code.
  const ignore = () => {};
  Deno.addSignalListener("SIGINT", ignore);
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: denoTestArgs(extra),
      env,
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    const status = await child.status;
    await deleteRunTopics(config.KAFKA_BROKERS, run, log);
    return status.code;
  } finally {
    Deno.removeSignalListener("SIGINT", ignore);
  }
}

async function deleteRunTopics(brokers: string[], run: string, log: (line: string) => void) {
  try {
    const now = Date.now();
    const deleted = await deleteTopics({
      brokers,
      clientId: "mini-wallet-tests",
      match: (topic) => deletedAfterRun(topic, run, now),
    });
    log(`deleted ${deleted.length} test topics from Kafka`);
  } catch (error) {
    log(`warning: could not delete the test topics: ${(error as Error).message}`);
  }
}

if (import.meta.main) {
  hideKafkajsTimeoutWarning();
  Deno.exit(await runTests(Deno.args));
}
