/**
 * `deno task dev`: start the local services, apply migrations, then run the service in this process. With no
 * `JWT_SECRET` configured it signs tokens with a random secret kept in the local state folder.
 */
import { loadConfig } from "../config.ts";
import { migrateUp } from "../db/migrate.ts";
import { hideKafkajsTimeoutWarning } from "../../outbox/kafka.ts";
import { devSecret } from "./dev_secret.ts";
import { ensureServices } from "./services.ts";

/** Prepare everything the service needs locally, then hand over to the service entry point. */
export async function dev(): Promise<void> {
  hideKafkajsTimeoutWarning();
  const log = (line: string) => console.log(line);
  const secret = await devSecret();
  if (secret.path) {
    // main.ts parses the environment again; the pipeline thread gets the configuration it parsed.
    Deno.env.set("JWT_SECRET", secret.secret);
    log(
      `dev: JWT_SECRET is not set; tokens are signed with the local secret in ${secret.path} ` +
        `(${secret.created ? "made now" : "kept from an earlier run"}). Set JWT_SECRET to use your own.`,
    );
  }
  const config = loadConfig();
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
