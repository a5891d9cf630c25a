/**
 * The composition root: the only module that knows every part. It reads the configuration, decides which
 * roles this process runs (API, outbox relay, Kafka consumer; all three by default) and on which thread (the
 * relay and the consumer get a thread of their own next to the API, see pipeline_thread.ts), wires them with
 * plain arguments, and stops them cleanly on SIGINT/SIGTERM.
 */
import { loadConfig } from "./config.ts";
import { createLogger } from "./log.ts";
import { startService } from "./service.ts";
import { pipelineThreadRoles, startPipelineThread } from "./pipeline_thread.ts";

const config = loadConfig();
const log = createLogger(config.LOG_LEVEL, { service: "mini-wallet" });
const threadRoles = pipelineThreadRoles(config);
const pipeline = threadRoles ? startPipelineThread(config, threadRoles, log, () => Deno.exit(1)) : null;
const service = await startService(
  pipeline ? { ...config, ROLES: config.ROLES.filter((role) => !threadRoles!.includes(role)) } : config,
  log,
  {
    wakeRelay: pipeline && threadRoles!.includes("relay") ? () => pipeline.wake() : undefined,
    otherThread: pipeline ?? undefined,
  },
);

let stopping = false;
async function shutdown(signal: string) {
  if (stopping) return;
  stopping = true;
  log.info("shutting down", { signal });
  // A second signal, or a stop that hangs, must not leave the process around.
  const deadline = setTimeout(() => Deno.exit(1), 10_000);
  // The API first, so that nothing commits after the relay stopped; rows it had not published yet wait in the
  // outbox for the next start.
  await service.stop();
  await pipeline?.stop();
  clearTimeout(deadline);
  Deno.exit(0);
}
Deno.addSignalListener("SIGINT", () => void shutdown("SIGINT"));
Deno.addSignalListener("SIGTERM", () => void shutdown("SIGTERM"));
