/**
 * Cross-process wake-up hint for relays running in other processes: a NOTIFY sent after commit, coalesced so
 * a busy API sends at most one per interval. Sent outside the money transaction on purpose: a NOTIFY inside
 * it would serialize every commit of the database on PostgreSQL's notify-queue lock.
 */
import type { Sql } from "../src/db/client.ts";
import type { Logger } from "../src/log.ts";
import { OUTBOX_CHANNEL } from "./relay.ts";

/** Returns a function to call after each commit that wrote outbox rows. */
export function createOutboxHint(sql: Sql, log: Logger, intervalMs = 5): () => void {
  let scheduled = false;
  return function hintRelays() {
    if (scheduled) return;
    scheduled = true;
    setTimeout(() => {
      scheduled = false;
      sql.notify(OUTBOX_CHANNEL, "").catch((error) => log.debug("outbox hint not sent", { error }));
    }, intervalMs);
  };
}
