/**
 * The composition root: the only module that knows every part. It reads the configuration, decides which
 * roles this process runs (API, outbox relay, Kafka consumer; all three by default), wires them with plain
 * arguments, and stops them cleanly on SIGINT/SIGTERM.
 */
import { loadConfig } from "./config.ts";
import { createLogger } from "./log.ts";
import { startService } from "./service.ts";
import { hideKafkajsTimeoutWarning } from "../outbox/kafka.ts";

hideKafkajsTimeoutWarning();
const config = loadConfig();
const log = createLogger(config.LOG_LEVEL, { service: "mini-wallet" });
const service = startService(config, log);

let stopping = false;
async function shutdown(signal: string) {
  if (stopping) return;
  stopping = true;
  log.info("shutting down", { signal });
  // A second signal, or a stop that hangs, must not leave the process around.
  const deadline = setTimeout(() => Deno.exit(1), 10_000);
  await service.stop();
  clearTimeout(deadline);
  Deno.exit(0);
}
Deno.addSignalListener("SIGINT", () => void shutdown("SIGINT"));
Deno.addSignalListener("SIGTERM", () => void shutdown("SIGTERM"));
