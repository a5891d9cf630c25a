/**
 * `deno task test [deno test args]`: a fresh test database on real services, then `deno test -A tests/`.
 *
 * Every run drops and recreates the test database and migrates it, so results do not depend on an earlier
 * run. Extra arguments pass through: `deno task test tests/foo_test.ts` runs one file.
 */
import { parseConfig } from "../config.ts";
import { migrateUp } from "../db/migrate.ts";
import { databaseName, recreateDatabase } from "./postgres_local.ts";
import { hideKafkajsTimeoutWarning } from "../../outbox/kafka.ts";
import { ensureServices } from "./services.ts";
import { ensureTestTools } from "./test_tools.ts";

/** A fixed secret for tests only (40 characters); never used outside APP_ENV=test. */
export const TEST_JWT_SECRET = "test-secret-for-mini-wallet-tests-000000";

/** The environment every test process runs with. */
export function testEnv(
  env: Record<string, string | undefined> = Deno.env.toObject(),
): Record<string, string> {
  return {
    APP_ENV: "test",
    DATABASE_URL: env.TEST_DATABASE_URL || "postgres://postgres@127.0.0.1:5432/mini_wallet_test",
    REDIS_URL: "redis://127.0.0.1:6379/15",
    KAFKA_TOPIC: "wallet.created-transaction.test",
    LOG_LEVEL: "warn",
    JWT_SECRET: TEST_JWT_SECRET,
    KAFKAJS_NO_PARTITIONER_WARNING: "1",
  };
}

/** The `deno test` arguments: the whole tests/ folder unless the caller named files or folders. */
export function denoTestArgs(extra: string[]): string[] {
  const namesTargets = extra.some((arg) => !arg.startsWith("-"));
  return ["test", "-A", ...extra, ...(namesTargets ? [] : ["tests/"])];
}

/** Prepare services and a fresh database, run deno test, and return its exit code. */
export async function runTests(extra: string[]): Promise<number> {
  const env = testEnv();
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
    return status.code;
  } finally {
    Deno.removeSignalListener("SIGINT", ignore);
  }
}

if (import.meta.main) {
  hideKafkajsTimeoutWarning();
  Deno.exit(await runTests(Deno.args));
}
