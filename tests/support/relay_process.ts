/**
 * A relay alone in its own process, configured from the environment, for tests that kill it mid-batch:
 * `deno run -A tests/support/relay_process.ts`. Prints "relay started" once running; SIGTERM stops it.
 */
import { parseConfig } from "../../src/config.ts";
import { createSql } from "../../src/db/client.ts";
import { createLogger } from "../../src/log.ts";
import { hideKafkajsTimeoutWarning } from "../../outbox/kafka.ts";
import { PipelineMetrics } from "../../outbox/metrics.ts";
import { startRelay } from "../../outbox/relay.ts";

hideKafkajsTimeoutWarning();
const config = parseConfig(Deno.env.toObject());
const sql = createSql(config.DATABASE_URL, { max: 3 });
const relay = startRelay({
  config,
  sql,
  log: createLogger(config.LOG_LEVEL),
  metrics: new PipelineMetrics(),
});
console.log("relay started");
Deno.addSignalListener("SIGTERM", async () => {
  await relay.stop();
  await sql.end({ timeout: 5 });
  Deno.exit(0);
});
