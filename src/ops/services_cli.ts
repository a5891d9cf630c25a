/**
 * `deno task services up|down|status`: start, stop or show the local Postgres, Redis and Kafka.
 */
import { loadToolConfig } from "../config.ts";
import { hideKafkajsTimeoutWarning } from "../../outbox/kafka.ts";
import { ensureServices, servicesStatus, stopServices } from "./services.ts";

const USAGE = "Usage: deno task services up|down|status";

/** Run one services command; returns the process exit code. */
export async function servicesCli(args: string[]): Promise<number> {
  const command = args[0];
  const log = (line: string) => console.log(line);
  try {
    switch (command) {
      case "up":
        await ensureServices(loadToolConfig(), { log });
        return 0;
      case "down":
        await stopServices({ log });
        return 0;
      case "status":
        for (const line of await servicesStatus(loadToolConfig())) console.log(line);
        return 0;
      default:
        console.error(USAGE);
        return 64; // EX_USAGE
    }
  } catch (error) {
    console.error(`services ${command} failed: ${(error as Error).message}`);
    return 1;
  }
}

if (import.meta.main) {
  hideKafkajsTimeoutWarning();
  Deno.exit(await servicesCli(Deno.args));
}
