/**
 * Entry point of the pipeline thread (see pipeline_thread.ts): runs the roles it is given with the main
 * thread's configuration, and stops them when told. A start that fails is an uncaught error of the thread,
 * which ends the process.
 */
/// <reference lib="deno.worker" />
import { createLogger } from "./log.ts";
import { type MetricsJson, type RunningService, startService } from "./service.ts";
import type { FromPipeline, ToPipeline } from "./pipeline_thread.ts";

let service: Promise<RunningService> | null = null;
let wakeRelay: () => void = () => {}; // until the relay runs; its first cycle sees what was committed before
const reply = (message: FromPipeline) => self.postMessage(message);

self.onmessage = async (event: MessageEvent<ToPipeline>) => {
  const message = event.data;
  if (message.type === "start") {
    const log = createLogger(message.config.LOG_LEVEL, { service: "mini-wallet", thread: "pipeline" });
    // The main thread serves HTTP for the process (a thread given the API, as in a test, listens itself).
    service = startService(message.config, log, { listen: message.config.ROLES.includes("api") });
    wakeRelay = (await service).wakeRelay;
  } else if (message.type === "readiness") {
    reply({ type: "readiness", id: message.id, report: await (await service!).readiness() });
  } else if (message.type === "metrics") {
    const metrics = await (await service!).serviceMetrics.registry.getMetricsAsJSON();
    reply({ type: "metrics", id: message.id, metrics: metrics as MetricsJson });
  } else if (message.type === "wake") {
    wakeRelay();
  } else if (message.type === "stop") {
    await (await service)?.stop(); // a stop during the start waits for it
    reply({ type: "stopped" });
  }
};
