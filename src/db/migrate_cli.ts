/**
 * `deno task migrate up [N] | down [N] | status | create NAME [--dir PATH]`: the migration runner's command line.
 *
 * Reads DATABASE_URL through `loadToolConfig()`; prints one line per migration; exits 1 with the message on
 * error and 2 with the usage text on bad arguments.
 */
import { loadToolConfig } from "../config.ts";
import {
  createMigration,
  DEFAULT_MIGRATIONS_DIR,
  migrateDown,
  migrateUp,
  type MigrationStatus,
  migrationStatus,
} from "./migrate.ts";

const USAGE = `Usage: deno task migrate <command> [--dir PATH]

Commands:
  up [N]         apply all pending migrations (or only the next N)
  down [N]       revert the last N applied migrations (default 1)
  status         list every migration: applied, pending, checksum_mismatch or missing_file
  create NAME    create NNNNNN_NAME.up.sql and .down.sql with the next number (NAME in snake_case)

Options:
  --dir PATH     migrations directory (default: ${DEFAULT_MIGRATIONS_DIR})

DATABASE_URL selects the database.`;

type Command =
  | { kind: "up"; steps?: number }
  | { kind: "down"; steps: number }
  | { kind: "status" }
  | { kind: "create"; name: string }
  | { kind: "help" };

/** Run the CLI with `args` and return the exit code. */
export async function migrateCli(args: string[]): Promise<number> {
  const parsed = parseArgs(args);
  if (!parsed) {
    console.error(USAGE);
    return 2;
  }
  const { command, dir } = parsed;
  if (command.kind === "help") {
    console.log(USAGE);
    return 0;
  }

  try {
    if (command.kind === "create") {
      const { upPath, downPath } = await createMigration(command.name, { dir });
      console.log(`created ${upPath}\ncreated ${downPath}`);
      return 0;
    }
    const databaseUrl = loadToolConfig().DATABASE_URL;
    const log = (line: string) => console.log(line);
    if (command.kind === "up") {
      const applied = await migrateUp(databaseUrl, { dir, log, steps: command.steps });
      if (applied.length === 0) console.log("nothing to apply: the database is up to date");
    } else if (command.kind === "down") {
      const reverted = await migrateDown(databaseUrl, { dir, log, steps: command.steps });
      if (reverted.length === 0) console.log("nothing to revert: no migration is applied");
    } else {
      console.log(formatStatus(await migrationStatus(databaseUrl, { dir })));
    }
    return 0;
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    return 1;
  }
}

function parseArgs(args: string[]): { command: Command; dir: string } | null {
  let dir = DEFAULT_MIGRATIONS_DIR;
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--dir") {
      if (i + 1 >= args.length) return null;
      dir = args[++i];
    } else if (args[i].startsWith("--dir=")) {
      dir = args[i].slice("--dir=".length);
    } else {
      rest.push(args[i]);
    }
  }

  const [name, arg, ...extra] = rest;
  if (extra.length > 0) return null;
  switch (name) {
    case "up": {
      if (arg === undefined) return { command: { kind: "up" }, dir };
      const steps = parseSteps(arg);
      return steps === null ? null : { command: { kind: "up", steps }, dir };
    }
    case "down": {
      const steps = arg === undefined ? 1 : parseSteps(arg);
      return steps === null ? null : { command: { kind: "down", steps }, dir };
    }
    case "status":
      return arg === undefined ? { command: { kind: "status" }, dir } : null;
    case "create":
      return arg === undefined ? null : { command: { kind: "create", name: arg }, dir };
    case "help":
    case "--help":
    case "-h":
      return { command: { kind: "help" }, dir };
    default:
      return null;
  }
}

function parseSteps(arg: string): number | null {
  return /^[1-9]\d{0,5}$/.test(arg) ? Number(arg) : null;
}

function formatStatus(rows: MigrationStatus[]): string {
  if (rows.length === 0) return "no migrations";
  const table = [
    ["VERSION", "NAME", "STATE", "APPLIED AT"],
    ...rows.map((r) => [r.version, r.name, r.state, r.appliedAt?.toISOString() ?? "-"]),
  ];
  const widths = table[0].map((_, col) => Math.max(...table.map((row) => row[col].length)));
  return table.map((row) => row.map((cell, col) => cell.padEnd(widths[col])).join("  ").trimEnd()).join("\n");
}

if (import.meta.main) {
  Deno.exit(await migrateCli(Deno.args));
}
