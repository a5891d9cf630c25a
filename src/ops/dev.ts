/**
 * `deno task dev`: start the local services, apply migrations, then run the service in this process.
 */
import { loadConfig } from "../config.ts";
import { migrateUp } from "../db/migrate.ts";
import { hideKafkajsTimeoutWarning } from "../../outbox/kafka.ts";
import { ensureServices } from "./services.ts";

/** Prepare everything the service needs locally, then hand over to the service entry point. */
export async function dev(): Promise<void> {
  hideKafkajsTimeoutWarning();
  const config = loadConfig();
  const log = (line: string) => console.log(line);
  try {
    await ensureServices(config, { log });
    const applied = await migrateUp(config.DATABASE_URL, { log });
    log(`migrations: ${applied.length === 0 ? "up to date" : `applied ${applied.join(", ")}`}`);
  } catch (error) {
    console.error(`dev: cannot prepare local services: ${(error as Error).message}`);
    Deno.exit(1);
  }
  // main.ts starts the HTTP server and handles SIGINT/SIGTERM itself; the services stay up for the next run.
  await import("../main.ts");
}

if (import.meta.main) await dev();
