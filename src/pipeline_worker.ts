/**
 * Entry point of the pipeline thread (see pipeline_thread.ts): runs the roles it is given with the main
 * thread's configuration, and stops them when told. A start that fails is an uncaught error of the thread,
 * which ends the process.
 */
/// <reference lib="deno.worker" />
import { createLogger } from "./log.ts";
import { type RunningService, startService } from "./service.ts";
import type { FromPipeline, ToPipeline } from "./pipeline_thread.ts";

let service: Promise<RunningService> | null = null;
let wakeRelay: () => void = () => {}; // until the relay runs; its first cycle sees what was committed before
const reply = (message: FromPipeline) => self.postMessage(message);

self.onmessage = async (event: MessageEvent<ToPipeline>) => {
  const message = event.data;
  if (message.type === "start") {
    const log = createLogger(message.config.LOG_LEVEL, { service: "mini-wallet", thread: "pipeline" });
    service = startService(message.config, log);
    wakeRelay = (await service).wakeRelay;
  } else if (message.type === "wake") {
    wakeRelay();
  } else if (message.type === "stop") {
    await (await service)?.stop(); // a stop during the start waits for it
    reply({ type: "stopped" });
  }
};
