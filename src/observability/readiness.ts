/**
 * Readiness: whether every dependency this process's roles need answers. Each check runs in parallel with the
 * others and is cut off after a short timeout, so /ready answers quickly even when a dependency hangs.
 * /health stays a pure liveness check and touches none of them.
 */
import type { Role } from "../config.ts";
import type { Logger } from "../log.ts";

export const DEPENDENCIES = ["postgres", "redis", "kafka"] as const;
export type Dependency = typeof DEPENDENCIES[number];

/** One dependency's answer: up or down, and how long the check took. */
export interface CheckResult {
  status: "up" | "down";
  durationMs: number;
}

/** The checked dependencies of a process (or thread); those its roles do not need are absent. */
export type ReadinessReport = Partial<Record<Dependency, CheckResult>>;

/** A check resolves when the dependency answered, and rejects (or hangs) otherwise. */
export type Check = () => Promise<unknown>;

/**
 * What each role needs: the API writes to PostgreSQL and reads balances through Redis; the relay reads the
 * outbox and publishes to Kafka; the consumer reads Kafka and writes Redis.
 */
const NEEDS: Record<Role, Dependency[]> = {
  api: ["postgres", "redis"],
  relay: ["postgres", "kafka"],
  consumer: ["kafka", "redis"],
};

/** The dependencies `roles` need, in a fixed order. */
export function dependenciesOf(roles: readonly Role[]): Dependency[] {
  return DEPENDENCIES.filter((dependency) => roles.some((role) => NEEDS[role].includes(dependency)));
}

/** Run the checks side by side, each cut off after `timeoutMs`; a failure is logged (the body never says why). */
export async function checkAll(
  checks: Partial<Record<Dependency, Check>>,
  options: { timeoutMs: number; log?: Logger },
): Promise<ReadinessReport> {
  const entries = await Promise.all(
    Object.entries(checks).map(async ([dependency, check]) => {
      const started = performance.now();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer within ${options.timeoutMs} ms`)),
          options.timeoutMs,
        );
      });
      let status: CheckResult["status"] = "up";
      try {
        await Promise.race([check!(), timeout]);
      } catch (error) {
        status = "down";
        options.log?.warn("readiness check failed", { dependency, error });
      } finally {
        clearTimeout(timer);
      }
      const durationMs = Math.round((performance.now() - started) * 100) / 100;
      return [dependency, { status, durationMs }] as const;
    }),
  );
  return Object.fromEntries(entries);
}

/** Reports of several threads as one: a dependency is down if any thread found it down; the longest time. */
export function mergeReports(reports: ReadinessReport[]): ReadinessReport {
  const merged: ReadinessReport = {};
  for (const dependency of DEPENDENCIES) {
    for (const report of reports) {
      const result = report[dependency];
      if (!result) continue;
      const seen = merged[dependency];
      merged[dependency] = seen
        ? {
          status: seen.status === "down" || result.status === "down" ? "down" : "up",
          durationMs: Math.max(seen.durationMs, result.durationMs),
        }
        : result;
    }
  }
  return merged;
}

/** Every dependency down: the answer for a thread that did not reply in time. */
export function allDown(dependencies: Dependency[], durationMs: number): ReadinessReport {
  return Object.fromEntries(dependencies.map((d) => [d, { status: "down", durationMs }]));
}

/** Whether every checked dependency is up. */
export function isReady(report: ReadinessReport): boolean {
  return Object.values(report).every((result) => result.status === "up");
}
