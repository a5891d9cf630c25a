/**
 * The relay and the consumer on a thread of their own (a Web Worker), next to the API on the main thread.
 *
 * Why: in one event loop, each relay cycle (Kafka encoding, its SQL) and each consumer batch (decoding, the
 * Redis script) sits between the API's requests and its database answers, and the API's write batches wait
 * for it. On a 2-core machine the second core was a quarter idle during spread deposits. With the pipeline
 * on its own thread, interleaved scratch runs gave 8-26 % more spread deposits (docs/benchmarks.md). The
 * worker has its own PostgreSQL pool, Redis connection and Kafka clients; the threads share only the wake-up.
 *
 * Either thread failing ends the process (exit code 1): a supervisor restarts it whole, as after a crash.
 */
import type { Config, Role } from "./config.ts";
import type { Logger } from "./log.ts";
import { allDown, dependenciesOf, type ReadinessReport } from "./observability/readiness.ts";
import type { MetricsJson, ThreadReports } from "./service.ts";

/** Main thread to worker. */
export type ToPipeline =
  | { type: "start"; config: Config }
  | { type: "wake" }
  | { type: "stop" }
  | { type: "readiness"; id: number }
  | { type: "metrics"; id: number };

/** Worker to main thread. */
export type FromPipeline =
  | { type: "stopped" }
  | { type: "readiness"; id: number; report: ReadinessReport }
  | { type: "metrics"; id: number; metrics: MetricsJson };

/** How long the main thread waits for the thread's metrics before /metrics shows its own alone. */
const METRICS_ANSWER_MS = 5000;

/** The roles of this process that run on the pipeline thread; null when everything runs on the main thread. */
export function pipelineThreadRoles(config: Config): Role[] | null {
  const pipeline = config.ROLES.filter((role) => role !== "api");
  if (config.PIPELINE_THREAD !== "worker" || !config.ROLES.includes("api") || pipeline.length === 0) {
    return null;
  }
  return pipeline;
}

export interface PipelineThread extends ThreadReports {
  /** Tell the worker's relay that rows were committed (coalesced there, like a local wake-up). */
  wake(): void;
  /** Stop the worker's roles (the relay finishes its cycle), then end the thread. */
  stop(): Promise<void>;
}

/** Start the given pipeline roles on a worker; `onFailure` is called if the thread dies. */
export function startPipelineThread(
  config: Config,
  roles: Role[],
  log: Logger,
  onFailure: (error: unknown) => void,
): PipelineThread {
  const worker = new Worker(new URL("./pipeline_worker.ts", import.meta.url), { type: "module" });
  const send = (message: ToPipeline) => worker.postMessage(message);
  let stopped: (() => void) | null = null;
  // Questions to the thread (readiness, metrics) by id, answered by messages of the same type and id.
  let nextId = 0;
  const waiting = new Map<number, (message: FromPipeline) => void>();
  function ask<T>(
    type: "readiness" | "metrics",
    timeoutMs: number,
    otherwise: () => T,
    read: (m: FromPipeline) => T,
  ) {
    const id = ++nextId;
    return new Promise<T>((resolve) => {
      const timer = setTimeout(() => {
        waiting.delete(id);
        log.warn("pipeline thread did not answer in time", { question: type, timeoutMs });
        resolve(otherwise());
      }, timeoutMs);
      waiting.set(id, (message) => {
        clearTimeout(timer);
        waiting.delete(id);
        resolve(read(message));
      });
      send({ type, id });
    });
  }
  worker.onmessage = (event: MessageEvent<FromPipeline>) => {
    const message = event.data;
    if (message.type === "stopped") stopped?.();
    else waiting.get(message.id)?.(message);
  };
  worker.onerror = (event) => {
    event.preventDefault();
    log.error("pipeline thread failed", { error: event.message });
    worker.terminate();
    stopped?.(); // a stop waiting for the thread's answer would never get one
    onFailure(event.error ?? event.message);
  };
  send({ type: "start", config: { ...config, ROLES: roles } });
  // A wake-up per commit would be a message per write batch; one pending at a time is enough.
  let wakePending = false;
  // The thread's own checks are cut off at READY_CHECK_TIMEOUT_MS; a thread that cannot answer by a little
  // later is as good as its dependencies being down.
  const readinessAnswerMs = config.READY_CHECK_TIMEOUT_MS + 500;
  return {
    readiness: () =>
      ask(
        "readiness",
        readinessAnswerMs,
        () => allDown(dependenciesOf(roles), readinessAnswerMs),
        (m) => m.type === "readiness" ? m.report : {},
      ),
    metrics: () => ask("metrics", METRICS_ANSWER_MS, () => [], (m) => m.type === "metrics" ? m.metrics : []),
    wake() {
      if (wakePending) return;
      wakePending = true;
      queueMicrotask(() => {
        wakePending = false;
        send({ type: "wake" });
      });
    },
    async stop() {
      await new Promise<void>((resolve) => {
        stopped = resolve;
        send({ type: "stop" });
      });
      worker.terminate();
    },
  };
}
