/**
 * `deno task outbox list | retry | release | republish`: what an operator does about outbox rows Kafka refused.
 *
 * A row Kafka refused while it accepted others backs off and goes again; after RELAY_MAX_ATTEMPTS refusals
 * it is set aside, and its wallet's later rows are held behind it (never published before it). `list` shows
 * them, `retry` re-queues set-aside rows (after the cause is fixed), `release` gives them up so the wallet's
 * held rows go on, accepting a gap in that wallet's versions. docs/outbox.md explains when to use which.
 *
 * Reads DATABASE_URL through `loadToolConfig()` (no JWT_SECRET needed); exits 1 with the message on error
 * and 2 with the usage on bad arguments.
 */
import { loadToolConfig } from "../src/config.ts";
import { createSql, type Sql } from "../src/db/client.ts";
import {
  blockedCounts,
  listBlocked,
  listReleased,
  releaseSetAside,
  republishReleased,
  retrySetAside,
  type RowSelection,
} from "../src/db/outbox_repository.ts";
import { OUTBOX_CHANNEL } from "./relay.ts";

const USAGE = `Usage: deno task outbox <command>

Commands:
  list                          rows set aside (with the rows held behind each), rows backing off after a
                                refusal, and released rows
  retry <id>... | --wallet <wallet id> | --all
                                re-queue set-aside rows: sent again now, then the rows held behind them, in
                                order; refused again, they back off and are set aside again
  release <id>... | --wallet <wallet id>
                                give set-aside rows up: each moves to outbox_dead_letter (never published)
                                and its wallet's held rows are published; consumers see that version missing
  republish <id>...             put released rows back in the outbox: published late, after the wallet's
                                later events (consumers that compare versions ignore it)

DATABASE_URL selects the database.`;

type Command =
  | { kind: "list" }
  | { kind: "retry"; selection: RowSelection }
  | { kind: "release"; selection: RowSelection }
  | { kind: "republish"; ids: string[] }
  | { kind: "help" };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Parse the arguments; null when they are not a valid command. */
export function parseOutboxArgs(args: string[]): Command | null {
  const [name, ...rest] = args;
  switch (name) {
    case "list":
      return rest.length === 0 ? { kind: "list" } : null;
    case "retry":
    case "release": {
      const selection = parseSelection(rest, { allowAll: name === "retry" });
      return selection ? { kind: name, selection } : null;
    }
    case "republish": {
      const selection = parseSelection(rest, { allowAll: false });
      return selection && "ids" in selection ? { kind: "republish", ids: selection.ids } : null;
    }
    case "help":
    case "--help":
    case "-h":
      return { kind: "help" };
    default:
      return null;
  }
}

function parseSelection(args: string[], { allowAll }: { allowAll: boolean }): RowSelection | null {
  if (args.length === 1 && args[0] === "--all") return allowAll ? { all: true } : null;
  if (args.length === 2 && args[0] === "--wallet") return UUID.test(args[1]) ? { walletId: args[1] } : null;
  if (args.length > 0 && args.every((a) => /^[1-9]\d{0,18}$/.test(a))) return { ids: args };
  return null;
}

function formatTime(date: Date | null): string {
  return date ? date.toISOString() : "-";
}

/** Run one command against `sql`, writing lines to `print`; returns the exit code. */
export async function runOutboxCommand(
  sql: Sql,
  command: Exclude<Command, { kind: "help" }>,
  print: (line: string) => void,
): Promise<number> {
  if (command.kind === "list") {
    const [blocked, counts, released] = await Promise.all([
      listBlocked(sql),
      blockedCounts(sql),
      listReleased(sql),
    ]);
    print(
      `set aside: ${counts.setAside}, held behind them: ${counts.held}, backing off: ${counts.backingOff}, ` +
        `released: ${released.length}`,
    );
    if (blocked.length > 0) {
      print("");
      print("ID\tSTATE\tWALLET\tVERSION\tTYPE\tATTEMPTS\tHELD\tBYTES\tSINCE\tRETRY AT\tLAST ERROR");
      for (const row of blocked) {
        const state = row.setAsideAt ? "set_aside" : "backing_off";
        print(
          [
            row.id,
            state,
            row.walletId,
            row.walletVersion,
            row.eventType,
            row.attempts,
            row.held,
            row.payloadBytes,
            formatTime(row.setAsideAt ?? row.createdAt),
            formatTime(row.retryAt),
            (row.lastError ?? "").replace(/\s+/g, " ").slice(0, 200),
          ].join("\t"),
        );
      }
    }
    if (released.length > 0) {
      print("");
      print("RELEASED ID\tWALLET\tVERSION\tTYPE\tATTEMPTS\tRELEASED AT\tLAST ERROR");
      for (const row of released) {
        print(
          [
            row.id,
            row.walletId,
            row.walletVersion,
            row.eventType,
            row.attempts,
            // Rows the relay dead-lettered by itself before rows were held have no release time.
            row.releasedAt ? row.releasedAt.toISOString() : `dead-lettered ${row.deadAt.toISOString()}`,
            (row.lastError ?? "").replace(/\s+/g, " ").slice(0, 200),
          ].join("\t"),
        );
      }
    }
    return 0;
  }
  if (command.kind === "republish") {
    const ids = await republishReleased(sql, command.ids, OUTBOX_CHANNEL);
    if (ids.length === 0) {
      print("no released row matched; nothing put back (deno task outbox list shows them)");
      return 1;
    }
    print(`put back ${ids.length} released row(s): ${ids.join(", ")}`);
    return 0;
  }
  const ids = command.kind === "retry"
    ? await retrySetAside(sql, command.selection, OUTBOX_CHANNEL)
    : await releaseSetAside(sql, command.selection, OUTBOX_CHANNEL);
  const verb = command.kind === "retry" ? "re-queued" : "released";
  if (ids.length === 0) {
    print(`no set-aside row matched; nothing ${verb} (deno task outbox list shows them)`);
    return 1;
  }
  print(`${verb} ${ids.length} row(s): ${ids.join(", ")}`);
  return 0;
}

/** The command line: parse, connect, run, disconnect; returns the exit code. */
export async function outboxCli(args: string[]): Promise<number> {
  const command = parseOutboxArgs(args);
  if (!command) {
    console.error(USAGE);
    return 2;
  }
  if (command.kind === "help") {
    console.log(USAGE);
    return 0;
  }
  const sql = createSql(loadToolConfig().DATABASE_URL, { max: 1, applicationName: "mini-wallet-outbox-cli" });
  try {
    return await runOutboxCommand(sql, command, (line) => console.log(line));
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    return 1;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

if (import.meta.main) Deno.exit(await outboxCli(Deno.args));
